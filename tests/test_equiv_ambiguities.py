"""The paper's ambiguities (reference 2a, 2b), pinned at the level of the whole model: the choices we take keep
the compiled graph equal to BDH-Normfree (Eq. 7); the literal readings of Table 1 break that equality."""

import numpy as np
import pytest

from equivalence import compare, compile_dense
from equivalence.strategies import Case

BIG = 1e-2  # a broken construction is off by O(1) relative error; the chosen one by ~1e-14


def case(U):
    return Case("normfree", U, h=2, N=4, d=3, L=2, ids=(7, 200, 31, 7, 99), scale="unit", seed=3)


@pytest.mark.parametrize("U", ["none", "alibi", "rope", "rope+alibi"])
def test_printed_hebbian_orientation_breaks_equivalence(U):
    """Reference 2a: Table 1 prints Y(i), X(j) -> sigma(i,j), the transpose of Eq. 6 / Eq. 8. Compiled that way
    the graph diverges from Eq. 7 as soon as the state is written (rho after token 0), while
    X(i), Y(j) -> sigma(i,j) (sigma[a, b] += y[a] x[b]) holds to 1e-9."""
    c = case(U)
    m = c.model()
    good = compare(m, compile_dense(m), np.array(c.ids), backend="numpy")
    bad = compare(m, compile_dense(m, hebbian_orientation="printed"), np.array(c.ids), backend="numpy")
    assert good.ok, good
    assert not bad.ok and bad.quantities["rho"].max_rel > BIG and bad.quantities["y"].max_rel > BIG, bad
    assert bad.first_divergence == (0, 1, "rho"), bad  # token 0 reads an empty state: only rho differs
    assert bad.quantities["y"].first_bad[0] == 1  # the read of token 1 is the first wrong output


@pytest.mark.parametrize("U", ["alibi", "rope", "rope+alibi"])
def test_literal_damping_order_breaks_equivalence(U):
    """Reference 2b: Table 1 as printed runs (read, damp, write), one factor of U short of Eq. 6's
    sigma_t = (sigma_{t-1} + y x^T) U. With damping or rotation the graph then diverges from Eq. 7;
    (read, write, damp) holds."""
    c = case(U)
    m = c.model()
    good = compare(m, compile_dense(m, damping="eq6"), np.array(c.ids), backend="numpy")
    bad = compare(m, compile_dense(m, damping="table1"), np.array(c.ids), backend="numpy")
    assert good.ok, good
    assert not bad.ok and bad.quantities["rho"].max_rel > BIG, bad


def test_damping_order_is_irrelevant_without_U():
    """Reference 2b: with U = I (no damping, no rotation) every order of read, write and damp agrees."""
    c = case("none")
    m = c.model()
    for damping in ("eq6", "table1"):
        rep = compare(m, compile_dense(m, damping=damping), np.array(c.ids), backend="numpy")
        assert rep.ok, rep
