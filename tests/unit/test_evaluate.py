import json
import math

import numpy as np
import pytest

from recstream.evaluate import evaluate, gini
from recstream.evaluate_report import rolling_hit_rate
from recstream.events import Event, Item, ScoredItem


class Alphabetical:
    """A transparent model: unseen catalogue items in alphabetical order."""

    def __init__(self):
        self.catalogue: list[str] = []
        self.seen: dict[str, set[str]] = {}
        self.learned: list[str] = []

    def add_items(self, ids):
        self.catalogue.extend(ids)

    def learn(self, event):
        self.learned.append(event.event_id)
        self.seen.setdefault(event.user_id, set()).add(event.item_id)

    def recommend(self, user_id, k=10, exclude="purchased"):
        assert exclude == "seen"  # the protocol ranks items the user never interacted with
        seen = self.seen.get(user_id, set())
        return [ScoredItem(i, 0.0, "abc") for i in sorted(self.catalogue) if i not in seen][:k]


STREAM = [  # (user, item, type); comments: what the protocol must do with each event
    ("u1", "a", "view"),  # 0  not a purchase
    ("u1", "b", "purchase"),  # 1  evaluated: [b, c] -> hit @1, cold (b had 0 events)
    ("u2", "c", "purchase"),  # 2  u2's first event: not evaluated
    ("u2", "d", "purchase"),  # 3  evaluated: [a, b] -> miss, cold (d: 0)
    ("u1", "c", "click"),  # 4
    ("u3", "a", "purchase"),  # 5  u3's first event: not evaluated
    ("u4", "a", "view"),  # 6
    ("u5", "a", "view"),  # 7
    ("u6", "a", "view"),  # 8
    ("u4", "a", "purchase"),  # 9  evaluated: a already seen by u4 -> miss; a had 5 -> not cold
    ("u6", "c", "purchase"),  # 10 evaluated: [b, c] -> hit @2, cold (c: 2 earlier events)
    ("u1", "d", "purchase"),  # 11 evaluated: [d] -> hit @1, cold (d: 1)
]


def run(model=None, **kwargs):
    items = [Item(i) for i in "abcd"]
    events = [Event(f"e{n}", u, i, t, float(n)) for n, (u, i, t) in enumerate(STREAM)]
    model = model or Alphabetical()
    return model, evaluate(model, items, events, k=2, **kwargs)


def test_protocol_counts_and_metrics_worked_out_by_hand():
    vectors = (list("abcd"), np.array([[1, 0], [0, 1], [0.6, 0.8], [1, 0]], dtype=np.float32))
    calls = []
    model, r = run(vectors=vectors, on_result=lambda n, hit, cold: calls.append((n, hit, cold)))
    assert calls == [
        (1, True, True),
        (3, False, True),
        (9, False, False),
        (10, True, True),
        (11, True, True),
    ]
    assert r["evaluated"] == 5 and r["cold_evaluated"] == 4
    assert r["hr@2"] == pytest.approx(3 / 5)
    assert r["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3) + 1) / 5)
    assert r["cold_hr@2"] == pytest.approx(3 / 4)
    assert model.learned == [f"e{n}" for n in range(len(STREAM))]  # every event learned
    # lists: [b,c] [a,b] [b,c] [b,c] [d] -> exposure a1 b4 c3 d1
    assert r["coverage"] == 1.0
    assert r["gini"] == pytest.approx(22 / 72)  # sum |xi - xj| / (2 n^2 mean)
    # self-information with (users of i + 1) / (users so far + 1)
    bits = [1, 1, -math.log2(2 / 3), -math.log2(2 / 3)] + [-math.log2(2 / 7), -math.log2(3 / 7)] * 2
    bits.append(-math.log2(2 / 7))
    assert r["novelty"] == pytest.approx(sum(bits) / len(bits))
    # 1 - cos within lists of >= 2 items: [b,c] 0.2, [a,b] 1.0, [b,c] 0.2, [b,c] 0.2
    assert r["diversity"] == pytest.approx((0.2 + 1.0 + 0.2 + 0.2) / 4)
    assert r["events"] == len(STREAM) and r["events_per_s"] > 0
    json.dumps(r)  # serialisable as is


def test_items_are_published_at_their_release_time_and_their_reach_is_reported():
    # c is released at ts 1.5 (before event 2); d's ts is after the stream, but event 3 is
    # about it, so it is published then (the model never learns an item it was not given).
    ts = {"a": 0.0, "b": 0.0, "c": 1.5, "d": 100.0}
    items = [Item(i, ts=ts[i]) for i in "abcd"]
    events = [Event(f"e{n}", u, i, t, float(n)) for n, (u, i, t) in enumerate(STREAM)]
    published = []

    class Watching(Alphabetical):
        def add_items(self, ids):
            ids = list(ids)
            published.append((len(self.learned), ids))
            super().add_items(ids)

    r = evaluate(Watching(), items, events, k=2, split_at=5)
    assert published == [(0, ["a", "b"]), (2, ["c"]), (3, ["d"])]
    # lists: event 1 [b] (c not out yet: hit), 3 [a, b], 9 [b, c], 10 [b, c], 11 [d]
    assert r["hr@2"] == pytest.approx(3 / 5)
    # c first listed at event 9 (released at 2, 2 events so far: cold), d at 11 (from 3, 1 event)
    assert r["released"] == 2 and r["released_listed"] == 1.0
    assert r["released_listed_cold"] == 1.0 and r["released_first_list_events"] == 7.5
    assert r["parts"]["tune"]["released"] == 2 and r["parts"]["holdout"]["released"] == 0
    assert r["parts"]["holdout"]["released_first_list_events"] is None
    # upfront: the protocol before release times, every item before the first event
    r_upfront = evaluate(Watching(), items, events, k=2, release=False)
    assert published[-1] == (0, ["a", "b", "c", "d"]) and r_upfront["released"] == 0
    assert r_upfront["hr@2"] == pytest.approx(3 / 5)  # event 1's list is [b, c] then


def test_a_model_recommending_seen_items_is_an_error():
    class Cheater(Alphabetical):
        def recommend(self, user_id, k=10, exclude="purchased"):
            return [ScoredItem(i, 0.0, "") for i in sorted(self.catalogue)][:k]

    with pytest.raises(RuntimeError, match="already interacted"):
        run(Cheater())


def test_no_vectors_means_no_diversity_and_empty_stream_is_fine():
    _, r = run()
    assert math.isnan(r["diversity"])
    r = evaluate(Alphabetical(), [Item("a")], [], k=3)
    assert r["evaluated"] == 0 and r["hr@3"] == 0.0 and r["coverage"] == 0.0


def test_gini_and_rolling_hit_rate():
    assert gini(np.array([5, 5, 5])) == 0.0
    assert gini(np.array([0, 0, 0, 0, 10])) == pytest.approx(0.8)
    x, y = rolling_hit_rate([3, 5, 9, 12], [True, False, True, True], window=2)
    assert x.tolist() == [3, 5, 9, 12] and y.tolist() == [1.0, 0.5, 0.5, 1.0]


def write_dataset(folder, n_events=600):
    from recstream.datasets import synthetic_stream

    items, events = synthetic_stream(
        n_users=20, n_items=30, n_events=n_events, seed=1, direct_purchase_share=0.5
    )
    folder.mkdir()
    lines = ["item_id,title,genres,tags"]
    lines += [f"{i.item_id},{i.title},{'|'.join(i.categories)},{'|'.join(i.tags)}" for i in items]
    (folder / "items.csv").write_text("\n".join(lines) + "\n")
    lines = ["timestamp,user_id,item_id,event_type"]
    lines += [f"{e.ts},{e.user_id},{e.item_id},{e.type}" for e in events]
    (folder / "events.csv").write_text("\n".join(lines) + "\n")
    return items, events


def test_command_writes_json_plot_and_table(tmp_path, capsys):
    from recstream.cli import main

    write_dataset(tmp_path / "data")
    out, png = tmp_path / "out" / "r.json", tmp_path / "out" / "roll.png"
    argv = ["evaluate", str(tmp_path / "data"), "--k", "5", "--no-encode", "--limit", "500"]
    assert main([*argv, "--json", str(out), "--plot", str(png), "--model", "covisit"]) == 0
    result = json.loads(out.read_text())
    assert result["model"] == "covisit" and result["events"] == 500 and result["k"] == 5
    for key in (
        "hr@5",
        "ndcg@5",
        "cold_hr@5",
        "evaluated",
        "cold_evaluated",
        "coverage",
        "novelty",
        "gini",
        "events_per_s",
        "encode_items_per_s",
    ):
        assert key in result
    assert result["diversity"] is None  # no vectors without encoding: null, not NaN
    assert set(result["baselines"]) == {"hybrid", "popularity", "isgd", "mf"}
    assert all(b["evaluated"] == result["evaluated"] for b in result["baselines"].values())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out
    assert table.startswith("| model | hr@5 | ndcg@5 | cold_hr@5 |")
    assert table.count("\n| ") == 5 and "| n/a |" in table  # 5 models; no diversity


def test_command_rejects_bad_arguments(tmp_path, capsys):
    from recstream.cli import main

    write_dataset(tmp_path / "data", n_events=50)
    with pytest.raises(SystemExit) as info:  # argparse: a bad value never reaches run()
        main(["evaluate", str(tmp_path / "data"), "--k", "0", "--no-encode"])
    assert info.value.code == 2
    assert "argument --k: expected a positive integer, got 0" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "missing"), "--no-encode"]) == 2
    assert "no such dataset folder" in capsys.readouterr().err


def test_an_item_released_at_an_events_time_comes_before_that_event():
    from recstream.releases import ReleaseSchedule

    items = [Item("a"), Item("b", ts=2.0), Item("c", ts=2.0), Item("d", ts=3.5)]
    events = [Event(f"e{n}", "u", "a", "view", float(n)) for n in range(5)]
    schedule = ReleaseSchedule(items, events)
    due = [[i.item_id for i in schedule.due(e)] for e in events]
    assert due == [[], [], ["b", "c"], [], ["d"]]


def test_swap_gives_items_published_after_it_their_tuned_vectors():
    from recstream.finetune_eval import SwapAt

    class Model:
        def __init__(self):
            self.vectors = {}

        def set_item_vectors(self, ids, v):
            self.vectors.update(zip(ids, np.asarray(v)[:, 0].tolist(), strict=True))

        def learn(self, event):
            pass

    tuned = np.array([[10.0], [20.0], [30.0]])
    m = SwapAt(Model(), 1, ["a", "b", "c"], tuned)
    m.set_item_vectors(["a"], np.array([[1.0]]))  # before the swap: the base encoder's
    assert m.vectors == {"a": 1.0}
    m.learn(None)  # the swap: only what the model has
    assert m.vectors == {"a": 10.0} and m.swapped_at == 1
    m.set_item_vectors(["c"], np.array([[3.0]]))  # published after it: the tuned vector
    assert m.vectors == {"a": 10.0, "c": 30.0}
