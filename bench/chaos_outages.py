"""The two outage experiments of ``bench/chaos.py``: the Redis and the Kafka broker the worker
uses are stopped for a while, then started again, while valid events stream in. Both are private
servers started for the purpose: the stack's shared ones are never stopped."""

from __future__ import annotations

import json
import shutil
import time
from typing import Any

import redis

from bench.chaos_lab import (
    OUTAGE_S,
    POST_S,
    PRE_S,
    Lab,
    Shared,
    accounting,
    health,
    log_lines,
    log_window,
    metric,
    new_progress,
    new_stream,
    repeated_ids,
    settle,
    since,
    start_worker,
    stream_report,
)
from bench.chaos_stack import (
    PrivateKafka,
    private_redis,
    say,
    time_until,
)

# --- 2. Redis outage ----------------------------------------------------------------------------


def redis_outage(shared: Shared, users: int = 300) -> dict[str, Any]:
    with Lab("redis-outage") as lab:
        server, admin_url, worker_redis = private_redis(lab.folder / "redis")
        lab.on_exit("private redis state", lambda: shutil.rmtree(server.state))
        lab.on_exit("private redis", server.close)
        admin = redis.Redis.from_url(admin_url)
        lab.on_exit("redis client", admin.close)
        w = lab.worker(shared.bootstrap, admin_url, worker_redis)
        start_worker(w)
        stream = new_stream(lab, w, "r", users=users, seed=2)
        progress = new_progress(lab, w)
        time.sleep(PRE_S)
        h0, lines0 = health(w), log_lines(w)
        t_stop = time.monotonic()
        server.stop()
        say(f"redis-outage: private Redis on {server.port} stopped; {OUTAGE_S:.0f} s")
        time.sleep(OUTAGE_S)
        h1 = health(w)
        pending = metric(w, "recstream_redis_pending_writes")
        redis_up = metric(w, "recstream_redis_up")
        server.start()
        t_up, wall_up = time.monotonic(), time.time()
        lines_up = log_lines(w)
        learned_in_outage = h1.get("events_processed", 0) - h0.get("events_processed", 0)
        handed_in_outage = stream.before(t_up) - stream.before(t_stop)
        lab.check(
            "the worker kept learning while Redis was down",
            learned_in_outage > 0,
            f"{learned_in_outage} learned, {handed_in_outage} produced",
        )
        time.sleep(1)
        before: dict[str, float] = {}
        for rec in w.read_json("recommendations"):
            if rec["generated_at"] < wall_up:
                before[rec["user_id"]] = max(before.get(rec["user_id"], 0.0), rec["generated_at"])
        keys = {u: w.key("recs", u) for u in before}

        def healed() -> bool:
            values = admin.mget(list(keys.values()))
            return all(
                v is not None and json.loads(v)["generated_at"] >= before[u]
                for u, v in zip(keys, values, strict=True)
            )

        t_healed = time_until(healed, 120, interval=0.1)
        time.sleep(max(0.0, t_up + POST_S - time.monotonic()))
        stream.stop()
        progress.stop()
        final, _ = settle(w, stream.sent, 120)
        latest: dict[str, bytes] = {}
        for record in w.read("recommendations"):
            latest[record.key.decode()] = record.value  # per user in order: the last one wins

        def missing() -> list[str]:
            values = admin.mget([w.key("recs", u) for u in latest])
            return [u for u, v in zip(latest, values, strict=True) if v != latest[u]]

        time_until(lambda: not missing(), 30)
        lacking = missing()
        lab.check(
            "every user's latest list is in Redis",
            not lacking,
            f"{len(lacking)} of {len(latest)} users lack it",
        )
        out = accounting(lab, w, stream.sent, final)
        window = log_window(w, lines0, lines_up)
        out.update(
            recovery_s=since(t_healed, t_up),
            recovery_means="from Redis answering again to Redis holding, for every user, the "
            "list the worker had made before that moment (or a newer one)",
            outage_s=round(t_up - t_stop, 1),
            learned_in_outage=learned_in_outage,
            produced_in_outage=handed_in_outage,
            pending_at_end_of_outage=pending,
            redis_up_metric_in_outage=redis_up,
            users=len(latest),
            users_waiting_at_heal=len(before),
            users_lacking_latest=len(lacking),
            progress_since_stop=progress.series(t_stop),
            log_in_outage=window,
            stream=stream_report(lab, stream),
        )
        out["lost_cell"] = f"{out['lost']} ({len(lacking)} of {len(latest)} users lack a list)"
        out["note"] = (
            f"Redis down {out['outage_s']:.0f} s; {learned_in_outage:,} events learned "
            f"meanwhile; {window['lines']} log lines in the outage"
        )
        return out | {"checks": lab.checks}


# --- 3. broker outage ---------------------------------------------------------------------------


def broker_outage(shared: Shared) -> dict[str, Any]:
    with Lab("broker-outage") as lab:
        kafka = PrivateKafka()
        lab.on_exit("private broker", kafka.close)
        say(f"broker-outage: private broker on {kafka.bootstrap} up in {kafka.start():.1f} s")
        w = lab.worker(kafka.bootstrap, shared.admin_redis, shared.worker_redis)
        start_worker(w)
        stream = new_stream(lab, w, "k", seed=3)
        progress = new_progress(lab, w)
        time.sleep(PRE_S)
        h0, lines0 = health(w), log_lines(w)
        t_stop = time.monotonic()
        stop_s = kafka.stop()
        say(f"broker-outage: broker stopped ({stop_s:.1f} s); {OUTAGE_S:.0f} s")
        time.sleep(OUTAGE_S)
        h1 = health(w)
        t_start = time.monotonic()
        start_s = kafka.start()
        t_up = time.monotonic()
        lines_up = log_lines(w)
        say(f"broker-outage: broker back ({start_s:.1f} s to start)")
        n_pre = stream.before(t_up)
        t_caught = time_until(lambda: health(w).get("events_processed", -1) >= n_pre, 180)
        lines_caught = log_lines(w)
        time.sleep(max(0.0, t_up + POST_S - time.monotonic()))
        stream.stop()
        progress.stop()
        t_backlog = stream.all_acked_at(n_pre)
        final, _ = settle(w, stream.sent, 120)
        out = accounting(lab, w, stream.sent, final)
        outage = log_window(w, lines0, lines_up)
        errors = outage["by_level"].get("ERROR", 0)
        lab.check(
            "a handful of log lines in the outage, not a flood",
            outage["lines"] < 1000,
            f"{outage['lines']} lines, {errors} ERROR",
        )
        out.update(
            recovery_s=since(t_caught, t_up),
            recovery_means="from the broker serving again to the worker having learned every "
            "event produced before that moment",
            broker_down_s=round(t_up - t_stop, 1),
            broker_stop_s=round(stop_s, 1),
            broker_start_s=round(start_s, 1),
            learned_in_outage=h1.get("events_processed", 0) - h0.get("events_processed", 0),
            produced_before_back=n_pre,
            producer_first_delivery_after_s=since(stream.first_ack_after(t_up), t_up),
            worker_first_learned_after_s=since(progress.first_gain_after(t_up), t_up),
            producer_delivered_them_after_s=since(t_backlog, t_up),
            worker_learned_them_after_delivery_s=since(t_caught, t_backlog or t_up),
            progress_since_stop=progress.series(t_stop),
            log_in_outage=outage,
            log_in_recovery=log_window(w, lines_up, lines_caught),
            log_duplicates=repeated_ids(w),
            stream=stream_report(lab, stream),
        )
        out["note"] = (
            f"broker down {out['broker_down_s']:.0f} s (stop {stop_s:.0f} s + "
            f"{t_start - t_stop - stop_s:.0f} s + start {start_s:.0f} s); worker log: "
            f"{outage['lines']} lines ({errors} ERROR) meanwhile"
        )
        return out | {"checks": lab.checks}
