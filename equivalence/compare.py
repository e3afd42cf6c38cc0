"""`compare`: run a tensor model and its compiled graph on the same bytes and compare, per token and layer.

Quantities: logits (T, V); x, y (per token and layer, n neurons); rho (per token and layer, d x n: rho = E sigma
of the graph's state vs `model.rho(state)` of the recurrent tensor state after the same token); v (official:
the residual stream at the hubs vs the model's). Errors are measured per slice (one token, one layer): the
absolute error is max |graph - tensor| over the slice, the relative error divides it by the slice's scale:
max(|tensor|, |graph|) over the slice and, for logits, x and y, the size of the terms summed to form them
(`term_scales`: e.g. max_v sum_k |lm_head[k, v]| |z_k| for the logits), so a result that is small only because
its terms cancel is judged against the rounding those terms carry, not against its own size (0 when both are
exactly zero). A quantity is within tolerance when every slice's relative error is at most `rtol`.

Tolerances (docs/equivalence.md): tensor model in float64: rtol 1e-9 (measured errors are ~1e-14); in float32
(the graph always runs in float64): rtol 1e-3 for official and paper (measured <= 5e-4: LN over small d
amplifies float32 rounding); normfree in float32 under- or overflows within a few layers (its products are
unbounded), so float32 is not a meaningful check for it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from .compile import Compiled, Weights, compile_model
from .run import GraphRunner, TensorRunner

RTOL = {np.float64: 1e-9, np.float32: 1e-3}


@dataclass
class QuantityError:
    """Max errors of one quantity and where they occur: `where_*` = (token, layer, index) (layer None for logits)."""

    name: str
    max_abs: float = 0.0
    max_rel: float = 0.0
    where_abs: tuple | None = None
    where_rel: tuple | None = None
    first_bad: tuple | None = None  # (token, layer) of the first slice beyond tolerance
    slices: int = 0
    rtol: float = 1e-9

    @property
    def ok(self):
        return self.slices > 0 and self.max_rel <= self.rtol

    def add(self, ref, got, token, layer, terms: float = 0.0):
        """One slice; `terms`: the magnitude of the terms summed to form it (0: the slice's own scale only)."""
        ref, got = np.asarray(ref, dtype=np.float64), np.asarray(got, dtype=np.float64)
        if ref.shape != got.shape:
            raise ValueError(f"{self.name}: tensor shape {ref.shape} vs graph shape {got.shape} at token {token}")
        self.slices += 1
        diff = np.abs(got - ref)
        if not np.all(np.isfinite(diff)):
            err, k = math.inf, int(np.argmax(~np.isfinite(diff)))
            rel = math.inf
        else:
            k = int(np.argmax(diff)) if diff.size else 0
            err = float(diff.reshape(-1)[k]) if diff.size else 0.0
            scale = max(float(np.abs(ref).max(initial=0.0)), float(np.abs(got).max(initial=0.0)), float(terms))
            rel = 0.0 if err == 0.0 else (err / scale if scale > 0 else math.inf)
        idx = tuple(int(i) for i in np.unravel_index(k, diff.shape)) if diff.size else ()
        idx = idx[0] if len(idx) == 1 else idx
        if err > self.max_abs or self.where_abs is None:
            self.max_abs, self.where_abs = err, (token, layer, idx)
        if rel > self.max_rel or self.where_rel is None:
            self.max_rel, self.where_rel = rel, (token, layer, idx)
        if rel > self.rtol and self.first_bad is None:
            self.first_bad = (token, layer)

    def to_dict(self):
        return dict(
            max_abs=self.max_abs,
            max_rel=self.max_rel,
            where_abs=self.where_abs,
            where_rel=self.where_rel,
            first_bad=self.first_bad,
            slices=self.slices,
            rtol=self.rtol,
            ok=self.ok,
        )


@dataclass
class CompareReport:
    compile: str
    variant: str
    backend: str
    dtype: str
    rtol: float
    T: int
    quantities: dict = field(default_factory=dict)
    compiled_report: dict = field(default_factory=dict)

    @property
    def ok(self):
        return all(q.ok for q in self.quantities.values())

    @property
    def first_divergence(self):
        """(token, layer, quantity) of the earliest slice beyond tolerance, or None."""
        bad = [
            (q.first_bad[0], -1 if q.first_bad[1] is None else q.first_bad[1], q.name)
            for q in self.quantities.values()
            if q.first_bad is not None
        ]
        if not bad:
            return None
        t, l, name = min(bad)
        return t, (None if l == -1 else l), name

    @property
    def max_rel(self):
        return max(q.max_rel for q in self.quantities.values())

    def to_dict(self):
        return dict(
            ok=self.ok,
            compile=self.compile,
            variant=self.variant,
            backend=self.backend,
            dtype=self.dtype,
            rtol=self.rtol,
            tokens=self.T,
            first_divergence=self.first_divergence,
            quantities={k: q.to_dict() for k, q in self.quantities.items()},
            graph=dict(self.compiled_report),
        )

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, default=str)

    def __str__(self):
        lines = [
            f"{self.compile} compile of {_a(self.variant)} {self.variant} model, {self.backend} backend, tensor "
            f"model in {self.dtype}, {self.T} tokens, rtol {self.rtol:g}: {'OK' if self.ok else 'MISMATCH'}"
        ]
        for q in self.quantities.values():
            lines.append(
                f"  {q.name:<7} max abs {q.max_abs:.3e} at {q.where_abs}   max rel {q.max_rel:.3e} at "
                f"{q.where_rel}   {'ok' if q.ok else 'BEYOND TOLERANCE'}"
            )
        if not self.ok:
            lines.append(f"  first divergence (token, layer, quantity): {self.first_divergence}")
        return "\n".join(lines)


def _a(word: str) -> str:
    """The article before `word`: 'an official', 'a normfree'."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def as_ids(idx_or_text, vocab=256) -> np.ndarray:
    """bytes / str (UTF-8) / sequence / array / torch tensor of token ids -> (T,) int64, T >= 1, ids < vocab."""
    x = idx_or_text
    if isinstance(x, str):
        x = x.encode("utf-8")
    if isinstance(x, (bytes, bytearray)):
        ids = np.frombuffer(bytes(x), dtype=np.uint8).astype(np.int64)
    else:
        if hasattr(x, "detach"):
            x = x.detach().cpu().numpy()
        ids = np.asarray(x)
        if ids.ndim == 2 and ids.shape[0] == 1:
            ids = ids[0]
        if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
            raise ValueError(f"expected token ids of shape (T,) ints, got shape {ids.shape} dtype {ids.dtype}")
        ids = ids.astype(np.int64)
    if ids.size == 0:
        raise ValueError("expected at least 1 token, got an empty input")
    if ids.min() < 0 or ids.max() >= vocab:
        raise ValueError(f"token ids must lie in [0, {vocab - 1}], got range [{ids.min()}, {ids.max()}]")
    return ids


def term_scales(W, tr, variant: str) -> dict:
    """Per token (and layer), the magnitude of the terms each logit, x and y is summed from, from the tensor
    trace `tr` and the weights W (float64): {"logits": (T,), "x": {layer: (T,)}, "y": {layer: (T,)}}, layers
    numbered as `compare` reports them.

    logits = lm_head^T z:     max_v sum_k |lm_head[k, v]| |z_k|, z = v_L (official), LN(E y_L) (paper), and for
                              normfree the two-level sum |lm_head|^T |E| |y_L|;
    x_l = x_{l-1} + (D_x v)^+ (paper, normfree; official without x_{l-1}): max_i |x_{l-1,i}| + sum_a |D_x[i,a]| |v_a|;
    y = (D_y a)^+ * x:        max_i x_i sum_a |D_y[i,a]| |a_a| (a = the head's LN(a_h), or sum_h a_h).
    """
    from .compile import layer_norm

    T = tr["logits"].shape[0]
    official, normfree = variant == "official", variant == "normfree"
    absE, absDx, absDy, abslm = np.abs(W.E), np.abs(W.D_x), np.abs(W.D_y), np.abs(W.lm_head)
    L = W.L
    yL = tr["y"][-1]  # (T, n)
    if official:
        z = np.abs(tr["v"][-1])
    elif normfree:
        z = np.abs(yL) @ absE.T
    else:
        z = np.abs(layer_norm(yL @ W.E.T))
    out = {"logits": (z @ abslm).max(-1), "x": {}, "y": {}}
    for l in range(1, L + 1):
        k = l - 1 if official else l  # index into tr["x"], tr["y"]
        v = tr["v"][l - 1] if official else tr["value"][l - 1]  # (T, d): the input of D_x
        grow = np.abs(v) @ absDx.T  # (T, n)
        if not official:
            grow = grow + np.abs(tr["x"][k - 1])
        out["x"][l] = grow.max(-1)
        a = np.abs(tr["a_hat"][l - 1])  # (h or 1, T, d)
        Dy = absDy.reshape(W.h, W.N, W.d)
        if a.shape[0] == 1:
            read = np.einsum("td,hnd->thn", a[0], Dy).reshape(T, W.n)
        else:
            read = np.einsum("htd,hnd->thn", a, Dy).reshape(T, W.n)
        out["y"][l] = (read * np.abs(tr["x"][k])).max(-1)
    return out


@dataclass
class Reference:
    """The tensor side of a comparison without rho (`tensor_reference`): the trace and the term scales of `ids`."""

    variant: str
    dtype: type
    ids: np.ndarray
    tr: dict
    terms: dict


def tensor_reference(model, idx="hello", dtype=np.float64) -> Reference:
    """Run the tensor model on `idx` once, for `compare(None, compiled, idx, reference=...)` later: a rank can
    then free the tensor model before it compiles its block, so its peak memory is the larger of the two
    sides instead of their sum (the ~100M run of docs/distributed.md)."""
    dtype = np.dtype(dtype).type
    ids = as_ids(idx, model.config.vocab_size)
    tensor = TensorRunner(model, dtype)
    tr = tensor.trace(ids)
    W = Weights.of(tensor.model if dtype is np.float64 else TensorRunner(model, np.float64).model)
    return Reference(model.config.variant, dtype, ids, tr, term_scales(W, tr, model.config.variant))


def compare(
    model,
    compiled: Compiled | str | None = None,
    idx="hello",
    backend: str = "numba",
    dtype=np.float64,
    rtol: float | None = None,
    state: bool = True,
    device=None,
    comm=None,
    progress=False,
    reference: Reference | None = None,
) -> CompareReport:
    """Run `model` (torch, any dtype: converted to `dtype`) and its graph (float64) on the same tokens.

    compiled: a Compiled, a compile name ("dense", "circuit", "official") or None (the default compile).
    state=False skips rho (saves time on big models). progress=True: a tqdm bar on stderr, one step per token.
    Returns a CompareReport; `report.ok` against `rtol` (default RTOL[dtype]). Sharded (`comm`, or the compiled
    network's): every rank runs its block of the graph, rank 0 alone runs the tensor model and compares, and
    every rank returns the same report. Only rank 0 needs `model`: the other ranks may pass None with a
    Compiled (e.g. compiled from the model directory, so that no rank but 0 ever builds the tensor model).
    `reference` (from `tensor_reference(model, idx, dtype)`, on rank 0) replaces the tensor model there
    (state=False only: rho needs the recurrent tensor state per token).
    """
    dtype, idx = (reference.dtype, reference.ids) if reference is not None else (dtype, idx)
    dtype, rtol = _check_dtype(dtype, rtol, reference, state)
    compiled = _compiled_for(model, compiled, comm)
    root = compiled.network.comm.rank == 0
    if root and model is None and reference is None:
        raise ValueError("compare: rank 0 needs the tensor model (got model=None)")
    ids = as_ids(idx, compiled.weights.V)
    variant = model.config.variant if model is not None else reference.variant if reference is not None else None
    if variant is not None and compiled.variant != variant:
        raise ValueError(f"compiled model is variant {compiled.variant!r}, the tensor model {variant!r}")
    rep = _new_report(compiled, backend, dtype, rtol, len(ids), state)
    tensor = tr = terms = None
    if root and reference is not None:
        tr, terms = reference.tr, reference.terms
    elif root:
        tensor, tr, terms = _tensor_side(model, compiled, ids, dtype)
    states = tensor.states(ids) if state and root else None
    graph = GraphRunner(compiled, backend, device=device).feed(
        ids, with_state=state, progress=progress and "graph vs tensor"
    )
    for t, g in enumerate(graph):
        if root:
            _add_token(rep.quantities, compiled, t, g, tr, terms, states)
    return compiled.network.comm.bcast(rep if root else None)


def _new_report(compiled, backend, dtype, rtol, T, state) -> CompareReport:
    """An empty report with the quantities to compare: logits, x, y, the compile's hub records, rho (state)."""
    names = ["logits", "x", "y"] + list(compiled.record) + (["rho"] if state else [])
    quantities = {k: QuantityError(k, rtol=rtol) for k in names}
    return CompareReport(
        compiled.name, compiled.variant, backend, np.dtype(dtype).name, rtol, T, quantities, compiled.report
    )


def _check_dtype(dtype, rtol, reference, state):
    """(numpy dtype type, rtol): refuse a dtype without a tolerance and a reference asked for rho."""
    if reference is not None and state:
        raise ValueError("compare: a precomputed reference has no rho; pass state=False")
    dtype = np.dtype(dtype).type
    if dtype not in RTOL:
        raise ValueError(f"dtype: expected float64 or float32, got {np.dtype(dtype).name}")
    return dtype, RTOL[dtype] if rtol is None else float(rtol)


def _compiled_for(model, compiled, comm) -> Compiled:
    """`compiled` itself, or the model compiled in float64 with that compile name (None: the default)."""
    if isinstance(compiled, Compiled):
        return compiled
    if model is None:
        raise ValueError("compare: a model is needed to compile from (got model=None and no Compiled)")
    return compile_model(TensorRunner(model, np.float64).model, compiled, comm=comm)


def _tensor_side(model, compiled, ids, dtype):
    """(TensorRunner, trace, term scales) of the tensor model on `ids` in `dtype`."""
    tensor = TensorRunner(model, dtype)
    tr = tensor.trace(ids)
    W = compiled.weights
    if not W.full:  # a sliced compile: the scales need every neuron
        W = Weights.of(tensor.model if dtype is np.float64 else TensorRunner(model, np.float64).model)
    return tensor, tr, term_scales(W, tr, compiled.variant)


def _add_token(Q, compiled, t, g, tr, terms, states):
    """Token t's slices into the QuantityErrors Q: graph output `g` against the tensor trace `tr` (and the next
    recurrent state from `states` for rho). Official models have no layer-0 x, y; their v is compared per layer."""
    official = compiled.variant == "official"
    Q["logits"].add(tr["logits"][t], g["logits"], t, None, terms["logits"][t])
    for l in range(0 if not official else 1, compiled.weights.L + 1):
        k = l - 1 if official else l
        Q["x"].add(tr["x"][k, t], g["x"][l], t, l, terms["x"][l][t] if l else 0.0)
        Q["y"].add(tr["y"][k, t], g["y"][l], t, l, terms["y"][l][t] if l else 0.0)
    if "v" in compiled.record:
        for l in range(compiled.weights.L):
            Q["v"].add(tr["v"][l + 1, t], g["v"][l], t, l + 1)
    if states is not None:
        for l, (r_t, r_g) in enumerate(zip(next(states), g["rho"])):
            Q["rho"].add(r_t, r_g, t, l + 1)
