"""Readers for the standard dataset format, and a synthetic stream generator.

The standard format is a folder with two CSV files:

* ``events.csv`` — header ``timestamp,user_id,item_id,event_type``, rows in stream order;
  ``event_type`` is ``view``, ``click`` or ``purchase``. Each row becomes an
  :class:`~recstream.events.Event` whose id is derived from its content *and* its line number,
  so ids are deterministic and two identical rows remain two events.
* ``items.csv`` — header ``item_id,title,...``. ``genres`` (or ``categories``) and ``tags`` are
  ``|``-separated lists; a ``description`` column is the description; every other column is
  appended to the description as ``"<column>: <value>."`` so the encoder sees it.

Both readers validate as they go and raise :class:`ValueError` naming the file and line.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "events.csv").write_text("timestamp,user_id,item_id,event_type\\n5,u1,i1,view\\n")
>>> _ = (d / "items.csv").write_text("item_id,title,genres,year\\ni1,Heat,Crime|Thriller,1995\\n")
>>> [(e.user_id, e.item_id, e.type, e.ts) for e in read_events(d / "events.csv")]
[('u1', 'i1', 'view', 5.0)]
>>> read_items(d / "items.csv")[0].text
'Heat year: 1995. Categories: Crime, Thriller.'
>>> items, events = synthetic_stream(n_users=20, n_items=30, n_events=200, seed=1)
>>> len(items), len(events), events[0].type in ("view", "click", "purchase")
(30, 200, True)
>>> write_dataset(d / "shop", items, events)
>>> load_dataset(d / "shop") == (items, events)  # the synthetic shop as a dataset folder
True
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import math
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

from recstream.cli import positive_int
from recstream.events import EVENT_TYPES, MAX_ID_LENGTH, Event, Item

__all__ = [
    "iter_events",
    "load_dataset",
    "read_events",
    "read_items",
    "synthetic_stream",
    "write_dataset",
]

EVENT_COLUMNS = ("timestamp", "user_id", "item_id", "event_type")


def _event_id(line: int, user_id: str, item_id: str, type_: str, ts: float) -> str:
    # The line number makes repeated identical rows distinct events; the content makes the id
    # stable across files that share a prefix (replays of the same stream dedup correctly).
    raw = f"{line}\x1f{user_id}\x1f{item_id}\x1f{type_}\x1f{ts!r}".encode()
    return "f-" + hashlib.blake2b(raw, digest_size=8).hexdigest()


def iter_events(path: str | Path) -> Iterator[Event]:
    """Stream the events of an ``events.csv`` in file order (see the module docstring)."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file, expected header {','.join(EVENT_COLUMNS)}")
        header = [h.strip() for h in header]
        missing = [c for c in EVENT_COLUMNS if c not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)} in header {header}")
        col = {c: header.index(c) for c in EVENT_COLUMNS}
        width = max(col.values()) + 1
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) < width:
                raise ValueError(f"{path}:{line}: expected {len(header)} fields, got {len(row)}")
            user_id = row[col["user_id"]].strip()
            item_id = row[col["item_id"]].strip()
            type_ = row[col["event_type"]].strip()
            raw_ts = row[col["timestamp"]].strip()
            if not user_id or not item_id:
                raise ValueError(f"{path}:{line}: empty user_id or item_id")
            if len(user_id) > MAX_ID_LENGTH or len(item_id) > MAX_ID_LENGTH:
                raise ValueError(f"{path}:{line}: id longer than {MAX_ID_LENGTH} characters")
            if type_ not in EVENT_TYPES:
                raise ValueError(
                    f"{path}:{line}: unknown event_type {type_!r} "
                    f"(expected one of {', '.join(EVENT_TYPES)})"
                )
            try:
                ts = float(raw_ts)
            except ValueError:
                raise ValueError(f"{path}:{line}: timestamp {raw_ts!r} is not a number") from None
            if not math.isfinite(ts) or ts < 0:
                raise ValueError(f"{path}:{line}: timestamp must be finite and >= 0, got {raw_ts}")
            yield Event(_event_id(line, user_id, item_id, type_, ts), user_id, item_id, type_, ts)


def read_events(path: str | Path) -> list[Event]:
    """All events of an ``events.csv``, in file order."""
    return list(iter_events(path))


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split("|") if v.strip())


def read_items(path: str | Path) -> list[Item]:
    """The catalogue of an ``items.csv`` (see the module docstring); duplicate ids are errors."""
    path = Path(path)
    items: list[Item] = []
    seen: set[str] = set()
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            raise ValueError(f"{path}: empty file, expected a header starting item_id,title")
        fields = [h.strip() for h in reader.fieldnames]
        if "item_id" not in fields:
            raise ValueError(f"{path}: missing column item_id in header {fields}")
        known = {"item_id", "title", "description", "genres", "categories", "tags", "ts"}
        extra = [c for c in fields if c not in known]
        for line, raw in enumerate(reader, start=2):
            if None in raw:  # more fields than the header
                raise ValueError(f"{path}:{line}: more fields than the header has columns")
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            item_id = row.get("item_id", "")
            if not item_id:
                raise ValueError(f"{path}:{line}: empty item_id")
            if len(item_id) > MAX_ID_LENGTH:
                raise ValueError(f"{path}:{line}: item_id longer than {MAX_ID_LENGTH} characters")
            if item_id in seen:
                raise ValueError(f"{path}:{line}: duplicate item_id {item_id!r}")
            seen.add(item_id)
            description = [row.get("description", "")]
            description += [f"{c}: {row[c]}." for c in extra if row.get(c)]
            try:
                ts = float(row["ts"]) if row.get("ts") else 0.0
            except ValueError:
                raise ValueError(f"{path}:{line}: ts {row['ts']!r} is not a number") from None
            items.append(
                Item(
                    item_id=item_id,
                    title=row.get("title", ""),
                    description=" ".join(d for d in description if d),
                    categories=_split(row.get("genres") or row.get("categories") or ""),
                    tags=_split(row.get("tags", "")),
                    ts=ts,
                )
            )
    return items


def load_dataset(folder: str | Path) -> tuple[list[Item], list[Event]]:
    """``(items, events)`` of a dataset folder holding ``items.csv`` and ``events.csv``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such dataset folder")
    for name in ("items.csv", "events.csv"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name}: missing (expected items.csv, events.csv)")
    return read_items(folder / "items.csv"), read_events(folder / "events.csv")


def write_dataset(folder: str | Path, items: Sequence[Item], events: Sequence[Event]) -> None:
    """Write ``items`` and ``events`` as a dataset folder in the standard format.

    ``items.csv`` gets ``item_id,title,description,categories,tags,ts`` (lists ``|``-separated,
    ``ts`` the release time) and ``events.csv`` the events in the order given. Timestamps are
    written as ``repr`` so they read back as the same floats: :func:`load_dataset` gives back
    equal items, and equal events when their ids were derived from their line as the reader
    derives them (as :func:`synthetic_stream` does). The folder is created when missing.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for item in items:  # the list separator cannot be escaped in the format: refuse, never mangle
        if any("|" in value for value in (*item.categories, *item.tags)):
            raise ValueError(f"item {item.item_id!r}: '|' inside a category or tag")
    with (folder / "items.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("item_id", "title", "description", "categories", "tags", "ts"))
        for item in items:
            writer.writerow(
                (
                    item.item_id,
                    item.title,
                    item.description,
                    "|".join(item.categories),
                    "|".join(item.tags),
                    repr(item.ts),
                )
            )
    with (folder / "events.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(EVENT_COLUMNS)
        for event in events:
            writer.writerow((repr(event.ts), event.user_id, event.item_id, event.type))


# --- synthetic stream ------------------------------------------------------------------------

_GENRES: dict[str, tuple[list[str], list[str]]] = {
    # genre: (title words, tag words) -- distinct vocabularies so BERT similarity tracks genre
    "sci-fi": (
        ["Star", "Galaxy", "Robot", "Orbit", "Nebula", "Android"],
        ["space", "future", "ai"],
    ),
    "romance": (
        ["Love", "Heart", "Kiss", "Wedding", "Paris", "Summer"],
        ["love", "couple", "date"],
    ),
    "horror": (["Night", "Blood", "Ghost", "Curse", "Grave", "Scream"], ["scary", "gore", "dark"]),
    "comedy": (["Laugh", "Party", "Crazy", "Funny", "Oops", "Buddy"], ["funny", "silly", "jokes"]),
    "western": (["Gun", "Ranch", "Saloon", "Outlaw", "Desert", "Sheriff"], ["cowboy", "horses"]),
    "kids": (["Puppy", "Toy", "Castle", "Magic", "Dragon", "Pony"], ["family", "cartoon", "fun"]),
    "war": (["Battle", "Soldier", "Front", "Siege", "Tank", "Medal"], ["army", "history", "ww2"]),
    "crime": (["Heist", "Cop", "Mafia", "Money", "Street", "Deal"], ["gangster", "police"]),
}
_NOUNS = ["Story", "Return", "Legend", "Secret", "Day", "City", "Game", "Journey", "Code", "Life"]


def synthetic_stream(
    n_users: int = 200,
    n_items: int = 500,
    n_events: int = 20_000,
    seed: int = 42,
    *,
    new_item_share: float = 0.3,
    direct_purchase_share: float = 0.2,
    start_ts: float = 1_700_000_000.0,
) -> tuple[list[Item], list[Event]]:
    """A seeded catalogue and event stream with learnable structure.

    Each item belongs to one or two genres and gets a title, description and tags drawn from
    its genres' vocabularies (so content similarity is meaningful). Each user likes one or two
    genres. Users arrive in sessions; in a session the user browses items mostly from liked
    genres (and popular ones), and each view may turn into a click and then a purchase, more
    likely when the item matches the user's taste; ``direct_purchase_share`` of the visits to
    liked items are a purchase without a view first. ``new_item_share`` of the catalogue is
    released over the stream (``Item.ts`` = release time); new items get extra attention at
    release, so fresh-item handling and cold-start content similarity both matter.

    Returns ``(items, events)``; events are in time order, ids deterministic.
    """
    if min(n_users, n_items, n_events) <= 0:
        raise ValueError("n_users, n_items and n_events must be > 0")
    rng = random.Random(seed)
    genres = list(_GENRES)
    n_initial = max(1, round(n_items * (1 - new_item_share)))
    duration = n_events * 30.0  # ~one event every 30 s of synthetic time
    items: list[Item] = []
    item_genres: list[tuple[str, ...]] = []
    release: list[float] = []
    for i in range(n_items):
        g = tuple(rng.sample(genres, 2 if rng.random() < 0.3 else 1))
        words = _GENRES[g[0]][0]
        title = f"{rng.choice(words)} {rng.choice(_NOUNS)}"
        if rng.random() < 0.5:
            title = f"The {title} {rng.choice(words)}"
        description = (
            "A " + " and ".join(g) + " story about " + ", ".join(rng.sample(words, 3)).lower() + "."
        )
        ts = (
            start_ts
            if i < n_initial
            else start_ts + duration * (i - n_initial + 1) / (n_items - n_initial + 1)
        )
        item_tags = tuple(sorted({t for gg in g for t in rng.sample(_GENRES[gg][1], 2)}))
        items.append(Item(f"i{i}", title, description, g, item_tags, ts))
        item_genres.append(g)
        release.append(ts)
    # A Zipf-like base popularity: a few items are hits whatever the user's taste.
    appeal = [1.0 / (1 + r) ** 0.8 for r in rng.sample(range(n_items), n_items)]
    user_likes = [tuple(rng.sample(genres, 1 + (rng.random() < 0.5))) for _ in range(n_users)]
    user_activity = [rng.paretovariate(1.5) for _ in range(n_users)]
    events: list[Event] = []
    t = start_ts
    step = duration / n_events
    while len(events) < n_events:
        u = rng.choices(range(n_users), weights=user_activity)[0]
        likes = user_likes[u]
        available = [i for i in range(n_items) if release[i] <= t] or [0]
        weights = []
        for i in available:
            match = 4.0 if set(item_genres[i]) & set(likes) else 0.3
            fresh = 1.0 + 4.0 * math.exp(-(t - release[i]) / (duration / 20))
            weights.append(appeal[i] * match * fresh)
        for _ in range(rng.randint(1, 6)):  # one session
            if len(events) >= n_events:
                break
            i = rng.choices(available, weights=weights)[0]
            likes_it = bool(set(item_genres[i]) & set(likes))
            # The funnel: a visit is a view; some views become clicks, some clicks purchases
            # (each a separate event, as a shop would emit them), likelier on the user's genres.
            # Some purchases are direct (from an e-mail, a recommendation, a re-order): without
            # them no purchase would ever be of an item the user had not seen before.
            funnel = ["view"]
            if likes_it and rng.random() < direct_purchase_share:
                funnel = ["purchase"]
            elif rng.random() < (0.5 if likes_it else 0.15):
                funnel.append("click")
                if rng.random() < (0.6 if likes_it else 0.1):
                    funnel.append("purchase")
            for type_ in funnel:
                if len(events) >= n_events:
                    break
                t += step * rng.uniform(0.1, 0.5)
                n = len(events)
                user_id, item_id = f"u{u}", f"i{i}"
                events.append(
                    Event(_event_id(n + 2, user_id, item_id, type_, t), user_id, item_id, type_, t)
                )
        t += step
    return items, events


# --- command line: recstream synth-dataset ---------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "out_dir", metavar="OUT_DIR", type=Path, help="folder to write items.csv and events.csv to"
    )
    parser.add_argument("--users", type=positive_int, default=200, help="users (default 200)")
    parser.add_argument("--items", type=positive_int, default=500, help="items (default 500)")
    parser.add_argument(
        "--events", type=positive_int, default=20_000, help="events (default 20000)"
    )
    parser.add_argument("--seed", type=int, default=42, help="seed (default 42)")
    parser.add_argument(
        "--force", action="store_true", help="overwrite items.csv / events.csv already there"
    )


def run(args: argparse.Namespace) -> int:
    """Write the seeded synthetic shop (the stream ``recstream produce --synthetic`` sends)."""
    out: Path = args.out_dir
    existing = [out / n for n in ("items.csv", "events.csv") if (out / n).exists()]
    if existing and not args.force:
        raise ValueError(f"{existing[0]} exists (--force overwrites)")
    items, events = synthetic_stream(args.users, args.items, args.events, args.seed)
    write_dataset(out, items, events)
    purchases = sum(e.type == "purchase" for e in events)
    print(
        f"{out}: {len(items)} items, {len(events)} events ({purchases} purchases) "
        f"from {args.users} users, seed {args.seed}"
    )
    return 0
