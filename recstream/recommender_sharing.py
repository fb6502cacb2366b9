"""What a recommender shares with other workers: one user's state, and the item side's deltas.

A mixin of :class:`recstream.recommender.Recommender` (which sets every attribute read here):

* **portable user state**: :meth:`SharedState.export_user` gives everything the model holds about
  one user as plain data keyed by item ids, :meth:`SharedState.import_user` reads it back on
  another worker (its partition moved) or after the user was dropped from memory as idle
  (:meth:`SharedState.idle_users`, :meth:`SharedState.drop_user`);
* **item deltas**: several workers, each learning from its own users, share what they learned
  about items (co-visitation, popularity, fresh marks, MF item steps, the learned ranker's and the
  sequence models' steps) through :meth:`SharedState.item_delta` and
  :meth:`SharedState.apply_item_delta` (format and merge rules: :mod:`recstream.deltas`).

Apart from the recommender's learning and scoring so that each file does one job; the methods
are the recommender's public API as before.
"""

from __future__ import annotations

from collections.abc import Iterator

from recstream.deltas import FORMAT as DELTA_FORMAT
from recstream.index import grow

__all__ = ["USER_FORMAT", "SharedState"]

USER_FORMAT = 1  # of export_user's dicts


class SharedState:
    """Per-user export/import and item deltas of a :class:`~recstream.recommender.Recommender`."""

    # -- portable user state: per-partition stores, idle users out of memory ----------------
    def user_ids(self) -> Iterator[str]:
        """The users held in memory (a snapshot: dropping users while iterating is fine)."""
        known = dict.fromkeys(self.users)
        known.update(dict.fromkeys(self.covisit.user_ids()))
        known.update(dict.fromkeys(self.mf.user_ids()))
        for model in (self.transitions, self.context):
            if model is not None:
                known.update(dict.fromkeys(model.user_ids()))
        return iter(list(known))

    def export_user(self, user_id: str) -> dict | None:
        """Everything this model holds about ``user_id`` as plain data, or None if unknown.

        Items are named by id, never by this worker's rows, so :meth:`import_user` reads it on
        any worker: ``{"format", "user"`` (history, seen, purchased, counts, sessions, profile
        sum), ``"covisit"`` (the co-visitation window), ``"mf"`` (factors, bias, optimiser
        state), ``"transitions"`` (the last items), ``"context"`` (the current context)``}``,
        the last two None without those models (and absent from exports of models before
        them: the format is the same); numpy arrays for vectors, so pickle it (not JSON).

        >>> from recstream.events import Event, Item
        >>> from recstream.recommender import Recommender
        >>> a, b = Recommender(), Recommender()
        >>> for rec, order in ((a, "xyz"), (b, "zyx")):  # rows differ between the two
        ...     for i in order:
        ...         _ = rec.upsert_item(Item(i))
        >>> a.learn(Event("e1", "u1", "x", "purchase", 1.0))
        >>> data = a.export_user("u1")
        >>> data["user"]["purchased"], data["covisit"], data["mf"]["factors"].shape
        (['x'], [('x', 1.0)], (32,))
        >>> b.import_user("u1", data)
        >>> [b.index.ids[r] for r in b.users.get("u1").purchased], a.export_user("nobody")
        (['x'], None)
        """
        user = self.users.export_user(user_id, self.index.ids)
        covisit = self.covisit.export_user(user_id)
        mf = self.mf.export_user(user_id)
        transitions = None if self.transitions is None else self.transitions.export_user(user_id)
        context = None if self.context is None else self.context.export_user(user_id)
        if all(x is None for x in (user, covisit, mf, transitions, context)):
            return None
        return {
            "format": USER_FORMAT,
            "user": user,
            "covisit": covisit,
            "mf": mf,
            "transitions": transitions,
            "context": context,
        }

    def import_user(self, user_id: str, data: dict) -> None:
        """Replace ``user_id``'s state with :meth:`export_user`'s ``data``.

        Item ids this model does not know are added as :meth:`learn` adds them (recommendable
        only once catalogued, unless ``allow_unknown_items``).
        """
        if not isinstance(data, dict) or data.get("format") != USER_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"not a user export of format {USER_FORMAT}: {found!r}")
        self.drop_user(user_id)
        allow = self.allow_unknown_items

        def row_of(item_id: str) -> int:
            return self.index.add(item_id, active=allow)

        user, covisit, mf = data.get("user"), data.get("covisit"), data.get("mf")
        if covisit is not None:
            for item_id, _ in covisit:
                row_of(item_id)  # first, with this model's rule (covisit's own adds active)
            self.covisit.import_user(user_id, covisit)
        if user is not None:
            self.users.import_user(user_id, user, row_of)
        if mf is not None:
            self.mf.import_user(user_id, mf)
        transitions, context = data.get("transitions"), data.get("context")
        if self.transitions is not None:
            if transitions is None and user is not None:
                # from a model without transitions: the user's last items, from the history
                recent = [(item_id, type_) for item_id, type_, _ in user["recent"]]
                transitions = self.transitions.last_items(recent)
            if transitions is not None:
                for item_id, _ in transitions:
                    row_of(item_id)  # first, with this model's rule
                self.transitions.import_user(user_id, transitions)
        if self.context is not None and context is not None:
            self.context.import_user(user_id, context)

    def drop_user(self, user_id: str) -> bool:
        """Remove ``user_id`` from memory (a partition left this worker, or the user is idle
        and was exported). The same as :meth:`forget_user`; True when the user was known."""
        return self.forget_user(user_id)

    def idle_users(
        self, before_event: int | None = None, before_ts: float | None = None
    ) -> list[str]:
        """Users whose last event is older than every bound given: learned before the model's
        clock ``n_events`` read ``before_event`` (e.g. ``n_events - ttl_events``), and with an
        event time before ``before_ts``. The caller decides what to do with them (typically
        :meth:`export_user` into the partition's store, then :meth:`drop_user`)."""
        return self.users.idle(before_event, before_ts)

    # -- item deltas: several workers, each with its own users, share the item side ----------
    def track_item_deltas(self) -> None:
        """Start recording item-side changes for :meth:`item_delta` (idempotent)."""
        if self._delta_clock is None:
            for model in (self.covisit, self.popularity, self.fresh, self.mf):
                model.track_deltas()
            for extra in (self.ranker, self.transitions, self.context):
                if extra is not None:
                    extra.track_deltas()
            self._delta_clock = self.n_events

    def item_delta(self) -> dict:
        """What this model learned about items since its last :meth:`item_delta` (or since
        :meth:`track_item_deltas`): co-visitation counts, popularity, fresh-item marks and MF
        item steps, keyed by item id, as plain data (format and merge rules:
        :mod:`recstream.deltas`). Nothing merged by :meth:`apply_item_delta` is in it.

        >>> from recstream.events import Event, Item
        >>> from recstream.recommender import Recommender
        >>> a, b = Recommender(), Recommender()
        >>> for rec in (a, b):
        ...     for i in "xyz":
        ...         _ = rec.upsert_item(Item(i))
        ...     rec.track_item_deltas()
        >>> for n, i in enumerate("xy"):
        ...     a.learn(Event(f"e{n}", "u1", i, "purchase", float(n)))
        >>> delta = a.item_delta()
        >>> delta["n_events"], delta["covisit"]["items"], delta["covisit"]["pair_w"].tolist()
        (2, ['x', 'y'], [1.0])
        >>> b.apply_item_delta(delta)
        >>> b.n_events, b.covisit.similarity("x", "y"), [r.item_id for r in b.recommend("u9", 2)]
        (2, 1.0, ['y', 'x'])
        """
        if self._delta_clock is None:
            raise RuntimeError("call track_item_deltas() before item_delta()")
        n = self.n_events - self._delta_clock
        self._delta_clock = self.n_events
        return {
            "format": DELTA_FORMAT,
            "n_events": n,
            "covisit": self.covisit.export_delta(),
            "popularity": self.popularity.export_delta(),
            "fresh": self.fresh.export_delta(),
            "mf": self.mf.export_delta(),
            # the learned ranker's weight steps (it learns from every user's purchases alike)
            "ranker": self.ranker.export_delta() if self.ranker is not None else None,
            # the sequence and context models' counts, when the ranker reads them
            "transitions": None if self.transitions is None else self.transitions.export_delta(),
            "context": None if self.context is None else self.context.export_delta(),
        }

    def apply_item_delta(self, delta: dict) -> None:
        """Merge another model's :meth:`item_delta` (or a :func:`recstream.deltas.combine` of
        several, less this model's own part: :func:`recstream.deltas.subtract`).

        The clock that ages popularity and fresh marks (``n_events``) advances by the delta's
        events, so a worker's clock is the group's event count as of the last exchange plus its
        own events since. Items the delta names that this model does not know are added as an
        event would add them (recommendable only once catalogued, unless
        ``allow_unknown_items``).
        """
        if delta.get("format") != DELTA_FORMAT:
            raise ValueError(f"not an item delta of format {DELTA_FORMAT}: {delta.get('format')!r}")
        self._stale()
        n = int(delta["n_events"])
        self.n_events += n  # first: merged counts are stamped no later than this clock
        if self._delta_clock is not None:
            self._delta_clock += n
        for part in ("covisit", "popularity", "fresh", "mf", "transitions", "context"):
            for item_id in (delta.get(part) or {}).get("items", ()):
                self.index.add(item_id, active=self.allow_unknown_items)
        self.covisit.merge_delta(delta["covisit"])
        self.popularity.merge_delta(delta["popularity"])
        self.mf.merge_delta(delta["mf"])
        for name, model in (
            ("ranker", self.ranker),
            ("transitions", self.transitions),
            ("context", self.context),
        ):
            if model is not None and delta.get(name) is not None:
                model.merge_delta(delta[name])
        rows = self.fresh.merge_delta(delta["fresh"], combine="min")  # the earliest mark wins
        if len(rows):
            self._fresh_marked = grow(self._fresh_marked, len(self.index), fill=False)
            self._fresh_marked[rows] = True
        if self.retrieval is not None:
            for row in rows:
                self.retrieval.on_fresh(int(row))
            rows_of = self.index.rows
            counted = {rows_of[i] for part in ("popularity", "mf") for i in delta[part]["items"]}
            self.retrieval.on_counts(self, sorted(counted))
