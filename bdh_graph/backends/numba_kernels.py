"""The numba kernels of the event-driven backend: plain loops over plain arrays (the backend validates nothing here).

Two families, the same arithmetic:
- index kernels over source-major CSR arrays (indptr, indices, values): any group (`_scatter`, `_hebbian`, ...);
- run kernels over `layout.Rows` (the targets of source b are the run lo[b] .. lo[b] + ln[b] - 1, values from
  off[b]): contiguous loads, no index per edge (`_send_rows`, `_read_rows_*`, `_hebbian_rows`).

Every sum into a target adds the active sources in ascending order, whichever kernel and however many threads:
parallel kernels split the TARGETS into blocks (`bounds`), each thread owning its block, so the bits do not depend
on the thread count (issue 21). Per-synapse work (Hebbian write, rotation) is owner-computes by source. No
allocation inside prange; fastmath off (bdh_graph.config). Values may be float32 (weights, sigma) while the node
arrays they are added into stay float64: every product is formed in float64.

Lazy damping (the clocks live in the backend): `clock` counts the damp sub-rounds of an edge variable, `last` when
each key (column), synapse (edge) or key pair (rotation) was last brought up to date. A rotation catches up by
applying its 2x2 step `steps` times in registers: the same multiplications, in the same order, as the eager
rotation, so the same bits, with one load and one store of each synapse.

Each prange kernel comes in two builds, (serial, parallel): a parallel launch costs more than a small call, so
calls below config.PARALLEL_MIN_EDGES synapses run the serial build (prange is range there): identical bits.
"""

import os
import types

import numpy as np
from numba import njit, prange

from .. import config

# OpenMP threads that spin while they wait make a parallel kernel on a busy machine wait for a descheduled thread:
# a 262k-synapse send took 8 ms in parallel against 0.07 ms serial under a load of 4 on 2 cores, and 0.07 ms with
# passive waiting (the default of the `bdh` command too, bdh.options.THREADS_POLICY). Read by numba's OpenMP
# layer when its first parallel kernel starts; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_jit = dict(fastmath=config.FASTMATH, cache=config.CACHE, nogil=True)
NO_CLOCK = -1


def _builds(fn):
    """(serial build, parallel build) of a kernel written with prange. The parallel build compiles a copy named
    `<name>_parallel`: numba's on-disk cache keys its files by the function's name, so the two builds must not
    share one."""
    par = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_parallel", fn.__defaults__, fn.__closure__)
    par.__qualname__ = fn.__qualname__ + "_parallel"
    return njit(**_jit)(fn), njit(parallel=True, **_jit)(par)


# ---- index kernels (any group) ---------------------------------------------------------------------------------


@njit(**_jit)
def scatter(indptr, indices, w, src, active, out, u_edge, last, clock):
    """out[indices[e]] += w[e] * src[b] over the out-edges e of each active source b (serial scatter).
    clock >= 0: w is a lazily damped edge state, brought up to date before use."""
    for k in range(active.shape[0]):
        b = active[k]
        sb = src[b]
        for e in range(indptr[b], indptr[b + 1]):
            if clock >= 0 and last[e] != clock:
                s = clock - last[e]
                w[e] *= u_edge[e] if s == 1 else u_edge[e] ** s
                last[e] = clock
            out[indices[e]] += w[e] * sb


def _scatter_blocks_py(indices, w, src, active, out, split):
    """`scatter` of a fixed group, parallel over target blocks: thread blk visits, for each active source b in
    order, its out-edges split[b, blk]:split[b, blk + 1] (the targets of block blk; rows sorted by target, see
    `target_blocks`). Each out[j] adds the same products in the same order as the serial scatter (the same bits)."""
    for blk in prange(split.shape[1] - 1):
        for k in range(active.shape[0]):
            b = active[k]
            sb = src[b]
            for e in range(split[b, blk], split[b, blk + 1]):
                out[indices[e]] += w[e] * sb


def target_blocks(g, nblk, weight=None):
    """(indices, weight, split) of a fixed group for `scatter_blocks`: each row's edges sorted by target (a stable
    sort, so one source's parallel edges keep their order; no copy when already sorted) and split[b, k] the first
    edge of row b whose target is in block k or later; nblk blocks of targets with about equal in-edges."""
    w = g.weight if weight is None else weight
    key = np.repeat(np.arange(g.n_pre, dtype=np.int64) * g.n_post, np.diff(g.indptr)) + g.indices
    if np.any(np.diff(key) < 0):
        order = np.argsort(key, kind="stable")
        key, indices, w = key[order], g.indices[order], w[order]
    else:
        indices = g.indices
    cum = np.concatenate(([0], np.cumsum(np.bincount(g.indices, minlength=g.n_post))))
    b = np.searchsorted(cum, np.linspace(0, g.nnz, nblk + 1)).astype(np.int64)
    b[0], b[-1] = 0, g.n_post
    rows = np.arange(g.n_pre, dtype=np.int64)[:, None] * g.n_post
    split = np.searchsorted(key, rows + b[None, :]).astype(np.int64)
    return indices, w, np.ascontiguousarray(split)


def _hebbian_py(indptr, indices, gs, sigma, pre, post, active_pre, u_edge, last, clock):
    """sigma(i,j) += Gs(i,j) pre(i) post(j) on edges with both ends active; a thread owns source i's synapses."""
    for k in prange(active_pre.shape[0]):
        b = active_pre[k]
        pb = pre[b]
        for e in range(indptr[b], indptr[b + 1]):
            qa = post[indices[e]]
            if qa != 0.0:
                if clock >= 0 and last[e] != clock:
                    s = clock - last[e]
                    sigma[e] *= u_edge[e] if s == 1 else u_edge[e] ** s
                    last[e] = clock
                sigma[e] += gs[e] * pb * qa


@njit(**_jit)
def scatter_columns(indptr, indices, w, src, active, out, u_pre, last_col, clock):
    """`scatter` over a per-key lazily damped state, the catch-up fused into the same pass: for each active key
    b, sigma[:, b] *= u[b] ** (clock - last[b]) and out += sigma[:, b] * src[b] while the synapse is in cache."""
    for k in range(active.shape[0]):
        b = active[k]
        sb = src[b]
        steps = clock - last_col[b]
        if steps > 0:
            f = u_pre[b] if steps == 1 else u_pre[b] ** steps
            for e in range(indptr[b], indptr[b + 1]):
                w[e] *= f
                out[indices[e]] += w[e] * sb
            last_col[b] = clock
        else:
            for e in range(indptr[b], indptr[b + 1]):
                out[indices[e]] += w[e] * sb


@njit(**_jit)
def catch_up_columns(indptr, sigma, u_pre, last_col, clock, active):
    """Per-key damping (sigma[:, b] *= u[b] per step), lazily: bring the synapses of each active key b up to
    date with one power per key, then one multiply per synapse."""
    for k in range(active.shape[0]):
        b = active[k]
        steps = clock - last_col[b]
        if steps > 0:
            f = u_pre[b] if steps == 1 else u_pre[b] ** steps
            for e in range(indptr[b], indptr[b + 1]):
                sigma[e] *= f
            last_col[b] = clock


@njit(parallel=True, **_jit)
def flush_edges(sigma, u_edge, last, clock):
    for e in prange(sigma.shape[0]):
        if last[e] != clock:
            sigma[e] *= u_edge[e] ** (clock - last[e])
            last[e] = clock


def _rotate_py(sigma, pair_first, mate, coef_self, coef_mate):
    """Eager rotation: new[e] = coef_self[e] sigma[e] + coef_mate[e] sigma[mate[e]], pair by pair."""
    for k in prange(pair_first.shape[0]):
        e = pair_first[k]
        m = mate[e]
        s0 = sigma[e]
        s1 = sigma[m]
        sigma[e] = coef_self[e] * s0 + coef_mate[e] * s1
        sigma[m] = coef_self[m] * s1 + coef_mate[m] * s0


# ---- run kernels (layout.Rows) ---------------------------------------------------------------------------------
# Loops index slices (`o = out[a:z]`, `o[i]`) rather than `out[base + j]`: with non-negative indices numba drops
# its negative-index wrap-around, and the loops vectorise. Sends take the active sources four at a time when their
# runs coincide (every source of a dense block): `t = o[i]; t += w0[i] s0; ...; t += w3[i] s3; o[i] = t` adds the
# same products in the same order as one source at a time (the same bits) with a quarter of the target traffic.


@njit(**_jit)
def _same_run(active, k, lo, ln):
    """Active sources k .. k+3 exist and share one run."""
    if k + 4 > active.shape[0]:
        return False
    b = active[k]
    for m in range(k + 1, k + 4):
        c = active[m]
        if lo[c] != lo[b] or ln[c] != ln[b]:
            return False
    return True


def _send_rows_py(off, lo, ln, w, src, active, out, bounds):
    """out[j] += w[slot(b, j)] * src[b] over the run of each active source b; parallel over target blocks."""
    for blk in prange(bounds.shape[0] - 1):
        j0 = bounds[blk]
        j1 = bounds[blk + 1]
        k = 0
        while k < active.shape[0]:
            b = active[k]
            a = max(lo[b], j0)
            z = min(lo[b] + ln[b], j1)
            if _same_run(active, k, lo, ln):
                if z > a:
                    o = out[a:z]
                    b1, b2, b3 = active[k + 1], active[k + 2], active[k + 3]
                    s0, s1, s2, s3 = src[b], src[b1], src[b2], src[b3]
                    w0 = w[off[b] + a - lo[b] : off[b] + z - lo[b]]
                    w1 = w[off[b1] + a - lo[b] : off[b1] + z - lo[b]]
                    w2 = w[off[b2] + a - lo[b] : off[b2] + z - lo[b]]
                    w3 = w[off[b3] + a - lo[b] : off[b3] + z - lo[b]]
                    for i in range(z - a):
                        t = o[i]
                        t += w0[i] * s0
                        t += w1[i] * s1
                        t += w2[i] * s2
                        t += w3[i] * s3
                        o[i] = t
                k += 4
                continue
            if z > a:
                o = out[a:z]
                sb = src[b]
                w0 = w[off[b] + a - lo[b] : off[b] + z - lo[b]]
                for i in range(z - a):
                    o[i] += w0[i] * sb
            k += 1


def _send_rows_pair_py(off, lo, ln, S, src, active, out_e, out_i, bounds):
    """An E/I pair held as one signed array S (layout.signed_pair): out_e[j] += max(S, 0) src[b] and
    out_i[j] += max(-S, 0) src[b], each weight read once; the same products as the two groups' sends."""
    for blk in prange(bounds.shape[0] - 1):
        j0 = bounds[blk]
        j1 = bounds[blk + 1]
        k = 0
        while k < active.shape[0]:
            b = active[k]
            a = max(lo[b], j0)
            z = min(lo[b] + ln[b], j1)
            if _same_run(active, k, lo, ln):
                if z > a:
                    oe = out_e[a:z]
                    oi = out_i[a:z]
                    b1, b2, b3 = active[k + 1], active[k + 2], active[k + 3]
                    s0, s1, s2, s3 = src[b], src[b1], src[b2], src[b3]
                    w0 = S[off[b] + a - lo[b] : off[b] + z - lo[b]]
                    w1 = S[off[b1] + a - lo[b] : off[b1] + z - lo[b]]
                    w2 = S[off[b2] + a - lo[b] : off[b2] + z - lo[b]]
                    w3 = S[off[b3] + a - lo[b] : off[b3] + z - lo[b]]
                    for i in range(z - a):
                        te = oe[i]
                        ti = oi[i]
                        v = w0[i]
                        te += max(v, 0.0) * s0
                        ti += max(-v, 0.0) * s0
                        v = w1[i]
                        te += max(v, 0.0) * s1
                        ti += max(-v, 0.0) * s1
                        v = w2[i]
                        te += max(v, 0.0) * s2
                        ti += max(-v, 0.0) * s2
                        v = w3[i]
                        te += max(v, 0.0) * s3
                        ti += max(-v, 0.0) * s3
                        oe[i] = te
                        oi[i] = ti
                k += 4
                continue
            if z > a:
                oe = out_e[a:z]
                oi = out_i[a:z]
                sb = src[b]
                w0 = S[off[b] + a - lo[b] : off[b] + z - lo[b]]
                for i in range(z - a):
                    v = w0[i]
                    oe[i] += max(v, 0.0) * sb
                    oi[i] += max(-v, 0.0) * sb
            k += 1


def _read_rows_column_py(off, lo, ln, sigma, src, active, out, bounds, u_pre, last_col, clock):
    """The state read `out[j] += sigma(b, j) src[b]` over active keys b, parallel over target blocks, with the
    per-key lazy damping fused in (sigma[:, b] *= u[b] ** steps first; clock < 0: no damping). The caller
    sets last_col[active] = clock afterwards (every block has then caught up its part)."""
    for blk in prange(bounds.shape[0] - 1):
        j0 = bounds[blk]
        j1 = bounds[blk + 1]
        for k in range(active.shape[0]):
            b = active[k]
            a = max(lo[b], j0)
            z = min(lo[b] + ln[b], j1)
            if z <= a:
                continue
            sb = src[b]
            o = out[a:z]
            sg = sigma[off[b] + a - lo[b] : off[b] + z - lo[b]]
            steps = clock - last_col[b] if clock >= 0 else 0
            if steps > 0:
                f = u_pre[b] if steps == 1 else u_pre[b] ** steps
                for i in range(z - a):
                    sg[i] *= f
                    o[i] += sg[i] * sb
            else:
                for i in range(z - a):
                    o[i] += sg[i] * sb


@njit(**_jit)
def _rotate_run(g0, g1, c00, c01, c10, c11, steps):
    """The runs g0, g1 of keys 2m, 2m+1 rotated `steps` times: s0' = c00 s0 + c01 s1, s1' = c11 s1 + c10 s0, each
    step stored as the eager rotation stores it (the same bits, in float32 too); one vectorised pass per step."""
    for _ in range(steps):
        for i in range(g0.shape[0]):
            s0 = g0[i]
            s1 = g1[i]
            g0[i] = c00 * s0 + c01 * s1
            g1[i] = c11 * s1 + c10 * s0


@njit(**_jit)
def _add_pair(o, g0, g1, x0, x1):
    """o += g0 x0 + g1 x1 along a run (the keys 2m, 2m+1 of a pair, each only when it is active, in that order: the
    serial scatter's sums)."""
    if x0 != 0.0 and x1 != 0.0:
        for i in range(o.shape[0]):
            t = o[i]
            t += g0[i] * x0
            t += g1[i] * x1
            o[i] = t
    elif x0 != 0.0:
        for i in range(o.shape[0]):
            o[i] += g0[i] * x0
    else:
        for i in range(o.shape[0]):
            o[i] += g1[i] * x1


def _read_rows_pair_py(off, lo, ln, sigma, src, pairs, out, bounds, coef, last_pair, clock):
    """The state read over a rotated state, lazily: for each key pair m = (2m, 2m+1) with an active key, bring
    both runs up to date (coef[m] = (c00, c01, c10, c11): s0' = c00 s0 + c01 s1, s1' = c11 s1 + c10 s0, applied
    clock - last_pair[m] times, as the eager rotation would), then add sigma(2m, j) src[2m] and
    sigma(2m+1, j) src[2m+1] (active keys only, ascending). Parallel over target blocks; the caller sets
    last_pair[pairs] = clock afterwards."""
    for blk in prange(bounds.shape[0] - 1):
        j0 = bounds[blk]
        j1 = bounds[blk + 1]
        for k in range(pairs.shape[0]):
            m = pairs[k]
            b0 = 2 * m
            a = max(lo[b0], j0)
            z = min(lo[b0] + ln[b0], j1)
            if z <= a:
                continue
            x0 = src[b0]
            x1 = src[b0 + 1]
            o = out[a:z]
            g0 = sigma[off[b0] + a - lo[b0] : off[b0] + z - lo[b0]]
            g1 = sigma[off[b0 + 1] + a - lo[b0] : off[b0 + 1] + z - lo[b0]]
            _rotate_run(g0, g1, coef[m, 0], coef[m, 1], coef[m, 2], coef[m, 3], clock - last_pair[m])
            _add_pair(o, g0, g1, x0, x1)


def _catch_up_pairs_py(off, lo, ln, sigma, pairs, coef, last_pair, clock):
    """Bring the whole runs of key pairs `pairs` up to date (the rotation's lazy catch-up outside a read), one
    pair per thread."""
    for k in prange(pairs.shape[0]):
        m = pairs[k]
        steps = clock - last_pair[m]
        if steps <= 0:
            continue
        b0 = 2 * m
        g0 = sigma[off[b0] : off[b0] + ln[b0]]
        g1 = sigma[off[b0 + 1] : off[b0 + 1] + ln[b0]]
        _rotate_run(g0, g1, coef[m, 0], coef[m, 1], coef[m, 2], coef[m, 3], steps)
        last_pair[m] = clock


def _hebbian_rows_py(off, lo, ln, gs, unit, sigma, pre, post, active_pre, active_post):
    """sigma(b, j) += Gs(b, j) pre[b] post[j] for active pre b and the active post j inside b's run (exact rows,
    so slot = edge); a thread owns source b's synapses. unit: every Gs weight is 1 (Obs. 4's Gs), which is then
    not read (1 * pre[b] is pre[b]: the same bits). The damping is caught up by the caller."""
    for k in prange(active_pre.shape[0]):
        b = active_pre[k]
        pb = pre[b]
        a = np.searchsorted(active_post, lo[b])
        z = np.searchsorted(active_post, lo[b] + ln[b])
        if z - a == ln[b]:  # the whole run is active (a dense block's common case): contiguous, vectorised
            sg = sigma[off[b] : off[b] + ln[b]]
            q = post[lo[b] : lo[b] + ln[b]]
            if unit:
                for i in range(ln[b]):
                    sg[i] += pb * q[i]
            else:
                g = gs[off[b] : off[b] + ln[b]]
                for i in range(ln[b]):
                    sg[i] += g[i] * pb * q[i]
            continue
        base = off[b] - lo[b]
        for m in range(a, z):
            j = active_post[m]
            w = 1.0 if unit else gs[base + j]
            sigma[base + j] += w * pb * post[j]


def _read_write_rows_pair_py(off, lo, ln, sigma, x, xs, pairs, out, bounds, coef, last_pair, clock, gs, unit, post):
    """The state read and the Hebbian write of one sigma in one pass (when a sub-round runs the read `X(i),
    sigma(i,j) -> out(j)` and then the write `X(i), post(j) -> sigma(i,j)` with the same X, e.g. the lookahead
    of Simulator.feed): per key pair, catch the runs up (rotation), add the caught-up sigma x to out, then
    sigma += Gs x post for the active keys. The read's and the write's own operations in their own order (the
    same values; a write of x * 0 where post is 0 may turn a -0.0 into 0.0), with each synapse loaded and stored
    once instead of twice. xs, post (and coef): in sigma's dtype (float32: the synapse arithmetic in float32, the
    sums into out still float64). Parallel over target blocks; the caller sets last_pair[pairs] = clock."""
    for blk in prange(bounds.shape[0] - 1):
        j0 = bounds[blk]
        j1 = bounds[blk + 1]
        for k in range(pairs.shape[0]):
            m = pairs[k]
            b0 = 2 * m
            a = max(lo[b0], j0)
            z = min(lo[b0] + ln[b0], j1)
            if z <= a:
                continue
            x0 = x[b0]
            x1 = x[b0 + 1]
            o = out[a:z]
            q = post[a:z]
            e0 = off[b0] + a - lo[b0]
            e1 = off[b0 + 1] + a - lo[b0]
            g0 = sigma[e0 : e0 + z - a]
            g1 = sigma[e1 : e1 + z - a]
            _rotate_run(g0, g1, coef[m, 0], coef[m, 1], coef[m, 2], coef[m, 3], clock - last_pair[m])
            _add_pair(o, g0, g1, x0, x1)
            if x0 != 0.0:
                _write_run(g0, gs[e0 : e0 + z - a], unit, xs[b0], q)
            if x1 != 0.0:
                _write_run(g1, gs[e1 : e1 + z - a], unit, xs[b0 + 1], q)


def _read_write_rows_column_py(off, lo, ln, sigma, x, xs, active, out, bounds, u_pre, last_col, clock, gs, unit, post):
    """`_read_write_rows_pair_py` for a state damped per key (clock >= 0) or not at all (clock < 0): per active
    key b, sigma[:, b] *= u[b] ** steps, out += sigma[:, b] x[b], sigma[:, b] += Gs x[b] post. The caller sets
    last_col[active] = clock."""
    for blk in prange(bounds.shape[0] - 1):
        j0 = bounds[blk]
        j1 = bounds[blk + 1]
        for k in range(active.shape[0]):
            b = active[k]
            a = max(lo[b], j0)
            z = min(lo[b] + ln[b], j1)
            if z <= a:
                continue
            xb = x[b]
            o = out[a:z]
            e = off[b] + a - lo[b]
            sg = sigma[e : e + z - a]
            steps = clock - last_col[b] if clock >= 0 else 0
            if steps > 0:
                f = u_pre[b] if steps == 1 else u_pre[b] ** steps
                for i in range(z - a):
                    sg[i] *= f
                    o[i] += sg[i] * xb
            else:
                for i in range(z - a):
                    o[i] += sg[i] * xb
            _write_run(sg, gs[e : e + z - a], unit, xs[b], post[a:z])


@njit(**_jit)
def _write_run(sg, g, unit, pb, q):
    """sg += g pb q along a run (the Hebbian write's arithmetic: (Gs pb) q; unit: Gs = 1, not read)."""
    if unit:
        for i in range(sg.shape[0]):
            sg[i] += pb * q[i]
    else:
        for i in range(sg.shape[0]):
            sg[i] += g[i] * pb * q[i]


@njit(**_jit)
def active_pairs(active):
    """The key pairs (b // 2) of the ascending active keys, each once, ascending."""
    out = np.empty(active.shape[0], dtype=np.int64)
    n = 0
    for k in range(active.shape[0]):
        m = active[k] // 2
        if n == 0 or out[n - 1] != m:
            out[n] = m
            n += 1
    return out[:n]


hebbian = _builds(_hebbian_py)
rotate = _builds(_rotate_py)
scatter_blocks = _builds(_scatter_blocks_py)
send_rows = _builds(_send_rows_py)
send_rows_pair = _builds(_send_rows_pair_py)
read_rows_column = _builds(_read_rows_column_py)
read_rows_pair = _builds(_read_rows_pair_py)
catch_up_pairs = _builds(_catch_up_pairs_py)
hebbian_rows = _builds(_hebbian_rows_py)
read_write_rows_pair = _builds(_read_write_rows_pair_py)
read_write_rows_column = _builds(_read_write_rows_column_py)
