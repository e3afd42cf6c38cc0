"""The measuring code of the performance benchmarks on tiny sizes: what each one counts (bytes, rule time,
activity) follows from the model it runs, and instrumenting a run leaves its results unchanged. Speeds are not
asserted (benchmarks/RESULTS.md holds them)."""

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_official():
    from bdh_gpu import BDH, BDHConfig

    torch.manual_seed(0)
    return BDH(BDHConfig(n_head=2, d=8, N=16, n_layer=2, dropout=0.0)).double().eval()


def test_equiv_bench_run_split_accounts_for_the_run_and_changes_nothing():
    """equiv_bench.run_split times the scheduler's two phases and every rule kind of a bare graph run; the
    graph run under its timers gives the same logits as a plain GraphRunner (the wrappers only time)."""
    import equivalence
    from benchmarks.equiv_bench import run_split

    model = tiny_official()
    text = b"Hatchling!"
    ids = np.frombuffer(text, dtype=np.uint8).astype(np.int64)
    compiled = equivalence.compile_model(equivalence.TensorRunner(model).model, "official")
    plain = equivalence.GraphRunner(compiled, "numba").logits(ids)
    split = run_split(compiled, "numba", text)
    assert split["run_tokens"] == len(text) - 1
    assert split["communication_s_per_token"] > 0 and split["computation_s_per_token"] > 0
    assert split["communication_s_per_token"] + split["computation_s_per_token"] <= split["run_s_per_token"] * 1.05
    kinds = set(split["rule_s_per_token"])
    assert {"send", "damp", "normalize"} <= kinds and ("read+hebbian" in kinds or {"read", "hebbian"} <= kinds)
    # the same per-rule split on a fresh runner, logits kept: equal to the plain run
    runner = equivalence.GraphRunner(compiled, "numba")
    be = runner.sim.backend
    whole_comm, whole_comp = be.communicate, be.compute

    def comm_one_by_one(rules, state, *rest):
        for r in rules:
            state = whole_comm((r,), state, *rest)
        return state

    def comp_one_by_one(rules, state):
        for r in rules:
            state = whole_comp((r,), state)
        return state

    be.communicate, be.compute = comm_one_by_one, comp_one_by_one
    assert np.array_equal(runner.logits(ids), plain)
    assert np.abs(plain).max() > 0


def test_decode_sparse_bytes_follow_the_measured_activity(monkeypatch):
    """decode.sparse_rows: the sparse step's bytes are D_x whole plus the active rows and columns at the activity
    measured on the decoded tokens, so they lie strictly between D_x alone and the dense step's bytes."""
    import benchmarks.decode as D

    monkeypatch.setattr(D, "read_bandwidth", lambda gib, repeats=2: 1e10)
    monkeypatch.setattr(D, "train_briefly", lambda preset, steps: (tiny_official().float(), bytes(range(200, 256)) * 4))
    rows, _ = D.sparse_rows(True, rounds=1, gib=0.01)
    dense, sparse = rows
    cfg = tiny_official().config
    n, d, L, V = cfg.n, cfg.d, cfg.n_layer, cfg.vocab_size
    assert dense["bytes_per_step_MB"] * 1e6 == 4 * (L * 5 * n * d + d * V)
    assert 0 < sparse["active_y"] <= sparse["active_x"] <= 1
    fx, fy = sparse["active_x"], sparse["active_y"]
    expected = 4 * (L * (n * d + 3 * fx * n * d + fy * n * d) + d * V)  # mean activity, equal per layer here
    assert sparse["bytes_per_step_MB"] * 1e6 == pytest.approx(expected, rel=0.3)
    assert 4 * (L * n * d + d * V) < sparse["bytes_per_step_MB"] * 1e6 < dense["bytes_per_step_MB"] * 1e6
    assert sparse["tokens_per_s"] > 0 and dense["speed_vs_float32"] == 1.0


def test_peak_rss_of_a_child_is_its_own():
    """bdh_gpu.parallel.peak_rss_bytes (the 'peak memory per rank' of `bdh train` and the dist_train benchmark)
    is the process's own peak: Linux carries ru_maxrss over from the parent across fork and exec, so a child of
    a 1 GiB process must not report 1 GiB."""
    import subprocess
    import sys

    import bdh_gpu.parallel as P

    ballast = np.ones(2**27)  # 1 GiB resident in this process
    out = subprocess.run(
        [sys.executable, "-c", "from bdh_gpu.parallel import peak_rss_bytes; print(peak_rss_bytes())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert int(out) < 0.5 * ballast.nbytes, int(out) / 2**20
    assert P.peak_rss_bytes() >= ballast.nbytes  # and this process's own peak includes it
