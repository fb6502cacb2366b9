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
# The values ../lib.sh reads (see there), then this script's own.
name=redis
stop_timeout=${REDIS_STOP_TIMEOUT:-20}
stop_poll=0.1
stop_package_service=1
port=${REDIS_PORT:-6379}
password=${REDIS_PASSWORD:-recstream}
url=127.0.0.1:$port
unhealthy="does not answer PING"
# shellcheck source=SCRIPTDIR/../lib.sh
source "$here/../lib.sh" # root, state=.stack/redis, die, lock, need, stop, status...
pidfile=$state/redis.pid

# redis-server runs in our state folder (`dir`): that tells our server from a recycled pid or
# somebody else's redis-server.
ours() { [[ $(readlink "/proc/$1/cwd" 2>/dev/null) == "$state" ]]; }

# REDISCLI_AUTH keeps the password off the command line and silences redis-cli's warning.
cli() { REDISCLI_AUTH=$password redis-cli -h 127.0.0.1 -p "$port" "$@"; }

healthy() { [[ $(cli ping 2>/dev/null) == PONG ]]; }

install() { need redis-server redis-server; need redis-cli redis-tools; }

start() {
  local deadline
  install
  if server_pid >/dev/null; then
    healthy \
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
  until healthy; do
    if ((SECONDS > deadline)); then
      tail -n 20 "$state/redis.log" >&2; stop >/dev/null
      die "no PONG after ${REDIS_START_TIMEOUT:-20}s (log: $state/redis.log)"
    fi
    sleep 0.1
  done
  echo "redis: up on 127.0.0.1:$port (pid $(cat "$pidfile"))"
}

case ${1:-} in
  install) install ;;
  start) lock; start ;;
  stop) lock; stop ;;
  status) status ;;
  *) echo "usage: $0 install | start | stop | status" >&2; exit 2 ;;
esac
