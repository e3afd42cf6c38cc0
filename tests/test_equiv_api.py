"""equivalence's interface: compile reports (sizes of Obs. 4, Claims 3 and 4), refusals, local LayerNorm rounds,
the comparison report and its input checks."""

import numpy as np
import pytest
import torch

from bdh_graph import kernels as K
from bdh_graph.ops import numpy_ops
from equivalence import APPLIES, COMPILES, as_ids, compare, compile_model, default_compile, rules
from equivalence.strategies import Case


def one_line(excinfo, *words):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, msg


def test_circuit_sizes_claims_3_and_4():
    """Claim 3: 2d hubs and 3nd non-zero edges (E', De, Di) in place of the n x n Gx; Claim 4: 2dn synapses per
    layer instead of n^2; no group anywhere is n x n."""
    c = Case("normfree", "rope", h=2, N=8, d=3, L=2, ids=(1,))
    comp = compile_model(c.model(), "circuit")
    n, d, L = c.n, c.d, c.L
    r = comp.report
    assert r["nodes"]["hub"] == 2 * d and r["nodes"]["neurons"] == n
    assert r["circuit_edges_3nd"] == 3 * n * d
    assert r["synapses"] == 2 * d * n and r["state_size"] == 2 * d * n * L
    assert all(not (g.n_pre == n and g.n_post == n) for g in comp.network.groups.values())
    assert "rho" in comp.mapping and "E'" in comp.mapping


def test_dense_and_official_sizes():
    """Obs. 4: n^2 synapses per layer (Gs = 1); the official graph: n d synapses per layer (head blocks) and
    only non-zero parameter edges (3nd + hd + 256d, plus the LN cliques)."""
    c = Case("normfree", "none", h=2, N=4, d=3, L=2, ids=(1,))
    r = compile_model(c.model(), "dense").report
    assert r["synapses"] == c.n**2 and r["state_size"] == 2 * c.n**2
    c = Case("official", "rope", h=2, N=4, d=3, L=2, ids=(1,))
    r = compile_model(c.model(), "official").report
    assert r["synapses"] == c.n * c.d and r["nodes"]["att"] == c.h * c.d and r["nodes"]["res"] == c.d
    # no explicit zeros: each weight of D_x, D_y, E (n d each) sits on exactly one side of its E/I split,
    # plus the h d copy edges, the 256 d read-out and the LN cliques (d^2 for res, h d^2 for att)
    n, d, h = c.n, c.d, c.h
    assert r["edges_total"] == 3 * n * d + h * d + 256 * d + d * d + h * d * d, r["edges"]


@pytest.mark.parametrize("how", COMPILES)
@pytest.mark.parametrize("variant", ["official", "paper", "normfree"])
def test_inapplicable_compile_is_refused(how, variant):
    """A compile that does not apply to the variant raises a one-line ValueError naming both."""
    m = Case(variant, "none", h=1, N=4, d=2, L=1, ids=(1,)).model()
    if variant in APPLIES[how]:
        compile_model(m, how)
        return
    with pytest.raises(ValueError) as e:
        compile_model(m, how)
    one_line(e, repr(how), repr(variant))


def test_default_compile():
    assert default_compile(Case("official", "none", 1, 4, 2, 1, (1,)).model()) == "official"
    assert default_compile(Case("paper", "none", 1, 4, 2, 1, (1,)).model()) == "official"
    assert default_compile(Case("normfree", "none", 1, 4, 2, 1, (1,)).model()) == "dense"
    from bdh_gpu import BDHConfig
    from bdh_gpu.model import BDH

    big = BDH(BDHConfig(n_head=1, N=8192, d=2, n_layer=1, variant="normfree"))
    assert default_compile(big) == "circuit"


@pytest.mark.parametrize("xp", ["numpy", "torch"])
def test_local_rules_normalize_and_linear(xp):
    """The two registered kernel extensions are node-local and exact on numpy and torch arrays alike (so on
    every backend): `c / sqrt(s + eps) => r` and the signed sum `p - q => r`."""
    rng = np.random.default_rng(0)
    p, q, s = rng.normal(size=12), rng.normal(size=12), rng.random(12)
    if xp == "numpy":
        vals, ops = {"p": p, "q": q, "s": s, "r": np.zeros(12)}, numpy_ops()
    else:
        from bdh_graph.ops import Ops

        vals = {k: torch.tensor(v) for k, v in (("p", p), ("q", q), ("s", s), ("r", np.zeros(12)))}
        ops = Ops(torch, None, torch.zeros_like, lambda z: z)
    out = np.asarray(rules._normalize(rules.normalize("p", "s", "r"), vals, ops)["r"])
    np.testing.assert_allclose(out, p / np.sqrt(s + 1e-5), rtol=1e-15, atol=0)
    lin = rules._linear(rules.linear(("p", "q"), "r", (1, -1)), vals, ops)["r"]
    np.testing.assert_allclose(np.asarray(lin), p - q, rtol=0, atol=0)
    for rule in (rules.normalize("p", "s", "r"), rules.linear(("p", "q"), "r", (1, -1))):
        K.check_local(rule, 12)


def test_report_locates_errors_and_serialises():
    """The report holds max abs / rel error per quantity with (token, layer, index), and JSON."""
    import json

    c = Case("official", "rope", h=2, N=4, d=3, L=2, ids=(5, 6, 7))
    rep = compare(c.model(), "official", bytes(c.ids), backend="numpy")
    d = json.loads(rep.to_json())
    assert d["ok"] and set(d["quantities"]) == {"logits", "x", "y", "v", "rho"}
    for q in rep.quantities.values():
        t, l, idx = q.where_rel
        assert 0 <= t < 3 and q.slices > 0
    assert rep.quantities["x"].slices == 3 * 2 and rep.quantities["rho"].slices == 3 * 2
    strict = compare(c.model(), "official", bytes(c.ids), backend="numpy", rtol=1e-300, sensitivity_multiple=None)
    assert not strict.ok and strict.first_divergence is not None


@pytest.mark.parametrize(
    "bad, words", [(b"", ["at least 1"]), ([[1, 2], [3, 4]], ["shape"]), ([0, 256], ["255"]), ([-1], ["[0, 255]"])]
)
def test_bad_ids(bad, words):
    with pytest.raises(ValueError) as e:
        as_ids(bad)
    one_line(e, *words)


def test_text_and_ids_agree():
    assert list(as_ids("hé")) == list("hé".encode()) == list(as_ids(torch.tensor(list("hé".encode()))))


@pytest.mark.parametrize("variant", ["official", "paper", "normfree"])
def test_errors_are_relative_to_the_terms_summed(variant):
    """compare's scale is robust to cancellation: the term scale of every logit, x and y slice bounds the slice
    itself (triangle inequality), and an error at float64 rounding of the terms passes even when the result is
    ~1e-10 of them (a slice-only scale would call it a 1e-6 error); a real error of 1e-6 of the terms fails."""
    from equivalence.compare import QuantityError, TensorRunner, term_scales
    from equivalence.compile import Weights

    c = Case(
        variant, "alibi", h=2, N=4, d=3, L=2, ids=(5, 6, 7, 8), scale="unit" if variant != "normfree" else "released"
    )
    m = c.model()
    tr = TensorRunner(m).trace(np.array(c.ids))
    terms = term_scales(Weights.of(m), tr, variant)
    assert np.all(terms["logits"] >= np.abs(tr["logits"]).max(-1) * (1 - 1e-12))
    first = 1 if variant == "official" else 0
    for l, s in terms["y"].items():
        assert np.all(s >= np.abs(tr["y"][l - first]).max(-1) * (1 - 1e-12)), l
    for l, s in terms["x"].items():
        assert np.all(s >= np.abs(tr["x"][l - first]).max(-1) * (1 - 1e-12)), l
    q = QuantityError("logits", rtol=1e-9)
    q.add(np.array([1e-10]), np.array([1e-10 + 1e-16]), 0, None, terms=1.0)
    assert q.ok, q.max_rel
    q.add(np.array([1e-10]), np.array([1e-10 + 1e-6]), 1, None, terms=1.0)
    assert not q.ok and q.first_bad == (1, None)


@pytest.mark.parametrize("variant, how", [("normfree", "circuit"), ("official", "official")])
def test_compile_from_directory_and_precomputed_reference(variant, how, tmp_path):
    """A compile from the saved model directory (each rank reads only its slice of the weights,
    `bdh_gpu.load_weights`) equals the compile of the model itself, and `compare` against a tensor reference
    computed beforehand (`tensor_reference`, so the model can be freed first) gives the same report as
    `compare` with the model. Bad slices and wrong-variant references are one-line errors."""
    import bdh_gpu
    from equivalence import compile_model, tensor_reference

    c = Case(variant, "rope+alibi", h=2, N=6, d=4, L=2, ids=(5, 6, 7, 1))
    model = c.model()
    bdh_gpu.save(model, str(tmp_path))
    a, b = compile_model(model, how), compile_model(str(tmp_path), how)
    for name in ("E", "D_x", "D_y", "embed", "lm_head"):
        assert np.array_equal(getattr(a.weights, name), getattr(b.weights, name)), name
    ra = compare(model, a, bytes(c.ids), backend="numpy", state=False)
    rb = compare(None, b, bytes(c.ids), backend="numpy", state=False, reference=tensor_reference(model, bytes(c.ids)))
    assert ra.ok and rb.ok
    assert {k: q.max_rel for k, q in ra.quantities.items()} == {k: q.max_rel for k, q in rb.quantities.items()}
    with pytest.raises(ValueError, match="no rho"):
        compare(None, b, bytes(c.ids), reference=tensor_reference(model, bytes(c.ids)))
    with pytest.raises(ValueError, match="lo <= hi"):
        bdh_gpu.load_weights(str(tmp_path), 4, 2)
    with pytest.raises(ValueError, match="only 2:4 held"):
        equivalence_weights = __import__("equivalence").Weights.load(str(tmp_path), 2, 4)
        equivalence_weights.Dx(slice(0, 4))


def test_graph_runner_keeps_one_token_of_records():
    """GraphRunner reads its monitors as it goes: after many tokens they hold at most one token's samples (the
    long-context run keeps constant memory and a constant cost per token), and what it yields is what a runner
    that never clears yields, token for token."""
    import bdh_gpu
    from bdh_graph import StateMonitor
    from equivalence import GraphRunner

    torch.manual_seed(0)
    model = bdh_gpu.BDH(bdh_gpu.BDHConfig(n_head=2, d=4, N=6, n_layer=2, dropout=0.0)).eval()
    c = compile_model(model, "official")
    runner = GraphRunner(c, "numba")
    keep = StateMonitor(runner.sim, variables=("out.L", "res.V"), when="round")  # never cleared: the reference
    ids = np.arange(40) * 7 % 256
    outs = list(runner.feed(ids))
    per_token = len(c.kernel.rounds)
    assert len(runner._out.token) == 0 and len(runner._hubs.round) == 0
    assert keep.round.size == per_token * len(ids)
    ends = np.cumsum([len(layer) for layer in c.kernel.layers]) - 1
    for t in (0, 17, len(ids) - 1):
        assert np.array_equal(outs[t]["logits"], keep.__getattr__("out.L")[:, (t + 1) * per_token - 1])
        assert np.array_equal(outs[t]["v"], keep.__getattr__("res.V")[:, t * per_token + ends].T)
