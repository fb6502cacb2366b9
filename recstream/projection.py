"""The content projection's refit, as work a worker can run off its event loop (issue 12).

:class:`~recstream.index.ItemIndex` scores content in a ``reduce_dim`` projection on the top
(uncentred) principal directions of the item vectors, refitted whenever the vector count grew
by a quarter. The fit is O(n d²) and re-projecting every row O(n d r): ~0.5–2 s on one core at
50,000 384-d items, a stall of every event if it runs inside ``recommend``. The evaluation runs
it in place (deterministic, and there is no loop to stall); a worker sets
``ItemIndex.background_refit`` and runs :meth:`ItemIndex.begin_refit`'s work in a thread, then
:meth:`ItemIndex.finish_refit` between two events, which swaps the basis and the projected rows
in at once and projects again only the rows whose vector changed meanwhile.

>>> import numpy as np
>>> x = np.array([[1, 0, 0], [0.8, 0.6, 0], [0, 0, 1]], dtype=np.float32)
>>> basis = fit_basis(x, 2)
>>> basis.shape, basis.dtype
((3, 2), dtype('float32'))
>>> bool(np.allclose(np.abs(basis[:, 0]) @ np.abs(basis[:, 0]), 1.0))
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Refit", "fit_basis", "matmul_f32", "refit_due", "scaled_matmul"]

GROWTH = 1.25  # refit when the vector count grew by this factor since the last fit


def matmul_f32(matrix: np.ndarray, right: np.ndarray, chunk: int = 1 << 18) -> np.ndarray:
    """``matrix @ right`` in float32: at once for a float32 ``matrix``; for another dtype
    (int8 storage), a chunk of rows at a time (BLAS multiplies floats only, and one cast of a
    10M-row matrix would make the float32 copy that int8 storage saves).

    >>> m = np.array([[127, 0], [0, 127], [76, 102]], dtype=np.int8)
    >>> matmul_f32(m, np.array([1.0, 0.0], dtype=np.float32), chunk=2).tolist()
    [127.0, 0.0, 76.0]
    """
    if matrix.dtype == np.float32:
        return matrix @ right
    out = np.empty((matrix.shape[0], *right.shape[1:]), dtype=np.float32)
    for start in range(0, matrix.shape[0], chunk):
        out[start : start + chunk] = matrix[start : start + chunk].astype(np.float32) @ right
    return out


def scaled_matmul(
    matrix: np.ndarray, right: np.ndarray, scale: np.ndarray | None = None
) -> np.ndarray:
    """:func:`matmul_f32`, each row's result times its ``scale`` when there is one: the
    product of int8 rows stored with a scale per row (``ItemIndex(vector_dtype="i8")``), without
    a float32 copy of the matrix.

    >>> m = np.array([[127, 0], [76, 102]], dtype=np.int8)
    >>> scaled_matmul(m, np.array([1.0, 0.0], dtype=np.float32), np.array([0.5, 1.0])).tolist()
    [63.5, 76.0]
    """
    out = matmul_f32(matrix, right)
    if scale is not None:
        out *= scale if out.ndim == 1 else scale[:, None]
    return out


def fit_basis(x: np.ndarray, reduce_dim: int) -> np.ndarray:
    """The ``(dim, reduce_dim)`` float32 basis of the top principal directions of ``x``'s rows:
    eigenvectors of ``XᵀX`` (the right singular vectors of X, without an n × n SVD)."""
    x = np.asarray(x, dtype=np.float64)
    eigval, eigvec = np.linalg.eigh(x.T @ x)
    order = np.argsort(eigval)[::-1][:reduce_dim]
    return np.ascontiguousarray(eigvec[:, order], dtype=np.float32)


def refit_due(n_vectors: int, fitted_on: int, has_basis: bool) -> bool:
    """Whether a projection should be fitted now: none yet, or the count grew by a quarter.

    >>> refit_due(10, 0, False), refit_due(12, 10, True), refit_due(13, 10, True)
    (True, False, True)
    """
    return n_vectors > 0 and (not has_basis or n_vectors >= GROWTH * fitted_on)


@dataclass(frozen=True)
class Refit:
    """A basis fitted off the loop and the rows ``[0, n_rows)`` projected with it."""

    basis: np.ndarray
    n_vectors: int  # vectors it was fitted on
    n_rows: int  # rows projected (the index's length when the work began)
    projected: np.ndarray


def refit_work(
    vectors: np.ndarray, has_vector: np.ndarray, reduce_dim: int, scale: np.ndarray | None = None
) -> Refit:
    """Fit and project (runs in a thread). ``vectors`` may be written by the loop meanwhile:
    the rows it writes are recorded by the index and projected again at the swap. ``scale``:
    each row's scale when ``vectors`` holds int8 (``ItemIndex(vector_dtype="i8")``)."""
    n = has_vector.shape[0]
    rows = vectors[:n]
    fit_rows = rows[has_vector].astype(np.float32)
    if scale is not None:
        fit_rows *= scale[has_vector, None]
    basis = fit_basis(fit_rows, reduce_dim)
    projected = scaled_matmul(rows, basis, scale)
    return Refit(basis, int(np.count_nonzero(has_vector)), n, np.ascontiguousarray(projected))
