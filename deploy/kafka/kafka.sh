#!/usr/bin/env bash
# Local Apache Kafka in KRaft mode (no ZooKeeper), run straight from the jars that pom.xml resolves
# from Maven Central: no tarball, no Docker.
#
#   kafka.sh fetch                  resolve the jars into .cache/kafka-libs (no-op when up to date)
#   kafka.sh start [--brokers N]    start N combined broker+controller nodes, wait until healthy
#   kafka.sh stop [--node I]        SIGTERM, wait, SIGKILL after KAFKA_STOP_TIMEOUT; no stray JVM
#   kafka.sh status                 exit 0 when every node of the running cluster is up
#
# `start` starts only the nodes that are down, so a fault test can stop (or kill -9, pid in
# .stack/kafka/node-I/kafka.pid) one node and bring it back with the same start command.
#
# Node i (1..N) serves clients on 127.0.0.1:KAFKA_PORT+i-1 (9092, 9093, 9094) and the controller
# quorum on KAFKA_CONTROLLER_PORT+i-1 (default KAFKA_PORT+100: 9192, ...). State lives in
# .stack/kafka/ and survives stop/start (a restarted worker finds its offsets); `make clean`
# removes it.
# Other settings: BROKERS (default of --brokers, 1), KAFKA_PARTITIONS (num.partitions, 4),
# KAFKA_HEAP_OPTS, KAFKA_START_TIMEOUT (s, 120), KAFKA_STOP_TIMEOUT (s, 30).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The values ../lib.sh reads (see there), then this script's own.
name=kafka
stop_timeout=${KAFKA_STOP_TIMEOUT:-30}
stop_poll=0.3
kill_grace=0.5
# shellcheck source=SCRIPTDIR/../lib.sh
source "$here/../lib.sh" # root, state=.stack/kafka, die, port_open, lock, need, spawn, terminate
libs=$root/.cache/kafka-libs
port=${KAFKA_PORT:-9092}
cport=${KAFKA_CONTROLLER_PORT:-$((port + 100))}
# Small heap: three of these must fit next to the worker, BERT and pytest on a laptop.
heap=${KAFKA_HEAP_OPTS:--Xmx512m -Xms128m}

fetch() {
  # The stamp holds the pom's hash: a changed pom (new Kafka version) wipes and re-resolves.
  local want stamp=$libs/.pom.sha256
  want=$(sha256sum "$here/pom.xml" | cut -d' ' -f1)
  [[ -f $stamp && $(cat "$stamp") == "$want" ]] && return 0
  need java default-jre-headless
  need mvn maven
  echo "kafka: resolving the broker jars from Maven Central into .cache/kafka-libs" >&2
  rm -rf "$libs"
  mkdir -p "$root/.cache"
  mvn -B --no-transfer-progress -f "$here/pom.xml" -Dmaven.repo.local="$root/.cache/m2" \
    dependency:copy-dependencies >"$root/.cache/kafka-fetch.log" 2>&1 || {
    grep -E 'ERROR' "$root/.cache/kafka-fetch.log" | head -n 5 >&2
    die "mvn could not resolve deploy/kafka/pom.xml (log: .cache/kafka-fetch.log)"; }
  echo "$want" >"$stamp"
}

# Pid of node $1 if its JVM is alive; the cmdline check guards against a recycled pid.
node_pid() {
  local f=$state/node-$1/kafka.pid pid
  [[ -f $f ]] || return 1
  pid=$(cat "$f")
  grep -qF "$state/node-$1/server.properties" "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

# "N PORT" of the running cluster, written by start: status reports the ports it was started on.
running_nodes() {
  local n=0
  if [[ -f $state/nodes ]]; then read -r n _ <"$state/nodes"; fi
  echo "$n"
}

write_config() { # write_config NODE N
  local i=$1 n=$2 rf voters="" j
  rf=$((n < 3 ? 1 : 3))
  for ((j = 1; j <= n; j++)); do voters+="${voters:+,}$j@127.0.0.1:$((cport + j - 1))"; done
  mkdir -p "$state/node-$i"
  cat >"$state/node-$i/server.properties" <<EOF
# Written by deploy/kafka/kafka.sh: edit the script, not this file.
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$((port + i - 1)),CONTROLLER://127.0.0.1:$((cport + i - 1))
advertised.listeners=PLAINTEXT://127.0.0.1:$((port + i - 1))
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$state/node-$i/data
# Tests create many short-lived topics and groups: no waiting, few partitions.
num.partitions=${KAFKA_PARTITIONS:-4}
auto.create.topics.enable=true
delete.topic.enable=true
group.initial.rebalance.delay.ms=0
offsets.topic.num.partitions=10
default.replication.factor=$rf
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
share.coordinator.state.topic.replication.factor=$rf
min.insync.replicas=$((rf > 1 ? 2 : 1))
transaction.state.log.min.isr=$((rf > 1 ? 2 : 1))
share.coordinator.state.topic.min.isr=$((rf > 1 ? 2 : 1))
EOF
}

start() {
  local n=${BROKERS:-1} i p cid t0 deadline todo=()
  while (($#)); do
    case $1 in
      --brokers) n=${2:?--brokers needs a number}; shift 2 ;;
      --brokers=*) n=${1#*=}; shift ;;
      *) die "unknown option $1 (usage: kafka.sh start [--brokers N])" ;;
    esac
  done
  [[ $n =~ ^[1-9]$ ]] || die "--brokers must be 1..9, got '$n'"
  fetch
  if [[ $(running_nodes) != "$n" ]]; then
    for ((i = 1; i <= 9; i++)); do
      node_pid "$i" >/dev/null \
        && die "already running with $(running_nodes) node(s); run 'kafka.sh stop' first"
    done
  fi
  # Start only the nodes that are not running: after a fault test killed one node, the same
  # command brings it back and leaves the others alone.
  for ((i = 1; i <= n; i++)); do node_pid "$i" >/dev/null || todo+=("$i"); done
  if ((${#todo[@]} == 0)); then
    read -r _ p <"$state/nodes"
    echo "kafka: already running ($n node(s) from 127.0.0.1:$p)"
    return 0
  fi
  if ((${#todo[@]} == n)); then
    stop >/dev/null # JVMs of this checkout that lost their pid files
    # A cluster is formatted for a fixed quorum: a different node count starts from scratch.
    if [[ -f $state/formatted && $(cat "$state/formatted") != "$n" ]]; then
      echo "kafka: node count changed to $n: wiping .stack/kafka" >&2
      rm -rf "$state"
    fi
  fi
  for i in "${todo[@]}"; do
    for p in $((port + i - 1)) $((cport + i - 1)); do
      port_open "$p" && die "127.0.0.1:$p is in use by another process: stop it or set KAFKA_PORT"
    done
  done
  mkdir -p "$state"
  t0=$SECONDS
  if [[ ! -f $state/formatted ]]; then
    rm -rf "$state"/node-*
    # A cluster id is 16 random bytes, URL-safe base64 without padding (what StorageTool makes).
    cid=$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    for ((i = 1; i <= n; i++)); do
      write_config "$i" "$n"
      java -Dlog4j2.configurationFile="$here/log4j2.properties" -cp "$libs/*" \
        kafka.tools.StorageTool format -t "$cid" -c "$state/node-$i/server.properties" \
        >"$state/node-$i/format.log" 2>&1 9>&- \
        || die "formatting node $i failed: $(tail -n 5 "$state/node-$i/format.log")"
    done
    echo "$n" >"$state/formatted"
  fi
  echo "$n $port" >"$state/nodes"
  for i in "${todo[@]}"; do
    write_config "$i" "$n"
    # shellcheck disable=SC2086 # $heap is a list of JVM options
    spawn "$state/node-$i/kafka.pid" "$state/node-$i/kafka.log" \
      java $heap -XX:+UseG1GC -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$here/log4j2.properties" -cp "$libs/*" \
      kafka.Kafka "$state/node-$i/server.properties"
  done
  deadline=$((SECONDS + ${KAFKA_START_TIMEOUT:-120}))
  for i in "${todo[@]}"; do
    local log=$state/node-$i/kafka.log
    # Healthy = the broker logged that it finished starting and its client port answers.
    until grep -q 'Kafka Server started' "$log" 2>/dev/null && port_open $((port + i - 1)); do
      if ! node_pid "$i" >/dev/null && { sleep 0.5; ! node_pid "$i" >/dev/null; }; then
        tail -n 30 "$log" >&2; stop >/dev/null
        die "node $i exited during start-up (log: $log)"
      fi
      if ((SECONDS > deadline)); then
        tail -n 30 "$log" >&2; stop >/dev/null
        die "node $i not healthy after ${KAFKA_START_TIMEOUT:-120}s (log: $log)"
      fi
      sleep 0.3
    done
  done
  echo "kafka: node(s) ${todo[*]} of $n up, 127.0.0.1:$port..$((port + n - 1)), $((SECONDS - t0))s"
}

stop() {
  local pids=() i pid only=
  case ${1:-} in
    --node) only=${2:?--node needs a number} ;;
    --node=*) only=${1#*=} ;;
    "") ;;
    *) die "unknown option $1 (usage: kafka.sh stop [--node I])" ;;
  esac
  for ((i = 1; i <= 9; i++)); do
    [[ -z $only || $only == "$i" ]] || continue
    if pid=$(node_pid "$i"); then pids+=("$pid"); fi
  done
  # JVMs whose pid file was lost: matched by this checkout's own config path, nothing broader.
  for pid in $(pgrep -f -- "kafka.Kafka $state/node-${only:-[1-9]}/server" || true); do
    if [[ " ${pids[*]} " != *" $pid "* ]]; then pids+=("$pid"); fi
  done
  if ((${#pids[@]})); then terminate "${pids[@]}"; fi
  if [[ -n $only ]]; then
    rm -f "$state/node-$only/kafka.pid"
  else
    rm -f "$state"/node-*/kafka.pid "$state/nodes"
  fi
  echo "kafka: stopped${only:+ node $only}${pids[*]:+ (pid ${pids[*]})}"
}

status() {
  local n i ok=0 pid p
  n=$(running_nodes)
  ((n > 0)) || { echo "kafka: stopped"; return 3; }
  read -r _ p <"$state/nodes"
  for ((i = 1; i <= n; i++)); do
    if pid=$(node_pid "$i") && port_open $((p + i - 1)); then
      echo "kafka: node $i up (pid $pid, 127.0.0.1:$((p + i - 1)))"
    else
      echo "kafka: node $i DOWN (127.0.0.1:$((p + i - 1)), log: $state/node-$i/kafka.log)"; ok=3
    fi
  done
  return $ok
}

cmd=${1:-}
shift || true
case $cmd in
  fetch) fetch ;;
  start) lock; start "$@" ;;
  stop) lock; stop "$@" ;;
  status) status ;;
  *) echo "usage: $0 fetch | start [--brokers N] | stop [--node I] | status" >&2; exit 2 ;;
esac
