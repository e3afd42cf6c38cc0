"""LayerNorm from local rules (equivalence.rules.layer_norm_rounds; reference Sec. 5, LN): merged (one round
carrying E z and E z^2) and two-round forms equal torch's layer_norm on every backend, within the documented error
bound on adversarial (uncentred) inputs; the official compile's rounds per token (7 L + 3 official, 6 L + 3 paper)
and the centring of E that keeps its merged LNs' inputs centred; mutants of the merged LN that the checks catch."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from bdh_graph import Network
from bdh_graph import kernels as K
from equivalence import compare, compile_model, rules
from equivalence.strategies import Case, live


def mutant(kernel, mutation):
    """The kernel with every computation sub-round passed through `mutation` (a tuple of rules -> rules)."""
    layers = tuple(tuple(replace(r, computation=mutation(r.computation)) for r in layer) for layer in kernel.layers)
    return K.Kernel(layers, name=f"{kernel.name} (mutant)")


def is_square(rule):
    return rule.kind == "product" and rule.dst.endswith(".Lp") and rule.src[0] == rule.src[1]


def no_square(comp):
    """The LN input's square `z, z -> Lp` never computed (E z^2 arrives as 0)."""
    return tuple(r for r in comp if not is_square(r))


def square_first(comp):
    """`z, z -> Lp` moved to the front of its sub-round: it squares z before the rules that make z final."""
    return tuple(r for r in comp if is_square(r)) + tuple(r for r in comp if not is_square(r))


def var_without_mean_squared(comp):
    """var = E z^2 - E z in place of E z^2 - (E z)^2 (`Lq - Lm => Ls` for `Lm, Lm -> Ls; Lq - Ls => Ls`)."""
    out = []
    for r in comp:
        if r.kind == "product" and r.dst.endswith(".Ls"):
            pop = r.dst[: -len(".Ls")]
            out.append(rules.linear((f"{pop}.Lq", f"{pop}.Lm"), f"{pop}.Ls", (1, -1)))
        elif not (r.kind == "linear" and r.dst.endswith(".Ls")):
            out.append(r)
    return tuple(out)


def _ln_simulator(groups, g, merged, backend="numpy", mutation=None):
    """A network of `groups` groups of g hubs running LN(hub.Z) => hub.N: the merged form after a round that
    squares Z (`layer_norm_square`, as the compile does where Z is computed), or the two-round form; `mutation`
    (above) breaks its computation sub-rounds."""
    net = (
        Network()
        .add_population("neurons", 2)
        .add_population("hub", groups * g, variables=("Z", "N") + rules.LN_VARIABLES)
    )
    net.add_group("ln", "hub", "hub", rules.clique(groups, g))
    net.add_group("G", "neurons", "neurons", np.zeros((2, 2)))
    square = (K.Round(computation=(rules.layer_norm_square("hub", "Z"),), label="Z^2"),) if merged else ()
    kernel = K.Kernel((square + rules.layer_norm_rounds("hub", "Z", "N", "ln", merged=merged),), name="LN")
    net.with_kernel(kernel if mutation is None else mutant(kernel, mutation))
    assert net.groups["ln"].nnz == groups * g * g
    assert len(net.kernel.rounds) == len(square) + rules.LN_ROUNDS[merged]
    return net.simulator(backend=backend)


def _ln_run(sim, z):
    """LN of each row of z (T, groups * g) through the simulator; every scratch variable is 0 afterwards."""
    out = []
    for zt in z:
        sim.feed(np.zeros(2), np.zeros(2), {"hub.Z": zt})
        out.append(sim.node("hub.N").copy())
        for v in rules.LN_VARIABLES:
            assert not np.any(sim.node(f"hub.{v}")), v
    return np.array(out)


@pytest.mark.parametrize("merged", [True, False])
@pytest.mark.parametrize("backend", ["numpy", "numba", "pyg"])
def test_layer_norm_rounds_equal_layernorm(backend, merged):
    """LayerNorm from local rules (reference Sec. 5, LN): over a clique of edges inside each group of g hubs,
    merged (one round carrying mean z and mean z^2, var = E z^2 - (E z)^2 at each hub) or in two rounds (mean,
    then variance of the centred value), then the node-local division, equal torch's layer_norm (eps 1e-5, no
    affine) per group, on every backend; the scratch variables are back to 0 afterwards."""
    groups, g, T = 3, 5, 2
    rng = np.random.default_rng(1)
    z = rng.normal(size=(T, groups * g)) * rng.uniform(0.1, 10, size=(T, 1)) + rng.normal(size=(T, 1))
    ref = torch.nn.functional.layer_norm(torch.tensor(z).view(T, groups, g), (g,), eps=1e-5).view(T, -1).numpy()
    np.testing.assert_allclose(_ln_run(_ln_simulator(groups, g, merged, backend), z), ref, rtol=1e-12, atol=1e-14)


U = np.finfo(np.float64).eps / 2  # float64 unit roundoff


def ln_error_bound(g, mean, var, merged):
    """The documented error of the LN rounds relative to max |LN(z)| of a group of g (rules.py):
    u (4 + 2 g (1 + |mean| / std + k)), k = mean^2 / (var + eps) merged (E z^2 - (E z)^2 cancels), 0 in two
    rounds; |mean| / std is both forms' error of z - mean."""
    k = mean**2 / (var + 1e-5) if merged else 0.0
    return U * (4 + 2 * g * (1 + abs(mean) / np.sqrt(var) + k))


def _exact_layer_norm(z):
    """LN of one group z (g,) in 50-digit arithmetic: (mean, var, LN(z)) rounded to float64 at the end."""
    import mpmath

    with mpmath.workdps(50):
        x = [mpmath.mpf(float(v)) for v in z]
        m = mpmath.fsum(x) / len(x)
        var = mpmath.fsum((v - m) ** 2 for v in x) / len(x)
        r = [float((v - m) / mpmath.sqrt(var + mpmath.mpf(1e-5))) for v in x]
        return float(m), float(var), np.array(r)


@given(
    g=st.integers(2, 48),
    log_ratio=st.floats(-2, 6),
    log_std=st.floats(-4, 3),
    sign=st.sampled_from([-1, 1]),
    seed=st.integers(0, 2**16),
)
def test_merged_layer_norm_error_bound(g, log_ratio, log_std, sign, seed):
    """Adversarial LN inputs (a group mean up to 1e6 times its spread, spreads from 1e-4 to 1e3): both forms
    stay within `ln_error_bound` of the exact LN (50 digits), the merged one with the extra mean^2 / (var + eps)
    of its cancellation. For a centred input (the official compile's, rules.py) both bounds are u (4 + 2 g),
    ~1e-14, far inside compare's rtol 1e-9."""
    rng = np.random.default_rng(seed)
    std = 10.0**log_std
    z = rng.normal(size=(1, 2 * g)) * std + sign * 10.0**log_ratio * std
    for merged in (True, False):
        got = _ln_run(_ln_simulator(2, g, merged), z)[0]
        for k in range(2):
            m, var, ref = _exact_layer_norm(z[0, k * g : (k + 1) * g])
            err = np.abs(got[k * g : (k + 1) * g] - ref).max() / np.abs(ref).max()
            assert err <= ln_error_bound(g, m, var, merged), (merged, k, err, m, var)


def test_merged_layer_norm_cancels_on_uncentred_input():
    """Why the compile centres what it feeds the merged LN: with mean / std = 1e5 the merged form is off by ~1e-7
    (E z^2 - (E z)^2 cancels: error ~ u mean^2 / var) while the two-round form's error is ~1e3 times smaller
    (~ u |mean| / std); centred, both agree to rounding."""
    g, rng = 16, np.random.default_rng(0)
    c = rng.normal(size=(1, 2 * g))
    errs = {}
    for shift in (0.0, 1e5):
        for merged in (True, False):
            got = _ln_run(_ln_simulator(2, g, merged), c + shift)[0][:g]
            m, var, ref = _exact_layer_norm((c + shift)[0, :g])
            errs[shift, merged] = np.abs(got - ref).max() / np.abs(ref).max()
            assert errs[shift, merged] <= ln_error_bound(g, m, var, merged)
    assert errs[0.0, True] < 1e-14 and errs[0.0, False] < 1e-14
    assert errs[1e5, True] > 1e-8 and errs[1e5, True] > 1e3 * errs[1e5, False], errs
    assert errs[1e5, True] > U * 1e10 / 100, errs  # the cancellation's u mean^2 / var is there


@pytest.mark.parametrize("mutation", [var_without_mean_squared, no_square])
def test_layer_norm_mutants_fail(mutation):
    """The LN-level check sees a broken merged LayerNorm on an uncentred input (mean 3, spread 1): with
    var = E z^2 - E z, or without the square of the input, the rounds no longer equal torch's layer_norm."""
    z = np.random.default_rng(2).normal(size=(1, 10)) + 3.0
    ref = torch.nn.functional.layer_norm(torch.tensor(z).view(2, 5), (5,), eps=1e-5).view(1, -1).numpy()
    np.testing.assert_allclose(_ln_run(_ln_simulator(2, 5, True), z), ref, rtol=1e-12, atol=1e-14)
    with np.errstate(invalid="ignore"):
        got = _ln_run(_ln_simulator(2, 5, True, mutation=mutation), z)
    assert not np.allclose(got, ref, rtol=1e-3, atol=1e-3, equal_nan=False)


@pytest.mark.parametrize("variant", ["official", "paper"])
@pytest.mark.parametrize("L", [1, 2, 3, 5])
def test_official_rounds_per_token(variant, L):
    """Each LN of a layer is one merged round (the raw embedding's, not centred, keeps two): the official
    compile runs 7 L + 3 rounds per token (official) and 6 L + 3 (paper), within 8 L + 4; the report and the
    summary say so, and the kernel passed the validator's locality probes (`Network.with_kernel`)."""
    c = Case(variant, "rope", h=2, N=4, d=3, L=L, ids=tuple(range(L + 1)))
    comp = compile_model(c.model(), "official")
    rounds = comp.kernel.rounds
    assert len(rounds) == comp.report["rounds_per_token"] == (7 * L + 3 if variant == "official" else 6 * L + 3)
    assert len(rounds) <= 8 * L + 4
    assert f"{len(rounds)} rounds per token" in comp.summary()
    merged = [r.label for r in rounds if r.label.endswith(": moments")]
    two = [r.label for r in rounds if r.label.endswith((": mean", ": variance"))]
    assert len(merged) == (3 * L if variant == "official" else 2 * L + 1)
    assert two == (["v_0 = LN(embed): mean", "v_0 = LN(embed): variance"] if variant == "official" else [])
    K.validate(
        comp.kernel,
        comp.network.node_variables,
        {k: v.group for k, v in comp.network.edge_vars.items()},
        {k: (g.pre, g.post) for k, g in comp.network.groups.items()},
        {k: p.size for k, p in comp.network.populations.items()},
    )


@pytest.mark.parametrize("variant", ["official", "paper"])
def test_official_compile_centres_E(variant, monkeypatch):
    """E y reaches its merged LN centred: the compile puts Ec = E - 1 mean_a E (each column centred) on E_e, E_i,
    and LN(Ec y) = LN(E y). A model whose E has a common offset of 1000 (E y's mean far above its spread, as a
    trained E could have) still equals the tensor model at rtol 1e-9; without the centring (the mutant) the
    merged LN cancels and the check fails."""
    import equivalence.compile as C

    c = Case(variant, "rope", h=2, N=8, d=8, L=2, ids=(5, 66, 7, 100), scale="unit", seed=3)
    m = c.model()
    with torch.no_grad():
        m.E.add_(1000.0)
    comp = compile_model(m, "official")
    Ec = (comp.network.groups["E_e"].matrix() - comp.network.groups["E_i"].matrix()).toarray()
    np.testing.assert_allclose(Ec.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(Ec, C.centred_columns(comp.weights.E), rtol=0, atol=0)
    assert compare(m, comp, np.array(c.ids), backend="numpy").ok
    monkeypatch.setattr(C, "centred_columns", lambda E: E)
    assert not compare(m, "official", np.array(c.ids), backend="numpy").ok


@pytest.mark.parametrize("mutation", [no_square, square_first])
@pytest.mark.parametrize("variant", ["official", "paper"])
def test_compile_mutants_fail(variant, mutation):
    """The check sees a broken merged LayerNorm in the compile: without the square of the LN input, or with the
    square taken before the input is final (stale z), the graph no longer equals the tensor model (the mutants
    still pass the locality validator); unmutated, the same case passes. (var = E z^2 - E z in place of
    E z^2 - (E z)^2 is invisible here, as it should be: the compile's LN inputs have mean ~1e-17, rules.py;
    `test_layer_norm_mutants_fail` catches it on uncentred input.)"""
    case = Case(variant, "rope", h=2, N=4, d=4, L=2, ids=(5, 66, 7, 100), scale="unit", seed=1)
    live(case, f"official/{variant}/mutant")
    comp = compile_model(case.model(), "official")
    assert compare(case.model(), comp, np.array(case.ids), backend="numpy").ok
    comp.network.with_kernel(mutant(comp.kernel, mutation))
    rep = compare(case.model(), comp, np.array(case.ids), backend="numpy")
    assert not rep.ok and rep.max_rel > 1e-3, rep
