"""Numba flags for the event-driven backend, in one place (stumpy's config.py idea).

FASTMATH stays off: the backends are compared at 1e-10 in float64, and reassociation would break that.
CACHE is off by default (numba's on-disk cache is version- and path-sensitive); set BDH_GRAPH_NUMBA_CACHE=1 to
turn it on for repeated benchmark runs.
"""

import os

FASTMATH = False
CACHE = os.environ.get("BDH_GRAPH_NUMBA_CACHE", "0") == "1"
DENSE_SIGMA_MAX_N = 16384  # RunResult.sigma refuses to densify beyond this; use RunResult.sigma_sparse(l)
PARALLEL_MIN_EDGES = 1_000_000  # numba: a prange kernel touching fewer synapses runs its serial build
