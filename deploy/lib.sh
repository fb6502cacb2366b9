# shellcheck shell=bash
# Helpers shared by the stack scripts (kafka/kafka.sh, redis/redis.sh, prometheus/prometheus.sh).
# Not run on its own: each script sources it after setting
#   name          the service: message prefix ("redis: ..."), .stack/NAME/ and .stack/NAME.lock
#   stop_timeout  seconds from SIGTERM to SIGKILL (the service's *_STOP_TIMEOUT)
#   stop_poll     seconds between two checks while waiting for the server to exit
#   kill_grace    optional: seconds to wait after a SIGKILL
#   stop_package_service  optional, 1: apt_install stops the system-wide service of the package
# and gets root (the checkout) and state (.stack/NAME) set.
#
# stop and status at the end serve the one-server scripts (redis.sh, prometheus.sh), which also
# set pidfile, port, url (where status says the server listens) and unhealthy (what status says
# when it does not answer), and define ours PID (is PID our server?) and healthy (does it
# answer?). kafka.sh runs N nodes: it has its own stop and status, built on terminate and alive.
: "${name:?}" "${stop_timeout:?}" "${stop_poll:?}"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC2034 # used by the sourcing scripts
state=$root/.stack/$name

die() { echo "$name: $*" >&2; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start and stop hold .stack/NAME.lock (or $lockfile, when the sourcing script sets one: a
# second instance with a state folder of its own): two callers at once (make up, a pytest session,
# another developer in the same clone) run one after the other instead of racing for the port.
# Servers are started with fd 9 closed, or they would hold the lock for as long as they run.
lock() {
  local file=${lockfile:-$root/.stack/$name.lock}
  mkdir -p "$(dirname "$file")"
  exec 9>"$file"
  flock -w 300 9 || die "another start/stop still holds ${file#"$root"/} after 300s"
}

# apt_install PACKAGE, quietly; when it fails, once more after apt-get update (stale lists).
# --no-install-recommends: e.g. not node-exporter and its collectors with prometheus.
apt_install() {
  local apt=(apt-get install -y -qq --no-install-recommends "$1")
  export DEBIAN_FRONTEND=noninteractive
  "${apt[@]}" >/dev/null || { apt-get update -qq && "${apt[@]}" >/dev/null; } \
    || die "apt-get install $1 failed"
  # Where no policy-rc.d prevents it, a server package starts its system-wide service on the
  # default port (without our config): stop it, the stack runs its own instance.
  if [[ ${stop_package_service:-} == 1 ]]; then service "$1" stop >/dev/null 2>&1 || true; fi
}

# Install a Debian package when a command is missing: root installs, anyone else is told how.
need() { # need COMMAND PACKAGE
  command -v "$1" >/dev/null && return 0
  [[ $(id -u) == 0 ]] || die "$1 not found: run 'sudo apt-get install -y $2'"
  echo "$name: installing $2 with apt-get" >&2
  apt_install "$2"
}

# setsid COMMAND... in the background: detached from the caller's terminal (it outlives `make up`
# and ignores a Ctrl-C aimed at the caller), output to LOG, fd 9 (the lock) closed. The inner
# shell writes its own pid to PIDFILE before exec'ing COMMAND, so the pid file is the server's.
spawn() { # spawn PIDFILE LOG COMMAND...
  local pf=$1 log=$2
  shift 2
  # shellcheck disable=SC2016 # $$ and $0 belong to the inner shell
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pf" "$@" >"$log" 2>&1 </dev/null 9>&- &
}

# True while any of the pids is alive and not a zombie (`kill -0` succeeds on a zombie, and an
# orphaned server may stay one for a while where nothing reaps it).
alive() {
  local p s
  for p; do s=$(ps -o stat= -p "$p" 2>/dev/null) && [[ $s != Z* ]] && return 0; done
  return 1
}

# terminate PID...: SIGTERM, wait up to stop_timeout, then SIGKILL whatever is still alive.
terminate() {
  local deadline
  kill -TERM "$@" 2>/dev/null || true
  deadline=$((SECONDS + stop_timeout))
  while alive "$@" && ((SECONDS < deadline)); do sleep "$stop_poll"; done
  if alive "$@"; then
    echo "$name: still running after ${stop_timeout}s: SIGKILL" >&2
    kill -KILL "$@" 2>/dev/null || true
    if [[ -n ${kill_grace:-} ]]; then sleep "$kill_grace"; fi
  fi
}

# Pid of our server if alive: the pid file names it and `ours` confirms it (against a recycled
# pid and against somebody else's server).
# shellcheck disable=SC2154 # pidfile: set by the sourcing script
server_pid() {
  local pid
  [[ -f $pidfile ]] && pid=$(cat "$pidfile") && [[ -n $pid ]] || return 1
  ours "$pid" && echo "$pid"
}

stop() {
  local pid
  if ! pid=$(server_pid); then rm -f "$pidfile"; echo "$name: stopped"; return 0; fi
  terminate "$pid"
  rm -f "$pidfile"
  echo "$name: stopped (pid $pid)"
}

# Exit status 3 when stopped or not answering.
# shellcheck disable=SC2154 # port, unhealthy, url: set by the sourcing script
status() {
  local pid
  pid=$(server_pid) || { echo "$name: stopped"; return 3; }
  healthy || { echo "$name: pid $pid $unhealthy on 127.0.0.1:$port"; return 3; }
  echo "$name: up (pid $pid, $url)"
}
