"""NEST's pattern for distributed tests: the same body on 1, 2 and 3 MPI ranks and in one process, compared.

    from mpi_harness import distributed

    @distributed(cases=lambda: [...])          # JSON-serialisable test cases, drawn in the parent process
    def test_something(comm, cases):
        ...                                    # build and run with `comm`; gather to rank 0
        return {"x": ..., "sigma": ...}        # rank 0's arrays (other ranks may return None)

The decorator makes a pytest test that runs the body once in this process with the trivial communicator
(`SelfComm`, the single-process run), then under `mpiexec -n P python -m mpi4py tests/mpi_harness.py ...` for
each P in `ranks` (one launch per P runs every case: MPI start-up is slow), and asserts that every returned
array equals the single-process one to `rtol` relative to the array's scale (max |a|), float64. P = 3 on a
2-core machine is oversubscribed (MPICH needs no flag for that). `mpiexec` is the one next to sys.executable
(the venv's, from the `mpi` extra), never PATH's.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

RANKS = (1, 2, 3)
RTOL = 1e-12
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def mpiexec():
    """The venv's mpiexec (next to sys.executable), or None when the `mpi` extra is not installed."""
    exe = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    return exe if os.access(exe, os.X_OK) else None


def need_mpi():
    """Skip without MPI, except where BDH_REQUIRE_MPI=1 (set by .ci/run): there a missing MPI fails the test,
    so CI never passes by skipping the distributed tests."""
    import pytest

    if mpiexec() is None:
        why = (
            f"no MPI: mpi4py or {os.path.join(os.path.dirname(sys.executable), 'mpiexec')} missing "
            "(pip install -e '.[mpi]')"
        )
        if os.environ.get("BDH_REQUIRE_MPI") == "1":
            pytest.fail(f"MPI tests required (BDH_REQUIRE_MPI=1) but {why}")
        pytest.skip(why)


def mpi_env():
    """The environment of a launch: this tree first on PYTHONPATH; one numba/BLAS thread per rank."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def launch(args, P, timeout):
    """Run `args` (after `python`) under `mpiexec -n P`; returns the CompletedProcess (timeout: the job is killed)."""
    cmd = [mpiexec(), "-n", str(P), sys.executable] + list(args)
    return subprocess.run(cmd, env=mpi_env(), capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _flatten(res, prefix=""):
    out = {}
    for k, v in (res or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = np.asarray(v, dtype=np.float64)
    return out


def assert_close(ref, got, what, rtol=RTOL):
    """Every array of `ref` is in `got` with the same shape and max |diff| <= rtol * max(max|ref|, max|got|)."""
    assert sorted(ref) == sorted(got), f"{what}: returned {sorted(got)}, single process {sorted(ref)}"
    for k in ref:
        a, b = ref[k], got[k]
        assert a.shape == b.shape, f"{what}: {k} has shape {b.shape}, single process {a.shape}"
        scale = max(float(np.abs(a).max(initial=0.0)), float(np.abs(b).max(initial=0.0)))
        err = float(np.abs(a - b).max(initial=0.0))
        assert err <= rtol * scale, f"{what}: {k} differs by {err:.3e} (scale {scale:.3e}, rtol {rtol:g})"


def distributed(cases=None, ranks=RANKS, rtol=RTOL, timeout=300):
    """Decorator: run `body(comm, cases)` in one process and on each P in `ranks`; compare (module docstring)."""

    def deco(body):
        @functools.wraps(body)
        def test():
            need_mpi()
            from bdh_graph.comm import SelfComm

            cs = cases() if callable(cases) else cases
            ref = _flatten(body(SelfComm(), cs))
            assert ref, f"{body.__name__}: the body returned nothing to compare"
            with tempfile.TemporaryDirectory() as tmp:
                spec = os.path.join(tmp, "cases.json")
                with open(spec, "w") as f:
                    json.dump(cs, f)
                for P in ranks:
                    out = os.path.join(tmp, f"out{P}.npz")
                    t = time.time()
                    r = launch(["-m", "mpi4py", __file__, body.__module__, body.__name__, spec, out], P, timeout)
                    assert r.returncode == 0, f"{body.__name__} on {P} rank(s): exit {r.returncode}\n{r.stderr[-3000:]}"
                    with np.load(out) as z:
                        got = {k: z[k] for k in z.files}
                    assert_close(ref, got, f"{body.__name__} on {P} rank(s)", rtol)
                    print(
                        f"{body.__name__}: {P} rank(s) equal the single process to {rtol:g} "
                        f"({len(ref)} arrays, {time.time() - t:.1f} s)"
                    )

        test.body = body
        test.__signature__ = __import__("inspect").Signature()  # pytest: no fixtures
        return test

    return deco


def draw(strategy, n):
    """`n` examples of a hypothesis strategy, drawn reproducibly (derandomised) in this process, so that one MPI
    launch can run them all. Hypothesis cannot shrink across the launch; a failure names the case's index."""
    from hypothesis import HealthCheck, Phase, given, settings

    out = []

    @settings(
        max_examples=n,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(x):
        out.append(x)

    collect()
    return out[:n]


def _worker(module, name, spec, out):
    """Inside mpiexec: run the registered body on COMM_WORLD; rank 0 writes what it returns."""
    sys.path.insert(0, HERE)
    from bdh_graph.comm import default_comm

    comm = default_comm()
    body = getattr(importlib.import_module(module), name).body
    with open(spec) as f:
        cs = json.load(f)
    res = body(comm, cs)
    if comm.rank == 0:
        np.savez(out, **_flatten(res))


if __name__ == "__main__":
    _worker(*sys.argv[1:5])
