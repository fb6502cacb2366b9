"""`recstream synth-dataset`: the synthetic shop as a dataset folder, seeded and loadable."""

import pytest

from recstream.cli import main
from recstream.datasets import load_dataset, synthetic_stream, write_dataset
from recstream.events import Event, Item

ARGS = ["--users", "40", "--items", "60", "--events", "2000"]


def synth(out, *extra):
    return main(["synth-dataset", str(out), *ARGS, *extra])


def test_same_seed_same_bytes_other_seed_other_stream(tmp_path, capsys):
    assert synth(tmp_path / "a", "--seed", "7") == 0
    assert synth(tmp_path / "b", "--seed", "7") == 0
    assert synth(tmp_path / "c", "--seed", "8") == 0
    assert "2000 events" in capsys.readouterr().out
    for name in ("items.csv", "events.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "events.csv").read_bytes() != (
        tmp_path / "c" / "events.csv"
    ).read_bytes()


def test_the_folder_loads_as_the_generated_stream(tmp_path):
    assert synth(tmp_path / "shop", "--seed", "7") == 0
    items, events = load_dataset(tmp_path / "shop")
    # Exactly the generator's stream: same ids, text, release times and event timestamps.
    assert (items, events) == synthetic_stream(40, 60, 2000, 7)
    header = (tmp_path / "shop" / "events.csv").read_text().splitlines()[0]
    assert header == "timestamp,user_id,item_id,event_type"
    assert [e.ts for e in events] == sorted(e.ts for e in events)  # stream order = time order
    assert {e.type for e in events} == {"view", "click", "purchase"}
    header = (tmp_path / "shop" / "items.csv").read_text().splitlines()[0]
    assert header.startswith("item_id,title,")


def test_existing_files_are_kept_unless_forced(tmp_path, capsys):
    assert synth(tmp_path / "shop", "--seed", "1") == 0
    before = (tmp_path / "shop" / "events.csv").read_bytes()
    assert synth(tmp_path / "shop", "--seed", "2") == 2
    assert "items.csv exists (--force overwrites)" in capsys.readouterr().err
    assert (tmp_path / "shop" / "events.csv").read_bytes() == before
    assert synth(tmp_path / "shop", "--seed", "2", "--force") == 0
    assert (tmp_path / "shop" / "events.csv").read_bytes() != before


def test_write_dataset_round_trips_awkward_text_and_refuses_a_separator(tmp_path):
    items = [Item("i,1", 'A "quoted", title', "line one\nline two", ("a b",), ("x",), 12.5)]
    events = [Event("ignored", "u,1", "i,1", "purchase", 1.0000000000000002)]
    write_dataset(tmp_path / "d", items, events)
    got_items, got_events = load_dataset(tmp_path / "d")
    assert got_items == items
    assert [(e.user_id, e.item_id, e.type, e.ts) for e in got_events] == [
        ("u,1", "i,1", "purchase", 1.0000000000000002)
    ]
    with pytest.raises(ValueError, match="'\\|' inside a category or tag"):
        write_dataset(tmp_path / "e", [Item("i", categories=("a|b",))], [])
