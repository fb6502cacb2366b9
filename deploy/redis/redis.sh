#!/usr/bin/env bash
# Local Redis for development and tests: Debian's redis-server, password-protected, on loopback.
#
#   redis.sh install | start | stop | status
#
# Env: REDIS_PORT (6379), REDIS_PASSWORD (recstream: the project's default URL is
# redis://:recstream@127.0.0.1:6379/0), REDIS_START_TIMEOUT / REDIS_STOP_TIMEOUT (s, 20).
# State (config with the password, pid, log) lives in .stack/redis/. Nothing is persisted to disk:
# recommendations in Redis are a cache that the worker rewrites.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
state=$root/.stack/redis
port=${REDIS_PORT:-6379}
password=${REDIS_PASSWORD:-recstream}
pidfile=$state/redis.pid

die() { echo "redis: $*" >&2; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start and stop hold .stack/redis.lock: two callers at once (make up, a pytest session, another
# developer in the same clone) run one after the other instead of racing for the port. Servers are
# started with fd 9 closed, or they would hold the lock for as long as they run.
lock() {
  mkdir -p "$root/.stack"
  exec 9>"$root/.stack/redis.lock"
  flock -w 300 9 || die "another start/stop still holds .stack/redis.lock after 300s"
}

# Install a Debian package when a command is missing: root installs, anyone else is told how.
need() { # need COMMAND PACKAGE
  command -v "$1" >/dev/null && return 0
  [[ $(id -u) == 0 ]] || die "$1 not found: run 'sudo apt-get install -y $2'"
  echo "redis: installing $2 with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "$2" >/dev/null \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$2" >/dev/null; } \
    || die "apt-get install $2 failed"
  # Where no policy-rc.d prevents it, the package starts its system-wide service on the default
  # port (without our password or config): stop it, the stack runs its own instance.
  service "$2" stop >/dev/null 2>&1 || true
}

# Pid of our server if alive: redis-server runs in our state folder (`dir`), which guards against
# a recycled pid and against somebody else's redis-server.
server_pid() {
  local pid
  [[ -f $pidfile ]] && pid=$(cat "$pidfile") && [[ -n $pid ]] || return 1
  [[ $(readlink "/proc/$pid/cwd" 2>/dev/null) == "$state" ]] && echo "$pid"
}

# Alive and not a zombie (`kill -0` succeeds on a zombie that nothing has reaped yet).
alive() { local s; s=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $s != Z* ]]; }

# REDISCLI_AUTH keeps the password off the command line and silences redis-cli's warning.
cli() { REDISCLI_AUTH=$password redis-cli -h 127.0.0.1 -p "$port" "$@"; }

install() { need redis-server redis-server; need redis-cli redis-tools; }

start() {
  local deadline
  install
  if server_pid >/dev/null; then
    [[ $(cli ping 2>/dev/null) == PONG ]] \
      || die "pid $(cat "$pidfile") does not answer PING with this REDIS_PASSWORD and REDIS_PORT"
    echo "redis: already running on 127.0.0.1:$port"
    return 0
  fi
  port_open "$port" && die "127.0.0.1:$port is in use by another process: stop it or set REDIS_PORT"
  mkdir -p "$state"
  # The config file (mode 600) keeps the password out of `ps`.
  (
    umask 077
    cat >"$state/redis.conf" <<EOF
# Written by deploy/redis/redis.sh: edit the script, not this file.
bind 127.0.0.1
port $port
requirepass "$password"
daemonize yes
pidfile $pidfile
logfile $state/redis.log
dir $state
save ""
appendonly no
EOF
  )
  : >"$state/redis.log"
  redis-server "$state/redis.conf" 9>&- \
    || die "redis-server did not start: $(tail -n 5 "$state/redis.log")"
  deadline=$((SECONDS + ${REDIS_START_TIMEOUT:-20}))
  until [[ $(cli ping 2>/dev/null) == PONG ]]; do
    if ((SECONDS > deadline)); then
      tail -n 20 "$state/redis.log" >&2; stop >/dev/null
      die "no PONG after ${REDIS_START_TIMEOUT:-20}s (log: $state/redis.log)"
    fi
    sleep 0.1
  done
  echo "redis: up on 127.0.0.1:$port (pid $(cat "$pidfile"))"
}

stop() {
  local pid deadline
  if ! pid=$(server_pid); then rm -f "$pidfile"; echo "redis: stopped"; return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + ${REDIS_STOP_TIMEOUT:-20}))
  while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
  if alive "$pid"; then
    echo "redis: still running after ${REDIS_STOP_TIMEOUT:-20}s: SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  echo "redis: stopped (pid $pid)"
}

status() {
  local pid
  pid=$(server_pid) || { echo "redis: stopped"; return 3; }
  if [[ $(cli ping 2>/dev/null) == PONG ]]; then
    echo "redis: up (pid $pid, 127.0.0.1:$port)"
  else
    echo "redis: pid $pid does not answer PING on 127.0.0.1:$port"; return 3
  fi
}

case ${1:-} in
  install) install ;;
  start) lock; start ;;
  stop) lock; stop ;;
  status) status ;;
  *) echo "usage: $0 install | start | stop | status" >&2; exit 2 ;;
esac
