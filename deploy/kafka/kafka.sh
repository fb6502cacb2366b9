#!/usr/bin/env bash
# Local Apache Kafka in KRaft mode (no ZooKeeper), run straight from the jars that pom.xml resolves
# from Maven Central: no tarball, no Docker.
#
#   kafka.sh fetch                  resolve the jars into .cache/kafka-libs (no-op when up to date)
#   kafka.sh start [--brokers N]    start N combined broker+controller nodes, wait until healthy
#   kafka.sh stop [--node I]        SIGTERM, wait, SIGKILL after KAFKA_STOP_TIMEOUT; no stray JVM
#   kafka.sh status                 exit 0 when every node of the running cluster is up
#   kafka.sh nodes                  node count of the cluster started last (0 once stopped)
#   kafka.sh env                    SECURE=1 only: the RECSTREAM_* variables of the worker user
#
# `start` starts only the nodes that are down, so a fault test can stop (or kill -9, pid in
# .stack/kafka/node-I/kafka.pid) one node and bring it back with the same start command.
#
# Node i (1..N) serves clients on 127.0.0.1:KAFKA_PORT+i-1 (9092, 9093, 9094) and the controller
# quorum on KAFKA_CONTROLLER_PORT+i-1 (default KAFKA_PORT+100: 9192, ...). State lives in
# .stack/kafka/ and survives stop/start (a restarted worker finds its offsets); `make clean`
# removes it.
# Other settings: BROKERS (default of --brokers: the running cluster's node count, else the
# stopped one's, else 1),
# KAFKA_PARTITIONS (num.partitions, 4), KAFKA_HEAP_OPTS, KAFKA_START_TIMEOUT (s, 120),
# KAFKA_STOP_TIMEOUT (s, 30).
#
# KAFKA_STATE=DIR runs a second, independent cluster from the same clone: its state, pid files,
# logs and lock (DIR.lock) live in DIR instead of .stack/kafka, and every command (start, stop,
# stop --node, status) acts on that cluster only. Give it ports of its own too (KAFKA_PORT, and
# KAFKA_CONTROLLER_PORT if KAFKA_PORT+100.. is taken): the tests' private 3-node cluster
# (tests/integration/cluster.py) runs that way next to the shared one on 9092.
#
# SECURE=1 selects a second, independent cluster that can run next to the plaintext one: state in
# .stack/kafka-secure/, clients on 127.0.0.1:KAFKA_SECURE_PORT (9392...) over SASL_SSL
# (SCRAM-SHA-512 on TLS), controllers on KAFKA_SECURE_PORT+100 over mutual TLS, and
# StandardAuthorizer: nothing is allowed without an ACL. On its first start it generates, all
# readable by their owner only:
#   ca.pem            a CA (its key is deleted once it has signed) the clients trust
#   broker.pem        the brokers' key and certificate (127.0.0.1, localhost), signed by that CA
#   admin.password    super user "admin": the brokers' own SASL login, and the ACL set-up
#   worker.password   user "recstream", allowed only topics and groups named KAFKA_ACL_PREFIX*
#                     (default recstream): produce, consume, create topics, commit offsets
#   admin.properties  --command-config of the Kafka tools for admin
#   client.env        the RECSTREAM_* variables that connect as "recstream" (`kafka.sh env`)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
secure=${SECURE:-0}
[[ $secure =~ ^[01]?$ ]] || { echo "kafka: SECURE must be 1 or 0, got '$secure'" >&2; exit 2; }
secure=${secure:-0}
# The values ../lib.sh reads (see there), then this script's own. The secure cluster has its own
# name, hence its own state folder and lock.
if ((secure)); then name=kafka-secure; else name=kafka; fi
stop_timeout=${KAFKA_STOP_TIMEOUT:-30}
stop_poll=0.3
kill_grace=0.5
# shellcheck source=SCRIPTDIR/../lib.sh
source "$here/../lib.sh" # root, state=.stack/kafka, die, port_open, lock, need, spawn, terminate
if [[ -n ${KAFKA_STATE:-} ]]; then
  state=$(realpath -m "$KAFKA_STATE")
  lockfile=$state.lock
fi
libs=$root/.cache/kafka-libs
if ((secure)); then
  port_var=KAFKA_SECURE_PORT
  port=${KAFKA_SECURE_PORT:-9392}
  cport=${KAFKA_SECURE_CONTROLLER_PORT:-$((port + 100))}
  acl_prefix=${KAFKA_ACL_PREFIX:-recstream}
  worker_user=recstream
  # Keys, passwords and configs with passwords in them: nobody else may read anything in
  # .stack/kafka-secure (.stack itself is made first, with the usual mode).
  mkdir -p "$root/.stack"
  umask 077
else
  port_var=KAFKA_PORT
  port=${KAFKA_PORT:-9092}
  cport=${KAFKA_CONTROLLER_PORT:-$((port + 100))}
fi
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
  local i=$1 n=$2 rf voters="" j client=PLAINTEXT controller=PLAINTEXT
  rf=$((n < 3 ? 1 : 3))
  for ((j = 1; j <= n; j++)); do voters+="${voters:+,}$j@127.0.0.1:$((cport + j - 1))"; done
  if ((secure)); then client=SASL_SSL controller=SSL; fi
  mkdir -p "$state/node-$i"
  cat >"$state/node-$i/server.properties" <<EOF
# Written by deploy/kafka/kafka.sh: edit the script, not this file.
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$voters
listeners=$client://127.0.0.1:$((port + i - 1)),CONTROLLER://127.0.0.1:$((cport + i - 1))
advertised.listeners=$client://127.0.0.1:$((port + i - 1))
listener.security.protocol.map=$client:$client,CONTROLLER:$controller
controller.listener.names=CONTROLLER
inter.broker.listener.name=$client
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
  if ((secure)); then security_config >>"$state/node-$i/server.properties"; fi
}

# --- Secure cluster (SECURE=1) ----------------------------------------------------------------

# The security half of a secure node's server.properties.
security_config() {
  cat <<EOF
# SASL_SSL for clients and between brokers (as admin); mutual TLS to the controllers.
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=$(jaas admin "$(<"$state/admin.password")")
ssl.keystore.type=PEM
ssl.keystore.location=$state/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$state/ca.pem
listener.name.controller.ssl.client.auth=required
# Nothing is allowed without an ACL, except to the super users: admin, and the brokers on the
# controller listener (the name in their certificate).
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin;User:CN=kafka-broker
EOF
}

jaas() { # jaas USER PASSWORD: the sasl.jaas.config value of a SCRAM login
  local module=org.apache.kafka.common.security.scram.ScramLoginModule
  echo "$module required username=\"$1\" password=\"$2\";"
}

# A CA and the brokers' certificate, signed by it, for 127.0.0.1 and localhost (what clients
# dial: they check the name). Made again when missing or expiring within a day. The CA's key
# only lives for the signing: nobody can make another certificate the clients would trust.
make_tls() {
  local ca_key ext
  if [[ -s $state/ca.pem && -s $state/broker.pem ]] \
    && openssl x509 -checkend 86400 -noout -in "$state/broker.pem" >/dev/null; then
    return 0
  fi
  echo "$name: generating a CA and the broker certificate in ${state#"$root"/}" >&2
  ca_key=$(mktemp "$state/ca-key.XXXXXX")
  ext=$(mktemp "$state/ext.XXXXXX")
  cat >"$ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
  {
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
      -subj "/CN=recstream local Kafka CA" -keyout "$ca_key" -out "$state/ca.pem" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    # broker.pem = key (PKCS#8, what Kafka's PEM keystore reads) + certificate.
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -subj "/CN=kafka-broker" -keyout "$state/broker.pem" \
      | openssl x509 -req -days 365 -CA "$state/ca.pem" -CAkey "$ca_key" \
        -set_serial "0x$(openssl rand -hex 16)" -extfile "$ext" >>"$state/broker.pem"
  } 2>"$state/tls.log" || { rm -f "$ca_key"; die "openssl failed: $(tail -n 5 "$state/tls.log")"; }
  rm -f "$ca_key" "$ext" "$state/tls.log"
}

# The SCRAM users' passwords, once per formatted cluster (they are stored in its metadata log).
make_passwords() {
  local user
  for user in admin worker; do openssl rand -hex 24 >"$state/$user.password"; done
}

# Admin's --command-config for the Kafka tools; client.env for the worker user.
write_client_files() {
  cat >"$state/admin.properties" <<EOF
# Written by deploy/kafka/kafka.sh: the Kafka tools' --command-config for the super user.
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=$(jaas admin "$(<"$state/admin.password")")
ssl.truststore.type=PEM
ssl.truststore.location=$state/ca.pem
EOF
  {
    echo "# Written by deploy/kafka/kafka.sh: 'source' it to connect as the worker user."
    printf 'export RECSTREAM_BROKER=%q\n' "kafka://127.0.0.1:$port"
    echo "export RECSTREAM_KAFKA_SECURITY_PROTOCOL=SASL_SSL"
    echo "export RECSTREAM_KAFKA_SASL_MECHANISM=SCRAM-SHA-512"
    echo "export RECSTREAM_KAFKA_USERNAME=$worker_user"
    printf 'export RECSTREAM_KAFKA_PASSWORD_FILE=%q\n' "$state/worker.password"
    printf 'export RECSTREAM_KAFKA_SSL_CAFILE=%q\n' "$state/ca.pem"
  } >"$state/client.env"
}

# The worker user's ACLs, by prefix: produce (Write, Create, Describe) and consume (Read) on its
# topics, Read on its consumer groups (join, commit, fetch offsets). Once per prefix: ACLs live
# in the metadata log.
grant_acls() {
  [[ -f $state/acls && $(cat "$state/acls") == "$acl_prefix" ]] && return 0
  java -Xmx256m -Dlog4j2.configurationFile="$here/log4j2.properties" -cp "$libs/*" \
    org.apache.kafka.tools.AclCommand --bootstrap-server "127.0.0.1:$port" \
    --command-config "$state/admin.properties" --add --allow-principal "User:$worker_user" \
    --producer --consumer --resource-pattern-type prefixed \
    --topic "$acl_prefix" --group "$acl_prefix" >"$state/acls.log" 2>&1 9>&- \
    || die "setting the ACLs failed: $(tail -n 5 "$state/acls.log")"
  echo "$acl_prefix" >"$state/acls"
}

start() {
  local n=${BROKERS:-} i p cid t0 deadline todo=()
  while (($#)); do
    case $1 in
      --brokers) n=${2:?--brokers needs a number}; shift 2 ;;
      --brokers=*) n=${1#*=}; shift ;;
      *) die "unknown option $1 (usage: kafka.sh start [--brokers N])" ;;
    esac
  done
  # No count given: the running cluster's (`make up BROKERS=3`, then `make run`), else the one
  # the state was formatted for (a stopped cluster comes back as it was), else 1.
  if [[ -z $n ]]; then
    n=$(running_nodes)
    if ((n == 0)); then n=$(cat "$state/formatted" 2>/dev/null || echo 1); fi
  fi
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
    echo "$name: already running ($n node(s) from 127.0.0.1:$p)"
    if ((secure)); then secure_ready; fi
    return 0
  fi
  if ((${#todo[@]} == n)); then
    stop >/dev/null # JVMs of this checkout that lost their pid files
    # A cluster is formatted for a fixed quorum: a different node count starts from scratch.
    if [[ -f $state/formatted && $(cat "$state/formatted") != "$n" ]]; then
      echo "$name: node count changed to $n: wiping ${state#"$root"/}" >&2
      rm -rf "$state"
    fi
  fi
  for i in "${todo[@]}"; do
    for p in $((port + i - 1)) $((cport + i - 1)); do
      port_open "$p" \
        && die "127.0.0.1:$p is in use by another process: stop it or set ${port_var}"
    done
  done
  mkdir -p "$state"
  t0=$SECONDS
  if ((secure)); then
    need openssl openssl
    make_tls
  fi
  if [[ ! -f $state/formatted ]]; then
    rm -rf "$state"/node-* "$state/acls"
    if ((secure)); then make_passwords; fi
    # A cluster id is 16 random bytes, URL-safe base64 without padding (what StorageTool makes).
    # Like Kafka's Uuid.randomUuid, draw again while it starts with '-': StorageTool's argument
    # parser would read "-t -Abc..." as a missing value (1 start in 64 failed that way in CI).
    cid=-
    while [[ $cid == -* ]]; do
      cid=$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    done
    for ((i = 1; i <= n; i++)); do
      write_config "$i" "$n"
      format_node "$i" "$cid"
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
  echo "$name: node(s) ${todo[*]} of $n up, 127.0.0.1:$port..$((port + n - 1)), $((SECONDS - t0))s"
  if ((secure)); then secure_ready; fi
}

format_node() { # format_node NODE CLUSTER_ID
  local i=$1 args
  args=(kafka.tools.StorageTool format -t "$2" -c "$state/node-$i/server.properties")
  # The SCRAM users go into the metadata log at format time. Their passwords reach StorageTool
  # through a java @argfile (mode 600, removed after), never on a command line that ps shows.
  if ((secure)); then
    args+=(--add-scram "SCRAM-SHA-512=[name=admin,password=$(<"$state/admin.password")]")
    args+=(--add-scram "SCRAM-SHA-512=[name=$worker_user,password=$(<"$state/worker.password")]")
  fi
  printf '"%s"\n' "${args[@]}" >"$state/node-$i/format.args"
  java -Dlog4j2.configurationFile="$here/log4j2.properties" -cp "$libs/*" \
    "@$state/node-$i/format.args" >"$state/node-$i/format.log" 2>&1 9>&- \
    || { rm -f "$state/node-$i/format.args"
      die "formatting node $i failed: $(tail -n 5 "$state/node-$i/format.log")"; }
  rm -f "$state/node-$i/format.args"
}

# After a secure start (or a start that found the cluster running): the worker user's ACLs, the
# client files, and how to connect.
secure_ready() {
  write_client_files
  grant_acls
  echo "$name: SASL_SSL (SCRAM-SHA-512) as '$worker_user', allowed topics and groups" \
    "'$acl_prefix*'; connect with (also in ${state#"$root"/}/client.env):"
  grep '^export' "$state/client.env"
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
  echo "$name: stopped${only:+ node $only}${pids[*]:+ (pid ${pids[*]})}"
}

status() {
  local n i ok=0 pid p
  n=$(running_nodes)
  ((n > 0)) || { echo "$name: stopped"; return 3; }
  read -r _ p <"$state/nodes"
  for ((i = 1; i <= n; i++)); do
    if pid=$(node_pid "$i") && port_open $((p + i - 1)); then
      echo "$name: node $i up (pid $pid, 127.0.0.1:$((p + i - 1)))"
    else
      echo "$name: node $i DOWN (127.0.0.1:$((p + i - 1)), log: $state/node-$i/kafka.log)"; ok=3
    fi
  done
  return $ok
}

cmd=${1:-}
shift || true
case $cmd in
  fetch) fetch ;;
  # kcat (librdkafka, Debian's package): a Kafka client nobody here wrote, for the tests that
  # produce with every compression codec (tests/integration/test_hostile_stream.py)
  tools) need kcat kcat ;;
  start) lock; start "$@" ;;
  stop) lock; stop "$@" ;;
  status) status ;;
  nodes) running_nodes ;;
  env)
    ((secure)) || die "env: only the secure cluster has credentials (SECURE=1)"
    [[ -f $state/client.env ]] || die "env: not started yet (SECURE=1 kafka.sh start)"
    grep '^export' "$state/client.env" ;;
  *) echo "usage: $0 fetch | tools | start [--brokers N] | stop [--node I] | status | nodes | env" >&2
     exit 2 ;;
esac
