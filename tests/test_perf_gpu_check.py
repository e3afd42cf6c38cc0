"""The prepared GPU run (benchmarks/gpu_check.py), exercised on the CPU: its dry run end to end, the budget,
the pytest counting, the dtype pass-through, and what it says without a GPU."""

import json
import os
import time

import numpy as np
import pytest
import torch

from benchmarks import gpu_check as gc

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RESULTS = os.path.join(os.path.dirname(gc.__file__), "RESULTS.md")


def _results_text():
    with open(RESULTS) as f:
        return f.read()


def test_dry_run_writes_its_section_and_report(tmp_path, capsys):
    """`--device cpu` runs every part at tiny sizes: the pytest run is counted, the tensor rows and the graph rows
    (numba and pyg at both sizes and activities) carry positive tokens/s, the official graph's pyg logits equal
    numba's to 1e-9, and --out holds the report, the section and the test log; RESULTS.md is left alone."""
    before = _results_text()
    out = tmp_path / "out"
    assert gc.main(["--device", "cpu", "--out", str(out), "--no-write", "--budget-s", "200"]) == 0
    assert sorted(os.listdir(out)) == ["gpu_check.json", "gpu_check_section.md", "gpu_check_tests.log"]
    assert _results_text() == before
    rep = json.load(open(out / "gpu_check.json"))["report"]
    assert rep["tests"]["passed"] >= 1 and rep["tests"]["failed"] == rep["tests"]["errors"] == 0
    assert "failures" not in rep
    rows = rep["rows"]
    speed = [r for r in rows if r["unit"] == "tokens/s"]
    assert speed and all(r["value"] > 0 for r in speed)
    graph = {(g["n"], g["f"]) for g in rep["graph"]}
    assert graph == {(n, f) for n in (64, 128) for f in (0.05, 1.0)}
    assert all(g["xy_rel_error"] <= 1e-12 for g in rep["graph"])
    assert rep["official"]["logit_rel_error"] <= 1e-9
    assert rep["decode_float32"]["bytes_per_token"] > 0 and rep["bandwidth_B_s"] > 0
    text = (out / "gpu_check_section.md").read_text()
    assert text.startswith("<!-- BEGIN gpu_check -->") and text.rstrip().endswith("<!-- END gpu_check -->")
    assert "CPU dry run" in text and "| tests |" in text and "| official |" in text and "Goals" in text
    assert "skipped: not in this plan" in text  # the compiled train step: named, not silently dropped


def test_a_small_budget_skips_every_part_and_says_so(tmp_path):
    """With 2 s no part fits: each is named in the section as skipped (seconds needed, seconds left), nothing
    fails, and the run ends at once."""
    t0 = time.perf_counter()
    assert gc.main(["--device", "cpu", "--out", str(tmp_path), "--no-write", "--budget-s", "2"]) == 0
    assert time.perf_counter() - t0 < 10
    rep = json.load(open(tmp_path / "gpu_check.json"))["report"]
    notes = {r["part"]: r["note"] for r in rep["rows"]}
    assert set(notes) == {"tests", "tensor", "graph", "official"}
    assert all(n.startswith("skipped") for n in notes.values())
    assert "graph" not in rep and "official" not in rep
    text = (tmp_path / "gpu_check_section.md").read_text()
    assert "Skipped for time or by the plan: pytest -x on the GPU tests; part tensor; Eq. 6 graph n = 64" in text


def test_hard_stop_ends_a_part_at_the_budget():
    """The SIGALRM backstop: a part still running at the budget is ended by OverBudget."""
    t0 = time.perf_counter()
    with pytest.raises(gc.OverBudget), gc.hard_stop(0.2):
        while time.perf_counter() - t0 < 5:
            pass
    assert time.perf_counter() - t0 < 2


def test_pytest_counts_from_the_summary_and_from_a_stopped_run():
    """The counts come from pytest's closing line; a run stopped at its cap is counted from its progress dots."""
    done = "..s.F\n=== short test summary info ===\nFAILED x\n1 failed, 3 passed, 1 skipped, 62 deselected in 1.2s\n"
    assert gc.pytest_counts(done) == dict(passed=3, failed=1, skipped=1, errors=0)
    assert gc.pytest_counts("== 2 passed, 1 error in 3s ==") == dict(passed=2, failed=0, skipped=0, errors=1)
    stopped = "..s.....                [ 40%]\n...E\n"
    assert gc.pytest_counts(stopped, finished=False) == dict(passed=10, failed=0, skipped=1, errors=1)


def test_dtype_and_device_go_to_the_simulator():
    """--dtype reaches every Simulator the script builds (the float32 graph), device only pyg's, and a float32
    run's simulator stores float32."""
    import bdh_graph

    assert gc.simulator_kwargs("numba", "cuda", "float32") == {"dtype": "float32"}
    assert gc.simulator_kwargs("pyg", "cuda:1", "float32") == {"device": "cuda:1", "dtype": "float32"}
    net = bdh_graph.Network.from_dense(np.ones((4, 4)) / 4, layers=1)
    sim = net.simulator(backend="numba", **gc.simulator_kwargs("numba", "cpu", "float32"))
    assert sim.dtype == "float32"


def test_without_cuda_it_says_not_measured(tmp_path, capsys):
    """No GPU: run() (the `python -m benchmarks` entry) returns one row at once; the command line says so,
    exits 0, writes no results file and still leaves its report under --out."""
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the no-GPU message does not apply")
    before = _results_text()
    assert gc.run(quick=True)["rows"] == [{"status": gc.NOT_MEASURED}]
    assert gc.main(["--out", str(tmp_path)]) == 0
    assert gc.NOT_MEASURED in capsys.readouterr().out
    assert _results_text() == before
    assert json.load(open(tmp_path / "gpu_check.json"))["result"]["rows"] == [{"status": gc.NOT_MEASURED}]


def test_bad_arguments_are_one_line_errors(capsys):
    for argv, match in ((["--device", "tpu"], "--device"), (["--budget-s", "0"], "--budget-s")):
        with pytest.raises(SystemExit) as e:
            gc.main(argv)
        assert e.value.code == 2
        assert match in capsys.readouterr().err.strip().splitlines()[-1]


def test_rel_error_is_relative_to_the_reference():
    assert gc.rel_error(np.array([1.0, 2.001]), np.array([1.0, 2.0])) == pytest.approx(0.0005)
    assert gc.rel_error(np.zeros(3), np.zeros(3)) == 0.0
