"""Where the two-stage path loses the exact top-10 (issue 12): each missed item, and quota variants.

Builds the warm model of ``bench/two_stage.py`` once at one catalogue size, lists 60 users with
the exact path (full-width content, the reference of ``candidate_recall_at_10``), then with the
two-stage path under a few quota settings, and prints every item of the exact top-10 the shipped
setting missed: its place in the exact list, its all-time event count and rank, its decayed
popularity rank, and whether the candidates held it (then the miss is a scoring difference:
the two paths scale the min-max features over different rows) or not (a retrieval miss).

    .venv/bin/python bench/candidate_misses.py 1000000
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.two_stage import _recall, _timed, build


def main(n: int) -> None:
    from threadpoolctl import threadpool_limits

    rec, users, took = build(n, 2000, 20_000, 0)
    print("built", took, flush=True)
    listed = [u for u in users if rec.users.get(u) is not None][:60]
    shipped = dict(rec.retrieval.quotas)
    exact_config = dataclasses.replace(rec.config, retrieval="exact")
    with threadpool_limits(limits=1, user_api="blas"):
        staged_config, rec.config = rec.config, exact_config
        exact, _ = _timed(rec, listed)
        rec.config = staged_config
        for name, quotas in {
            "shipped": shipped,
            "popular400": {**shipped, "popular": 400},
            "content1200": {**shipped, "content": 1200},
        }.items():
            rec.retrieval.quotas = quotas
            staged, took_ms = _timed(rec, listed)
            print(name, "candidate recall@10", _recall(exact, staged), took_ms, flush=True)
        rec.retrieval.quotas = shipped
        staged, _ = _timed(rec, listed)
    events = rec.covisit.item_events(len(rec.index))
    event_rank = np.argsort(np.argsort(-events, kind="stable"))
    _, popularity = rec.popularity.frame_totals()
    popular_rank = np.argsort(np.argsort(-np.asarray(popularity), kind="stable"))
    held = missed = 0
    for user, a, b in zip(listed, exact, staged, strict=True):
        gathered = set(rec.retrieval.gather(rec, user, "purchased").tolist())
        for item in sorted(set(a) - set(b)):
            row = rec.index.rows[item]
            held += row in gathered
            missed += row not in gathered
            print(
                f"miss {user} {item} place {a.index(item)} events {events[row]:.0f} "
                f"event_rank {event_rank[row]} popular_rank {popular_rank[row]} "
                f"in_candidates {row in gathered}"
            )
    print(f"missed items in the candidates (scoring) {held}, not gathered (retrieval) {missed}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
