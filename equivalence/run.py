"""Running a compiled model on bytes: the graph side (`GraphRunner`) and the tensor side (`TensorRunner`).

Both step token by token and yield, per token, the quantities that `equivalence.compare` checks:
x, y (L+1, n) (layer 0 = the boundary; official: layer 0 unused), logits (V,), rho (L, d, n) and hub values.
"""

from __future__ import annotations

import numpy as np

from bdh_graph import Simulator, StateMonitor

from .compile import Compiled


class GraphRunner:
    """Feed token ids through a Compiled network on a backend ("numba", "pyg", "numpy")."""

    def __init__(self, compiled: Compiled, backend: str = "numba", device=None, sigma0=None, dtype="float64"):
        """sigma0: the synaptic state to start from (as `bdh_graph.Simulator`; e.g. `runner.sim.state.edges` of
        another run, edited), default zeros. dtype: the graph's, "float64" (the reference) or "float32" (weights
        and sigma in float32, node values float64; numba and pyg), as `bdh_graph.Simulator`."""
        self.compiled = compiled
        kw = {"device": device} if device is not None else {}
        self.sim = Simulator(compiled.network, backend=backend, sigma0=sigma0, dtype=dtype, **kw)
        self._out = StateMonitor(self.sim, variables=(compiled.logits_var,), when="token")
        self._hubs = None
        if compiled.record:
            self._hubs = StateMonitor(self.sim, variables=tuple(compiled.record.values()), when="round")
        k = compiled.kernel
        self._ends = np.cumsum([len(layer) for layer in k.layers])  # rounds completed at each layer's end

    def feed(self, ids, with_state=False, root=0, progress=False):
        """Yield, per token t: dict(x, y (L+1, n), logits (V,), [rho: list of (d, n)], [hub names: (L, size)]).

        Sharded (every rank must iterate): x, y and rho are gathered to rank `root` (None elsewhere); logits and
        hub values are replicated, so every rank has them. progress=True (or a label) draws a tqdm bar on
        stderr, one step per token."""
        x0, y0, extra = self.compiled.token_inputs(ids)
        comm = self.compiled.network.comm
        for t in _progress(range(len(x0)), progress, "graph"):
            x, y = self.sim.feed(x0[t], y0[t], extra[t])  # extra: sensory input at hubs (res.V)
            if comm.size > 1:
                x, y = (comm.gather_blocks(a.T, root) for a in (x, y))
                x, y = (None, None) if x is None else (x.T, y.T)
            out = {"x": x, "y": y, "logits": getattr(self._out, self.compiled.logits_var)[:, -1].copy()}
            self._out.clear()  # read as it goes: constant memory and time per token over any length
            if self._hubs is not None:
                rows = self._ends - 1  # this token's samples: sample k after its round k + 1
                for name, var in self.compiled.record.items():
                    out[name] = getattr(self._hubs, var)[:, rows].T.copy()
                self._hubs.clear()
            if with_state:
                out["rho"] = self.compiled.rho(self.sim.state)
            yield out

    def logits(self, ids, progress=False):
        """(T, V) logits of every position, computed by the graph."""
        return np.stack([o["logits"] for o in self.feed(ids, progress=progress)])


def _progress(it, progress, default_label):
    """`it` wrapped in a tqdm bar on stderr when `progress` (True or a label), else `it` itself."""
    if not progress:
        return it
    import sys

    from tqdm import tqdm

    return tqdm(
        it,
        desc=progress if isinstance(progress, str) else default_label,
        unit="token",
        file=sys.stderr,
        leave=False,
        dynamic_ncols=True,
    )


class TensorRunner:
    """The tensor model in a chosen dtype: trace (token-parallel) for x, y, logits; step (recurrent) for rho."""

    def __init__(self, model, dtype=np.float64):
        import copy

        import torch

        self.torch = torch
        tdt = {np.float64: torch.float64, np.float32: torch.float32}[np.dtype(dtype).type]
        self.model = copy.deepcopy(model).to(tdt).eval()
        self.model._cache = {}

    def trace(self, ids):
        t = self.torch
        tr = self.model.trace(t.as_tensor(np.asarray(ids), dtype=t.long))
        return {k: v.detach().cpu().double().numpy() for k, v in tr.items()}

    def states(self, ids):
        """Yield, per token, rho_l (d, n) of every layer after that token (model.rho of the recurrent state)."""
        t = self.torch
        ids = t.as_tensor(np.asarray(ids), dtype=t.long)
        m = self.model
        state = m.init_state(1)
        with t.no_grad():
            for k in range(len(ids)):
                _, state = m.step(ids[k : k + 1], state, sparse=False)
                yield [r[0].permute(1, 0, 2).reshape(r.shape[2], -1).double().cpu().numpy() for r in m.rho(state)]
