"""Backends: the same kernel on three engines with identical results (to 1e-10 in float64).

- "numpy": dense and literal (every group an n x n matrix); also the only backend with the spiking mode.
- "numba": CSR/CSC, event-driven (work proportional to active sources times fan-out); lazy damping.
- "pyg":   torch + torch_geometric MessagePassing (scatter); CUDA when available. Imported lazily.

Each backend offers `initial_state(sigma0) -> NetworkState` (its own array type), `communicate(rules, state)`
and `compute(rules, state)` returning a new state, and `to_numpy_state(state)`. Node arrays are replaced,
never mutated; the numba and pyg backends update edge arrays (sigma) in place for speed, so a round consumes
the state it is given. What a computation rule may use (`Ops`, `numpy_ops`) lives in bdh_graph.ops.

dtype (`DTYPES`): "float64", the default and the reference, or "float32" (numba and pyg, opt-in): the groups'
weights and the synaptic state sigma are stored in float32, node variables stay float64, and what a backend
hands out (`to_numpy_state`, `node`) is float64 either way. The numpy backend is the float64 reference only.
"""

BACKENDS = ("numpy", "numba", "pyg")
DTYPES = ("float64", "float32")


def as_dtype(dtype) -> str:
    """ "float64" or "float32" from that string or np.float64 / np.float32 (or their np.dtype); anything else is a
    one-line GraphError."""
    from contextlib import suppress

    import numpy as np

    from ..errors import GraphError

    name = dtype if isinstance(dtype, str) else None
    if dtype is not None and not isinstance(dtype, str):
        with suppress(TypeError):
            name = np.dtype(dtype).name
    if name not in DTYPES:
        shown = getattr(dtype, "__name__", None) or repr(dtype)
        raise GraphError(f"dtype: expected one of {', '.join(DTYPES)}, got {shown}")
    return name


def make_backend(name, net, spiking=False, seed=None, device=None, dtype="float64"):
    from ..errors import GraphError

    if name not in BACKENDS:
        raise GraphError(f"backend: expected one of {BACKENDS}, got {name!r}")
    dtype = as_dtype(dtype)
    if spiking and name != "numpy":
        raise GraphError(f"spiking: the spiking mode runs on backend='numpy', got backend={name!r}")
    if device is not None and name != "pyg":
        raise GraphError(f"device: only backend='pyg' takes a device, got backend={name!r}")
    if dtype != "float64" and name == "numpy":
        raise GraphError(f"dtype: backend='numpy' is the float64 reference, got dtype={dtype!r} (use 'numba' or 'pyg')")
    if name == "numpy":
        from .numpy_backend import NumpyBackend

        return NumpyBackend(net, spiking=spiking, seed=seed)
    if name == "numba":
        from .numba_backend import NumbaBackend

        return NumbaBackend(net, dtype=dtype)
    from .pyg_backend import PygBackend

    return PygBackend(net, device=device, dtype=dtype)
