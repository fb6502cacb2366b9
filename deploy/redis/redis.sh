#!/usr/bin/env bash
# Local Redis for development and tests: Debian's redis-server on loopback, with ACL users, an
# append-only file, and optionally a TLS port.
#
#   redis.sh install | start | stop | status
#   redis.sh user NAME PATTERN...   add (or reset) ACL user NAME on the running server with the
#                                   worker's commands on keys PATTERN...; prints its password file
#   redis.sh password-file [USER]   where USER's password is (default: the admin's)
#
# Users (passwords in 0600 files in the state folder, random at the first start unless given
# here; a restart keeps them):
#   default           the admin, for these scripts and test clean-up: REDIS_PASSWORD, else
#                     admin.password
#   recstream-worker  (REDIS_WORKER_USER) what the worker needs and nothing else: GET SET HSET
#                     HGETALL EXPIRE DEL PING (+ what redis-py sends on connect) on keys
#                     REDIS_WORKER_KEYS ("recstream:*", space-separated patterns);
#                     REDIS_WORKER_PASSWORD, else recstream-worker.password
#
# Env: REDIS_PORT (6379), REDIS_STATE (state folder: .stack/redis for 6379, .stack/redis-PORT for
# another port, so a second server never touches the shared one's files), REDIS_TLS_PORT (also
# listen with TLS there; a local CA and server certificate are made once in STATE/tls/),
# REDIS_START_TIMEOUT / REDIS_STOP_TIMEOUT (s, 20).
#
# Persistence: an append-only file fsynced every second (appendfsync everysec), no RDB
# snapshots. Redis holds a cache the worker rewrites, but a restarted Redis that still has every
# user's list serves them at once instead of an empty cache until each user comes back. A crash
# loses at most the last second of writes (those users' next events rewrite them).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The values ../lib.sh reads (see there), then this script's own.
name=redis
stop_timeout=${REDIS_STOP_TIMEOUT:-20}
stop_poll=0.1
stop_package_service=1
port=${REDIS_PORT:-6379}
tls_port=${REDIS_TLS_PORT:-}
worker_user=${REDIS_WORKER_USER:-recstream-worker}
worker_keys=${REDIS_WORKER_KEYS:-recstream:*}
url=127.0.0.1:$port
unhealthy="does not answer PING"
# shellcheck source=SCRIPTDIR/../lib.sh
source "$here/../lib.sh" # root, state=.stack/redis, die, lock, need, stop, status...
if [[ -n ${REDIS_STATE:-} ]]; then
  state=$(realpath -m "$REDIS_STATE")
elif [[ $port != 6379 ]]; then
  state=$root/.stack/redis-$port
fi
pidfile=$state/redis.pid

# The worker's commands: the sink's writes (recstream/adapters/redis_sink.py), its ping, and
# what redis-py sends on connect (HELLO, AUTH; CLIENT SETINFO from Redis 7.2, which 7.0 does not
# know; SELECT for a db in the URL). Nothing else: no KEYS, FLUSHALL, CONFIG, DEBUG, SHUTDOWN.
worker_commands="-@all +get +set +hset +hgetall +expire +del +ping +hello +auth +select"

# redis-server runs in our state folder (`dir`): that tells our server from a recycled pid or
# somebody else's redis-server.
ours() { [[ $(readlink "/proc/$1/cwd" 2>/dev/null) == "$state" ]]; }

password_file() { # password_file USER
  case ${1:-default} in
    default | admin) echo "$state/admin.password" ;;
    *) echo "$state/$1.password" ;;
  esac
}

# secret FILE [VALUE]: VALUE when given (written to FILE), else FILE's, else a new random one
# written to FILE (mode 600). Prints the secret.
secret() {
  local file=$1 value=${2:-}
  if [[ -z $value && -s $file ]]; then
    cat "$file"
    return
  fi
  [[ -n $value ]] || value=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
  mkdir -p "$(dirname "$file")"
  (umask 077 && printf '%s\n' "$value" >"$file.tmp" && mv "$file.tmp" "$file")
  echo "$value"
}

admin_password() {
  if [[ -n ${REDIS_PASSWORD:-} ]]; then echo "$REDIS_PASSWORD"; return; fi
  [[ -s $(password_file default) ]] || return 0
  cat "$(password_file default)"
}

# REDISCLI_AUTH keeps the password off the command line and silences redis-cli's warning.
cli() { REDISCLI_AUTH=$(admin_password) redis-cli -h 127.0.0.1 -p "$port" "$@"; }

healthy() { [[ $(cli ping 2>/dev/null) == PONG ]]; }

install() { need redis-server redis-server; need redis-cli redis-tools; }

sha256() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

# The ACL rule of a worker-like user: its commands on keys PATTERN..., no pub/sub channels.
worker_rule() { # worker_rule PATTERN...
  local rule="resetkeys resetchannels $worker_commands" pattern
  for pattern; do rule+=" ~$pattern"; done
  # CLIENT SETINFO exists from 7.2; an ACL rule naming an unknown command is an error.
  if [[ $(redis-server --version) =~ v=([0-9]+)\.([0-9]+) ]] \
    && ((BASH_REMATCH[1] > 7 || (BASH_REMATCH[1] == 7 && BASH_REMATCH[2] >= 2))); then
    rule+=" +client|setinfo"
  fi
  echo "$rule"
}

# A local CA and a server certificate for 127.0.0.1/localhost, made once (STATE/tls/).
tls_files() {
  local dir=$state/tls
  [[ -s $dir/server.crt ]] && return 0
  need openssl openssl
  mkdir -p "$dir"
  (
    umask 077
    cd "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=recstream local Redis CA" \
      -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server.key \
      -out server.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile server.ext -out server.crt 2>/dev/null
    chmod 644 ca.crt # the CA certificate is what clients are given
  ) || die "could not make the TLS certificates in $dir"
}

write_config() {
  local admin=$1 worker=$2 patterns
  read -ra patterns <<<"$worker_keys"
  # Mode 600, and hashed passwords: neither `ps` nor a copy of the config shows a secret.
  (
    umask 077
    cat >"$state/redis.conf" <<EOF
# Written by deploy/redis/redis.sh: edit the script, not this file.
bind 127.0.0.1
port $port
daemonize yes
pidfile $pidfile
logfile $state/redis.log
dir $state
user default on #$(sha256 "$admin") ~* &* +@all
user $worker_user on #$(sha256 "$worker") $(worker_rule "${patterns[@]}")
save ""
appendonly yes
appendfsync everysec
appenddirname appendonlydir
EOF
    if [[ -n $tls_port ]]; then
      cat >>"$state/redis.conf" <<EOF
tls-port $tls_port
tls-cert-file $state/tls/server.crt
tls-key-file $state/tls/server.key
tls-ca-cert-file $state/tls/ca.crt
tls-auth-clients optional
EOF
    fi
  )
}

start() {
  local deadline admin worker
  install
  if server_pid >/dev/null; then
    healthy || die "pid $(cat "$pidfile") does not answer PING with this REDIS_PASSWORD" \
      "(or $(password_file default)) and REDIS_PORT"
    echo "redis: already running on 127.0.0.1:$port"
    return 0
  fi
  port_open "$port" && die "127.0.0.1:$port is in use by another process: stop it or set REDIS_PORT"
  if [[ -n $tls_port ]]; then
    port_open "$tls_port" && die "127.0.0.1:$tls_port (REDIS_TLS_PORT) is in use"
    tls_files
  fi
  # The append-only file holds every user's lists and profiles: private to this user (0700
  # folder, 0600 files: redis-server creates them with the umask it inherits).
  mkdir -p "$state"
  chmod 700 "$state"
  admin=$(secret "$(password_file default)" "${REDIS_PASSWORD:-}")
  worker=$(secret "$(password_file "$worker_user")" "${REDIS_WORKER_PASSWORD:-}")
  write_config "$admin" "$worker"
  : >"$state/redis.log"
  (umask 077 && exec redis-server "$state/redis.conf" 9>&-) \
    || die "redis-server did not start: $(tail -n 5 "$state/redis.log")"
  deadline=$((SECONDS + ${REDIS_START_TIMEOUT:-20}))
  # An append-only file is loaded before the first PONG (LOADING until then).
  until healthy; do
    if ((SECONDS > deadline)); then
      tail -n 20 "$state/redis.log" >&2; stop >/dev/null
      die "no PONG after ${REDIS_START_TIMEOUT:-20}s (log: $state/redis.log)"
    fi
    sleep 0.1
  done
  echo "redis: up on 127.0.0.1:$port${tls_port:+ (TLS on $tls_port)} (pid $(cat "$pidfile"))," \
    "users default and $worker_user (passwords in $state/)"
}

# user NAME PATTERN...: the worker's rule for another user (tests use their own key prefixes),
# on the running server only (a restart forgets it; the password file stays).
add_user() {
  local user=${1:-} password rule
  shift || true
  [[ -n $user && $# -gt 0 ]] || die "usage: $0 user NAME PATTERN..."
  [[ $user != default ]] || die "user: the default user is the admin"
  server_pid >/dev/null || die "not running on 127.0.0.1:$port: start it first"
  healthy || die "no PONG with the admin password of $(password_file default) (a server started" \
    "by an older redis.sh has none: '$0 stop' and '$0 start' it)"
  password=$(secret "$(password_file "$user")" "")
  read -ra rule <<<"$(worker_rule "$@")" # words, never globbed (~it.* is a key pattern)
  # ACL SETUSER applies the whole rule at once; "reset" makes a rerun with other patterns exact.
  [[ $(cli ACL SETUSER "$user" reset on "#$(sha256 "$password")" "${rule[@]}") == OK ]] \
    || die "ACL SETUSER $user failed"
  password_file "$user"
}

case ${1:-} in
  install) install ;;
  start) lock; start ;;
  stop) lock; stop ;;
  status) status ;;
  user) shift; lock; add_user "$@" ;;
  password-file) password_file "${2:-default}" ;;
  *)
    echo "usage: $0 install | start | stop | status | user NAME PATTERN..." \
      "| password-file [USER]" >&2
    exit 2
    ;;
esac
