"""Which item vectors a worker of a group installs, and which items it must encode itself.

With several workers in one consumer group (``RECSTREAM_STATE_STORE=kafka``) every worker reads
the whole items topic (all partitions) and the whole ``<prefix>.item-vectors`` topic, but only
the owner of an item's partition of the items topic encodes it, once, and produces the vector;
every worker, the owner included, installs what the topic carries. :class:`VectorSync` is that
policy, free of Kafka and Faust (streams/catalogue_sync.py feeds it records):

* :meth:`apply_items`: the catalogue from the items topic, every partition: upserts and deletes
  go to the local recommender; invalid records are skipped (the owner dead-letters them);
* :meth:`apply_vectors`: records of the item-vectors topic. A vector is installed only when it
  was computed from the item's current text (its ``text_hash`` is the catalogue's) by the same
  encoder model; one for text the catalogue has not reached yet waits (:attr:`pending`) until
  it does; a tombstone forgets the item's vector;
* :meth:`needs_encoding`: on the owner, whether the topic already has a vector of this text
  (then nothing is encoded: a restarted worker, or more workers, encode nothing more);
* :meth:`encoded` / :meth:`deleted`: the owner's own records, remembered until read back.

>>> import numpy as np
>>> from recstream.events import Item
>>> from recstream.item_vectors import ItemVector, encode_item_vector
>>> from recstream.recommender import Recommender
>>> sync = VectorSync(Recommender(seed=1))
>>> shoe = Item("i1", title="Trail shoes")
>>> iv = ItemVector("i1", shoe.text_hash, "m1", np.array([1.0, 0.0], dtype=np.float32))
>>> sync.apply_vectors([encode_item_vector(iv)])  # before the catalogue has the item
{'pending': 1}
>>> sync.needs_encoding(shoe)  # the cluster has this text's vector: not encoded again
False
>>> [i.item_id for i in sync.apply_items([(b"i1", shoe.to_json())])], sync.counts["from_topic"]
(['i1'], 1)
>>> sync.recommender.stats()["n_vectors"]
1
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import numpy as np

from recstream.events import DEFAULT_MAX_BYTES, InvalidMessage, Item, check_id, parse_item
from recstream.item_vectors import (
    InvalidItemVector,
    ItemVector,
    decode_item_vector,
    encode_item_vector,
    item_vector_tombstone,
)

__all__ = ["Record", "VectorSync"]

log = logging.getLogger(__name__)

Record = tuple[bytes | None, bytes | None]  # (key, value) of one Kafka record


class CatalogueModel(Protocol):
    """The part of :class:`recstream.recommender.Recommender` this module uses."""

    def upsert_item(self, item: Item) -> bool: ...
    def delete_item(self, item_id: str) -> None: ...
    def set_item_vectors(self, item_ids: Sequence[str], vectors: np.ndarray) -> None: ...
    def stats(self) -> dict: ...


class VectorSync:
    """Parameters: ``recommender`` (upserts, deletes, vectors go there), ``max_item_bytes`` (the
    items topic's size limit, as the worker's), ``model_id()`` (the local encoder's model id, or
    None while there is none: vectors of any model are then accepted).

    ``counts``: ``from_topic`` (vectors installed from the topic that this worker had not
    encoded itself), ``encoded`` (encoded here), ``invalid`` (vector records skipped as
    invalid), ``other_model`` (skipped: another encoder), ``items_invalid`` (catalogue records
    skipped), ``tombstones``.
    """

    def __init__(
        self,
        recommender: CatalogueModel,
        *,
        max_item_bytes: int = DEFAULT_MAX_BYTES,
        model_id: Callable[[], str | None] | None = None,
    ) -> None:
        self.recommender = recommender
        self.max_item_bytes = max_item_bytes
        self.model_id = model_id or (lambda: None)
        # item_id -> text hash of its latest upsert on the items topic (live items only)
        self.catalogue: dict[str, str] = {}
        # item_id -> text hash of the vector installed here
        self.installed: dict[str, str] = {}
        # item_id -> text hash of the newest vector record read from the topic (this model's)
        self.published: dict[str, str] = {}
        # item_id -> this worker's own newest record (a hash, or None for a tombstone) until it
        # is read back: the topic's newest record for the item, which the reader may not have
        # reached yet (an owner's writes are the newest for its items)
        self.own: dict[str, str | None] = {}
        # vectors of text the catalogue has not reached yet (the two topics are read apart)
        self.pending: dict[str, ItemVector] = {}
        # live items whose current text has no vector installed here (what an owner may still
        # have to encode: see streams/catalogue_sync.py, reconcile_encoding)
        self.unencoded: dict[str, Item] = {}
        self.counts: Counter[str] = Counter()

    # -- the items topic, every partition ---------------------------------------------------
    def apply_items(self, records: Iterable[Record]) -> list[Item]:
        """Apply catalogue records in order; returns the valid items (for the live page)."""
        applied: list[Item] = []
        ready: list[ItemVector] = []
        for key, value in records:
            try:
                item = self._parse_item(key, value)
            except InvalidMessage:
                self.counts["items_invalid"] += 1
                continue
            if item.deleted:
                self.recommender.delete_item(item.item_id)
                self.catalogue.pop(item.item_id, None)
                self.unencoded.pop(item.item_id, None)
            else:
                self.recommender.upsert_item(item)
                digest = item.text_hash
                self.catalogue[item.item_id] = digest
                if item.text and self.installed.get(item.item_id) != digest:
                    self.unencoded[item.item_id] = item
                else:
                    self.unencoded.pop(item.item_id, None)
                waiting = self.pending.get(item.item_id)
                if waiting is not None and waiting.text_hash == digest:
                    ready.append(self.pending.pop(item.item_id))
            applied.append(item)
        self._install(ready)
        return applied

    def _parse_item(self, key: bytes | None, value: bytes | None) -> Item:
        if value is not None:
            return parse_item(value, max_bytes=self.max_item_bytes)
        # A tombstone deletes the item its key names (as StreamProcessor.handle_item does).
        if key is None:
            raise InvalidMessage("tombstone", "tombstone without a key")
        try:
            item_id = bytes(key).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidMessage("tombstone", "tombstone key is not UTF-8") from None
        return Item(check_id(item_id, "key"), deleted=True)

    # -- the item-vectors topic --------------------------------------------------------------
    def apply_vectors(self, records: Iterable[Record]) -> dict[str, int]:
        """Apply item-vector records in order; returns what became of them, by outcome:
        ``installed``, ``known`` (installed already), ``pending``, ``tombstone``,
        ``other_model``, ``invalid``."""
        outcomes: Counter[str] = Counter()
        ready: dict[str, ItemVector] = {}
        for key, value in records:
            try:
                iv = decode_item_vector(key, value)
            except InvalidItemVector as exc:
                self.counts["invalid"] += 1
                outcomes["invalid"] += 1
                log.debug("item-vectors: skipped a record: %s", exc)
                continue
            if iv is None:
                assert key is not None
                item_id = bytes(key).decode("utf-8")
                self._forget(item_id)
                ready.pop(item_id, None)
                if item_id in self.own and self.own[item_id] is None:
                    del self.own[item_id]
                self.counts["tombstones"] += 1
                outcomes["tombstone"] += 1
                continue
            expected = self.model_id()
            if expected and iv.model != expected:
                self.counts["other_model"] += 1
                outcomes["other_model"] += 1
                continue
            self.published[iv.item_id] = iv.text_hash
            if self.own.get(iv.item_id) == iv.text_hash:
                del self.own[iv.item_id]
            if self.installed.get(iv.item_id) == iv.text_hash:
                ready.pop(iv.item_id, None)
                outcomes["known"] += 1
            elif self.catalogue.get(iv.item_id) == iv.text_hash:
                self.pending.pop(iv.item_id, None)
                ready[iv.item_id] = iv  # a later record of the same item replaces it
            else:
                ready.pop(iv.item_id, None)
                self.pending[iv.item_id] = iv
                outcomes["pending"] += 1
        failed = self._install(list(ready.values()))
        outcomes["installed"] += len(ready) - failed
        outcomes["invalid"] += failed
        return {k: v for k, v in outcomes.items() if v}

    def _forget(self, item_id: str) -> None:
        self.published.pop(item_id, None)
        self.pending.pop(item_id, None)
        self.installed.pop(item_id, None)

    def _install(self, vectors: list[ItemVector]) -> int:
        """set_item_vectors for ``vectors`` (one call); returns how many were refused."""
        if not vectors:
            return 0
        try:
            ids = [iv.item_id for iv in vectors]
            self.recommender.set_item_vectors(ids, np.stack([iv.vector for iv in vectors]))
        except ValueError:
            # Mixed or wrong dimensions (another model): one at a time, keeping the good ones.
            failed = 0
            for iv in vectors:
                try:
                    self.recommender.set_item_vectors([iv.item_id], iv.vector[None, :])
                except ValueError as exc:
                    failed += 1
                    self.counts["invalid"] += 1
                    log.warning("item-vectors: %s not installed: %s", iv.item_id, exc)
                else:
                    self._installed(iv)
            return failed
        for iv in vectors:
            self._installed(iv)
        return 0

    def _installed(self, iv: ItemVector) -> None:
        self.installed[iv.item_id] = iv.text_hash
        self._encoded_now(iv.item_id, iv.text_hash)
        self.counts["from_topic"] += 1

    def _encoded_now(self, item_id: str, digest: str) -> None:
        waiting = self.unencoded.get(item_id)
        if waiting is not None and waiting.text_hash == digest:
            del self.unencoded[item_id]

    # -- the owner -----------------------------------------------------------------------------
    def needs_encoding(self, item: Item) -> bool:
        """Whether the owner of ``item`` must encode it: it has text, and neither the topic
        (as read so far) nor this worker's own newest record holds a vector of that text."""
        if item.deleted or not item.text:
            return False
        digest = item.text_hash
        if item.item_id in self.own:
            return self.own[item.item_id] != digest
        return self.published.get(item.item_id) != digest

    def encoded(self, items: Sequence[Item], vectors: np.ndarray, model: str) -> list[Record]:
        """Vectors encoded (and installed) here: the records to produce for them."""
        records: list[Record] = []
        for item, vector in zip(items, np.asarray(vectors, dtype=np.float32), strict=True):
            digest = item.text_hash
            self.own[item.item_id] = digest
            self.installed[item.item_id] = digest
            self._encoded_now(item.item_id, digest)
            waiting = self.pending.get(item.item_id)
            if waiting is not None and waiting.text_hash == digest:
                del self.pending[item.item_id]
            self.counts["encoded"] += 1
            records.append(encode_item_vector(ItemVector(item.item_id, digest, model, vector)))
        return records

    def deleted(self, item_id: str) -> Record:
        """An item deleted on the owner's partition: the tombstone to produce."""
        self.own[item_id] = None
        self.installed.pop(item_id, None)
        self.pending.pop(item_id, None)
        return item_vector_tombstone(item_id)

    def stats(self) -> dict[str, int]:
        return {
            "from_topic": self.counts["from_topic"],
            "encoded": self.counts["encoded"],
            "pending": len(self.pending),
            "unencoded": len(self.unencoded),
            "invalid": self.counts["invalid"],
            "other_model": self.counts["other_model"],
            "items_invalid": self.counts["items_invalid"],
        }
