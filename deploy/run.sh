#!/usr/bin/env bash
# The `make run` demo (the Makefile has already run `make setup up`: Kafka, Redis, Prometheus).
#
#   1. starts the worker in the background (log: .stack/run/worker.log) and waits for /healthz;
#   2. replays a stream into Kafka with `recstream produce` (catalogue first, then events);
#   3. prints every recommendation as it is published (`recstream consume --follow`), with
#      shortened item titles (the consumer reads the items topic too);
#   4. prints the URLs: the live page (/), /metrics, /recommendations/<user> and Prometheus.
# Ctrl-C stops the worker cleanly (it checkpoints on SIGTERM) and the other children. The stack
# is left running, so the next `make run` resumes from the checkpoint: `make down` stops it.
#
# Settings (environment):
#   DATA=dir     replay a dataset folder (items.csv + events.csv) instead of the synthetic stream
#   RATE=25      events per second (0 = as fast as possible)
#   LIMIT=n      send at most n events
#   SEED=n       synthetic stream seed; default: new each run, so a second run is new traffic for
#                the same users and items (a replayed DATA folder is deduplicated by event_id:
#                `make clean` starts over)
#   RECSTREAM_*  any worker setting (recstream/config.py), e.g. RECSTREAM_WEB_PORT=6067; without
#                RECSTREAM_REDIS_URL the worker writes to the stack's Redis as its ACL user;
#                on a cluster of N > 1 brokers RECSTREAM_REPLICATION_FACTOR defaults to min(3, N)
#                and RECSTREAM_BROKER to every node
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bin=$root/.venv/bin
[[ -x $bin/recstream ]] || { echo "run: $bin/recstream missing: run 'make setup' first" >&2; exit 1; }

DATA=${DATA:-}
RATE=${RATE:-25}
LIMIT=${LIMIT:-}
SEED=${SEED:-$(date +%s)}
port=${RECSTREAM_WEB_PORT:-6066}
logs=$root/.stack/run
mkdir -p "$logs"

pids=()
stopping=0
cleanup() {
  ((stopping)) && return
  stopping=1
  trap - INT TERM EXIT
  echo
  echo "run: stopping (the worker writes a final checkpoint)..."
  # The worker first, and waited for: its SIGTERM handler checkpoints before it exits.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "run: worker stopped; log in ${logs#"$root"/}/worker.log"
  echo "run: the stack (Kafka, Redis, Prometheus) is still up: 'make down' stops it"
}
trap cleanup INT TERM EXIT

healthz() { curl -fsS --max-time 2 "http://127.0.0.1:$port/healthz" 2>/dev/null; }

if healthz >/dev/null; then
  echo "run: something already answers on port $port (another worker?): stop it or set RECSTREAM_WEB_PORT" >&2
  exit 1
fi

# The worker logs in to Redis as its ACL user, with the password file deploy/redis/redis.sh
# made, never as the admin; a RECSTREAM_REDIS_URL of your own brings its own credentials.
if [[ -z ${RECSTREAM_REDIS_URL:-} ]]; then
  export RECSTREAM_REDIS_URL=redis://127.0.0.1:${REDIS_PORT:-6379}/0
  : "${RECSTREAM_REDIS_USERNAME:=${REDIS_WORKER_USER:-recstream-worker}}"
  export RECSTREAM_REDIS_USERNAME
  if [[ -z ${RECSTREAM_REDIS_PASSWORD:-} && -z ${RECSTREAM_REDIS_PASSWORD_FILE:-} ]]; then
    RECSTREAM_REDIS_PASSWORD_FILE=$(deploy/redis/redis.sh password-file "$RECSTREAM_REDIS_USERNAME")
    export RECSTREAM_REDIS_PASSWORD_FILE
  fi
fi

# SECURE=1 (`make run SECURE=1`): the worker, producer and consumer talk to the secure Kafka as its
# worker user, with the variables deploy/kafka/kafka.sh wrote (TLS CA, user, password file).
if [[ ${SECURE:-0} == 1 ]]; then
  # shellcheck source=/dev/null
  source "$root/.stack/kafka-secure/client.env" \
    || { echo "run: no secure Kafka credentials: run 'make up SECURE=1' first" >&2; exit 1; }
fi

# A cluster of several brokers (`make up BROKERS=3`): the topics the worker, producer and consumer
# create get a replication factor of min(3, nodes) (3 nodes: min.insync.replicas is 2, so one
# node may be down), and the clients bootstrap from every node, not only the first.
nodes=$(deploy/kafka/kafka.sh nodes)
if ((nodes > 1)); then
  : "${RECSTREAM_REPLICATION_FACTOR:=$((nodes < 3 ? nodes : 3))}"
  export RECSTREAM_REPLICATION_FACTOR
  if [[ -z ${RECSTREAM_BROKER:-} ]]; then
    RECSTREAM_BROKER=$(for ((i = 0; i < nodes; i++)); do
      printf 'kafka://127.0.0.1:%d,' $((${KAFKA_PORT:-9092} + i)); done)
    export RECSTREAM_BROKER=${RECSTREAM_BROKER%,}
  fi
  echo "run: Kafka has $nodes nodes: replication factor $RECSTREAM_REPLICATION_FACTOR"
fi

echo "run: starting the worker (log: ${logs#"$root"/}/worker.log)"
"$bin/recstream" worker >"$logs/worker.log" 2>&1 &
worker=$!
pids+=("$worker")
for ((i = 0; ; i++)); do
  healthz >/dev/null && break
  if ! kill -0 "$worker" 2>/dev/null || ((i > 240)); then
    echo "run: the worker did not come up; its log ends with:" >&2
    tail -n 25 "$logs/worker.log" >&2
    exit 1
  fi
  sleep 0.5
done
processed=$(healthz | "$bin/python" -c 'import json,sys; print(json.load(sys.stdin)["events_processed"])')
((processed > 0)) && echo "run: resumed from a checkpoint: $processed events already learned"

# Live recommendations, one line each, from now on.
"$bin/recstream" consume --follow &
pids+=($!)

args=(--no-progress)
[[ $RATE != 0 ]] && args+=(--rate "$RATE")
[[ -n $LIMIT ]] && args+=(--limit "$LIMIT")
if [[ -n $DATA ]]; then
  user=$(sed -n 2p "$DATA/events.csv" | cut -d, -f2)
  source=("$DATA")
else
  user=u0
  source=(--synthetic --seed "$SEED")
fi
"$bin/recstream" produce "${source[@]}" "${args[@]}" 2>"$logs/produce.log" &
producer=$!
pids+=("$producer")

# The live page needs the token too, when the worker has one: given once in the URL.
page="http://127.0.0.1:$port/"
[[ -n ${RECSTREAM_WEB_TOKEN:-}${RECSTREAM_WEB_TOKEN_FILE:-} ]] && page+="?token=<your token>"
cat <<EOF
run: replaying ${DATA:-a synthetic stream (seed $SEED)} at ${RATE/#0/max} events/s
run:   live page        open $page  (pick a user, press view / click / buy)
run:   metrics          http://127.0.0.1:$port/metrics
run:   recommendations  http://127.0.0.1:$port/recommendations/$user?k=10
run:   health           http://127.0.0.1:$port/healthz
run:   Prometheus       http://127.0.0.1:${PROMETHEUS_PORT:-9090}  (e.g. rate(recstream_events_total[1m]))
run: Ctrl-C to stop
EOF

if wait "$producer"; then
  echo "run: $(tail -n 1 "$logs/produce.log")"
  echo "run: replay finished; the worker keeps running (Ctrl-C to stop)"
else
  echo "run: the producer failed: $(tail -n 1 "$logs/produce.log")" >&2
fi
wait "$worker" || true
