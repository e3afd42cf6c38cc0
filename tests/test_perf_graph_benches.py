"""The graph benchmarks' quick paths end to end (benchmarks/graph_bench.py, benchmarks/graph_long.py): the rows and
goals they produce follow from what they run. Speeds are not asserted (benchmarks/RESULTS.md holds them)."""

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_graph_bench_interleaves_rounds_and_reports_the_median(monkeypatch):
    """Every case of one n is timed once per round, round after round (not all rounds of one case in a row), and a
    row's tokens/s is the median of its rounds with their min-max beside it."""
    import benchmarks.graph_bench as G

    calls, speeds = [], iter([5.0, 1.0, 9.0, 2.0, 7.0, 3.0, 4.0, 8.0, 6.0])

    def scripted(net, mats, u, L, data, case):
        calls.append(case)
        return next(speeds), None

    monkeypatch.setattr(G, "_time_case", scripted)
    rows, bws = G.measure([32], [0.5], 3, 1, ["numba"], log=lambda s: None, rounds=3)
    cases = G.cases(32, [0.5], ["numba"])
    assert cases == [(0.5, "numba", "float64"), ("any", "dense-numpy", "float64"), ("any", "dense-torch", "float64")]
    assert calls == cases * 3 and bws == []
    by = {r["backend"]: r for r in rows}
    # numba got 5, 2, 4; dense-numpy 1, 7, 8; dense-torch 9, 3, 6
    assert by["numba"]["tokens_per_s"] == 4.0 and by["numba"]["tokens_per_s_range"] == "2-5"
    assert by["dense-numpy"]["tokens_per_s"] == 7.0 and by["dense-torch"]["tokens_per_s_range"] == "3-9"


def test_graph_bench_quick_rows_and_goals():
    """run(quick=True): one row per planned case; numba's events, traffic and both bandwidth fractions are
    consistent with one bandwidth; at full activity the traffic per token covers at least the complete Gs read
    of every layer (L n^2 synapses of sigma, 8 B each); float32 rows exactly when the Simulator takes a dtype;
    issue 20's goals, one 10x row per n."""
    import benchmarks.graph_bench as G

    r = G.run(quick=True, rounds=2)
    ns, fracs, L = [256, 1024], [0.05, 1.0], 2
    rows = r["rows"]
    keys = [(x["n"], x["f"], x["backend"], x["dtype"]) for x in rows]
    assert len(keys) == len(set(keys))
    f32 = G.float32_supported()
    for n in ns:
        for f in fracs:
            assert (n, f, "numba", "float64") in keys and (n, f, "pyg", "float64") in keys
            assert ((n, f, "numba", "float32") in keys) == (f32 and n == ns[-1])
        assert (n, "any", "dense-numpy", "float64") in keys and (n, "any", "dense-torch", "float64") in keys
    assert f32 or any("float32 rows skipped" in s for s in r["notes"])
    bw = set()
    for x in rows:
        lo, hi = (float(v.replace(",", "")) for v in x["tokens_per_s_range"].split("-"))
        assert lo * (1 - 5e-3) <= x["tokens_per_s"] <= hi * (1 + 5e-3)  # the range is printed to 3 figures
        if x["backend"] != "numba":
            assert "traffic_GB_s" not in x
            continue
        assert x["active_x"] == pytest.approx(x["f"], abs=0.01)
        per_token = x["traffic_GB_s"] * 1e9 / x["tokens_per_s"]
        if x["f"] == 1.0:
            assert per_token >= L * x["n"] ** 2 * np.dtype(x["dtype"]).itemsize
        bw.add(x["traffic_GB_s"] * 1e9 / x["traffic_fraction"])
        bw.add(x["Mevents_per_s"] * 1e6 * G.bytes_per_event(x["dtype"]) / x["fraction_of_bandwidth"])
    assert max(bw) == pytest.approx(min(bw), rel=1e-9)
    by = {(x["n"], x["f"], x["backend"], x["dtype"]): x for x in rows}
    assert (
        by[(1024, 1.0, "numba", "float64")]["events_per_token"]
        > by[(1024, 0.05, "numba", "float64")]["events_per_token"]
    )
    goals = r["goals"]
    assert len(goals) == len(ns) + 4 and {g["met"] for g in goals} <= {"met", "not met"}
    for n, g in zip(ns, goals):
        ratio = by[(n, 0.05, "numba", "float64")]["tokens_per_s"] / by[(n, 1.0, "numba", "float64")]["tokens_per_s"]
        assert f"n = {n}" in g["goal"] and g["measured"] == f"{ratio:.3g}x" and g["target"] == ">= 10x"
    assert [g["target"] for g in goals[-2:]] == [">= 0.5", ">= 0.8"]
    assert goals[-1]["measured"] == f"{by[(1024, 1.0, 'numba', 'float64')]['fraction_of_bandwidth']:.3g}"


def test_graph_long_quick_rows_and_goals(tmp_path):
    """run(quick=True): both compiles, 8 windows of 32 tokens each; the synaptic state's bytes are sigma (state_size
    float64s) plus the lazy clocks and do not change over the run; the runner's records do not grow (it reads
    and clears its monitors every token); the graph's CPU time is part of the step's; the goals
    are computed from the rows; the figure is written."""
    import benchmarks.graph_long as GL

    fig = tmp_path / "graph_long.png"
    r = GL.run(quick=True, figure=str(fig))
    assert fig.stat().st_size > 1000
    rows = r["rows"]
    assert [x["compile"] for x in rows] == ["official"] * 8 + ["circuit"] * 8
    assert [x["tokens"] for x in rows[:8]] == [f"{32 * k}-{32 * k + 31}" for k in range(8)]
    for how in ("official", "circuit"):
        ws = [x for x in rows if x["compile"] == how]
        _, compiled = GL.build(how, "tiny")
        sigma = 8 * compiled.report["state_size"]
        assert {w["state_MB"] for w in ws} == {ws[0]["state_MB"]}
        assert sigma < ws[0]["state_MB"] * 1e6 <= 1.1 * sigma
        rec = [w["records_MB"] for w in ws]
        assert np.allclose(np.diff(rec), 0.0)  # GraphRunner reads its monitors as it goes: they do not grow
        for w in ws:
            assert 0 < w["graph_cpu_s_per_token"] <= w["cpu_s_per_token"] and w["rss_MiB"] > 100
            assert w["runner_cpu_s_per_token"] == pytest.approx(w["cpu_s_per_token"] - w["graph_cpu_s_per_token"])
        goals = [g for g in r["goals"] if g["goal"].startswith(how + ":")]
        assert len(goals) == 5 and {g["met"] for g in goals} <= {"met", "not met"}
        assert goals[1]["measured"] == f"{ws[-1]['graph_cpu_s_per_token'] / ws[1]['graph_cpu_s_per_token']:.3g}x"
        grown = ws[-1]["rss_MiB"] - ws[0]["rss_MiB"]
        records = (rec[-1] - rec[0]) * 1e6 / 2**20
        assert goals[2]["measured"] == f"{100 * grown / ws[0]['rss_MiB']:.3g}%"
        assert goals[3]["measured"] == f"{100 * (grown - records) / ws[0]['rss_MiB']:.3g}%"
        assert goals[4]["met"] == "met"  # the state's bytes do not change


def test_graph_long_text_and_rss_readers():
    """The text is TEXT repeated to the length asked for; VmRSS grows by an array's bytes once it is touched."""
    import benchmarks.graph_long as GL

    ids = GL.text_ids(3 * len(GL.TEXT) + 5)
    assert len(ids) == 3 * len(GL.TEXT) + 5 and bytes(ids[len(GL.TEXT) : 2 * len(GL.TEXT)].astype(np.uint8)) == GL.TEXT
    before = GL.vm_rss()
    ballast = np.ones(2**25)  # 256 MiB, touched
    assert GL.vm_rss() - before >= 0.9 * ballast.nbytes
