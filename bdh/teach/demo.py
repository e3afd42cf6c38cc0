"""The demo's pipeline: train (or reuse) a tiny model, step a prompt through its neuron graph token by token.

    model, info = demo_model(fast=False)                 # cached under $BDH_CACHE or ~/.cache/bdh
    run = graph_walk(model, ids)                         # per token: prediction, active neurons, sigma changes

Reads the bridge (`equivalence.compile_model`, `equivalence.GraphRunner`); the bridge never reads this package.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field

import numpy as np

from equivalence import Compiled, GraphRunner, TensorRunner, compile_model

from . import names

DEMO_PRESET = "tiny"
# the demo's two models: part 1 tells the paper's story (Normfree, Eq. 7, as the Table 1(b) graph of Obs. 4 with
# neuron -> neuron synapses; ALiBi damping, so the synapses forget slowly and sigma stays >= 0), part 2 is the
# released LayerNorm model (official) as a graph with hub populations
PARTS = {
    "normfree": dict(variant="normfree", U="alibi", steps=400),
    "official": dict(variant="official", U="rope", steps=300),
}
DEMO_TRAIN = dict(batch_size=32, block_size=64, lr=3e-3, warmup_steps=20, eval_every=100, eval_batches=4)
FAST_TRAIN = dict(
    steps=4, batch_size=4, block_size=32, lr=3e-3, warmup_steps=1, eval_every=4, ckpt_every=4, eval_batches=1
)


# ---- the model: train once, cache ------------------------------------------------------------------------------


def cache_key(config: dict, train: dict) -> str:
    """Stable key of (model config, training config incl. steps and seed)."""
    blob = json.dumps({"config": config, "train": train}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def demo_model(fast: bool = False, cache: str | None = None, log=print, use_cache: bool = True, part: str = "normfree"):
    """The demo's trained `tiny` model of `part` (PARTS) on the recall task: loaded from the cache if this
    (config, training config) was trained before, else trained now and cached. Returns (model in float64 eval
    mode, info dict)."""
    import bdh_gpu
    from bdh_gpu.data import cache_dir

    config, tcfg = demo_configs(part, fast)
    key = cache_key(dict(config.to_dict(), gains=config.resolved_gains()), tcfg.to_dict())
    root = os.path.join(cache if cache is not None else cache_dir(), "demo", key)
    info = dict(preset=DEMO_PRESET, variant=config.variant, U=config.U, key=key, dir=root, steps=tcfg.steps)
    info.update(cached=False, seconds=0.0)
    t0 = time.perf_counter()
    if use_cache and os.path.exists(os.path.join(root, "done.json")):
        with open(os.path.join(root, "done.json")) as f:
            info.update(json.load(f), cached=True)
        log(f"  reusing the cached model {root} (trained {info['steps']} steps)")
    else:
        info.update(_train_into_cache(config, tcfg, root, log, replace=not use_cache))
    info["seconds"] = time.perf_counter() - t0
    return bdh_gpu.load(root).double().eval(), info


def demo_configs(part: str, fast: bool):
    """(model config, training config) of a demo part."""
    import bdh_gpu
    from bdh_gpu.train import TrainConfig

    if part not in PARTS:
        raise ValueError(f"demo part: expected one of {', '.join(PARTS)}, got {part!r}")
    spec = PARTS[part]
    config = bdh_gpu.get_preset(DEMO_PRESET)
    config.variant, config.U = spec["variant"], spec["U"]
    train_kw = FAST_TRAIN if fast else dict(DEMO_TRAIN, steps=spec["steps"], ckpt_every=spec["steps"])
    return config, TrainConfig(data="recall", **train_kw)


def _train_into_cache(config, tcfg, root: str, log, replace: bool = False) -> dict:
    """Train the demo model in a directory of its own and publish it as the cache entry `root` in one rename: the
    entry appears whole or not at all, and when two processes train the same entry at once the first to finish
    wins (the other's copy is discarded); replace=True (--no-cache) puts this run's model in place of an existing
    entry. Returns what done.json records."""
    import shutil
    import tempfile

    import torch

    import bdh_gpu
    from bdh_gpu.data import RecallData
    from bdh_gpu.train import train

    t0 = time.perf_counter()
    os.makedirs(os.path.dirname(root), exist_ok=True)
    work = tempfile.mkdtemp(dir=os.path.dirname(root), prefix=os.path.basename(root) + ".partial-")
    try:
        data = RecallData(tcfg.block_size)
        torch.manual_seed(tcfg.seed)
        model = bdh_gpu.BDH(config)
        n_params = sum(p.numel() for p in model.parameters())
        log(
            f"  training the {DEMO_PRESET} preset, variant {config.variant}, U = {config.U} ({n_params:,} "
            f"parameters, n = {config.n} neurons, L = {config.n_layer}) on the recall task for {tcfg.steps} "
            "steps ..."
        )
        summary = train(model, data, tcfg, work, progress=False, log=lambda s: log("    " + s))
        val = summary["val"] or {}
        meta = dict(steps=tcfg.steps, val_accuracy=val.get("accuracy"), val_loss=val.get("loss"))
        meta.update(chance=data.chance, train_seconds=time.perf_counter() - t0)
        with open(os.path.join(work, "done.json"), "w") as f:
            json.dump(meta, f)
        if replace and os.path.isdir(root):
            old = tempfile.mkdtemp(dir=os.path.dirname(root), prefix=os.path.basename(root) + ".old-")
            os.rename(root, os.path.join(old, "entry"))
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(work, root)  # fails if another process published the entry first: theirs is kept
        except OSError:
            if not os.path.exists(os.path.join(root, "done.json")):
                raise
        return meta
    finally:
        shutil.rmtree(work, ignore_errors=True)


def recall_prompt(n_pairs: int = 8, seed: int = 7):
    """A fresh recall episode: K pair bytes, ':', then each key queried once (answers left for the model).
    Returns (ids of the prompt with the true answers filled in, expected answer per position or None)."""
    import torch

    from bdh_gpu.data import RECALL_KEYS, RECALL_PAIR_BASE, RECALL_SEP, RECALL_VALUES

    g = torch.Generator().manual_seed(seed)
    keys = torch.randperm(len(RECALL_KEYS), generator=g)[:n_pairs].tolist()
    vals = torch.randint(len(RECALL_VALUES), (n_pairs,), generator=g).tolist()
    ids = [RECALL_PAIR_BASE + len(RECALL_VALUES) * k + v for k, v in zip(keys, vals)] + [RECALL_SEP]
    expect = [None] * len(ids)
    for i in torch.randperm(n_pairs, generator=g).tolist():
        ids.append(RECALL_KEYS[keys[i]])
        expect.append(None)
        ids.append(RECALL_VALUES[vals[i]])
        expect.append(RECALL_VALUES[vals[i]])
    return ids, expect


def byte_label(b: int) -> str:
    """A readable label of a byte: recall pair bytes as 'k=v', printable ASCII as itself, else hex."""
    from bdh_gpu.data import RECALL_KEYS, RECALL_PAIR_BASE, RECALL_VALUES

    nv = len(RECALL_VALUES)
    if RECALL_PAIR_BASE <= b < RECALL_PAIR_BASE + nv * len(RECALL_KEYS):
        k, v = divmod(b - RECALL_PAIR_BASE, nv)
        return f"{chr(RECALL_KEYS[k])}={chr(RECALL_VALUES[v])}"
    if 32 < b < 127:
        return chr(b)
    return {32: "_", 10: "\\n"}.get(b, f"x{b:02x}")


# ---- stepping the graph ------------------------------------------------------------------------------------------


@dataclass
class GraphWalk:
    """What the graph did on a prompt, per token t: logits (T, V), x, y (T, L+1, n) (official: layer 0 unused),
    sigma_delta[t] = [(layer, synapse index, pre, post, old, new)] largest |change| first, sigma_trace
    {(layer, synapse): (T,) values} of the synapses that changed most overall."""

    compiled: Compiled
    ids: list
    logits: np.ndarray
    x: np.ndarray
    y: np.ndarray
    sigma_delta: list = field(default_factory=list)
    sigma_trace: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def predictions(self):
        return self.logits.argmax(-1)


def synapse_name(compiled: Compiled, sigma: str, e: int) -> tuple[str, str]:
    """(pre, post) names (bdh.teach.names.node) of edge e of the group carrying `sigma`: 'neuron i', 'pop[j]',
    official: 'att[h1,4]'."""
    net = compiled.network
    g = net.groups[net.edge_vars[sigma].group]
    i, j = int(g.source[e]), int(g.indices[e])
    d = compiled.weights.d
    return names.node(g.pre, i, d), names.node(g.post, j, d)


def graph_walk(
    model,
    ids,
    compiled: Compiled | None = None,
    backend: str = "numba",
    top: int = 5,
    track: int = 6,
    progress: bool = False,
) -> GraphWalk:
    """Feed `ids` through the compiled graph of `model` one token at a time; per token the prediction (argmax of
    the output nodes' logits), X and Y per layer, and the synapses whose sigma changed most."""
    t0 = time.perf_counter()
    if compiled is None:
        compiled = compile_model(TensorRunner(model).model)
    runner = GraphRunner(compiled, backend)
    names = compiled.network.sigma_names
    prev = {k: v.copy() for k, v in runner.sim.state.edges.items() if k in names}
    logits, xs, ys, deltas, history = [], [], [], [], []
    for out in runner.feed(list(ids), progress=progress and "graph walk"):
        logits.append(out["logits"]), xs.append(out["x"]), ys.append(out["y"])
        now = {k: v.copy() for k, v in runner.sim.state.edges.items() if k in names}
        rows = []
        for l, k in enumerate(names):
            dlt = np.abs(now[k] - prev[k])
            for e in np.argsort(-dlt, kind="stable")[:top]:
                if dlt[e] > 0:
                    rows.append((l + 1, int(e), *synapse_name(compiled, k, e), float(prev[k][e]), float(now[k][e])))
        rows.sort(key=lambda r: -abs(r[5] - r[4]))
        deltas.append(rows[:top])
        history.append(now)
        prev = now
    trace = {}
    for l, k in enumerate(names):
        series = np.stack([h[k] for h in history])  # (T, nnz)
        change = np.abs(np.diff(np.vstack([np.zeros_like(series[:1]), series]), axis=0)).sum(0)
        for e in np.argsort(-change, kind="stable")[: max(1, track // len(names))]:
            trace[(l + 1, int(e))] = series[:, e]
    return GraphWalk(
        compiled, list(ids), np.stack(logits), np.stack(xs), np.stack(ys), deltas, trace, time.perf_counter() - t0
    )


def prompt_facts(ids, n_pairs: int):
    """The facts of a recall prompt (recall_prompt): {pair position: label} and {pair position: (position of
    its first question, answer byte)}."""
    from bdh_gpu.data import RECALL_KEYS, RECALL_PAIR_BASE, RECALL_VALUES

    nv = len(RECALL_VALUES)
    pairs, queries = {}, {}
    for p in range(n_pairs):
        k, v = divmod(ids[p] - RECALL_PAIR_BASE, nv)
        pairs[p] = byte_label(ids[p])
        q = next((t for t in range(n_pairs + 1, len(ids) - 1) if ids[t] == RECALL_KEYS[k]), None)
        if q is not None:
            queries[p] = (q, RECALL_VALUES[v])
    return pairs, queries
