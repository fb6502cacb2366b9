"""What a worker reports: consumer lag, the metrics-topic snapshot and the Prometheus gauges it
refreshes, ``/healthz``, and a fresh list for the web view.

A mixin of :class:`streams.runtime.Runtime` (which sets every attribute read here).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

log = logging.getLogger("recstream.worker")


class Reporting:
    async def consumer_lag(self, consumer: Any) -> dict[tuple[str, int], int]:
        """End offset minus the state's position, per assigned partition."""
        tps = sorted(consumer.assignment())
        if not tps:
            return {}
        try:
            # Asked of the broker (one ListOffsets request): exact whatever the fetch state.
            ends = await asyncio.wait_for(consumer.highwaters(*tps), timeout=10)
        except Exception as exc:  # metrics must never take the worker down
            self.metrics.kafka_up.set(0)
            log.warning("consumer lag unavailable (is the broker up?): %s", exc)
            return {}
        self.metrics.kafka_up.set(1)
        lags = {}
        for tp in tps:
            end = ends.get(tp)
            if end is not None:
                position = self.processor.positions.next_offset(tp.topic, tp.partition) or 0
                lags[(tp.topic, tp.partition)] = max(0, int(end) - position)
        return lags

    def snapshot(self, lags: dict[tuple[str, int], int] | None = None) -> dict[str, Any]:
        lags = lags or {}
        encoder = self.encoder.stats() if self.encoder is not None else {}
        snap = self.processor.snapshot(
            worker=self.worker_id,
            uptime_s=round(time.time() - self.started_at, 1),
            encoder={
                **encoder,
                "device": str(getattr(self.encoder, "device", "")) or None,
                "error": self.encoder_error,
            },
            consumer_lag={f"{t}[{p}]": lag for (t, p), lag in sorted(lags.items())},
            last_checkpoint=self.last_checkpoint,
        )
        m = self.metrics
        m.set_lag(lags)
        if snap["online"][f"hr@{self.processor.k}"] is not None:
            m.online_hit_rate.set(snap["online"][f"hr@{self.processor.k}"])
            m.online_ndcg.set(snap["online"][f"ndcg@{self.processor.k}"])
        if snap["coverage"] is not None:
            m.coverage.set(snap["coverage"])
        m.catalogue_items.set(snap["catalogue_items"])
        m.new_items.set(snap["new_items"])
        # the model counts since it was built, a restored one since before this process: the
        # counter takes what it counted since the last snapshot (the first: since start-up)
        seen = getattr(self, "_slot_lists_seen", 0)
        if snap["slot_lists"] > seen:
            m.slot_lists.inc(snap["slot_lists"] - seen)
        self._slot_lists_seen = snap["slot_lists"]
        m.encode_queue.set(len(self.processor.encode_queue))
        return snap

    async def publish_metrics(self, consumer: Any = None) -> dict[str, Any]:
        lags = await self.consumer_lag(consumer) if consumer is not None else {}
        snap = self.snapshot(lags)
        await self._send(self.settings.topic("metrics"), self.worker_id.encode(), _json(snap))
        return snap

    def health(self) -> dict[str, Any]:
        stats = self.processor.recommender.stats()
        halted = self.processor.halted
        return {
            "status": "halted" if halted else "ok" if self.ready else "starting",
            "ready": self.ready and not halted,
            "halted": halted,
            "consecutive_errors": self.processor.consecutive_errors,
            "worker": self.worker_id,
            "model_version": self.processor.recommender.model_version,
            "events_processed": self.processor.events_processed,
            "model_events": stats.get(
                "n_events"
            ),  # events the model has learned, restored ones too
            "events_by_type": dict(self.processor.counts.events_by_type),
            "duplicates": self.processor.counts.duplicates,
            "replayed_skipped": self.processor.counts.replayed,
            "dlq_total": sum(self.processor.counts.dlq_by_reason.values()),
            "users": stats.get("n_users"),
            "items": stats.get("n_active_items"),
            "item_vectors": stats.get("n_vectors"),
            "encode_queue": len(self.processor.encode_queue),
            "encoder_error": self.encoder_error,
            "redis_errors": self.redis.errors if self.redis is not None else None,
            "last_checkpoint": self.last_checkpoint,
            "state_store": self.settings.state_store,
            **self.catalogue_sync_health(),
            **(self._group_health() if self.group_mode else {}),
        }

    def _group_health(self) -> dict[str, Any]:
        """Several workers: the partitions held here, each with the events learned from it by
        every owner so far and its position (sum them over the group to reconcile)."""
        return {
            "partitions": self.partitions_health(),
            "state_flushes": self.state_flushes,
            "item_deltas_applied": self.deltas_applied,
            "moved_messages": self.moved_messages,
            "state_restore_s": self.state_restore_s,
            "idle_users": {
                "parked": len(self.idle_store) if self.idle_store is not None else None,
                "evicted": self.users_evicted,
                "brought_back": self.users_brought_back,
            },
        }

    def recommend(self, user_id: str, k: int) -> dict[str, Any]:
        """A fresh list from the in-memory model (the web view; not published anywhere)."""
        t0 = time.perf_counter()
        items = self.processor.recommender.recommend(user_id, k)
        return {
            "user_id": user_id,
            "items": [i.to_dict() for i in items],
            # False: a cold user, served popular and fresh items.
            "known_user": user_id in getattr(self.processor.recommender, "users", ()),
            "model_version": self.processor.recommender.model_version,
            "generated_at": round(time.time(), 6),
            "latency_ms": round((time.perf_counter() - t0) * 1000.0, 3),
        }


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
