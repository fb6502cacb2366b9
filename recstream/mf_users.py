"""Per-user rows of the implicit MF: allocation, reuse, forgetting, export and import.

A mixin of :class:`~recstream.mf_ranker.ImplicitMFRanker`: users' factors are rows of one
``(n_users, k)`` matrix ``_P`` (biases in ``_bu``), addressed through ``_user_rows``. A user's
parameters travel between models as plain data (:meth:`UserRows.export_user`), which is how the
hybrid moves a user to another worker or out of memory while idle.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np

from recstream.index import grow
from recstream.optim_state import key_state, pop_key_state, set_key_state

__all__ = ["UserRows"]


class UserRows:
    """Mixin: the host provides ``n_factors``, ``initializer``, ``_P``, ``_bu``, the user
    optimisers ``_opt_u`` / ``_opt_bu``, ``_seen`` and River's engine (``_river``, with
    ``_river_forget`` / ``_river_export`` / ``_river_import``)."""

    # Rows of dropped users, reused by the next new users (None: pickled before it existed).
    _free_rows: list[int] | None = None
    _user_rows: dict[Hashable, int]

    def _allocate_row(self, user_id: Hashable) -> int:
        """A row for a new user: a dropped user's (zeroed, optimiser state gone) or a new one.

        Reusing rows keeps ``_P`` as large as the users in memory, not every user ever seen; a
        row is reused only once nothing of its previous owner is left in it.
        """
        if self._free_rows is None:  # pickled before rows were reused
            self._free_rows = []
        if self._free_rows:
            r = self._free_rows.pop()
        else:
            r = getattr(self, "_n_user_rows", len(self._user_rows))  # pickled before it existed
            self._n_user_rows = r + 1
            self._P = grow(self._P, r + 1)
            self._bu = grow(self._bu, r + 1)
        self._user_rows[user_id] = r
        return r

    def _user_row(self, user_id: Hashable) -> int:
        r = self._user_rows.get(user_id)
        if r is None:
            r = self._allocate_row(user_id)
            self._P[r] = self.initializer(shape=self.n_factors)
        return r

    def user_ids(self) -> list[Hashable]:
        """The users with factors here."""
        return list(self._user_rows)

    def forget_user(self, user_id: Hashable) -> bool:
        """Erase the user's factors, bias and optimiser state; the row is reused by a later new
        user. Item factors stay: they are aggregates of many users."""
        if self._seen is not None:
            self._seen.pop(user_id, None)
        r = self._user_rows.pop(user_id, None)
        if r is None:
            return False
        self._P[r] = 0.0
        self._bu[r] = 0.0
        for opt in (self._opt_u, self._opt_bu):
            pop_key_state(opt, r)
        if self._free_rows is None:
            self._free_rows = []
        self._free_rows.append(r)
        if self._river is not None:
            self._river_forget(user_id)
        return True

    # -- portable user state: the user's parameters as plain data ------------------------------
    def export_user(self, user_id: Hashable) -> dict | None:
        """The user's factors, bias and optimiser state (copies); None for an unknown user."""
        r = self._user_rows.get(user_id)
        if r is None:
            return None
        if self._river is not None:  # River's dicts are the reference engine's truth
            optimizer = self._river_export(user_id)
        else:
            optimizer = {"factors": key_state(self._opt_u, r), "bias": key_state(self._opt_bu, r)}
        return {"factors": self._P[r].copy(), "bias": float(self._bu[r]), "optimizer": optimizer}

    def import_user(self, user_id: Hashable, data: Mapping) -> None:
        """Replace the user's parameters with :meth:`export_user`'s ``data``."""
        factors = np.asarray(data["factors"], dtype=np.float64)
        if factors.shape != (self.n_factors,):
            raise ValueError(f"factors of shape {factors.shape}, expected ({self.n_factors},)")
        self.forget_user(user_id)
        r = self._allocate_row(user_id)  # no initializer draw: a seeded run stays reproducible
        self._P[r] = factors
        self._bu[r] = float(data["bias"])
        optimizer = data.get("optimizer", {})
        if self._river is not None:
            self._river_import(user_id, factors, float(data["bias"]), optimizer)
        else:
            set_key_state(self._opt_u, r, optimizer.get("factors", {}))
            set_key_state(self._opt_bu, r, optimizer.get("bias", {}))

    def user_vector(self, user_id: Hashable) -> np.ndarray | None:
        r = self._user_rows.get(user_id)
        return None if r is None else self._P[r]
