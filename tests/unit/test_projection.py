"""The content projection refitted off the event loop (recstream/projection.py, issue 12)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import recstream.index as index_module
from recstream.index import ItemIndex


def _vectors(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def _index(n: int = 200, *, background: bool = False) -> ItemIndex:
    index = ItemIndex(reduce_dim=4)
    index.background_refit = background
    index.set_vectors([f"i{r}" for r in range(n)], _vectors(n))
    return index


def _refit_off_loop(index: ItemIndex) -> None:
    work = index.begin_refit()
    assert work is not None
    index.finish_refit(work())


def test_in_place_and_off_the_loop_give_the_same_projection():
    in_place, off_loop = _index(), _index(background=True)
    basis, projected = in_place._projection()
    _refit_off_loop(off_loop)
    basis2, projected2 = off_loop._projection()
    assert np.array_equal(basis, basis2) and np.array_equal(projected, projected2)
    q = _vectors(1, seed=5)[0]
    assert np.array_equal(in_place.similarity(q, approx=True), off_loop.similarity(q, approx=True))


def test_with_background_refit_the_caller_never_fits(monkeypatch):
    index = _index(background=True)

    def no_fit(*args, **kwargs):
        raise AssertionError("a projection fit in the caller's thread")

    monkeypatch.setattr(index_module, "fit_basis", no_fit)
    q = _vectors(1, seed=5)[0]
    # no basis yet: full-width cosines, the same as without a projection
    assert index._projection() is None
    assert np.allclose(index.similarity(q, approx=True), index.similarity(q))
    _refit_off_loop(index)  # the work fits with recstream.projection's own function
    basis, _ = index._projection()
    # the catalogue grows past the refit threshold: the old basis stays until the next swap
    index.set_vectors([f"j{r}" for r in range(100)], _vectors(100, seed=3))
    assert index._projection()[0] is basis
    assert index.begin_refit() is not None


def test_rows_written_while_the_refit_runs_are_projected_with_the_new_basis():
    index = _index(background=True)
    _refit_off_loop(index)
    index.set_vectors([f"j{r}" for r in range(100)], _vectors(100, seed=3))  # due again
    work = index.begin_refit()
    assert work is not None and index.begin_refit() is None  # one at a time
    refit = work()  # the thread read the vectors; the loop writes after it did
    changed = [f"i{r}" for r in range(0, 200, 7)]
    index.set_vectors(changed, _vectors(len(changed), seed=9))
    index.set_vectors(["late1", "late2"], _vectors(2, seed=11))  # new rows too
    index.finish_refit(refit)
    basis, projected = index._projection()
    assert basis is refit.basis and projected.shape[0] == len(index)
    assert np.allclose(projected, index.vectors @ basis, atol=1e-5)
    # without the record of written rows, a changed row would keep its old vector's projection
    row = index.rows["i7"]
    assert not np.allclose(refit.projected[row], projected[row], atol=1e-3)


def test_a_failed_refit_keeps_the_old_basis_and_can_start_again():
    index = _index(background=True)
    _refit_off_loop(index)
    basis = index._projection()[0]
    index.set_vectors([f"j{r}" for r in range(100)], _vectors(100, seed=3))
    assert index.begin_refit() is not None
    index.finish_refit(None)  # the work raised, or the task was cancelled
    assert index._projection()[0] is basis
    assert index.begin_refit() is not None


def test_a_pickle_taken_during_a_refit_loads_as_an_ordinary_index():
    index = _index(background=True)
    assert index.begin_refit() is not None
    back = pickle.loads(pickle.dumps(index))
    assert back._refit_dirty is None and back.background_refit is False
    assert back._projection() is not None  # an evaluation that loads it refits in place


@pytest.mark.parametrize("reduce_dim", [None, 16, 32])
def test_no_projection_no_refit(reduce_dim):
    index = ItemIndex(reduce_dim=reduce_dim)
    index.background_refit = True
    index.set_vectors(["a", "b"], _vectors(2))
    assert index.begin_refit() is None and index._projection() is None
