"""Checkpoints of :class:`recstream.pipeline.StreamProcessor`: the model, the stream state (dedup
window, online evaluation, counters, forget ledger, items still to encode) and the offsets they
reflect, in one atomic directory (:class:`recstream.checkpoint.CheckpointStore`).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Self

from recstream.checkpoint import Checkpoint, CheckpointStore
from recstream.forget import ForgottenUsers
from recstream.online import DedupWindow, Positions, RateMeter

STATE_VERSION = 1
MODEL_FILE = "recommender.pkl"
STATE_FILE = "stream.pkl"


class ProcessorCheckpoints:
    """Mixin of StreamProcessor (which sets every attribute read here)."""

    def _state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "dedup": self.dedup,
            "online": self.online,
            "counts": self.counts,
            "recommended": self.recommended,
            "forgotten": self.forgotten,
            # Queued and in-flight items are re-queued on restore: their vectors were not in
            # the saved model, and the items topic will not be re-read below the offsets.
            "encode_pending": self.encode_queue.items(),
        }

    def save_checkpoint(self, store: CheckpointStore, **meta: Any) -> Path:
        """Model + stream state + offsets in one atomic checkpoint directory."""
        state = self._state()

        def write_state(path: Path) -> None:
            with path.open("wb") as f:
                pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)

        body = {
            "offsets": self.positions.to_json(),
            "events_processed": self.counts.events,
            "model_version": self.recommender.model_version,
            **meta,
        }
        return store.save({MODEL_FILE: self.recommender.save, STATE_FILE: write_state}, body)

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: Checkpoint,
        load_recommender,
        **kwargs: Any,
    ) -> Self:
        """Rebuild a processor from ``checkpoint``; ``load_recommender(path)`` loads the model."""
        recommender = load_recommender(checkpoint.file(MODEL_FILE))
        with checkpoint.file(STATE_FILE).open("rb") as f:
            state = pickle.load(f)  # our own file, written by save_checkpoint
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{checkpoint.path}: stream state version {state.get('version')}")
        proc = cls(recommender, **kwargs)
        dedup: DedupWindow = state["dedup"]
        # A changed RECSTREAM_DEDUP_WINDOW keeps the newest ids that fit the new size.
        same = dedup.capacity == proc.dedup.capacity
        proc.dedup = dedup if same else dedup.resized(proc.dedup.capacity)
        proc.online = state["online"]
        proc.counts = state["counts"]
        proc.recommended = state["recommended"]
        proc.forgotten = state.get("forgotten") or ForgottenUsers()  # older checkpoints: none
        for item in state["encode_pending"]:
            proc.encode_queue.put(item)
        proc.positions = Positions.from_json(checkpoint.meta.get("offsets", {}))
        proc._rate = RateMeter(proc.counts.events)
        return proc
