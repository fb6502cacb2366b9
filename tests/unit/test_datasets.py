import pytest

from recstream.datasets import load_dataset, read_events, read_items, synthetic_stream


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_read_events_in_order_with_deterministic_distinct_ids(tmp_path):
    path = write(
        tmp_path,
        "events.csv",
        "timestamp,user_id,item_id,event_type\n1,u1,i1,view\n1,u1,i1,view\n2.5,u2,i9,purchase\n",
    )
    events = read_events(path)
    assert [(e.user_id, e.item_id, e.type, e.ts) for e in events] == [
        ("u1", "i1", "view", 1.0),
        ("u1", "i1", "view", 1.0),
        ("u2", "i9", "purchase", 2.5),
    ]
    assert events[0].event_id != events[1].event_id  # identical rows stay two events
    assert [e.event_id for e in read_events(path)] == [e.event_id for e in events]


def test_read_events_columns_in_any_order(tmp_path):
    path = write(tmp_path, "e.csv", "user_id,event_type,item_id,timestamp\nu1,click,i1,7\n")
    assert read_events(path)[0].type == "click"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("timestamp,user_id,item_id\n1,u1,i1\n", "missing column"),
        ("timestamp,user_id,item_id,event_type\n1,u1,i1,like\n", ":2: unknown event_type"),
        ("timestamp,user_id,item_id,event_type\nsoon,u1,i1,view\n", "not a number"),
        ("timestamp,user_id,item_id,event_type\n-1,u1,i1,view\n", ">= 0"),
        ("timestamp,user_id,item_id,event_type\n1,,i1,view\n", "empty user_id"),
        ("timestamp,user_id,item_id,event_type\n1,u1,i1,view\n2,u1\n", ":3: expected 4"),
        ("", "empty file"),
    ],
)
def test_read_events_rejects_bad_files(tmp_path, body, message):
    with pytest.raises(ValueError, match=message):
        read_events(write(tmp_path, "events.csv", body))


def test_read_items_genres_tags_and_extra_columns(tmp_path):
    path = write(
        tmp_path,
        "items.csv",
        "item_id,title,genres,tags,year\n"
        "1,Heat (1995),Crime|Thriller,heist|pacino,1995\n2,Plain,,,\n",
    )
    heat, plain = read_items(path)
    assert heat.categories == ("Crime", "Thriller") and heat.tags == ("heist", "pacino")
    assert heat.description == "year: 1995."
    assert heat.text == "Heat (1995) year: 1995. Categories: Crime, Thriller. Tags: heist, pacino."
    assert plain.text == "Plain" and plain.categories == ()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("title\nHeat\n", "missing column item_id"),
        ("item_id,title\n1,a\n1,b\n", ":3: duplicate item_id"),
        ("item_id,title\n,a\n", "empty item_id"),
        ("item_id,title\n1,a,extra\n", "more fields"),
    ],
)
def test_read_items_rejects_bad_files(tmp_path, body, message):
    with pytest.raises(ValueError, match=message):
        read_items(write(tmp_path, "items.csv", body))


def test_load_dataset_needs_both_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path / "nope")
    write(tmp_path, "items.csv", "item_id,title\n1,a\n")
    with pytest.raises(FileNotFoundError, match=r"events\.csv"):
        load_dataset(tmp_path)


def test_synthetic_stream_is_seeded_and_has_structure():
    items, events = synthetic_stream(n_users=50, n_items=80, n_events=3000, seed=7)
    again = synthetic_stream(n_users=50, n_items=80, n_events=3000, seed=7)
    assert items == again[0] and events == again[1]
    assert events != synthetic_stream(n_users=50, n_items=80, n_events=3000, seed=8)[1]
    assert len(items) == 80 and len(events) == 3000
    assert len({e.event_id for e in events}) == 3000
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    types = [e.type for e in events]
    assert types.count("view") > types.count("click") > types.count("purchase") > 0
    # the funnel: a click follows a view of the same user and item; a purchase follows a click
    # or is direct
    last, direct = {}, 0
    for e in events:
        before = last.get((e.user_id, e.item_id))
        if e.type == "click":
            assert before == "view"
        if e.type == "purchase":
            direct += before != "click"  # not right after a click: a direct purchase
        last[(e.user_id, e.item_id)] = e.type
    assert 0 < direct < types.count("purchase")
    # new items arrive over time: some are released after the stream starts, never used before
    release = {i.item_id: i.ts for i in items}
    assert sum(ts > items[0].ts for ts in release.values()) > 10
    assert all(e.ts >= release[e.item_id] for e in events)
    assert all(i.text and i.categories and i.tags for i in items)
    with pytest.raises(ValueError):
        synthetic_stream(n_users=0)
