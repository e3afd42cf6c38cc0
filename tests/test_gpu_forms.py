"""The execution forms of BDH-GPU agree, for every variant x every U (float64, tolerance 1e-10).

token-parallel (Eq. 4) == recurrent step (Eq. 8 state, dense and sparse) == chunked prefill == a loop-level
numpy reference of Eq. 8 / Eq. 7 with an explicit rho and an explicit U matrix; strictly causal;
`retention()` describes U exactly as applied; `rho(state)` is the paper's rho.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st

from bdh_gpu import BDH, BDHConfig
from bdh_gpu.config import INIT_STD, U_KINDS, VARIANTS

TOL = 1e-10


pytestmark = pytest.mark.usefixtures("one_torch_thread")
COMBOS = [(v, u) for v in VARIANTS for u in U_KINDS]


def make_model(cfg: BDHConfig, seed: int, std: float) -> BDH:
    """Parameters ~ N(0, std^2). normfree: N(0, (std * INIT_STD / 0.2)^2), i.e. std 0.2 is its default init,
    whose constant gains keep Eq. 7's products of order 1 (with gains 1 they vanish at any small std)."""
    torch.manual_seed(seed)
    model = BDH(cfg).double().eval()
    if cfg.variant == "normfree":
        std = std * INIT_STD / 0.2
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model


@st.composite
def cases(draw, variant, U, max_T=12):
    h = draw(st.integers(1, 3))
    N = 2 * draw(st.integers(1, 3))
    # LN over d = 2 is +-(1, -1): a sign of z0 - z1, discontinuous where they meet, where no 1e-10 can hold
    d = draw(st.integers(2 if variant == "normfree" else 3, 6))
    cfg = BDHConfig(
        n_head=h,
        d=d,
        N=N,
        n_layer=draw(st.integers(1, 3)),
        dropout=0.0,
        U=U,
        variant=variant,
        rope_theta=draw(st.sampled_from([2.0**16, 10.0, 1.5])),
        alibi_max_bias=draw(st.sampled_from([0.05, 1.0, 8.0])),
    )
    # normfree has no LN: keep activations moderate so that 1e-10 is meaningful
    std = draw(st.sampled_from([0.1, 0.2, 0.3] if variant == "normfree" else [0.05, 0.5, 1.5]))
    B = draw(st.integers(1, 2))
    T = draw(st.integers(1, max_T))
    idx = torch.tensor(draw(st.lists(st.lists(st.integers(0, 255), min_size=T, max_size=T), min_size=B, max_size=B)))
    seed = draw(st.integers(0, 2**16))
    note(f"cfg={cfg} std={std} seed={seed}")
    return cfg, make_model(cfg, seed, std), idx


def assert_close(got, ref, what):
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    scale = max(1.0, float(np.abs(ref).max()) if ref.size else 1.0)
    err = float(np.abs(got - ref).max()) if ref.size else 0.0
    assert err <= TOL * scale, f"{what}: max abs diff {err:.3e} > {TOL * scale:.3e}"


def run_steps(model, idx, sparse):
    state, out = model.init_state(idx.shape[0]), []
    for t in range(idx.shape[1]):
        logits, state = model.step(idx[:, t], state, sparse=sparse)
        out.append(logits)
    return torch.stack(out, 1), state


@pytest.mark.parametrize("variant,U", COMBOS)
@given(data=st.data())
def test_parallel_equals_recurrent(variant, U, data):
    """Eq. 4 (token-parallel) == Eq. 8 recurrence (state read before write), dense and sparse step, and prefill
    in two chunks; and the state after prefill equals the state after stepping."""
    cfg, model, idx = data.draw(cases(variant, U, max_T=24))
    with torch.no_grad():
        ref = model(idx)
        dense, s_dense = run_steps(model, idx, sparse=False)
        sparse, s_sparse = run_steps(model, idx, sparse=True)
        cut = data.draw(st.integers(0, idx.shape[1]))
        l1, s1 = model.prefill(idx[:, :cut])
        l2, s2 = model.prefill(idx[:, cut:], s1)
    assert_close(dense, ref, "step (dense) vs forward")
    assert_close(sparse, ref, "step (sparse) vs forward")
    assert_close(torch.cat([l1, l2], 1), ref, "prefill in two chunks vs forward")
    assert s2.t == s_dense.t == idx.shape[1]
    for a, b, c in zip(model.rho(s2), model.rho(s_dense), model.rho(s_sparse)):
        assert_close(a, b, "rho after prefill vs after steps")
        assert_close(c, b, "rho after sparse steps vs dense steps")


def reference_U(cfg):
    """U per head (N x N) built from the config alone: u_k = exp(-2^(-max_bias (k+1)/h)), pair m turns by
    2 pi f_2m with f the released float32 recipe theta^(-q/N)/(2 pi); R = [[cos, -sin], [sin, cos]]."""
    N = cfg.N
    q = (torch.arange(N, dtype=torch.float32) / 2).floor() * 2
    f = (1.0 / (float(cfg.rope_theta) ** (q / N)) / (2 * math.pi)).double().numpy()
    Us = []
    for k in range(cfg.n_head):
        u = math.exp(-(2.0 ** (-cfg.alibi_max_bias * (k + 1) / cfg.n_head))) if cfg.uses_alibi else 1.0
        Uk = np.eye(N) * u
        if cfg.uses_rope:
            for m in range(N // 2):
                c, s = math.cos(2 * math.pi * f[2 * m]), math.sin(2 * math.pi * f[2 * m])
                Uk[2 * m : 2 * m + 2, 2 * m : 2 * m + 2] = u * np.array([[c, -s], [s, c]])
        Us.append(Uk)
    return Us


def _ln(z):
    mu = z.mean()
    return (z - mu) / math.sqrt(((z - mu) ** 2).mean() + 1e-5)


def reference_logits(model, tokens):
    """Loop-level numpy reference, one sequence: for each token t and layer l, with rho_h (d x N) per head:

    official: x = (D_x v)^+ ; a_h = rho_h x_h ; rho_h <- (rho_h + v x_h^T) U ; y = (D_y LN(a_h))^+ x ;
              v <- LN(v + LN(E y))                                             (reference Sec. 4)
    paper:    v* = LN(E y) ; x <- x + (D_x v*)^+ ; a_h = rho_h x_h ; rho_h <- (rho_h + v* x_h^T) U ;
              y = (D_y LN(a_h))^+ x                                            (Eq. 8)
    normfree: as paper without LN and with a = sum_h rho_h x_h                 (Eq. 7, rho = E sigma)
    """
    cfg = model.config
    h, N, d = cfg.n_head, cfg.N, cfg.d
    g = cfg.gains  # the constant gains, applied here as plain factors (config.default_gains)
    Dx = g["D_x"] * model.D_x.detach().numpy()
    Dy = g["D_y"] * model.D_y.detach().numpy()
    E = g["E"] * model.E.detach().numpy()
    emb = g["embed"] * model.embed.weight.detach().numpy()
    head = g["lm_head"] * model.lm_head.detach().numpy()
    Us = reference_U(cfg)
    norm = (lambda z: z) if cfg.variant == "normfree" else _ln
    rho = [[np.zeros((d, N)) for _ in range(h)] for _ in range(cfg.n_layer)]
    out = []
    for tok in tokens:
        if cfg.variant == "official":
            v = _ln(emb[tok])
        else:
            z = norm(emb[tok])
            x = [np.maximum(Dx[k] @ z, 0) for k in range(h)]
            y = [xk.copy() for xk in x]
        for l in range(cfg.n_layer):
            if cfg.variant == "official":
                value = v
                x = [np.maximum(Dx[k] @ v, 0) for k in range(h)]
            else:
                value = norm(E @ np.concatenate(y))
                x = [x[k] + np.maximum(Dx[k] @ value, 0) for k in range(h)]
            a = [rho[l][k] @ x[k] for k in range(h)]  # read ...
            rho[l] = [(rho[l][k] + np.outer(value, x[k])) @ Us[k] for k in range(h)]  # ... then write
            if cfg.variant == "normfree":
                y = [np.maximum(Dy[k] @ sum(a), 0) * x[k] for k in range(h)]
            else:
                y = [np.maximum(Dy[k] @ _ln(a[k]), 0) * x[k] for k in range(h)]
            if cfg.variant == "official":
                v = _ln(v + _ln(E @ np.concatenate(y)))
        final = v if cfg.variant == "official" else norm(E @ np.concatenate(y))
        out.append(final @ head)
    return np.stack(out)


@pytest.mark.parametrize("variant,U", COMBOS)
@given(data=st.data())
def test_matches_loop_reference(variant, U, data):
    """Eq. 8 (paper), Eq. 7 (normfree), reference Sec. 4 (official) with U = diag(u) R(theta) as an explicit
    matrix and rho_t = (rho_{t-1} + v x^T) U: the model's token-parallel logits equal the loop reference."""
    cfg, model, idx = data.draw(cases(variant, U, max_T=8))
    with torch.no_grad():
        ours = model(idx[:1])[0].numpy()
    assert_close(ours, reference_logits(model, idx[0].tolist()), "forward vs loop reference")


@pytest.mark.parametrize("variant,U", COMBOS)
@given(data=st.data())
def test_causal(variant, U, data):
    """Strict causality (Eq. 4, tau < t): changing token k changes no logits before position k."""
    cfg, model, idx = data.draw(cases(variant, U))
    T = idx.shape[1]
    k = data.draw(st.integers(0, T - 1))
    other = idx.clone()
    other[:, k] = (other[:, k] + data.draw(st.integers(1, 255))) % 256
    with torch.no_grad():
        a, b = model(idx), model(other)
    assert_close(b[:, :k], a[:, :k], "logits before the changed token")
    if cfg.variant == "official" and cfg.d >= 3:  # the residual stream carries embed(token k) to logits at k
        assert not torch.equal(a[:, k], b[:, k])


@pytest.mark.parametrize("variant,U", COMBOS)
@given(data=st.data())
def test_retention_describes_attention(variant, U, data):
    """U as reported by retention() (diag(u) R(theta), R = [[cos, -sin], [sin, cos]] per pair, neuron
    head*N+i): a_h,t = sum_{tau<t} value_tau * (x_tau,h^T U^{t-tau} x_t,h) reproduces trace()['a']."""
    cfg, model, idx = data.draw(cases(variant, U, max_T=8))
    tr = {k: v.numpy() for k, v in model.trace(idx[0]).items()}
    ret = model.retention()
    u, theta = ret["u"], ret["theta"]
    assert u.shape == (cfg.n,) and theta.shape == (cfg.n // 2,)
    assert np.all(u > 0) and np.all(u <= 1)
    U_full = np.diag(u)
    for m in range(cfg.n // 2):
        c, s = math.cos(theta[m]), math.sin(theta[m])
        U_full[2 * m : 2 * m + 2, 2 * m : 2 * m + 2] = np.diag(u[2 * m : 2 * m + 2]) @ np.array([[c, -s], [s, c]])
    off = 0 if cfg.variant == "official" else 1  # paper/normfree: x[0] is the input boundary
    T, N = idx.shape[1], cfg.N
    for l in range(cfg.n_layer):
        x, value = tr["x"][l + off], tr["value"][l]
        for k in range(cfg.n_head):
            sl = slice(k * N, (k + 1) * N)
            Uk = U_full[sl, sl]
            for t in range(T):
                a = np.zeros(cfg.d)
                for tau in range(t):
                    a += (x[tau, sl] @ np.linalg.matrix_power(Uk, t - tau) @ x[t, sl]) * value[tau]
                assert_close(tr["a"][l, k, t], a, f"a[l={l}, head={k}, t={t}]")
    assert tr["logits"].shape == (T, 256)


@pytest.mark.parametrize("variant,U", COMBOS)
def test_rho_reads_like_the_paper(variant, U):
    """Eq. 8: a_t = rho_{t-1} x_t with rho from `BDH.rho(state)` after prefilling tokens < t."""
    cfg = BDHConfig(n_head=2, d=4, N=4, n_layer=2, dropout=0.0, U=U, variant=variant, alibi_max_bias=0.5)
    model = make_model(cfg, 0, 0.3)
    idx = torch.randint(0, 256, (1, 30), generator=torch.Generator().manual_seed(1))
    tr = model.trace(idx[0])
    off = 0 if variant == "official" else 1
    for t in (1, 7, 29):
        with torch.no_grad():
            _, state = model.prefill(idx[:, :t])
        for l, rho in enumerate(model.rho(state)):
            for k in range(cfg.n_head):
                x = tr["x"][l + off, t, k * cfg.N : (k + 1) * cfg.N]
                assert_close(rho[0, k] @ x, tr["a"][l, k, t], f"rho x at t={t}, l={l}, head={k}")


@pytest.mark.parametrize("U", ["alibi", "rope+alibi"])
def test_alibi_rescaling_over_long_sequences(U):
    """The ALiBi state is kept lazily scaled and rebased before exp(m (t - t_ref)) exceeds e^20: over 300 tokens
    with fast damping, steps (dense and sparse) still equal the parallel form and t_ref has moved."""
    cfg = BDHConfig(n_head=2, d=4, N=4, n_layer=2, dropout=0.0, U=U, variant="official", alibi_max_bias=0.2)
    model = make_model(cfg, 3, 0.5)
    idx = torch.randint(0, 256, (1, 300), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(idx)
        for sparse in (False, True):
            got, state = run_steps(model, idx, sparse)
            assert_close(got, ref, f"steps (sparse={sparse}) vs forward")
            assert 0 < state.t_ref <= 300
    assert float(np.log(1 / model.retention()["u"]).max()) * 300 > 20


@pytest.mark.parametrize("variant,U", [("official", "rope"), ("paper", "rope+alibi"), ("normfree", "none")])
def test_step_is_pure_and_inplace_is_equal(variant, U):
    """step(...) leaves its input state untouched; inplace=True returns the same values (for owned states)."""
    cfg = BDHConfig(n_head=2, d=4, N=6, n_layer=2, dropout=0.0, U=U, variant=variant)
    model = make_model(cfg, 5, 0.3)
    idx = torch.randint(0, 256, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, state = model.prefill(idx)
        before = [s.clone() for s in state.S]
        for sparse in (False, True):
            l1, s1 = model.step(idx[:, 0], state, sparse=sparse)
            for a, b in zip(before, state.S):
                assert torch.equal(a, b)
        owned = model.prefill(idx)[1]
        l2, s2 = model.step(idx[:, 0], owned, inplace=True, sparse=True)
        assert all(a.data_ptr() == b.data_ptr() for a, b in zip(owned.S, s2.S))
    assert_close(l2, l1, "inplace step vs pure step")
    for a, b in zip(s1.S, s2.S):
        assert_close(a, b, "inplace state vs pure state")


@pytest.mark.parametrize("variant,U", [("official", "rope"), ("paper", "rope+alibi"), ("normfree", "alibi")])
def test_silent_neurons_cost_nothing(variant, U):
    """Sparse step touches only active neurons: put NaN in D_y rows, E columns and state rows of neurons that
    never fire (zero D_x rows, whole RoPE pairs); the sparse step is finite and equals the dense step with zeros."""
    cfg = BDHConfig(n_head=2, d=4, N=8, n_layer=2, dropout=0.0, U=U, variant=variant)
    model = make_model(cfg, 7, 0.3 if variant != "normfree" else 0.2)
    silent = torch.tensor([0, 1, 4, 5])  # pairs (0,1), (4,5) of each head
    with torch.no_grad():
        model.D_x[:, silent] = 0.0
        model.D_x[:, 2:4] = model.D_x[:, 2:4].abs()  # keep some neurons firing
    idx = torch.randint(0, 256, (1, 10), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref, state = run_steps(model, idx[:, :9], sparse=False)
        want, _ = model.step(idx[:, 9], state, sparse=False)
        poisoned = make_model(cfg, 7, 0.3)
        poisoned.load_state_dict(model.state_dict())
        flat = torch.cat([k * cfg.N + silent for k in range(cfg.n_head)])
        poisoned.D_y.view(cfg.n, cfg.d)[flat] = float("nan")
        poisoned.E[:, flat] = float("nan")
        S = tuple(s.clone() for s in state.S)
        for s in S:
            assert torch.all(s.view(1, cfg.n, cfg.d)[:, flat] == 0)
            s.view(1, cfg.n, cfg.d)[:, flat] = float("nan")
        got, _ = poisoned.step(idx[:, 9], state._replace(S=S), sparse=True)
    assert torch.isfinite(got).all()
    assert_close(got, want, "sparse step with poisoned silent neurons vs dense step")


def test_generate_greedy_equals_argmax_of_forward():
    """generate() (recurrent form) with temperature 0 picks argmax of forward() on the growing sequence."""
    cfg = BDHConfig(n_head=2, d=8, N=8, n_layer=2, dropout=0.0, U="rope", variant="official")
    model = make_model(cfg, 11, 0.5)
    prompt = torch.tensor([[1, 2, 3], [250, 0, 7]])
    out = model.generate(prompt, 12, temperature=0)
    seq = prompt
    with torch.no_grad():
        for _ in range(12):
            seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, seq)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    s1 = model.generate(prompt, 10, temperature=0.8, top_k=5, generator=g1)
    s2 = model.generate(prompt, 10, temperature=0.8, top_k=5, generator=g2)
    assert torch.equal(s1, s2) and s1.shape == (2, 13)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(max_new_tokens=-1), "max_new_tokens >= 0"),
        (dict(max_new_tokens=2, temperature=-1.0), "temperature >= 0"),
        (dict(max_new_tokens=2, top_k=0), "top_k >= 1"),
    ],
)
def test_generate_rejects_bad_arguments(kwargs, needle):
    """Bad input to generate: one-line ValueError naming it."""
    model = make_model(BDHConfig(n_head=1, d=4, N=4, n_layer=1), 0, 0.1)
    with pytest.raises(ValueError, match=needle):
        model.generate(torch.tensor([[1]]), **kwargs)
    with pytest.raises(ValueError, match="at least 1 token"):
        model.generate(torch.zeros(1, 0, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="integer tensor"):
        model(torch.zeros(1, 3))


def test_dropout_only_in_training():
    """Dropout on y (as released) acts in training mode only; eval forward is deterministic."""
    cfg = BDHConfig(n_head=2, d=8, N=8, n_layer=2, dropout=0.5)
    model = make_model(cfg, 0, 0.5)
    idx = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model.eval()(idx), model(idx))
        model.train()
        assert not torch.equal(model(idx), model.eval()(idx))


def test_trace_shapes():
    """trace() keys and shapes per variant (documented in BDH.trace)."""
    for variant, Lx in (("official", 2), ("paper", 3), ("normfree", 3)):
        cfg = BDHConfig(n_head=2, d=4, N=6, n_layer=2, variant=variant)
        tr = make_model(cfg, 0, 0.1).trace(torch.arange(5))
        assert tr["x"].shape == tr["y"].shape == (Lx, 5, 12)
        assert tr["a"].shape == (2, 2, 5, 4) and tr["value"].shape == (2, 5, 4) and tr["logits"].shape == (5, 256)
        assert tr["a_hat"].shape == ((2, 1, 5, 4) if variant == "normfree" else (2, 2, 5, 4))
        if variant == "official":
            assert tr["v"].shape == (3, 5, 4) and tr["Ey"].shape == (2, 5, 4)
