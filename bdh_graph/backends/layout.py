"""How the numba backend lays a synapse group out in memory: runs of targets instead of index arrays.

A group is stored source-major (bdh_graph.network): the out-edges of source b are `indices[indptr[b]:indptr[b+1]]`,
targets ascending. Most groups the compilers build are blocks of a dense matrix: every neuron to all 2d hubs
(circuit Gs), every neuron to the d hubs of its head (official Gs), a hub to every neuron where D_x is positive.
For those, the targets of source b are (nearly) a run `lo_b .. lo_b + len_b - 1`, and the kernels walk the run
with contiguous loads instead of reading an index per edge:

- `Rows(exact=True)`: every run holds exactly the source's edges (no gaps). Edge e of source b targets
  `lo_b + (e - indptr[b])`; values (weights, sigma) stay in edge order, so sigma needs no re-layout.
- `Rows(exact=False)`: the runs have gaps, but hold at least `DENSE_MIN` edges per slot: the weights are copied
  into a padded array (`padded`), zero where there is no edge. A send adds `w * s = 0` there, which leaves every
  finite sum unchanged, so it computes the same numbers as the sparse scatter.
- `None`: anything else (a sparse random graph); the backend keeps its index-reading kernels for it.

An excitatory and an inhibitory group between the same populations whose edge sets are disjoint and share the
runs (D_x^+ and D_x^-, E^+ and E^-: one signed matrix split by sign) can be held as ONE signed padded array
(`signed_pair`): a send reads each weight once and adds `max(w, 0) s` to the excitatory target and
`max(-w, 0) s` to the inhibitory one, exactly the two groups' weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DENSE_MIN = 0.5  # a padded layout is used when the runs hold at least this share of edges per slot


@dataclass(frozen=True)
class Rows:
    """The run of targets of every source: `lo[b] .. lo[b] + ln[b] - 1`, stored from `off[b]` in a values array of
    `size` slots (`exact`: the values array is the edge order itself)."""

    lo: np.ndarray  # (n_pre,) int64
    ln: np.ndarray  # (n_pre,) int64
    off: np.ndarray  # (n_pre,) int64
    size: int
    exact: bool
    n_post: int

    @property
    def mean_len(self) -> float:
        return self.size / max(1, len(self.ln))

    def pairs_aligned(self) -> bool:
        """Keys 2m and 2m+1 have the same run (a rotation's pairs can be walked side by side)."""
        return len(self.lo) % 2 == 0 and bool(
            np.array_equal(self.lo[0::2], self.lo[1::2]) and np.array_equal(self.ln[0::2], self.ln[1::2])
        )


def _runs(indptr, indices):
    """(lo, hi, ok): the first and one-past-last target of each source's edges; ok = targets strictly ascending
    (sorted, no parallel edges), which every layout here needs."""
    deg = np.diff(indptr)
    has = deg > 0
    lo = np.zeros(len(deg), dtype=np.int64)
    hi = np.zeros(len(deg), dtype=np.int64)
    if indices.size:
        lo[has] = indices[indptr[:-1][has]]
        hi[has] = indices[indptr[1:][has] - 1] + 1
        step = np.diff(indices.astype(np.int64))
        first = np.zeros(len(indices), dtype=bool)
        first[indptr[:-1][has]] = True
        ok = bool(np.all(step[~first[1:]] > 0))
    else:
        ok = True
    return lo, hi, ok


def rows_of(g, exact_only: bool = False) -> Rows | None:
    """The run layout of group g (a SynapseGroup): exact when every run is gap-free, padded when the runs hold at
    least DENSE_MIN edges per slot (unless `exact_only`), else None."""
    lo, hi, ok = _runs(g.indptr, g.indices)
    if not ok or g.nnz == 0:
        return None
    ln = hi - lo
    if np.array_equal(ln, np.diff(g.indptr)):
        return Rows(lo, ln, g.indptr[:-1].astype(np.int64), int(g.nnz), True, int(g.n_post))
    if exact_only or g.nnz < DENSE_MIN * ln.sum():
        return None
    off = np.concatenate(([0], np.cumsum(ln)[:-1])).astype(np.int64)
    return Rows(lo, ln, off, int(ln.sum()), False, int(g.n_post))


def padded(rows: Rows, g, values=None, dtype=np.float64) -> np.ndarray:
    """The values (default: the weights) of group g in the slots of `rows` (zeros where no edge)."""
    v = g.weight if values is None else values
    if rows.exact:
        return np.ascontiguousarray(v, dtype=dtype)
    out = np.zeros(rows.size, dtype=dtype)
    out[_slots(rows, g)] = v
    return out


def _slots(rows: Rows, g) -> np.ndarray:
    """The slot of every edge of g in the layout `rows`."""
    src = np.repeat(np.arange(g.n_pre, dtype=np.int64), np.diff(g.indptr))
    return rows.off[src] + (g.indices - rows.lo[src])


def signed_pair(ge, gi, dtype=np.float64):
    """(rows, S): groups ge (excitatory) and gi (inhibitory) as one signed padded array S = w_e - w_i on the union of
    their runs, when they join the same populations, have disjoint edge sets and the union is dense enough; else None.
    max(S, 0) and max(-S, 0) are then exactly the two groups' weights."""
    if (ge.pre, ge.post, ge.n_pre, ge.n_post) != (gi.pre, gi.post, gi.n_pre, gi.n_post) or ge.nnz + gi.nnz == 0:
        return None
    if ge.weight.size and ge.weight.min() < 0 or gi.weight.size and gi.weight.min() < 0:
        return None
    lo_e, hi_e, ok_e = _runs(ge.indptr, ge.indices)
    lo_i, hi_i, ok_i = _runs(gi.indptr, gi.indices)
    if not (ok_e and ok_i):
        return None
    de, di = np.diff(ge.indptr) > 0, np.diff(gi.indptr) > 0
    lo = np.where(de & di, np.minimum(lo_e, lo_i), np.where(de, lo_e, lo_i))
    hi = np.where(de & di, np.maximum(hi_e, hi_i), np.where(de, hi_e, hi_i))
    ln = hi - lo
    if ge.nnz + gi.nnz < DENSE_MIN * ln.sum():
        return None
    off = np.concatenate(([0], np.cumsum(ln)[:-1])).astype(np.int64)
    rows = Rows(lo, ln, off, int(ln.sum()), False, int(ge.n_post))
    se, si = _slots(rows, ge), _slots(rows, gi)
    taken = np.zeros(rows.size, dtype=np.int8)
    taken[se] += 1
    taken[si] += 1
    if taken.max(initial=0) > 1:  # an edge in both groups: not one signed matrix
        return None
    S = np.zeros(rows.size, dtype=dtype)
    S[se] = ge.weight
    S[si] = -gi.weight
    return rows, S


def bounds(n_post: int, nblk: int) -> np.ndarray:
    """nblk + 1 boundaries of equal blocks of targets 0 .. n_post (one block per thread of a send or read)."""
    return (np.arange(nblk + 1, dtype=np.int64) * n_post) // max(1, nblk)
