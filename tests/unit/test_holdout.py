"""--holdout and --compare: the split's bookkeeping, the unchanged default, the ratio arithmetic."""

import json
import math

import numpy as np
import pytest

from recstream.datasets import load_dataset, synthetic_stream, write_dataset
from recstream.evaluate import PARTS, build_model, evaluate, holdout_split
from recstream.evaluate_cli import _clean
from recstream.evaluate_report import compare, compare_lines, ratio

# Computed by the code before --holdout existed (commit 6d02519) on STREAM below with VECTORS:
# the default path must keep giving these, to the last bit (events_per_s aside).
BEFORE = {
    "popularity": {
        "hr@10": 0.05241935483870968,
        "ndcg@10": 0.023628914696746,
        "evaluated": 496,
        "cold_hr@10": 0.07692307692307693,
        "cold_evaluated": 52,
        "coverage": 0.975,
        "novelty": 2.380280216327749,
        "diversity": 0.997150119394064,
        "gini": 0.3948529411764706,
        "events": 1500,
        "k": 10,
    },
    "covisit": {
        "hr@10": 0.08266129032258064,
        "ndcg@10": 0.05079953201767295,
        "evaluated": 496,
        "cold_hr@10": 0.19230769230769232,
        "cold_evaluated": 52,
        "coverage": 1.0,
        "novelty": 2.419227275573695,
        "diversity": 1.0000527817155085,
        "gini": 0.29589460784313726,
        "events": 1500,
        "k": 10,
    },
}


@pytest.fixture(scope="module")
def stream():
    items, events = synthetic_stream(
        n_users=30, n_items=40, n_events=1500, seed=3, direct_purchase_share=0.5
    )
    rng = np.random.default_rng(0)
    m = rng.normal(size=(len(items), 8)).astype(np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    return items, events, ([i.item_id for i in items], m)


def run(name, stream, **kwargs):
    items, events, vectors = stream
    # BEFORE pins the protocol of its day: the whole catalogue before the first event.
    kwargs.setdefault("release", False)
    result = evaluate(build_model(name, seed=42), items, events, 10, vectors=vectors, **kwargs)
    result.pop("events_per_s")
    return result


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_default_path_gives_exactly_the_numbers_from_before(name, stream):
    result = run(name, stream)
    assert "parts" not in result
    # == on floats: bit for bit. The keys added since (exposure, calibration) are checked below.
    assert {key: result[key] for key in BEFORE[name]} == BEFORE[name]


@pytest.mark.parametrize("split_at", [0, 1, 750, 1499, 1500])
def test_a_split_leaves_the_whole_stream_alone_and_its_parts_add_up(split_at, stream):
    calls: list[tuple[int, bool, bool]] = []
    result = run("covisit", stream, split_at=split_at, on_result=lambda *c: calls.append(c))
    parts = result.pop("parts")
    assert {key: result[key] for key in BEFORE["covisit"]} == BEFORE["covisit"]
    assert list(parts) == list(PARTS)
    tune, hold = parts["tune"], parts["holdout"]
    assert (tune["first_event"], hold["first_event"]) == (0, split_at)
    assert tune["events"] + hold["events"] == result["events"] == 1500
    for key in ("evaluated", "cold_evaluated"):
        assert tune[key] + hold[key] == result[key]
    # each evaluated event is counted in the part its index falls in
    assert tune["evaluated"] == sum(n < split_at for n, _, _ in calls)
    assert tune["cold_evaluated"] == sum(n < split_at and cold for n, _, cold in calls)
    for metric, count in (("hr@10", "evaluated"), ("cold_hr@10", "cold_evaluated")):
        hits = sum(p[metric] * p[count] for p in (tune, hold))
        assert hits == pytest.approx(result[metric] * result[count])
        assert round(tune[metric] * tune[count]) == sum(
            hit and (cold or metric == "hr@10") for n, hit, cold in calls if n < split_at
        )
    ndcg = sum(p["ndcg@10"] * p["evaluated"] for p in (tune, hold))
    assert ndcg == pytest.approx(result["ndcg@10"] * result["evaluated"])
    for p in (tune, hold):
        assert set(p) == set(result) | {"first_event", "events_per_s"}
        assert 0.0 <= p["coverage"] <= result["coverage"]
        if p["evaluated"] == 0:
            assert p["hr@10"] == 0.0 and p["coverage"] == 0.0 and math.isnan(p["diversity"])


def test_split_must_lie_in_the_stream(stream):
    with pytest.raises(ValueError, match="split_at"):
        run("popularity", stream, split_at=1501)


@pytest.mark.parametrize("n", [0, 1, 2, 7, 100_836, 100_837])
def test_holdout_split_holds_out_the_last_share(n):
    assert holdout_split(n, 0.5) == n // 2  # the documented rule for one half
    for fraction in (0.1, 0.2, 0.25, 0.3, 0.7, 0.9):
        split = holdout_split(n, fraction)
        assert n - split == math.ceil(round(fraction * n, 6))
    assert holdout_split(10, 0.7) == 3  # not 2: 0.7 * 10 is 7.000000000000001 in floats
    with pytest.raises(ValueError):
        holdout_split(n, 1.0)


def test_ratio_arithmetic_and_verdicts():
    assert ratio(0.15, 0.12) == pytest.approx(1.25)
    assert ratio(0.1, 0.0) == math.inf and math.isnan(ratio(0.0, 0.0))
    model = {
        "hr@10": 0.13,
        "cold_hr@10": 0.05,
        "parts": {
            "tune": {"hr@10": 0.2, "cold_hr@10": 0.09},
            "holdout": {"hr@10": 0.1, "cold_hr@10": 0.0},
        },
    }
    base = {
        "hr@10": 0.1,
        "cold_hr@10": 0.025,
        "parts": {
            "tune": {"hr@10": 0.16, "cold_hr@10": 0.03},
            "holdout": {"hr@10": 0.08, "cold_hr@10": 0.0},
        },
    }
    c = compare(model, base, "covisit", k=10)
    assert c["model"] == "covisit"
    assert c["hr@10_ratio"] == pytest.approx(1.3) and c["cold_hr@10_ratio"] == pytest.approx(2.0)
    hr, cold = c["verdicts"]["hr@10_ratio"], c["verdicts"]["cold_hr@10_ratio"]
    assert hr["met"] and hr["short_by"] == 0.0 and hr["short_by_ratio"] == 0.0
    assert not cold["met"] and cold["goal"] == 2.5
    assert cold["needed"] == pytest.approx(0.0625) and cold["short_by"] == pytest.approx(0.0125)
    assert cold["short_by_ratio"] == pytest.approx(0.5)
    tune, hold = c["parts"]["tune"], c["parts"]["holdout"]
    assert tune["hr@10_ratio"] == pytest.approx(1.25) and tune["verdicts"]["hr@10_ratio"]["met"]
    assert tune["cold_hr@10_ratio"] == pytest.approx(3.0)
    assert hold["hr@10_ratio"] == pytest.approx(1.25)
    assert math.isnan(hold["cold_hr@10_ratio"])  # 0 / 0: neither met nor a number
    assert not hold["verdicts"]["cold_hr@10_ratio"]["met"]
    assert json.loads(json.dumps(_clean(c)))["parts"]["holdout"]["cold_hr@10_ratio"] is None
    lines = compare_lines(c, "hybrid")
    assert "  holdout: hr@10 1.250x, cold_hr@10 n/a" in lines
    assert lines[-3] == "issue 11 goals (held-out part):"
    assert lines[-2] == "  hr@10 >= 1.25x covisit: 1.250x (0.1000 vs 0.0800): met"
    assert (
        lines[-1]
        == "  cold_hr@10 >= 2.5x covisit: n/a (0.0000 vs 0.0000): n/a (no hit on either side)"
    )
    # without parts the verdicts are the whole stream's, and say they are in-sample
    model = {"hr@10": 0.1, "cold_hr@10": 0.05, "evaluated": 200, "cold_evaluated": 40}
    c = compare(model, {"hr@10": 0.1, "cold_hr@10": 0.04}, "mf")
    assert c["verdicts"]["cold_hr@10_ratio"]["cold_evaluated"] == 40  # the sample behind it
    lines = compare_lines(c, "hybrid")
    assert "in-sample" in lines[-3] and "against covisit" in lines[-3]
    assert lines[-2] == (
        "  hr@10 >= 1.25x mf: 1.000x (0.1000 vs 0.1000, 200 evaluated): "
        "missed by 0.250x (needs 0.1250: +0.0250)"
    )
    assert lines[-1].endswith(
        "(0.0500 vs 0.0400, 40 cold_evaluated): missed by 1.250x (needs 0.1000: +0.0500)"
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "shop"
    items, events = synthetic_stream(
        n_users=20, n_items=30, n_events=600, seed=1, direct_purchase_share=0.5
    )
    write_dataset(out, items, events)
    return out


# The protocol BEFORE_JSON was written with: the catalogue before the first event.
UPFRONT = ["evaluate", "--catalogue", "upfront"]
RELEASE_KEYS = (
    "released",
    "released_listed",
    "released_listed_cold",
    "released_first_list_events",
)

# Written by `recstream evaluate DATA --no-encode --model covisit --json` before --holdout existed
BEFORE_JSON = {
    "hr@10": 0.12980769230769232,
    "ndcg@10": 0.06572281897743677,
    "evaluated": 208,
    "cold_hr@10": 0.3,
    "cold_evaluated": 30,
    "coverage": 0.8,
    "novelty": 1.7468302085913123,
    "diversity": None,
    "gini": 0.4128205128205128,
    "events": 600,
    "events_per_s": "(timing)",
    "k": 10,
    "encode_items_per_s": None,
    "model": "covisit",
    "model_version": "covisit",
    "data": "shop",
    "seed": 42,
    "limit": None,
    "n_items": 30,
}


def test_command_without_holdout_writes_the_same_json_as_before(folder, tmp_path, capsys):
    from recstream.cli import main

    out = tmp_path / "r.json"
    assert (
        main([*UPFRONT, str(folder), "--no-encode", "--model", "covisit", "--json", str(out)]) == 0
    )
    assert capsys.readouterr().out.count("\n| ") == 1  # one row, no part rows
    result = json.loads(out.read_text())
    result["events_per_s"] = "(timing)"
    # The keys from before: same order, same values; the beyond-accuracy keys added since
    # (long-tail exposure, miscalibration) come after gini, before the run's bookkeeping.
    added = ("long_tail_exposure", "long_tail_interactions", "miscalibration")
    assert [k for k in result if k in added] == list(added)
    later = added + RELEASE_KEYS + ("catalogue",)  # --catalogue's, 2026-12-02
    assert result["catalogue"] == "upfront" and result["released"] == 0
    before = [(k, v) for k, v in result.items() if k not in later]
    assert before == list(BEFORE_JSON.items())


def test_command_holdout_and_compare(folder, tmp_path, capsys):
    from recstream.cli import main

    out = tmp_path / "r.json"
    argv = [*UPFRONT, str(folder), "--no-encode", "--holdout", "0.5", "--json", str(out)]
    assert main([*argv, "--model", "popularity", "--compare", "covisit"]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["holdout"] == 0.5 and result["split_at"] == 300
    assert {p["first_event"] for p in result["parts"].values()} == {0, 300}
    covisit = result["baselines"]["covisit"]
    for key in ("hr@10", "cold_hr@10", "evaluated", "coverage", "novelty", "gini"):
        assert covisit[key] == BEFORE_JSON[key]  # the compared baseline, unchanged
    assert covisit["parts"]["holdout"]["evaluated"] == result["parts"]["holdout"]["evaluated"]
    c = result["compare"]
    assert c["model"] == "covisit"
    assert c["hr@10_ratio"] == pytest.approx(result["hr@10"] / covisit["hr@10"])
    for part in ("tune", "holdout"):
        assert c["parts"][part]["cold_hr@10_ratio"] == pytest.approx(
            ratio(result["parts"][part]["cold_hr@10"], covisit["parts"][part]["cold_hr@10"])
        )
    for row in ("popularity", "popularity (tune)", "popularity (holdout)", "covisit (holdout)"):
        assert f"\n| {row} | " in printed
    assert "tune: events [0, 300), evaluated = " in printed
    assert "issue 11 goals (held-out part):" in printed and "popularity / covisit:" in printed


def test_compare_with_shards_runs_the_baseline_unsharded(folder, tmp_path, capsys):
    from recstream.cli import main

    out = tmp_path / "r.json"
    argv = ["evaluate", str(folder), "--no-encode", "--json", str(out), "--limit", "400"]
    assert main([*argv, "--shards", "2", "--holdout", "0.25", "--compare", "covisit"]) == 0
    result = json.loads(out.read_text())
    assert result["shards"] == 2 and result["split_at"] == 300
    assert "shards" not in result["baselines"]["covisit"]
    assert set(result["compare"]["parts"]) == {"tune", "holdout"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--holdout", "0"], "argument --holdout: expected a number in (0, 1), got 0"),
        (["--holdout", "1.5"], "expected a number in (0, 1), got 1.5"),
        (["--holdout", "half"], "expected a number in (0, 1), got 'half'"),
        (["--compare", "knn"], "argument --compare: invalid choice: 'knn'"),
    ],
)
def test_bad_holdout_and_compare_values(folder, extra, message, capsys):
    from recstream.cli import main

    with pytest.raises(SystemExit) as info:
        main(["evaluate", str(folder), "--no-encode", *extra])
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_compare_with_itself_is_refused(folder, capsys):
    from recstream.cli import main

    assert main(["evaluate", str(folder), "--no-encode", "--compare", "hybrid"]) == 2
    assert "--compare hybrid: that is the --model itself" in capsys.readouterr().err


def test_command_publishes_items_at_release_by_default(folder, tmp_path, capsys):
    from recstream.cli import main

    out = tmp_path / "r.json"
    argv = ["evaluate", str(folder), "--no-encode", "--model", "covisit", "--json", str(out)]
    assert main([*argv, "--holdout", "0.5"]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    # the synthetic shop releases 30 % of its 30 items over its nominal duration; the ones
    # whose time comes within the 600 events are published during the stream
    items, events = load_dataset(folder)
    due = sum(events[0].ts < item.ts <= events[-1].ts for item in items)
    assert due == 4 and result["catalogue"] == "release" and result["released"] == due
    assert sum(p["released"] for p in result["parts"].values()) == due
    assert f"whole stream: 4 items released during the stream, {result['released_listed']:.0%}" in (
        printed
    )
    # the model was not offered unreleased items: a different run from the upfront one
    assert result["coverage"] != BEFORE_JSON["coverage"] or result["hr@10"] != BEFORE_JSON["hr@10"]
