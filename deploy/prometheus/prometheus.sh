#!/usr/bin/env bash
# Local Prometheus scraping the worker (prometheus.yml) with the alert rules (alerts.yml).
#
#   prometheus.sh install | start | stop | status
#
# Debian's prometheus package (it also brings promtool, which the tests use). Prometheus is
# optional for the stack: without it and without root to install it, `start` prints how to get it
# and exits 0. Env: PROMETHEUS_PORT (9090), PROMETHEUS_START_TIMEOUT / _STOP_TIMEOUT (s, 30).
# Storage lives in .stack/prometheus/ (2 days of retention).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
state=$root/.stack/prometheus
port=${PROMETHEUS_PORT:-9090}
pidfile=$state/prometheus.pid

die() { echo "prometheus: $*" >&2; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
alive() { local s; s=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $s != Z* ]]; }

# start and stop hold .stack/prometheus.lock: two callers at once (make up, a pytest session,
# another developer in the same clone) run one after the other instead of racing for the port. Servers are
# started with fd 9 closed, or they would hold the lock for as long as they run.
lock() {
  mkdir -p "$root/.stack"
  exec 9>"$root/.stack/prometheus.lock"
  flock -w 300 9 || die "another start/stop still holds .stack/prometheus.lock after 300s"
}

# GET /-/ready with bash alone (curl is not on every machine).
ready() {
  local line
  exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
  printf 'GET /-/ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
  read -r -t 2 line <&3 || true
  exec 3<&-
  [[ $line == *" 200 "* ]]
}

install() {
  command -v prometheus >/dev/null && command -v promtool >/dev/null && return 0
  if [[ $(id -u) != 0 ]]; then
    echo "prometheus: not installed: run 'sudo apt-get install -y prometheus'" >&2
    return 1
  fi
  echo "prometheus: installing prometheus (and promtool) with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  # --no-install-recommends: not node-exporter and its collectors, which we do not use.
  local apt=(apt-get install -y -qq --no-install-recommends prometheus)
  "${apt[@]}" >/dev/null || { apt-get update -qq && "${apt[@]}" >/dev/null; } \
    || die "apt-get install prometheus failed"
  # Where no policy-rc.d prevents it, the package starts its system-wide service on port 9090
  # with its own config: stop it, the stack runs its own instance.
  service prometheus stop >/dev/null 2>&1 || true
}

server_pid() {
  local pid
  [[ -f $pidfile ]] && pid=$(cat "$pidfile") && [[ -n $pid ]] || return 1
  grep -qF "$state/data" "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

start() {
  local deadline
  install || { echo "prometheus: skipped (the stack works without it)" >&2; return 0; }
  if server_pid >/dev/null; then echo "prometheus: already running on 127.0.0.1:$port"; return 0; fi
  port_open "$port" \
    && die "127.0.0.1:$port is in use by another process: stop it or set PROMETHEUS_PORT"
  mkdir -p "$state/data"
  # setsid + exec: detached from the caller's terminal, and the pid file is prometheus's own pid.
  # shellcheck disable=SC2016 # $$ and $0 belong to the inner shell
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" \
    prometheus --config.file="$here/prometheus.yml" --storage.tsdb.path="$state/data" \
    --storage.tsdb.retention.time=2d --web.listen-address="127.0.0.1:$port" \
    >"$state/prometheus.log" 2>&1 </dev/null 9>&- &
  deadline=$((SECONDS + ${PROMETHEUS_START_TIMEOUT:-30}))
  until ready 2>/dev/null; do
    if ((SECONDS > deadline)) || { sleep 0.3; ! server_pid >/dev/null; }; then
      tail -n 20 "$state/prometheus.log" >&2; stop >/dev/null
      die "not ready on 127.0.0.1:$port (log: $state/prometheus.log)"
    fi
  done
  echo "prometheus: up on http://127.0.0.1:$port (pid $(cat "$pidfile"))"
}

stop() {
  local pid deadline
  if ! pid=$(server_pid); then rm -f "$pidfile"; echo "prometheus: stopped"; return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + ${PROMETHEUS_STOP_TIMEOUT:-30}))
  while alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
  if alive "$pid"; then
    echo "prometheus: still running after ${PROMETHEUS_STOP_TIMEOUT:-30}s: SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  echo "prometheus: stopped (pid $pid)"
}

status() {
  local pid
  pid=$(server_pid) || { echo "prometheus: stopped"; return 3; }
  ready 2>/dev/null || { echo "prometheus: pid $pid not ready on 127.0.0.1:$port"; return 3; }
  echo "prometheus: up (pid $pid, http://127.0.0.1:$port)"
}

case ${1:-} in
  install) install ;;
  start) lock; start ;;
  stop) lock; stop ;;
  status) status ;;
  *) echo "usage: $0 install | start | stop | status" >&2; exit 2 ;;
esac
