"""`compare`: run a tensor model and its compiled graph on the same bytes and compare, per token and layer.

Quantities: logits (T, V); x, y (per token and layer, n neurons); rho (per token and layer, d x n: rho = E sigma
of the graph's state vs `model.rho(state)` of the recurrent tensor state after the same token); v (official:
the residual stream at the hubs vs the model's). Errors are measured per slice (one token, one layer): the
absolute error is max |graph - tensor| over the slice, the relative error divides it by the slice's scale:
max(|tensor|, |graph|) over the slice and, for logits, x and y, the size of the terms summed to form them
(`term_scales`: e.g. max_v sum_k |lm_head[k, v]| |z_k| for the logits), so a result that is small only because
its terms cancel is judged against the rounding those terms carry, not against its own size (0 when both are
exactly zero). A quantity is within tolerance when every slice's relative error is at most `rtol`.

Tolerances (docs/equivalence.md), by the two sides' dtypes. Both float64: rtol 1e-9 (measured errors are ~1e-14).
The float32 graph (`dtype="float32"`: weights and sigma stored in float32, node values summed in float64) against
the float64 tensor model: rtol 1e-4 (`GRAPH_RTOL`; a weight stored in float32 is off by up to 6e-8 relative, and
sigma rounds once per write). The tensor model in float32 (`tensor_dtype`) against the float64 graph: rtol 1e-3
for official and paper (measured <= 5e-4: LN over small d amplifies float32 rounding); normfree in float32 under-
or overflows within a few layers (its products are unbounded), so float32 is not a meaningful check for it. A
model that amplifies rounding is judged against its own sensitivity as well: each quantity's largest relative
change when every weight moves by one ulp of the coarser of the two dtypes (`perturbed`: float32's ulp for a
float32 graph, the size of its weights' rounding); a quantity fails only beyond rtol and beyond
SENSITIVITY_MULTIPLE times that. The tensor side runs in one torch thread (`one_thread`), so every process
computes the same reference bits.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from bdh_graph.backends import as_dtype

from .compile import Compiled, Weights, compile_model
from .run import GraphRunner, TensorRunner

RTOL = {np.float64: 1e-9, np.float32: 1e-3}  # by the tensor model's dtype, the graph in float64
GRAPH_RTOL = {"float64": 1e-9, "float32": 1e-4}  # by the graph's dtype, the tensor model in float64
SENSITIVITY_MULTIPLE = 100.0  # a quantity fails only beyond rtol and beyond this multiple of its sensitivity
PERTURB_SEEDS = (1, 2)  # the one-ulp perturbations the sensitivity is measured with
AMPLIFICATION_NOTE = 1e3  # the report says in a line that the model amplifies rounding from this factor on


@dataclass
class QuantityError:
    """Max errors of one quantity and where they occur: `where_*` = (token, layer, index) (layer None for logits).

    `sensitivity`: the tensor model's own relative change of this quantity under a one-ulp change of its weights
    (None: not measured); the quantity passes when max_rel <= tolerance = max(rtol, multiple * sensitivity)."""

    name: str
    max_abs: float = 0.0
    max_rel: float = 0.0
    where_abs: tuple | None = None
    where_rel: tuple | None = None
    slices: int = 0
    rtol: float = 1e-9
    sensitivity: float | None = None
    multiple: float = SENSITIVITY_MULTIPLE
    rels: list = field(default_factory=list, repr=False)  # (token, layer, relative error) of every slice

    @property
    def tolerance(self):
        return self.rtol if self.sensitivity is None else max(self.rtol, self.multiple * self.sensitivity)

    @property
    def ok(self):
        return self.slices > 0 and self.max_rel <= self.tolerance

    @property
    def first_bad(self):
        """(token, layer) of the first slice beyond tolerance, or None."""
        return next(((t, l) for t, l, rel in self.rels if rel > self.tolerance), None)

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
        self.rels.append((token, layer, rel))

    def to_dict(self):
        return dict(
            max_abs=self.max_abs,
            max_rel=self.max_rel,
            where_abs=self.where_abs,
            where_rel=self.where_rel,
            first_bad=self.first_bad,
            slices=self.slices,
            rtol=self.rtol,
            sensitivity=self.sensitivity,
            tolerance=self.tolerance,
            ok=self.ok,
        )


def _quantities(names, rtol, multiple=SENSITIVITY_MULTIPLE):
    return {k: QuantityError(k, rtol=rtol, multiple=multiple) for k in names}


@dataclass
class CompareReport:
    """dtype: the graph's ("float64" or "float32"); tensor_dtype: the tensor model's."""

    compile: str
    variant: str
    backend: str
    dtype: str
    rtol: float
    T: int
    quantities: dict = field(default_factory=dict)
    compiled_report: dict = field(default_factory=dict)
    sensitivity_multiple: float | None = None  # None: the sensitivity was not measured (rtol alone)
    tensor_dtype: str = "float64"

    @property
    def eps(self):
        """The ulp the sensitivity is measured with: the coarser of the two sides' machine epsilons."""
        return max(float(np.finfo(self.dtype).eps), float(np.finfo(self.tensor_dtype).eps))

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

    @property
    def amplification(self):
        """(factor, quantity): the largest sensitivity over the prompt in units of `eps`, i.e. how many-fold the
        tensor model amplifies a one-ulp change of its weights; None where not measured."""
        got = [(q.sensitivity / self.eps, q.name) for q in self.quantities.values() if q.sensitivity is not None]
        return max(got) if got else None

    def to_dict(self):
        amp = self.amplification
        return dict(
            ok=self.ok,
            compile=self.compile,
            variant=self.variant,
            backend=self.backend,
            dtype=self.dtype,
            tensor_dtype=self.tensor_dtype,
            rtol=self.rtol,
            tokens=self.T,
            sensitivity_multiple=self.sensitivity_multiple,
            amplification=None if amp is None else dict(factor=amp[0], quantity=amp[1]),
            first_divergence=self.first_divergence,
            quantities={k: q.to_dict() for k, q in self.quantities.items()},
            graph=dict(self.compiled_report),
        )

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, default=str)

    def __str__(self):
        amp = self.amplification
        lines = [
            f"{self.compile} compile of {_a(self.variant)} {self.variant} model, "
            f"{self.backend} backend in {self.dtype}, tensor model in "
            f"{self.tensor_dtype}, {self.T} tokens, rtol {self.rtol:g}"
            + (" (float32 graph)" if self.dtype == "float32" else "")
            + ("" if amp is None else f", rounding amplified {amp[0]:.3g}-fold")
            + f": {'OK' if self.ok else 'MISMATCH'}"
        ]
        if amp is not None and amp[0] >= AMPLIFICATION_NOTE:
            lines.append(
                f"  the tensor model amplifies rounding {amp[0]:.1e}-fold over these {self.T} tokens ({amp[1]}): "
                f"errors up to {self.sensitivity_multiple:g}x its own sensitivity pass (docs/equivalence.md)"
            )
        for q in self.quantities.values():
            sens = "" if q.sensitivity is None else f"   sensitivity {q.sensitivity:.1e}"
            lines.append(
                f"  {q.name:<7} max abs {q.max_abs:.3e} at {q.where_abs}   max rel {q.max_rel:.3e} at "
                f"{q.where_rel}{sens}   {'ok' if q.ok else 'BEYOND TOLERANCE'}"
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
    The products run in `one_thread` (torch), so the scales are the same bits under any thread count.
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
        z = _mm(np.abs(yL), absE.T)
    else:
        z = np.abs(layer_norm(_mm(yL, W.E.T)))
    out = {"logits": _mm(z, abslm).max(-1), "x": {}, "y": {}}
    for l in range(1, L + 1):
        k = l - 1 if official else l  # index into tr["x"], tr["y"]
        v = tr["v"][l - 1] if official else tr["value"][l - 1]  # (T, d): the input of D_x
        grow = _mm(np.abs(v), absDx.T)  # (T, n)
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


def _mm(a, b):
    """a @ b (float64 numpy) by torch in one thread: numpy's BLAS splits long sums by its thread count."""
    import torch

    with one_thread():
        return (torch.from_numpy(np.ascontiguousarray(a)) @ torch.from_numpy(np.ascontiguousarray(b))).numpy()


@contextmanager
def one_thread():
    """torch (its own loops and MKL) in one thread for the duration: the tensor side of every check runs in it.

    A float64 product on the CPU sums in an order that depends on the thread count (MKL splits a long dot
    product, torch its reductions), and the thread count is the process's CPU affinity or OMP_NUM_THREADS: a
    model that amplifies rounding then gives different reference answers in different processes
    (docs/equivalence.md, "Same bits in every process"). In one thread the order is fixed. The grad mode is
    restored too (a recurrent tensor pass stepped inside leaves its no_grad behind at each yield)."""
    import torch

    before, grad = torch.get_num_threads(), torch.is_grad_enabled()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        torch.set_grad_enabled(grad)


def _one_thread_iter(it):
    """Each step of iterator `it` in `one_thread` and no_grad (the recurrent states, stepped between graph tokens;
    the caller's grad mode holds between steps); closing this closes `it` there too."""
    import torch

    try:
        while True:
            with one_thread(), torch.no_grad():
                try:
                    item = next(it)
                except StopIteration:
                    return
            yield item
    finally:
        with one_thread():
            getattr(it, "close", lambda: None)()


@dataclass
class Reference:
    """The tensor side of a comparison without rho (`tensor_reference`): the trace, the term scales and the
    sensitivity of `ids` (None where not measured)."""

    variant: str
    dtype: type
    ids: np.ndarray
    tr: dict
    terms: dict
    sensitivity: dict | None = None
    graph_dtype: str = "float64"  # the graph it is for: the sensitivity is measured at the coarser ulp


def tensor_reference(model, idx="hello", dtype=np.float64, sensitivity=True, graph_dtype="float64") -> Reference:
    """Run the tensor model on `idx` once, for `compare(None, compiled, idx, reference=...)` later: a rank can
    then free the tensor model before it compiles its block, so its peak memory is the larger of the two
    sides instead of their sum (the ~100M run of docs/distributed.md). sensitivity=True also measures
    `sensitivity` (two more traces), at the ulp of the coarser of `dtype` and `graph_dtype` (the graph's dtype
    that `compare` will be asked for)."""
    dtype, graph_dtype = np.dtype(dtype).type, as_dtype(graph_dtype)
    ids = as_ids(idx, model.config.vocab_size)
    variant = model.config.variant
    tensor, tr, terms = _tensor_side(model, None, ids, dtype)
    record = ("v",) if variant == "official" else ()
    eps = _eps(dtype, graph_dtype)
    sens = _sensitivity(tensor, ids, tr, terms, variant, model.config.n_layer, record, eps) if sensitivity else None
    return Reference(variant, dtype, ids, tr, terms, sens, graph_dtype)


# ---- the tensor model's own sensitivity to rounding ------------------------------------------------------------


def perturbed(model, seed, eps=None):
    """A copy of `model` with every parameter moved by about one unit in the last place of its dtype:
    w (1 + s eps), eps = the dtype's machine epsilon (or the `eps` given: float32's for a float32 graph), signs
    s = +-1 drawn from `seed`."""
    import copy

    return _perturb(copy.deepcopy(model), seed, eps)


def _perturb(m, seed, eps=None):
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            sign = torch.randint(0, 2, p.shape, generator=g).to(p.dtype) * 2 - 1
            p.mul_(1 + (torch.finfo(p.dtype).eps if eps is None else eps) * sign)
    m._cache = {}
    return m


def _eps(tensor_dtype, graph_dtype) -> float:
    """The ulp of the coarser of the two sides' dtypes: the size of a perturbation that `_sensitivity` uses."""
    return max(float(np.finfo(tensor_dtype).eps), float(np.finfo(graph_dtype).eps))


def _perturbed_runner(tensor, seed, dtype, eps=None):
    """A TensorRunner of `perturbed` (tensor.model, seed, eps), with one copy of the model."""
    runner = TensorRunner(tensor.model, dtype)
    _perturb(runner.model, seed, eps)
    return runner


def _sensitivity(tensor, ids, tr, terms, variant, L, record, eps=None, seeds=PERTURB_SEEDS) -> dict:
    """{quantity: the largest relative change of any slice (measured as `compare` measures graph against
    tensor) when the weights move by one ulp (`perturbed`, each seed; `eps`: that ulp, default the tensor
    model's dtype's)}: logits, x, y and the hub records."""
    S = _quantities(("logits", "x", "y") + tuple(record), 0.0)
    dtype = np.float64 if tensor.model.E.dtype == tensor.torch.float64 else np.float32
    for seed in seeds:
        with one_thread():
            tp = _perturbed_runner(tensor, seed, dtype, eps).trace(ids)
        for t in range(len(ids)):
            _add_token(S, variant, L, record, t, _as_graph_token(tp, t, variant), tr, terms)
    return {k: q.max_rel for k, q in S.items()}


def _as_graph_token(tr, t, variant):
    """Token t of a tensor trace laid out as `GraphRunner.feed` yields it (x, y (L+1, n), v (L, d))."""
    x, y = tr["x"][:, t], tr["y"][:, t]
    out = {"logits": tr["logits"][t]}
    if variant == "official":  # the graph's layer 0 is unused
        x, y = (np.concatenate([np.zeros_like(a[:1]), a]) for a in (x, y))
        out["v"] = tr["v"][1:, t]
    out["x"], out["y"] = x, y
    return out


def compare(
    model,
    compiled: Compiled | str | None = None,
    idx="hello",
    backend: str = "numba",
    dtype="float64",
    rtol: float | None = None,
    state: bool = True,
    device=None,
    comm=None,
    progress=False,
    reference: Reference | None = None,
    sensitivity_multiple: float | None = SENSITIVITY_MULTIPLE,
    tensor_dtype=np.float64,
) -> CompareReport:
    """Run `model` (torch, any dtype: converted to `tensor_dtype`) and its graph (in `dtype`: "float64", or
    "float32" with weights and sigma in float32, GraphRunner) on the same tokens.

    compiled: a Compiled, a compile name ("dense", "circuit", "official") or None (the default compile).
    state=False skips rho (saves time on big models). progress=True: a tqdm bar on stderr, one step per token.
    Returns a CompareReport; a quantity passes when its max relative error is at most rtol (default: the larger
    of RTOL[tensor_dtype] and GRAPH_RTOL[dtype]) or at most `sensitivity_multiple` times the tensor model's own
    sensitivity to a one-ulp change of its weights (`perturbed`, one ulp of the coarser dtype; None: not
    measured, rtol alone). The tensor side runs in `one_thread`: the same bits in every process. Sharded
    (`comm`, or the compiled network's): every rank runs its block of the graph, rank 0 alone runs the tensor
    model and compares, and every rank returns the same report. Only rank 0 needs `model`: the other ranks may
    pass None with a Compiled (e.g. compiled from the model directory, so that no rank but 0 ever builds the
    tensor model). `reference` (from `tensor_reference(model, idx, tensor_dtype, graph_dtype=dtype)`, on rank 0)
    replaces the tensor model there (state=False only: rho needs the recurrent tensor state per token).
    """
    tensor_dtype, idx = (reference.dtype, reference.ids) if reference is not None else (tensor_dtype, idx)
    tensor_dtype, dtype, rtol = _check_dtype(tensor_dtype, dtype, rtol, reference, state)
    compiled = _compiled_for(model, compiled, comm)
    root = compiled.network.comm.rank == 0
    ids = _check_sides(model, compiled, idx, reference, root)
    multiple = sensitivity_multiple
    rep = _new_report(compiled, backend, (dtype, tensor_dtype), rtol, len(ids), state, multiple)
    tr = terms = states = None
    if root:
        eps = _eps(tensor_dtype, dtype) if multiple is not None else None
        tr, terms, sens, states = _reference(model, compiled, ids, tensor_dtype, state, reference, eps)
        for k, v in (sens or {}).items():
            rep.quantities[k].sensitivity = v
    graph = GraphRunner(compiled, backend, device=device, dtype=dtype)
    feed = graph.feed(ids, with_state=state, progress=progress and "graph vs tensor")
    for t, g in enumerate(feed):
        if root:
            _add_token(rep.quantities, compiled.variant, compiled.weights.L, compiled.record, t, g, tr, terms)
            if states is not None:
                _add_rho(rep.quantities["rho"], states[1], t, g["rho"], states[0])
    for it in (states or ())[::-1]:
        getattr(it, "close", lambda: None)()
    return compiled.network.comm.bcast(rep if root else None)


def _reference(model, compiled, ids, dtype, state, reference, eps):
    """Rank 0's side: (trace, term scales, sensitivity or None, states) from `reference` or the tensor model;
    `eps`: the ulp the sensitivity is measured with (None: not measured).

    states: None, or (an iterator of the recurrent states' rho per token, the QuantityError collecting the
    sensitivity of rho: the states of one `perturbed` model against them, stepped along)."""
    if reference is not None:
        return reference.tr, reference.terms, reference.sensitivity if eps is not None else None, None
    tensor, tr, terms = _tensor_side(model, compiled, ids, dtype)
    sens = (
        _sensitivity(tensor, ids, tr, terms, compiled.variant, compiled.weights.L, compiled.record, eps)
        if eps is not None
        else None
    )
    if not state:
        return tr, terms, sens, None
    ref = _one_thread_iter(tensor.states(ids))
    if eps is None:
        return tr, terms, sens, (None, ref)
    pert = _one_thread_iter(_perturbed_runner(tensor, PERTURB_SEEDS[0], dtype, eps).states(ids))
    return tr, terms, sens, (_RhoSensitivity(pert), ref)


class _RhoSensitivity:
    """The sensitivity of rho, measured token by token beside the graph: a perturbed model's states against the
    reference states (the recurrent pass is the costly one, so one perturbation)."""

    def __init__(self, states):
        self.states, self.q = states, QuantityError("rho", rtol=0.0)

    def close(self):
        self.states.close()

    def add(self, t, r_ref):
        for l, (r_t, r_p) in enumerate(zip(r_ref, next(self.states))):
            self.q.add(r_t, r_p, t, l + 1)


def _add_rho(Q, states, t, rho_graph, sens):
    """Token t's rho per layer: graph against the reference states (and, with `sens`, the perturbed ones, whose
    running max is the sensitivity of rho)."""
    r_ref = next(states)
    for l, (r_t, r_g) in enumerate(zip(r_ref, rho_graph)):
        Q.add(r_t, r_g, t, l + 1)
    if sens is not None:
        sens.add(t, r_ref)
        Q.sensitivity = sens.q.max_rel


def _check_sides(model, compiled, idx, reference, root):
    """The token ids, after checking that rank 0 has a tensor side of the compiled model's variant."""
    if root and model is None and reference is None:
        raise ValueError("compare: rank 0 needs the tensor model (got model=None)")
    ids = as_ids(idx, compiled.weights.V)
    variant = model.config.variant if model is not None else reference.variant if reference is not None else None
    if variant is not None and compiled.variant != variant:
        raise ValueError(f"compiled model is variant {compiled.variant!r}, the tensor model {variant!r}")
    return ids


def _new_report(compiled, backend, dtypes, rtol, T, state, multiple) -> CompareReport:
    """An empty report with the quantities to compare: logits, x, y, the compile's hub records, rho (state);
    dtypes: (the graph's, the tensor model's)."""
    names = ["logits", "x", "y"] + list(compiled.record) + (["rho"] if state else [])
    quantities = _quantities(names, rtol, SENSITIVITY_MULTIPLE if multiple is None else multiple)
    graph, tensor = dtypes
    rep = CompareReport(compiled.name, compiled.variant, backend, graph, rtol, T, quantities)
    rep.compiled_report, rep.sensitivity_multiple = compiled.report, multiple
    rep.tensor_dtype = np.dtype(tensor).name
    return rep


def _check_dtype(tensor_dtype, dtype, rtol, reference, state):
    """(tensor numpy dtype type, graph dtype name, rtol): refuse a dtype without a tolerance, a reference asked for
    rho, and a reference whose sensitivity was measured for another graph dtype."""
    if reference is not None and state:
        raise ValueError("compare: a precomputed reference has no rho; pass state=False")
    tensor_dtype, dtype = np.dtype(tensor_dtype).type, as_dtype(dtype)
    if tensor_dtype not in RTOL:
        raise ValueError(f"tensor_dtype: expected float64 or float32, got {np.dtype(tensor_dtype).name}")
    if reference is not None and reference.graph_dtype != dtype:
        raise ValueError(
            f"compare: the reference was measured for a {reference.graph_dtype} graph, got dtype={dtype!r} "
            f"(tensor_reference(..., graph_dtype={dtype!r}))"
        )
    default = max(RTOL[tensor_dtype], GRAPH_RTOL[dtype])
    return tensor_dtype, dtype, default if rtol is None else float(rtol)


def _compiled_for(model, compiled, comm) -> Compiled:
    """`compiled` itself, or the model compiled in float64 with that compile name (None: the default)."""
    if isinstance(compiled, Compiled):
        return compiled
    if model is None:
        raise ValueError("compare: a model is needed to compile from (got model=None and no Compiled)")
    return compile_model(TensorRunner(model, np.float64).model, compiled, comm=comm)


def _tensor_side(model, compiled, ids, dtype):
    """(TensorRunner, trace, term scales) of the tensor model on `ids` in `dtype`, in `one_thread`; the scales
    from the compile's weights when it holds them all (compiled None: from the model's)."""
    tensor = TensorRunner(model, dtype)
    with one_thread():
        tr = tensor.trace(ids)
    W = compiled.weights if compiled is not None else None
    if W is None or not W.full:  # a sliced compile: the scales need every neuron
        W = Weights.of(tensor.model if dtype is np.float64 else TensorRunner(model, np.float64).model)
    return tensor, tr, term_scales(W, tr, model.config.variant)


def _add_token(Q, variant, L, record, t, g, tr, terms):
    """Token t's slices into the QuantityErrors Q: `g` (laid out as GraphRunner.feed yields it) against the
    tensor trace `tr`. Official models have no layer-0 x, y; their v is compared per layer."""
    official = variant == "official"
    Q["logits"].add(tr["logits"][t], g["logits"], t, None, terms["logits"][t])
    for l in range(0 if not official else 1, L + 1):
        k = l - 1 if official else l
        Q["x"].add(tr["x"][k, t], g["x"][l], t, l, terms["x"][l][t] if l else 0.0)
        Q["y"].add(tr["y"][k, t], g["y"][l], t, l, terms["y"][l][t] if l else 0.0)
    if "v" in record:
        for l in range(L):
            Q["v"].add(tr["v"][l + 1, t], g["v"][l], t, l + 1)
