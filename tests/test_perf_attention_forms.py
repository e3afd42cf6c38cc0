"""Every attention form the user can pick is the same function (Eq. 4): the fused rotations, the `auto` choice
by T, and the CLI's --attention / --chunk-size. Values and gradients, float64, hypothesis; never speed."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import bdh_gpu.model as M
from bdh.cli import main
from bdh_gpu import BDH, BDHConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rotate_by_pairs(x, cos, sin):
    """R_t x written pair by pair (the released recipe): the reference for the fused rotations."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x0 * cos - x1 * sin, x1 * cos + x0 * sin), dim=-1).flatten(-2)


@settings(max_examples=30, deadline=None)
@given(
    B=st.integers(1, 4),
    T=st.integers(1, 6),
    h=st.integers(1, 3),
    N=st.integers(1, 5),
    d=st.integers(1, 5),
    per_head=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_weight_products_equal_the_broadcast_form(B, T, h, N, d, per_head, seed):
    """x = (D_x v)^+ and D_y a (Eq. 8's encoders) as `_encode` / `_gate_product` compute them (one product over
    the batch, the weights never copied per sequence) equal the broadcast form `v.unsqueeze(1) @ D_x.mT` /
    `a @ D_y.mT`, for a shared and a per-head a, values and the gradients of v, a, D_x, D_y, float64."""
    torch.manual_seed(seed)
    m = BDH(BDHConfig(n_head=h, N=2 * N, d=d, n_layer=1, dropout=0.0)).double()
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(B, T, d, dtype=torch.float64, generator=g, requires_grad=True)
    a = torch.randn(B, h if per_head else 1, T, d, dtype=torch.float64, generator=g, requires_grad=True)
    wx = torch.randn(B, h, T, 2 * N, dtype=torch.float64, generator=g)
    got = (m._encode(v) * wx).sum() + (m._gate_product(a) * wx).sum()
    ref = (torch.relu(m._g_x * v.unsqueeze(1) @ m.D_x.mT) * wx).sum() + ((a @ m.D_y.mT) * wx).sum()
    assert torch.allclose(got, ref, rtol=1e-13, atol=0)
    ggot = torch.autograd.grad(got, (v, a, m.D_x, m.D_y))
    gref = torch.autograd.grad(ref, (v, a, m.D_x, m.D_y))
    for name, x, y in zip(("v", "a", "D_x", "D_y"), ggot, gref):
        assert torch.allclose(x, y, rtol=1e-12, atol=1e-13 * float(y.abs().max())), name


@settings(max_examples=30, deadline=None)
@given(
    T=st.integers(1, 9),
    half=st.integers(1, 6),
    lead=st.integers(1, 3),
    seed=st.integers(0, 2**16),
    theta=st.sampled_from([1.5, 10.0, 2.0**16]),
)
def test_fused_rotations_equal_pairwise(T, half, lead, seed, theta):
    """RoPE (R_t of Eq. 4/8): the complex-product form (float32/64) and the c/s-vector form with its R^T
    backward (`_Rotate`, used for bf16/fp16) both equal the pairwise formula, values and gradients, float64."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(lead, T, 2 * half, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(lead, T, 2 * half, dtype=torch.float64, generator=g)
    cos, sin = M.rope_cos_sin(torch.arange(T), M.rope_frequencies(2 * half, theta))
    ref = rotate_by_pairs(x, cos, sin)
    (gref,) = torch.autograd.grad((ref * w).sum(), x)
    c = cos.repeat_interleave(2, -1)
    s = torch.stack((-sin, sin), dim=-1).flatten(-2)
    for name, got in (("complex", M.rotate(x, cos, sin)), ("c/s vectors", M._Rotate.apply(x, c, s))):
        (ggot,) = torch.autograd.grad((got * w).sum(), x)
        assert torch.allclose(got, ref, rtol=0, atol=1e-14), name
        assert torch.allclose(ggot, gref, rtol=0, atol=1e-14), name


@pytest.mark.parametrize("variant,U", [("official", "rope"), ("paper", "alibi"), ("normfree", "rope+alibi")])
@settings(max_examples=8, deadline=None)
@given(T=st.integers(2, 24), min_t=st.integers(1, 12), C=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_auto_equals_full(variant, U, T, min_t, C, seed, monkeypatch_module):
    """Attention("auto") (the default) picks chunked from AUTO_CHUNK_MIN_T on and full below; either way the
    logits and every parameter's gradient equal the full T x T form (Eq. 4), float64, 1e-10 / 1e-8."""
    monkeypatch_module.setattr(M, "AUTO_CHUNK_MIN_T", min_t)
    monkeypatch_module.setattr(M, "AUTO_CHUNK_SIZE", C)
    assert M.Attention("auto").chunk_for(T) == (C if min_t <= T else None)
    torch.manual_seed(seed)
    model = BDH(BDHConfig(n_head=2, d=4, N=4, n_layer=2, dropout=0.0, U=U, variant=variant)).double()
    assert model.attention == M.Attention("auto")
    idx = torch.randint(0, 256, (2, T), generator=torch.Generator().manual_seed(seed))
    w = torch.randn(2, T, 256, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    grads = []
    for form in ("auto", "full"):
        out = model(idx, attention=form)
        gs = torch.autograd.grad((out * w).sum(), list(model.parameters()))
        grads.append((out.detach(), gs))
    (a, ga), (f, gf) = grads
    scale = max(1.0, float(f.abs().max()))
    assert float((a - f).abs().max()) <= 1e-10 * scale
    for x, y in zip(ga, gf):
        assert float((x - y).abs().max()) <= 1e-8 * max(1.0, float(y.abs().max()))
    with torch.no_grad():
        lp, sp = model.prefill(idx)  # prefill defaults to auto as well
        lf, sf = model.prefill(idx, attention="full")
    assert float((lp - lf).abs().max()) <= 1e-10 * scale
    for x, y in zip(sp.S, sf.S):
        assert float((x - y).abs().max()) <= 1e-10 * max(1.0, float(y.abs().max()))


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_cli_attention_forms_equal(tmp_path, capsys):
    """`bdh logits --attention full|chunked|auto` and `--chunk-size`: the same logits (float32, 1e-5 of scale);
    `bdh eval` gives the same loss; bad combinations are one-line errors with exit code 2."""
    out = str(tmp_path / "m")
    assert (
        main(
            [
                "train",
                "--data",
                "recall:4",
                "--out",
                out,
                "--steps",
                "2",
                "--batch-size",
                "2",
                "--block-size",
                "24",
                "--eval-every",
                "2",
                "--ckpt-every",
                "2",
                "--quiet",
                "--device",
                "cpu",
                "--attention",
                "chunked",
                "--chunk-size",
                "5",
            ]
        )
        == 0
    )
    assert "attention chunked (C = 5)" in capsys.readouterr().out
    text = tmp_path / "t.txt"
    text.write_bytes(bytes(range(32, 127)) * 2)
    got = {}
    for name, extra in (
        ("full", ["--attention", "full"]),
        ("auto", []),
        ("c7", ["--chunk-size", "7"]),
        ("chunked", ["--attention", "chunked"]),
    ):
        p = str(tmp_path / f"{name}.npy")
        assert main(["logits", out, "--text-file", str(text), "--out", p, *extra]) == 0
        got[name] = np.load(p)
    scale = float(np.abs(got["full"]).max())
    for name in ("auto", "c7", "chunked"):
        assert float(np.abs(got[name] - got["full"]).max()) <= 1e-5 * scale, name
    losses = []
    for extra in (["--attention", "full"], ["--chunk-size", "3"]):
        assert main(["eval", out, "--data", "recall:4", "--max-batches", "1", "--json", *extra]) == 0
        losses.append(float(capsys.readouterr().out.split('"loss": ')[1].split(",")[0]))
    assert abs(losses[0] - losses[1]) <= 1e-5 * abs(losses[0])
    capsys.readouterr()
    for argv, msg in (
        (
            [
                "logits",
                out,
                "--text-file",
                str(text),
                "--out",
                str(tmp_path / "x.npy"),
                "--attention",
                "full",
                "--chunk-size",
                "4",
            ],
            "--chunk-size: applies to --attention chunked",
        ),
        (["eval", out, "--data", "recall:4", "--chunk-size", "0"], "--chunk-size"),
        (
            [
                "logits",
                out,
                "--text-file",
                str(text),
                "--out",
                str(tmp_path / "x.npy"),
                "--engine",
                "recurrent",
                "--attention",
                "full",
            ],
            "apply to --engine tensor",
        ),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
def test_decoder_in_16_bit_is_close_and_opt_in(dtype, tol):
    """Opt-in 16-bit decoding (`decoder_in`): weights and the Eq. 8 state in 16 bits, the float32 model left
    untouched; recurrent logits over 48 tokens stay within tol x max |logit| of float32 (a bound, measured in
    benchmarks/decode.py as logit_rel_error), and a 32-bit dtype is a one-line ValueError."""
    torch.manual_seed(0)
    model = BDH(BDHConfig(n_head=2, d=32, N=64, n_layer=2, dropout=0.0)).eval()
    half = M.decoder_in(model, dtype)
    assert model.D_x.dtype == torch.float32 and half.D_x.dtype == dtype
    ids = torch.randint(0, 256, (2, 48), generator=torch.Generator().manual_seed(1))
    s32, s16 = model.init_state(2), half.init_state(2)
    assert s16.S[0].dtype == dtype
    err, scale = 0.0, 0.0
    with torch.no_grad():
        for t in range(ids.shape[1]):
            l32, s32 = model.step(ids[:, t], s32, sparse=False)
            l16, s16 = half.step(ids[:, t], s16, sparse=False)
            err, scale = max(err, float((l16.float() - l32).abs().max())), max(scale, float(l32.abs().max()))
    assert err <= tol * scale, (err, scale)
    with pytest.raises(ValueError, match="decoder_in: expected torch.float16 or torch.bfloat16"):
        M.decoder_in(model, torch.float64)
