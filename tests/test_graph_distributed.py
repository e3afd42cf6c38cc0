"""The sharded simulator equals the single process (docs/distributed.md), NEST's pattern: one network on 1, 2
and 3 MPI ranks (3 is oversubscribed on 2 cores, and gives uneven blocks), compared to rel 1e-12 in float64.

Each `@distributed` test draws its hypothesis cases here, runs the body in this process (the single-process
run) and once per P under mpiexec (all cases in one launch), see tests/mpi_harness.py. The claim pinned: the
partition (split neurons, replicated hubs, owner-computes synapse groups) and the exchange (one Allgatherv of
active pairs, one Allreduce into replicated targets per communication sub-round) change nothing in Eq. 6
(Table 1(b)) nor in the compiled models of Eq. 7 / Eq. 8 and the released model.
"""

import dataclasses
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import strategies as st
from mpi_harness import distributed, draw, launch, mpi_env, need_mpi

N_NETWORKS = 12  # hypothesis cases per launch (MPI start-up, not the cases, dominates the time)
N_MODELS = 6


# ---- random Table 1(b) networks ------------------------------------------------------------------------------

U_KINDS = ("none", "diagonal", "synapse", "rotation", "rotation+diagonal")


@st.composite
def network_specs(draw_):
    U = draw_(st.sampled_from(U_KINDS))
    n = draw_(st.integers(2, 12))
    if "rotation" in U and n % 2:
        n += 1
    return dict(
        n=n,
        L=draw_(st.integers(1, 3)),
        T=draw_(st.integers(1, 4)),
        U=U,
        density=draw_(st.sampled_from((0.2, 0.5, 1.0))),
        silent=draw_(st.booleans()),
        kernel=draw_(st.sampled_from(("1b", "1a"))),
        seed=draw_(st.integers(0, 2**16)),
    )


def build_network(spec, comm):
    """A random non-negative Table 1(b) network, its inputs; `silent`: rank 0's block at P = 2 (which contains
    its block at P = 3) never fires (no input, no incoming Gx_e), so rank 0 has no active neuron at all."""
    from bdh_graph import Network
    from bdh_graph.comm import block

    rng = np.random.default_rng(spec["seed"])
    n, T = spec["n"], spec["T"]
    G = {k: rng.random((n, n)) * (rng.random((n, n)) < spec["density"]) for k in ("Gx_e", "Gx_i", "Gy_e", "Gy_i")}
    Gs = (rng.random((n, n)) < max(spec["density"], 0.5)).astype(float)
    x0 = rng.random((T, n)) * (rng.random((T, n)) < 0.7)
    y0 = rng.random((T, n)) * (rng.random((T, n)) < 0.7)
    if spec["silent"]:
        s = slice(0, block(n, 2, 1)[0])
        G["Gx_e"][s, :] = 0.0
        x0[:, s] = 0.0
        y0[:, s] = 0.0
    u = theta = None
    if "diagonal" in spec["U"]:
        u = rng.uniform(0.3, 1.0, n)
    if spec["U"] == "synapse":
        u = rng.uniform(0.3, 1.0, (n, n))
    if "rotation" in spec["U"]:
        theta = rng.uniform(-np.pi, np.pi, n // 2)
    net = Network.from_dense(**G, Gs=Gs, u=u, theta=theta, layers=spec["L"], kernel=spec["kernel"], comm=comm)
    return net, x0, y0


@distributed(cases=lambda: draw(network_specs(), N_NETWORKS))
def test_sharded_table_1b_networks_equal_one_process(comm, cases):
    """Random Table 1(b) (and 1(a)) networks: neuron -> neuron groups (gathered: the Allgatherv of active pairs),
    lazy damping per key and per synapse, rotation pairs, uneven blocks, a rank with no active neuron; x, y
    (every layer) and sigma (every layer) equal the single process on the numba and numpy backends."""
    out = {}
    for k, spec in enumerate(cases):
        for backend in ("numba", "numpy"):
            net, x0, y0 = build_network(spec, comm)
            res = net.run(x0, y0, backend=backend).gather()
            if comm.rank == 0:
                out[f"{k}/{backend}"] = {"x": res.x, "y": res.y, "sigma": res.sigma}
    return out


# ---- compiled models -----------------------------------------------------------------------------------------


def model_cases():
    """N_MODELS / 3 drawn cases of each variant (normfree: dense and circuit; official, paper: official); the
    first draw, the minimal configuration, is skipped (the single-process tests cover it)."""
    from equivalence.strategies import cases

    return [
        {**dataclasses.asdict(c), "L": 2}
        for v in ("normfree", "official", "paper")  # 2 layers: the
        for c in draw(cases(variants=(v,), max_n=16, max_layers=2, max_T=4), N_MODELS // 3 + 1)[1:]
    ]  # exchange repeats


@distributed(cases=model_cases, ranks=(2, 3))
def test_sharded_compiles_equal_one_process(comm, cases):
    """The dense (Obs. 4), circuit (Claims 3-4) and official (LN, Eq. 8 / released model) compiles of small random
    models, each rank compiling only its block: logits, x, y, rho and the official residual stream equal the
    single process (neuron -> hub groups: the Allreduce of partial sums; hub -> neuron groups: no traffic).
    Each compile is made twice: from the torch model, and from the saved model directory, where each rank reads
    only its neurons' rows of D_x, D_y and columns of E (gains folded in) and no rank builds a torch model; the
    two are equal to rel 1e-12 on every rank (asserted here), and both equal the single process (the harness).
    P = 1 under mpiexec is the in-process path (size 1 means SelfComm), already run as the reference and on one
    rank by the test above, so only P = 2, 3 are launched here (torch's import makes each launch ~10 s)."""
    import shutil
    import tempfile

    import torch
    from mpi_harness import assert_close

    import bdh_gpu
    import equivalence as EQ
    from equivalence.strategies import Case

    torch.set_num_threads(1)
    out = {}
    for k, d in enumerate(cases):
        case = Case(**{**d, "ids": tuple(d["ids"])})
        model = case.model()
        folder = comm.bcast(tempfile.mkdtemp(prefix="bdh-sliced-") if comm.rank == 0 else None)
        if comm.rank == 0:
            bdh_gpu.save(model, folder)
        comm.barrier()
        hows = ("dense", "circuit") if case.variant == "normfree" else ("official",)
        for how in hows:
            got = {}
            for src in ("model", "sliced"):
                if src == "model":
                    c = EQ.compile_model(model, how, comm=comm)
                else:
                    with _no_torch_model():
                        c = EQ.compile_model(folder, how, comm=comm)
                    lo, hi = c.network.populations["neurons"].lo, c.network.populations["neurons"].hi
                    assert (c.weights.lo, len(c.weights.D_x)) == (lo, hi - lo), "the rank read more than its rows"
                    assert how == "dense" or c.weights.E.shape[1] == hi - lo, "the rank read more than its columns"
                rows = list(EQ.GraphRunner(c, "numba").feed(case.ids, with_state=True))
                got[src] = {q: np.stack([r[q] for r in rows]) for q in ("x", "y", "rho")} if comm.rank == 0 else {}
                got[src]["logits"] = np.stack([r["logits"] for r in rows])  # replicated: every rank has them
                got[src].update({q: np.stack([r[q] for r in rows]) for q in c.record})
            assert_close(
                got["model"], got["sliced"], f"case {k} {how}: rank {comm.rank}: sliced vs whole-model compile"
            )
            if comm.rank == 0:
                out[f"{k}/{how}"] = got["model"]
                out[f"{k}/{how}/sliced"] = got["sliced"]
        comm.barrier()
        if comm.rank == 0:
            shutil.rmtree(folder)
    return out


class _no_torch_model:
    """Within: constructing a bdh_gpu.BDH fails (a compile from a model directory must not build one)."""

    def __enter__(self):
        from bdh_gpu import model as M

        self.M, self.init = M, M.BDH.__init__

        def refuse(*a, **k):
            raise AssertionError("a torch model was built during a compile from the model directory")

        M.BDH.__init__ = refuse

    def __exit__(self, *exc):
        self.M.BDH.__init__ = self.init


# ---- the CLI and faults --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny official model trained for 3 steps on the recall task (as tests/test_equiv_cli.py)."""
    from bdh.cli import main

    out = str(tmp_path_factory.mktemp("mpi") / "tiny")
    assert (
        main(
            [
                "train",
                "--preset",
                "tiny",
                "--data",
                "recall",
                "--steps",
                "3",
                "--batch-size",
                "2",
                "--block-size",
                "16",
                "--out",
                out,
                "--quiet",
            ]
        )
        == 0
    )
    return out


def test_mpiexec_verify_two_ranks(tiny_model, tmp_path):
    """`mpiexec -n 2 bdh verify DIR` passes on a trained model (graph == tensor model to 1e-9 with the graph
    sharded over two ranks), and rank 0 alone prints; `bdh logits --engine graph-official` on 2 ranks writes
    the tensor model's logits."""
    need_mpi()
    r = launch(["-m", "bdh", "verify", tiny_model, "--text", "The Dragon Hatchling"], 2, 240)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert r.stdout.count(": OK") == 1 and r.stdout.count("official compile of") == 2, r.stdout
    text = tmp_path / "t.txt"
    text.write_bytes(b"hello, dragon")
    out = tmp_path / "g.npy"
    r = launch(
        ["-m", "bdh", "logits", tiny_model, "--text-file", str(text), "--engine", "graph-official", "--out", str(out)],
        2,
        240,
    )
    assert r.returncode == 0 and r.stdout.count("wrote") == 1, r.stdout + r.stderr[-2000:]
    from bdh.cli import main

    ref = tmp_path / "t.npy"
    assert main(["logits", tiny_model, "--text-file", str(text), "--out", str(ref)]) == 0
    a, b = np.load(out), np.load(ref)
    assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max()


FAULT = """
import os, signal, sys
import numpy as np
from bdh_graph import Network
from bdh_graph.comm import default_comm
comm = default_comm()
n = 8
net = Network.from_dense(np.ones((n, n)), layers=2, comm=comm)
sim = net.simulator(backend="numpy")
for t in range(10**6):
    if t == 3 and comm.rank == 1:
        if sys.argv[1] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise ValueError("bad input on rank 1 only")
    sim.feed(np.full(n, 0.1), np.full(n, 0.1))
"""


@pytest.mark.parametrize("fault", ["kill", "raise"])
def test_fault_on_one_rank_ends_every_rank(fault, tmp_path):
    """A rank killed (SIGKILL) or raising mid-run while the others wait in a collective: the whole job exits
    non-zero within seconds (the launcher, or the abort-on-exception hook of MPIComm), never hangs."""
    need_mpi()
    script = tmp_path / "fault.py"
    script.write_text(FAULT)
    t = time.time()
    r = launch([str(script), fault], 3, 60)
    took = time.time() - t
    assert r.returncode != 0, r.stdout + r.stderr
    assert took < 45, f"took {took:.1f} s"
    if fault == "raise":
        assert "bad input on rank 1 only" in r.stderr
    print(f"{fault}: exit {r.returncode} after {took:.1f} s")


@pytest.mark.parametrize(
    "argv",
    [["verify", "/nonexistent/model", "--text", "ab"], ["verify", "/nonexistent/model", "--tolerance", "-1"]],
    ids=["bad-model-dir", "bad-flag"],
)
def test_a_bad_argument_on_three_ranks_is_one_line(argv):
    """An input error that every rank meets (a model directory that is not there; a flag argparse refuses) under
    `mpiexec -n 3`: exit 2, ONE stderr line (rank 0's: the lowest rank that failed), no MPICH `Abort(2)` banner,
    nothing on stdout (before: 1 to 4 lines, one per rank that got there, plus the banner)."""
    need_mpi()
    r = launch(["-m", "bdh", *argv], 3, 120)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bdh verify: error"), r.stderr
    assert "Abort" not in r.stderr, r.stderr  # rank 0's line, unless a loaded machine kept it > 1 s behind
    assert r.stdout == "", r.stdout


# ---- what the exchange sends, and the synapse state of neuron -> hub groups --------------------------------------


@distributed(cases=[{"n": 11, "active": [0, 3, 4, 10], "seed": 1}], ranks=(2, 3))
def test_exchange_sends_only_active_neurons_and_gather_returns_hub_synapses(comm, cases):
    """(1) `exchange_active` sends each rank's ACTIVE (index, value) pairs and its counts, no more: bytes_sent
    grows by exactly 8 * (2 * active in the block + one count per variable); sending every neuron of the block
    would fail here. (2) `RunResult.gather()` of the circuit compile, whose sigma lives on the X -> hub.H groups
    (neuron -> hub: `partial`, every rank holds the edges of its own sources), returns every edge's sigma in
    one process's order; a gather that took only the root's edges of such a group would differ in shape."""
    from bdh_graph.comm import block
    from bdh_graph.simulator import RunResult
    from equivalence import GraphRunner, compile_model
    from equivalence.strategies import Case

    out = {}
    spec = cases[0]
    n, full = spec["n"], np.zeros(spec["n"])
    full[spec["active"]] = np.arange(1, len(spec["active"]) + 1) * 0.5
    lo, hi = block(n, comm.size, comm.rank)
    before = comm.bytes_sent
    got = comm.exchange_active({"X": (full[lo:hi], lo, n), "Y": (2 * full[lo:hi], lo, n)})
    if comm.size > 1:
        mine = int(np.count_nonzero(full[lo:hi]))
        assert comm.bytes_sent - before == 8 * (2 * 2 * mine + 2), (comm.rank, comm.bytes_sent - before, mine)
    out["exchange/X"], out["exchange/Y"] = got["X"], got["Y"]
    case = Case(variant="normfree", U="rope", h=2, N=6, d=3, L=2, ids=(1, 7, 3, 7), seed=spec["seed"])
    c = compile_model(case.model(), "circuit", comm=comm)
    runner = GraphRunner(c, "numpy")
    for _ in runner.feed(case.ids):
        pass
    st_ = runner.sim.state
    width = st_.hi - st_.lo if hasattr(st_, "hi") else 0
    res = RunResult(c.network, np.zeros((1, 1, width)), np.zeros((1, 1, width)), st_.edges, st_).gather()
    if comm.rank == 0:
        assert {c.network.groups[c.network.edge_vars[k].group].partial for k in c.network.sigma_names} == {True}
        for k, v in res.sigma_edges.items():
            out[f"sigma/{k}"] = v
            r, col, _ = res.coords[k]
            out[f"coords/{k}"] = np.stack([r, col]).astype(np.float64)
    return out


# ---- a graph rank imports no torch (the per-rank floor, docs/distributed.md) ------------------------------------

NO_TORCH = """
import sys
import numpy as np
import equivalence
from bdh_graph.comm import default_comm
comm = default_comm()
c = equivalence.compile_model(sys.argv[1], sys.argv[2], comm=comm)
out = next(equivalence.GraphRunner(c, "numba").feed(np.array([72, 105])))
assert np.all(np.isfinite(out["logits"]))
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torch_geometric", "safetensors"))
print(f"rank {comm.rank} of {comm.size}: torch-side modules {loaded}", flush=True)
assert not loaded, loaded
"""


@pytest.mark.parametrize("P", [1, 2])
def test_a_graph_rank_compiling_from_a_directory_imports_no_torch(P, tmp_path):
    """A rank that compiles its block from a model directory (equivalence.compile_model(DIR)) and runs a token
    imports neither torch nor safetensors' torch side: bdh_gpu's package imports only its config, errors and
    the numpy reader (the model lazily, PEP 562), U comes from bdh_gpu.positional, LN_EPS from bdh_gpu.config.
    In a fresh interpreter (P = 1) and on each of 2 MPI ranks, for the official and the circuit compile."""
    import torch

    import bdh_gpu

    script = tmp_path / "no_torch.py"
    script.write_text(NO_TORCH)
    for variant, how in (("official", "official"), ("normfree", "circuit")):
        torch.manual_seed(0)
        cfg = bdh_gpu.BDHConfig(n_head=2, d=4, N=6, n_layer=2, variant=variant, U="rope+alibi", dropout=0.0)
        folder = str(tmp_path / variant)
        bdh_gpu.save(bdh_gpu.BDH(cfg), folder)
        if P == 1:
            r = subprocess.run(
                [sys.executable, str(script), folder, how], capture_output=True, text=True, env=mpi_env(), timeout=300
            )
        else:
            need_mpi()
            r = launch([str(script), folder, how], P, 300)
        assert r.returncode == 0, r.stdout + r.stderr[-3000:]
        assert r.stdout.count("torch-side modules []") == P, r.stdout


# ---- the exchange overlapped with computation (bdh_graph.simulator `plan`, `lookahead`) ---------------------------

OVERLAP_CASES = [
    {"variant": "official", "how": "official", "U": "rope+alibi", "seed": 3},
    {"variant": "normfree", "how": "circuit", "U": "rope", "seed": 4},
    {"variant": "normfree", "how": "dense", "U": "alibi", "seed": 5},
]


@distributed(cases=OVERLAP_CASES, ranks=(2, 3))
def test_overlapped_exchange_gives_the_same_bits(comm, cases):
    """The non-blocking exchange (Iallreduce of the partial sums posted before the work that does not need them,
    the layer's Hebbian write and damping of sigma_l hoisted into that window; Iallgather + Iallgatherv for the
    dense compile's gathered sources) against overlap off (each collective waited for at once, every rule in
    its own sub-round): on every rank the same bits for logits, x, y and every rank's sigma, and both equal the
    single process (the harness). The official and circuit schedules do hoist (asserted), so the test runs
    the reordering it pins."""
    import torch

    import bdh_gpu
    import equivalence as EQ

    torch.set_num_threads(1)
    out = {}
    for k, case in enumerate(cases):
        torch.manual_seed(case["seed"])
        cfg = bdh_gpu.BDHConfig(n_head=2, d=4, N=6, n_layer=2, variant=case["variant"], U=case["U"], dropout=0.0)
        c = EQ.compile_model(bdh_gpu.BDH(cfg).eval(), case["how"], comm=comm)
        got = {}
        for overlap in (True, False):
            runner = EQ.GraphRunner(c, "numba")
            runner.sim.overlap = overlap
            rows = list(runner.feed([72, 101, 108, 108, 111]))
            got[overlap] = {"logits": np.stack([r["logits"] for r in rows])}
            got[overlap].update({e: v for e, v in runner.sim.state.edges.items() if e.startswith("sigma")})
            if comm.rank == 0:
                got[overlap].update({q: np.stack([r[q] for r in rows]) for q in ("x", "y")})
            hoisted = sum(len(rules) for p in runner.sim._ahead()[0] for _, rules in p.ahead)
            assert (hoisted > 0) == (overlap and case["how"] != "dense"), (case, overlap, hoisted)
        for q in got[True]:
            assert np.array_equal(got[True][q], got[False][q]), f"case {k} rank {comm.rank}: {q} differs"
        if comm.rank == 0:
            out[f"{k}/{case['how']}"] = {q: v for q, v in got[True].items() if not q.startswith("sigma")}
    return out
