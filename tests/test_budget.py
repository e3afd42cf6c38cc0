"""The memory budget (bdh/budget.py, bdh_gpu/budget.py, equivalence/budget.py), weights that are not finite, and
absurd sizes in config.json (issue 19, items 1, 2 and 9).

Everything that could allocate without bound runs in a child process under an address-space limit
(tests/limited_child.py), so a size the budget misses fails there with a MemoryError, never on the machine.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from cli_errors import one_line_error

import bdh_gpu
from bdh_gpu import budget as gb
from bdh_gpu.io import _expected_shapes, write_model_dir

HERE = os.path.dirname(os.path.abspath(__file__))
AS_LIMIT = 4 * 2**30  # the children's address space: a budget miss dies there, not on the machine


def model_dir(path, seed=0, **cfg):
    """A random model (tiny shapes unless given) written to path; returns path."""
    torch.manual_seed(seed)
    config = bdh_gpu.BDHConfig(**{"n_head": 2, "d": 16, "N": 32, "n_layer": 2, "dropout": 0.0, **cfg})
    bdh_gpu.save(bdh_gpu.BDH(config), str(path))
    return str(path)


def limited(cases, tmp_path, limit=AS_LIMIT, env=None):
    """Run the argv lists in one child under the address-space limit; its JSON line per case."""
    f = tmp_path / "cases.json"
    f.write_text(json.dumps(cases))
    r = subprocess.run(
        [sys.executable, os.path.join(HERE, "limited_child.py"), str(limit), str(f)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1", **(env or {})},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def assert_one_line(res, code=2, *matches):
    assert res["traceback"] is None, res["traceback"]
    err = res["err"].strip()
    assert res["rc"] == code, (res["argv"], res["rc"], err)
    assert err and "\n" not in err, err
    for m in matches:
        assert m in err, (m, err)


# ---- the estimates ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant,how,shape",
    [
        ("normfree", "dense", (2, 8, 32, 1)),
        ("normfree", "dense", (2, 16, 64, 3)),
        ("normfree", "circuit", (2, 16, 64, 2)),
        ("normfree", "circuit", (1, 32, 128, 2)),
        ("official", "official", (2, 8, 32, 1)),
        ("official", "official", (4, 16, 32, 2)),
    ],
)
def test_graph_edge_estimate_bounds_the_compiled_network(variant, how, shape):
    import equivalence
    from equivalence.budget import edges

    h, d, N, L = shape
    cfg = bdh_gpu.BDHConfig(n_head=h, d=d, N=N, n_layer=L, dropout=0.0, variant=variant, U="alibi")
    net = equivalence.compile_model(bdh_gpu.BDH(cfg).double().eval(), how).network
    nnz = sum(g.nnz for g in net.groups.values())
    sigma = sum(net.groups[net.edge_vars[s].group].nnz for s in net.sigma_names)
    est_e, est_s = edges(cfg, how)
    assert nnz <= est_e <= 4 * nnz, (nnz, est_e)
    assert sigma <= est_s <= 4 * sigma, (sigma, est_s)


def test_estimates_are_integers_that_cannot_overflow():
    cfg = bdh_gpu.BDHConfig(n_head=2**20, d=2**20, N=2**40, n_layer=4096, dropout=0.0)
    e = gb.forward_bytes(cfg, 2**30, 2**30, None, train=True)
    assert isinstance(e.total, int) and e.total > 2**120


def _calibration_cases(tmp_path):
    small = model_dir(tmp_path / "small", n_head=4, d=64, N=512, n_layer=3)
    tiny_nf = model_dir(tmp_path / "nf", variant="normfree", U="alibi", n_head=2, d=16, N=128, n_layer=2)
    c_small = bdh_gpu.load_config(small)
    c_nf = bdh_gpu.load_config(tiny_nf)
    from equivalence.budget import graph_bytes

    text = tmp_path / "t.txt"
    text.write_bytes(b"the quick brown fox " * 4)
    return [
        (["eval", small, "--data", "recall", "--block-size", "512", "--batch-size", "8", "--max-batches", "1"],
         gb.forward_bytes(c_small, 8, 512, gb.chunk_of(None, 512))),
        (["train", "--data", "recall", "--out", str(tmp_path / "run"), "--steps", "2", "--batch-size", "16",
          "--block-size", "128", "--quiet", "--eval-every", "10"],
         gb.forward_bytes(bdh_gpu.get_preset("tiny"), 16, 128, gb.chunk_of(None, 128), train=True)),
        (["generate", small, "--prompt", "x" * 200, "--tokens", "20"],
         gb.generate_bytes(c_small, 200, 20, 4, gb.chunk_of(None, 200))),
        (["verify", tiny_nf, "--text-file", str(text), "--compile", "dense"],
         graph_bytes(c_nf, "dense", 1, 80)),
        (["verify", tiny_nf, "--text-file", str(text), "--compile", "dense", "--dtype", "float32"],
         graph_bytes(c_nf, "dense", 1, 80, "float32")),
    ]  # fmt: skip


def test_estimate_bounds_the_measured_peak_within_4x(tmp_path):
    """Each command's estimate is >= its peak resident memory (VmHWM, one process each) and <= 4x it."""
    cases = _calibration_cases(tmp_path)
    for argv, est in cases:
        (res,) = limited([argv], tmp_path)
        assert res["rc"] == 0 and res["traceback"] is None, res
        assert res["hwm"] <= est.total <= 4 * res["hwm"], (argv[0], res["hwm"] / 2**20, est.parts)


# ---- refusals before any allocation -----------------------------------------------------------------------------


def _config_with(directory, **fields):
    path = os.path.join(directory, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg.update(fields)
    with open(path, "w") as f:
        json.dump(cfg, f)
    return directory


ABSURD = [
    ({"n_layer": 10**9}, "n_layer"),
    ({"N": 2**40}, "N=1,099,511,627,776"),
    ({"d": 0}, "BDHConfig.d"),
    ({"n_head": 10**6, "N": 2**20}, "n_head=1,000,000"),
    ({"vocab_size": 10**12}, "vocab_size"),
    ({"d": 2**31}, "d=2,147,483,648"),
]


def test_absurd_config_sizes_are_one_line_exit_2_under_an_address_space_limit(tmp_path):
    cases = []
    for k, (fields, _) in enumerate(ABSURD):
        d = _config_with(model_dir(tmp_path / f"m{k}"), **fields)
        cases += [
            ["eval", d, "--data", "recall", "--max-batches", "1"],
            ["generate", d, "--prompt", "ab", "--tokens", "4"],
            ["verify", d, "--text", "ab"],
            ["logits", d, "--text-file", __file__, "--out", str(tmp_path / "l.npy")],
        ]
    results = limited(cases, tmp_path, env={"BDH_MEMORY_LIMIT": "2"})
    assert len(results) == len(cases)
    for res, (_fields, word) in zip(results, [a for a in ABSURD for _ in range(4)]):
        assert_one_line(res, 2, word)


def test_huge_block_size_is_refused_naming_the_flag(tmp_path):
    d = model_dir(tmp_path / "m")
    cases = [
        ["eval", d, "--data", "recall", "--block-size", "100000000"],
        ["train", "--data", "recall", "--out", str(tmp_path / "run"), "--block-size", "100000000"],
        ["train", "--data", "recall", "--out", str(tmp_path / "run"), "--batch-size", "1000000000"],
    ]
    for res, flag in zip(limited(cases, tmp_path), ("--block-size 100000000", "--block-size", "--batch-size")):
        assert_one_line(res, 2, flag, "GiB", "BDH_MEMORY_LIMIT")
    assert not os.path.exists(tmp_path / "run" / "model.safetensors")


def test_the_limit_is_raised_by_the_environment(tmp_path, capsys, monkeypatch):
    from bdh.cli import main

    d = model_dir(tmp_path / "m")
    argv = ["eval", d, "--data", "recall", "--block-size", "64", "--max-batches", "1"]
    monkeypatch.setenv("BDH_MEMORY_LIMIT", "0.01")  # 10 MiB: less than the interpreter itself
    one_line_error(capsys, argv, "more than the 0.01 GiB available (BDH_MEMORY_LIMIT=0.01)")
    monkeypatch.setenv("BDH_MEMORY_LIMIT", "64")
    assert main(argv) == 0
    monkeypatch.setenv("BDH_MEMORY_LIMIT", "lots")
    one_line_error(capsys, argv, "BDH_MEMORY_LIMIT=lots: expected a number of GiB")


def test_available_memory_reads_cgroup_then_meminfo(monkeypatch):
    from bdh import budget

    monkeypatch.delenv("BDH_MEMORY_LIMIT", raising=False)
    have, where = budget.available()
    assert have > 0 and where in ("the cgroup limit", "MemAvailable")
    monkeypatch.setattr(budget, "_cgroup_limit", lambda: 1234)
    assert budget.available() == (1234, "the cgroup limit")


def test_safetensors_header_is_checked_before_the_tensors_are_read(tmp_path, capsys):
    """A header whose shapes disagree with config.json is refused from the header (no tensor is read)."""
    d = model_dir(tmp_path / "m")
    cfg = bdh_gpu.load_config(d)
    tensors = {k: torch.zeros(s) for k, s in _expected_shapes(cfg).items()}
    tensors["E"] = torch.zeros(cfg.d, cfg.n + 1)
    write_model_dir(cfg.to_dict(), tensors, d)
    one_line_error(capsys, ["generate", d, "--prompt", "a"], "shape mismatch for E")
    tensors["E"] = torch.zeros(cfg.d, cfg.n, dtype=torch.int32)
    write_model_dir(cfg.to_dict(), tensors, d)
    one_line_error(capsys, ["generate", d, "--prompt", "a"], "E has dtype I32")


# ---- weights that are not finite --------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_by_every_command_naming_the_tensor(tmp_path, capsys, bad):
    d = model_dir(tmp_path / "m", variant="normfree", U="alibi")
    cfg = bdh_gpu.load_config(d)
    tensors = {k: v.clone() for k, v in bdh_gpu.BDH(cfg).state_dict().items()}
    tensors["D_y"][1, 3, 5] = bad
    write_model_dir(cfg.to_dict(), tensors, d)
    text = tmp_path / "t.txt"
    text.write_bytes(b"hello")
    for argv in (
        ["eval", d, "--data", "recall"],
        ["generate", d, "--prompt", "hi"],
        ["logits", d, "--text-file", str(text), "--out", str(tmp_path / "l.npy")],
        ["logits", d, "--text-file", str(text), "--out", str(tmp_path / "l.npy"), "--engine", "graph-dense"],
        ["verify", d, "--text", "hi"],
        ["export-graph", d, "--format", "graphml", "--out", str(tmp_path / "g.graphml")],
        ["trace", d, "--prompt", "hi"],
        ["view", d, "--prompt", "hi", "--out", str(tmp_path / "v.html")],
        ["analyze", d, "--text", "hi"],
        ["merge", d, d, "--out", str(tmp_path / "merged")],
    ):
        one_line_error(capsys, argv, "D_y holds 1 non-finite value")


def test_eval_never_reports_a_nan_loss_with_exit_0(tmp_path, capsys):
    """Finite weights whose forward overflows float32: the loss is not finite, so eval refuses."""
    d = model_dir(tmp_path / "m")
    cfg = bdh_gpu.load_config(d)
    tensors = {k: v.clone() for k, v in bdh_gpu.BDH(cfg).state_dict().items()}
    tensors["lm_head"].fill_(3e38)
    write_model_dir(cfg.to_dict(), tensors, d)
    one_line_error(capsys, ["eval", d, "--data", "recall", "--max-batches", "1"], "the loss on recall:8 is nan")


# ---- a fuzz of config.json --------------------------------------------------------------------------------------


def test_fuzzed_config_json_is_success_or_one_line_exit_2(tmp_path):
    """tests/limited_child.py --fuzz: hypothesis draws config.json fields (sizes small, zero, negative, huge, of
    the wrong type; the other fields good or bad) and runs generate and eval on each, in one child under the
    address-space limit: every run succeeds or ends in exit 2 with one stderr line, never a traceback."""
    r = subprocess.run(
        [sys.executable, os.path.join(HERE, "limited_child.py"), str(AS_LIMIT), "--fuzz", "30", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1", "BDH_MEMORY_LIMIT": "2"},
    )
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert "fuzz: 30 examples" in r.stdout, r.stdout[-2000:]
