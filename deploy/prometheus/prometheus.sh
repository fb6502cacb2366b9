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
# The values ../lib.sh reads (see there), then this script's own.
name=prometheus
stop_timeout=${PROMETHEUS_STOP_TIMEOUT:-30}
stop_poll=0.2
stop_package_service=1
port=${PROMETHEUS_PORT:-9090}
url=http://127.0.0.1:$port
unhealthy="not ready"
# shellcheck source=SCRIPTDIR/../lib.sh
source "$here/../lib.sh" # root, state=.stack/prometheus, die, lock, spawn, stop, status...
pidfile=$state/prometheus.pid

# Our server is the prometheus whose storage is our state folder (not a recycled pid, not
# somebody else's prometheus).
ours() { grep -qF "$state/data" "/proc/$1/cmdline" 2>/dev/null; }

# GET /-/ready with bash alone (curl is not on every machine).
ready() {
  local line
  exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
  printf 'GET /-/ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
  read -r -t 2 line <&3 || true
  exec 3<&-
  [[ $line == *" 200 "* ]]
}
healthy() { ready 2>/dev/null; }

install() {
  command -v prometheus >/dev/null && command -v promtool >/dev/null && return 0
  if [[ $(id -u) != 0 ]]; then
    echo "prometheus: not installed: run 'sudo apt-get install -y prometheus'" >&2
    return 1
  fi
  echo "prometheus: installing prometheus (and promtool) with apt-get" >&2
  apt_install prometheus
}

start() {
  local deadline
  install || { echo "prometheus: skipped (the stack works without it)" >&2; return 0; }
  if server_pid >/dev/null; then echo "prometheus: already running on 127.0.0.1:$port"; return 0; fi
  port_open "$port" \
    && die "127.0.0.1:$port is in use by another process: stop it or set PROMETHEUS_PORT"
  mkdir -p "$state/data"
  spawn "$pidfile" "$state/prometheus.log" \
    prometheus --config.file="$here/prometheus.yml" --storage.tsdb.path="$state/data" \
    --storage.tsdb.retention.time=2d --web.listen-address="127.0.0.1:$port"
  deadline=$((SECONDS + ${PROMETHEUS_START_TIMEOUT:-30}))
  until healthy; do
    if ((SECONDS > deadline)) || { sleep 0.3; ! server_pid >/dev/null; }; then
      tail -n 20 "$state/prometheus.log" >&2; stop >/dev/null
      die "not ready on 127.0.0.1:$port (log: $state/prometheus.log)"
    fi
  done
  echo "prometheus: up on http://127.0.0.1:$port (pid $(cat "$pidfile"))"
}

case ${1:-} in
  install) install ;;
  start) lock; start ;;
  stop) lock; stop ;;
  status) status ;;
  *) echo "usage: $0 install | start | stop | status" >&2; exit 2 ;;
esac
