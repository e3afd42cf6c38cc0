"""Backends: the same kernel on three engines with identical results (to 1e-10 in float64).

- "numpy": dense and literal (every group an n x n matrix); also the only backend with the spiking mode.
- "numba": CSR/CSC, event-driven (work proportional to active sources times fan-out); lazy damping.
- "pyg":   torch + torch_geometric MessagePassing (scatter); CUDA when available. Imported lazily.

Each backend offers `initial_state(sigma0) -> NetworkState` (its own array type), `communicate(rules, state)`
and `compute(rules, state)` returning a new state, and `to_numpy_state(state)`. Node arrays are replaced,
never mutated; the numba and pyg backends update edge arrays (sigma) in place for speed, so a round consumes
the state it is given. What a computation rule may use (`Ops`, `numpy_ops`) lives in bdh_graph.ops.
"""

BACKENDS = ("numpy", "numba", "pyg")


def make_backend(name, net, spiking=False, seed=None, device=None):
    from ..errors import GraphError

    if name not in BACKENDS:
        raise GraphError(f"backend: expected one of {BACKENDS}, got {name!r}")
    if spiking and name != "numpy":
        raise GraphError(f"spiking: the spiking mode runs on backend='numpy', got backend={name!r}")
    if device is not None and name != "pyg":
        raise GraphError(f"device: only backend='pyg' takes a device, got backend={name!r}")
    if name == "numpy":
        from .numpy_backend import NumpyBackend

        return NumpyBackend(net, spiking=spiking, seed=seed)
    if name == "numba":
        from .numba_backend import NumbaBackend

        return NumbaBackend(net)
    from .pyg_backend import PygBackend

    return PygBackend(net, device=device)
