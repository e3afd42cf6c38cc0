"""docs/tutorial.md tells the truth: its Hebbian formula (one index convention, Eq. 6 in the same orientation) and
its decay example are the simulator's; its glossary holds every name the viewer shows and every anchor the
viewer links; it has no dangling references."""

import os
import re

import numpy as np
import pytest
from small_models import small_model

from bdh.teach.words import GLOSSARY, TUTORIAL
from bdh_graph import Network
from equivalence import TensorRunner, compile_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = open(os.path.join(ROOT, TUTORIAL), encoding="utf-8").read()
FORMULA = "σ_{t,ℓ}(i,j) = u(i) · (σ_{t-1,ℓ}(i,j) + Gs(i,j) · x_{t,ℓ}(i) · y_{t,ℓ-1}(j))"


def section(title: str) -> str:
    start = TEXT.index(title)
    end = TEXT.find("\n## ", start + 1)
    return TEXT[start : end if end > 0 else None]


def test_tutorial_formula_matches_the_simulator():
    """The tutorial states σ(i,j) += X(i) Y(j) with X from layer ℓ (key i), Y from layer ℓ-1 (value j), then × u(i),
    and Eq. 6's matrix form in the same orientation; on its 2-neuron example (u = (0.9, 0.6): × u and × (1-u)
    differ, and so do u(i) and u(j)) and on a random one with two tokens the simulator computes exactly that."""
    assert FORMULA in TEXT and "σ(i,j) += X(i) Y(j)" in TEXT
    assert "its entry [j, i] is σ(i,j)" in TEXT and "(y_{t,ℓ-1} x_{t,ℓ}^T) ⊙ Gs) U" in TEXT
    rng = np.random.default_rng(0)
    Gx = np.zeros((2, 2))
    Gx[1, 0] = 2.0
    cases = [(Gx, np.array([0.9, 0.6]), np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]]))]
    n = 3
    cases.append((rng.random((n, n)), rng.uniform(0.5, 0.95, n), rng.random((2, n)), rng.random((2, n))))
    for G, u, x0, y0 in cases:
        r = Network.from_dense(Gx_e=G, u=u, layers=1).run(x0, y0, backend="numpy")
        sig = np.zeros((len(u), len(u)))  # σ(i,j) by the tutorial's formula, token by token
        for t in range(len(x0)):
            x, y = r.x[t, 1], y0[t]
            sig = u[:, None] * (sig + np.outer(x, y))  # [i, j] = u(i) (σ(i,j) + x(i) y(j))
        np.testing.assert_allclose(r.sigma[0].T, sig, rtol=1e-12)  # the matrix is stored [j, i]
    r = Network.from_dense(Gx_e=Gx, u=np.array([0.9, 0.6]), layers=1).run(*cases[0][2:], backend="numpy")
    table = section("## 4.")
    for (i, j), v in {(0, 0): 0.9, (1, 0): 1.2, (0, 1): 0.0}.items():
        assert f"| σ({i},{j}) |" in table and f"**{v:g}**" in table
        assert r.sigma[0][j, i] == pytest.approx(v)


def test_decay_example_tells_u_from_one_minus_u():
    """The decay is stated as 'multiply by u' with a u (0.9) for which 1 - u (0.1) is visibly different."""
    assert "**multiply by u**" in TEXT and "u = 0.9 keeps 90%" in TEXT
    assert "| σ(0,0) | 1 · 1 = 1 | **0.9** | 0.1 |" in TEXT


def test_no_dangling_references():
    """No 'reference 2a'-style pointers into a page the reader does not have; every relative link and anchor
    resolves (docs/viewer.md is written by the viewer's branch and checked once it is there)."""
    assert not re.search(r"[Rr]eference \d[a-z]", TEXT)
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', TEXT))
    heads = {re.sub(r"[^\w\- ]", "", h.lower()).strip().replace(" ", "-") for h in re.findall(r"^#+ (.+)$", TEXT, re.M)}
    for target in re.findall(r"\]\(([^)]+)\)", TEXT):
        path, _, anchor = target.partition("#")
        if not path:
            assert anchor in anchors or anchor in heads, target
            continue
        full = os.path.normpath(os.path.join(ROOT, "docs", path))
        if path == "viewer.md" and not os.path.exists(full):
            continue
        assert os.path.exists(full), target
    for test in re.findall(r"\[`(test_\w+)`\]\(\.\./tests/(\w+\.py)\)", TEXT):
        src = open(os.path.join(ROOT, "tests", test[1]), encoding="utf-8").read()
        assert f"def {test[0]}(" in src, test


def test_glossary_holds_every_name_the_viewer_shows():
    """Every population, variable, synapse group and round label of the three compiles, and every anchor the
    viewer links (bdh.teach.words.GLOSSARY), is in the glossary, defined before the demo section uses them."""
    glossary = section("### Glossary")
    assert TEXT.index("### Glossary") < TEXT.index("## 3. See it run")
    for anchor in GLOSSARY.values():
        assert f'<a id="{anchor}"></a>' in glossary, anchor
    names = set()
    for variant, how in (("official", "official"), ("normfree", "dense"), ("normfree", "circuit")):
        c = compile_model(TensorRunner(small_model(variant)).model, how)
        for p in c.network.populations.values():
            names.add(p.name)
            names.update(p.variables)
        names.update(c.network.groups)
        for r in c.kernel.rounds:
            names.update(re.findall(r"4l(?:\+\d)?|I&F", r.label or ""))
    quoted = set(re.findall(r"`([^`]+)`", glossary))
    words = {w for q in quoted for w in re.split(r"[^\w'&+]+", q) if w}  # `res.V` names V, `Gx_e, Gx_i` both
    missing = sorted(n for n in names if n not in quoted and n not in words)
    assert not missing, missing
    for word in ("sub-round", "communication", "computation", "ALiBi", "RoPE", "ρ", "hub", "σ_ℓ(i,j)", "logit"):
        assert word in glossary, word
