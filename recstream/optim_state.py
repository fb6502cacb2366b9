"""One key's share of a River optimiser's state: to move a user's MF parameters between models.

River's adaptive optimisers keep per-parameter state in dicts keyed like the parameters they
step: :class:`river.optim.Adam` its moments ``m`` and ``v``, :class:`river.optim.AdaGrad` its
sums of squared gradients ``g2`` (:class:`river.optim.SGD` keeps none). A user's factors are one
key, so exporting, importing or dropping a user has to take that key's entries along: left
behind, they would be a memory leak and would hand a forgotten user's moments to whoever gets
the key next. The step counter (``n_iterations``) is shared by every key and stays.

>>> from river import optim
>>> adam = optim.Adam(0.1)
>>> _ = adam.step({"u1": 1.0, "u2": 2.0}, {"u1": 0.5, "u2": 0.5})
>>> state = key_state(adam, "u1")
>>> sorted(state), pop_key_state(adam, "u1"), key_state(adam, "u1")
(['m', 'v'], True, {})
>>> other = optim.Adam(0.1)
>>> set_key_state(other, 7, state)
>>> round(other.m[7], 3), round(other.v[7], 5)
(0.05, 0.00025)
"""

from __future__ import annotations

import collections
import copy
from collections.abc import Hashable, Mapping
from typing import Any

__all__ = ["key_state", "pop_key_state", "set_key_state"]

# The per-key dicts of the River optimisers recstream uses (mf.make_optimizer).
_PER_KEY = ("m", "v", "g2")


def _tables(optimizer: Any) -> list[tuple[str, Any]]:
    return [
        (name, table)
        for name in _PER_KEY
        if isinstance(table := getattr(optimizer, name, None), dict)
    ]


def key_state(optimizer: Any, key: Hashable) -> dict[str, Any]:
    """Copies of ``optimizer``'s per-key entries for ``key`` (empty for SGD or an unseen key)."""
    return {name: copy.copy(table[key]) for name, table in _tables(optimizer) if key in table}


def set_key_state(optimizer: Any, key: Hashable, state: Mapping[str, Any]) -> None:
    """Install :func:`key_state`'s ``state`` under ``key`` (replacing what ``key`` had)."""
    pop_key_state(optimizer, key)
    for name, value in state.items():
        if name not in _PER_KEY:
            raise ValueError(f"unknown optimiser state {name!r} (expected one of {_PER_KEY})")
        if getattr(optimizer, name, None) is None:  # Adam creates its tables on its first step
            setattr(optimizer, name, collections.defaultdict(float))
        getattr(optimizer, name)[key] = copy.copy(value)


def pop_key_state(optimizer: Any, key: Hashable) -> bool:
    """Remove ``key``'s entries; True when there were some."""
    found = False
    for _, table in _tables(optimizer):
        found |= table.pop(key, None) is not None
    return found
