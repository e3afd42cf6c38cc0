"""Numba flags for the event-driven backend, in one place (stumpy's config.py idea).

FASTMATH stays off: the backends are compared at 1e-10 in float64, and reassociation would break that.
CACHE is on by default: numba compiles the kernels a run uses once (about 10 s for the official compile's set)
and keeps them in `__pycache__` beside bdh_graph/backends (or numba's user cache where that is read-only), so a
later process starts at once; numba recompiles when the source, numba or the CPU changes.
BDH_GRAPH_NUMBA_CACHE=0 turns it off.
"""

import os

FASTMATH = False
CACHE = os.environ.get("BDH_GRAPH_NUMBA_CACHE", "1") != "0"
DENSE_SIGMA_MAX_N = 16384  # RunResult.sigma refuses to densify beyond this; use RunResult.sigma_sparse(l)
PARALLEL_MIN_EDGES = 500_000  # numba: a prange kernel touching fewer synapses runs its serial build
