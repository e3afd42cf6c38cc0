"""The float32 graph against the float64 tensor model (issue 20): the tolerance it is judged by (rtol 1e-4, and
the sensitivity measured at float32's ulp), what the report says, and that the check can fail: a float32 graph
judged at float64's 1e-9, a wrong rule, a wrong weight and a graph whose weights hold only float16's precision
all fail at 1e-4.
"""

import os

import numpy as np
import pytest
import torch
from small_models import small_model

import bdh_gpu
from bdh_graph import GraphError, Network
from equivalence import GRAPH_RTOL, compare, compile_dense, compile_model, tensor_reference

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DEMO = os.path.join(os.path.dirname(__file__), "data", "demo_normfree")
TEXT = b"First Citizen:\nBefore we pro"  # 28 bytes, T > L
EPS32 = float(np.finfo(np.float32).eps)


@pytest.fixture(scope="module")
def demo():
    """The committed demo Normfree model (trained; amplifies rounding ~10-fold) in float64."""
    return bdh_gpu.load(DEMO).double().eval()


@pytest.fixture(scope="module")
def official():
    return small_model("official", seed=1).double().eval()


def test_float32_report_says_float32(official):
    """Header, JSON and every quantity's tolerance name the float32 graph and its rtol 1e-4; the sensitivity is
    measured with float32-ulp perturbations (amplification in units of float32's epsilon)."""
    rep = compare(official, "official", TEXT[:8], backend="numba", dtype="float32")
    assert rep.ok, str(rep)
    head = str(rep).splitlines()[0]
    assert "numba backend in float32, tensor model in float64" in head and "rtol 0.0001 (float32 graph)" in head
    d = rep.to_dict()
    assert (
        (d["dtype"], d["tensor_dtype"], d["rtol"])
        == ("float32", "float64", 1e-4)
        == (
            "float32",
            "float64",
            GRAPH_RTOL["float32"],
        )
    )
    assert all(q["tolerance"] >= 1e-4 for q in d["quantities"].values())
    assert rep.eps == EPS32
    sens = max(q.sensitivity for q in rep.quantities.values())
    assert 1e-9 < sens < 1e-4 and rep.amplification[0] == pytest.approx(sens / EPS32)
    r64 = compare(official, "official", TEXT[:8], backend="numba", state=False)
    assert "backend in float64" in str(r64) and "(float32 graph)" not in str(r64) and r64.rtol == 1e-9
    assert max(q.sensitivity for q in r64.quantities.values()) < 1e-12  # float64's ulp: a different scale


def test_float32_graph_fails_at_the_float64_tolerance(official):
    """Mutation of the tolerance: the float32 graph judged by float64's rtol 1e-9 alone fails (its errors are
    float32 rounding, ~1e-7), while the float64 graph passes the same check."""
    rep = compare(official, "official", TEXT[:8], dtype="float32", rtol=1e-9, sensitivity_multiple=None)
    assert not rep.ok and 1e-9 < rep.max_rel < 1e-4, str(rep)
    assert compare(official, "official", TEXT[:8], rtol=1e-9, sensitivity_multiple=None).ok


@pytest.mark.parametrize("backend", ["numba", "pyg"])
def test_a_wrong_graph_fails_in_float32(demo, backend):
    """At 1e-4 (and the float32-ulp sensitivity allowance) the float32 graph still fails a wrong weight (one D_y
    entry 1% off: y = (D_y a)^+ x, Eq. 7) and a wrong rule (the Hebbian write as printed, reference 2a)."""
    wrong = bdh_gpu.load(DEMO).double().eval()
    with torch.no_grad():
        wrong.D_y[0, 3, 5] *= 1.01
    kw = dict(backend=backend, dtype="float32")
    rep = compare(demo, compile_model(wrong, "circuit"), TEXT, state=False, **kw)
    assert not rep.ok and not rep.quantities["y"].ok, str(rep)
    rep = compare(demo, compile_dense(demo, hebbian_orientation="printed"), TEXT, **kw)
    assert not rep.ok and rep.first_divergence[0] <= 1, str(rep)
    assert compare(demo, "circuit", TEXT, state=False, **kw).ok  # the right graph passes the same check


def test_float16_precision_weights_fail_at_1e4(demo, monkeypatch):
    """Mutation of the float32 storage: a backend whose float32 weights keep only float16's 11 bits (rounding
    ~5e-4) fails the 1e-4 check, so 1e-4 tells float32 storage from a coarser one."""
    compiled = compile_model(demo, "circuit")
    assert compare(demo, compiled, TEXT, dtype="float32", state=False).ok
    real = Network.with_weight_dtype

    def float16_weights(net, dtype):
        out = real(net, dtype)
        for g in out.groups.values():
            g.weight[:] = g.weight.astype(np.float16)
        return out

    monkeypatch.setattr(Network, "with_weight_dtype", float16_weights)
    rep = compare(demo, compiled, TEXT, dtype="float32", state=False)
    assert not rep.ok and rep.max_rel > 1e-4, str(rep)


def test_reference_is_for_one_graph_dtype(official):
    """A precomputed tensor side measures the sensitivity for the graph dtype it is made for; another is refused
    in one line, and the float32 one gives the report the model itself gives."""
    c = compile_model(official, "official")
    ref64 = tensor_reference(official, TEXT[:6])
    with pytest.raises(ValueError, match="measured for a float64 graph") as e:
        compare(None, c, TEXT[:6], dtype="float32", state=False, reference=ref64)
    assert "\n" not in str(e.value)
    ref32 = tensor_reference(official, TEXT[:6], graph_dtype="float32")
    a = compare(None, c, TEXT[:6], dtype="float32", state=False, reference=ref32)
    b = compare(official, c, TEXT[:6], dtype="float32", state=False)
    assert a.to_json() == b.to_json() and a.ok


def test_bad_graph_dtypes_are_refused(official):
    with pytest.raises(GraphError, match="dtype: expected one of float64, float32, got 'float16'"):
        compare(official, "official", b"ab", dtype="float16")
    with pytest.raises(GraphError, match="float64 reference"):
        compare(official, "official", b"ab", backend="numpy", dtype="float32")
    with pytest.raises(ValueError, match="tensor_dtype: expected float64 or float32, got float16"):
        compare(official, "official", b"ab", tensor_dtype=np.float16)


def test_budget_counts_4_bytes_per_weight_and_synapse():
    """equivalence.budget: the float32 graph adds its float32 copy of each weight (4 bytes per synapse) and saves 4
    bytes per sigma entry (its float32 state); the float64 estimate is unchanged."""
    from equivalence.budget import EDGE_BYTES, SIGMA_BYTES, edges, graph_bytes

    cfg = bdh_gpu.BDHConfig(n_head=2, d=16, N=64, n_layer=2, variant="official")
    e, s = edges(cfg, "official")
    b64, b32 = graph_bytes(cfg, "official"), graph_bytes(cfg, "official", dtype="float32")
    assert b64.parts["synapses"] == EDGE_BYTES * e and b64.parts["sigma"] == SIGMA_BYTES * s
    assert b32.parts["synapses"] - b64.parts["synapses"] == 4 * e
    assert b64.parts["sigma"] - b32.parts["sigma"] == 4 * s
    assert "(float32)" in b32.what and "float32" not in b64.what
