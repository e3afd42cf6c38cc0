"""import_official: our `official` variant computes the released bdh.py math (reference Sec. 4).

The released code is not needed: `released_logits_loop` re-implements its math from the reference page with
python loops over t, tau and heads (float64, exact RoPE phases), `released_logits_f32` replays its float32
recipe (phase t*f formed in float32), and `test_tiny_case_by_hand` pins numbers derived by hand.
"""

import math
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from bdh_gpu.official import config_from_official, import_official, read_official_state_dict

EPS = 1e-5


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def released_freqs(N, theta=2.0**16):
    """attn.freqs of the released class: f_i = theta^(-q(i)/N) / (2 pi), q(i) = 2 floor(i/2), in float32."""
    q = (torch.arange(N, dtype=torch.float32) / 2).floor() * 2
    return (1.0 / (theta ** (q / N)) / (2 * math.pi)).view(1, 1, 1, N)


def fake_released_state_dict(h, d, N, V=256, std=0.02, seed=0):
    """What `BDH(config).state_dict()` of the released class holds (random normal(0, std) weights)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "decoder": torch.randn(h * N, d, generator=g) * std,
        "encoder": torch.randn(h, d, N, generator=g) * std,
        "attn.freqs": released_freqs(N),
        "embed.weight": torch.randn(V, d, generator=g) * std,
        "encoder_v": torch.randn(h, d, N, generator=g) * std,
        "lm_head": torch.randn(d, V, generator=g) * std,
    }


def _ln(z):
    z = np.asarray(z, dtype=np.float64)
    mu = z.mean()
    return (z - mu) / math.sqrt(((z - mu) ** 2).mean() + EPS)


def released_logits_loop(sd, tokens, n_layer):
    """The released forward, one sequence, float64, loops over t, tau and heads (reference Sec. 4).

    v = LN(embed); per layer: x_h = relu(v @ encoder_h); a_h,t = sum_{tau<t} ((R_t x_h,t).(R_tau x_h,tau)) v_tau;
    y_h = relu(LN(a_h) @ encoder_v_h) * x_h; v = LN(v + LN(concat_h y_h @ decoder)); logits = v @ lm_head.
    R_t turns pair (2m, 2m+1) by 2 pi frac(t f_2m), f from attn.freqs (the phase taken exactly).
    """
    enc, enc_v, dec, emb, head = (
        sd[k].double().numpy() for k in ("encoder", "encoder_v", "decoder", "embed.weight", "lm_head")
    )
    freqs = sd["attn.freqs"].reshape(-1).double().numpy()
    h, d, N = enc.shape
    T = len(tokens)

    def rope(x, t):
        out = np.empty_like(x)
        for m in range(N // 2):
            phase = 2 * math.pi * math.fmod(t * freqs[2 * m], 1.0)
            c, s = math.cos(phase), math.sin(phase)
            out[2 * m] = x[2 * m] * c - x[2 * m + 1] * s
            out[2 * m + 1] = x[2 * m + 1] * c + x[2 * m] * s
        return out

    v = [_ln(emb[tok]) for tok in tokens]
    for _ in range(n_layer):
        new_v = []
        x = [[np.maximum(v[t] @ enc[k], 0.0) for t in range(T)] for k in range(h)]
        r = [[rope(x[k][t], t) for t in range(T)] for k in range(h)]
        for t in range(T):
            ys = []
            for k in range(h):
                a = np.zeros(d)
                for tau in range(t):
                    a += float(r[k][t] @ r[k][tau]) * v[tau]
                ys.append(np.maximum(_ln(a) @ enc_v[k], 0.0) * x[k][t])
            y = np.concatenate(ys)
            new_v.append(_ln(v[t] + _ln(y @ dec)))
        v = new_v
    return np.stack([vt @ head for vt in v])


@st.composite
def released_cases(draw):
    h = draw(st.integers(1, 3))
    d = draw(st.integers(2, 6))
    N = 2 * draw(st.integers(1, 4))
    L = draw(st.integers(1, 3))
    T = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**16))
    std = draw(st.sampled_from([0.02, 0.3, 1.0]))
    tokens = draw(st.lists(st.integers(0, 255), min_size=T, max_size=T))
    return h, d, N, L, tokens, seed, std


@given(released_cases())
def test_import_official_equals_released_loop(case):
    """Reference Sec. 4 (released forward): import_official logits == loop re-implementation, float64, 1e-10."""
    h, d, N, L, tokens, seed, std = case
    sd = fake_released_state_dict(h, d, N, std=std, seed=seed)
    model = import_official(sd, n_layer=L).double()
    ours = model(torch.tensor([tokens])).detach()[0].numpy()
    ref = released_logits_loop(sd, tokens, L)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-10 * max(1.0, np.abs(ref).max()))


def test_tiny_case_by_hand():
    """Reference Sec. 4 by hand: h=1, d=2, N=2, L=1, V=2, tokens [0, 1], RoPE on the single pair.

    Weights: embed = I, encoder = encoder_v = decoder = I (2x2), lm_head = diag(1, 2); f_0 = 1/(2 pi) (1 rad/token).
    LN of (p, q) is (s, -s)/sqrt(s^2 + eps) with s = (p - q)/2, eps = 1e-5.
      t=0: v0 = LN(1,0) = (c,-c), c = 0.5/sqrt(0.25+eps) = 0.99998000060;  x0 = relu(v0) = (c, 0)
      t=1: v1 = (-c, c);  x1 = (0, c);  R_1 x1 = (-c sin 1, c cos 1);  score(0,1) = (R_1 x1).(R_0 x0) = -c^2 sin 1
      a0 = 0 -> LN(a0) = 0 -> y0 = 0;  a1 = -c^2 sin1 (c, -c) -> LN(a1) = (-c', c'), c' = 0.99999293781
      y1 = relu(-c', c') * x1 = (0, c c');  LN(E y1) = (-g, g), g = 0.99997999952
      v_out0 = LN(v0) = (c'', -c''), c'' = c/sqrt(c^2+eps) = 0.99999499984
      v_out1 = LN((-c-g, c+g)) = (-w, w), w = 0.99999874995
      logits0 = (c'', -2c'') = (0.99999499984, -1.99998999968);  logits1 = (-w, 2w) = (-0.99999874995, 1.99999749990)
    (2 pi f_0 differs from 1 by ~1e-8 in float32; through the saturated LN this moves the logits by < 1e-12.)
    Without RoPE the score would be x1.x0 = 0 and logits1 = (-c'', 2c''): the rotation is what the test sees.
    """
    eye = torch.eye(2)
    sd = {
        "encoder": eye.view(1, 2, 2).clone(),
        "encoder_v": eye.view(1, 2, 2).clone(),
        "decoder": eye.clone(),
        "embed.weight": eye.clone(),
        "lm_head": torch.diag(torch.tensor([1.0, 2.0])),
        "attn.freqs": released_freqs(2),
    }
    model = import_official(sd, n_layer=1).double()
    logits = model(torch.tensor([[0, 1]])).detach()[0].numpy()
    expected = np.array([[0.9999949998375027, -1.9999899996750055], [-0.9999987499523426, 1.9999974999046852]])
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-10)
    np.testing.assert_allclose(logits, released_logits_loop(sd, [0, 1], 1), rtol=0, atol=1e-12)


def released_logits_f32(sd, idx, n_layer):
    """The released float32 recipe (reference Sec. 4), batched: phases t*f formed in float32, then % 1 and * 2 pi."""

    def ln(z):
        return F.layer_norm(z, (z.shape[-1],), eps=EPS)

    enc, enc_v, dec, emb, head, freqs = (
        sd[k] for k in ("encoder", "encoder_v", "decoder", "embed.weight", "lm_head", "attn.freqs")
    )
    B, T = idx.shape
    h, d, N = enc.shape
    phases = torch.arange(T, dtype=torch.float32).view(1, 1, -1, 1) * freqs
    phases = (phases % 1) * (2 * math.pi)
    cos, sin = phases.cos(), phases.sin()
    v = ln(emb[idx]).unsqueeze(1)  # (B,1,T,d)
    for _ in range(n_layer):
        x = F.relu(v @ enc)  # (B,h,T,N)
        x_turned = torch.stack((-x[..., 1::2], x[..., ::2]), dim=-1).view(*x.shape)
        xr = x * cos + x_turned * sin
        a = ln((xr @ xr.mT).tril(-1) @ v)
        y = x * F.relu(a @ enc_v)
        v = ln(v + ln(y.transpose(1, 2).reshape(B, 1, T, h * N) @ dec))
    return v.view(B, T, d) @ head


@pytest.mark.parametrize("h,d,N,L,T", [(4, 64, 256, 6, 512), (2, 32, 64, 3, 1024)])
def test_import_official_float32_within_1e5(h, d, N, L, T):
    """Issue 2 item 4: in float32 our logits are within 1e-5 of the released float32 recipe (T up to 1024)."""
    sd = fake_released_state_dict(h, d, N, seed=h + T)
    idx = torch.randint(0, 256, (2, T), generator=torch.Generator().manual_seed(T))
    with torch.no_grad():
        ours = import_official(sd, n_layer=L)(idx)
        ref = released_logits_f32(sd, idx, L)
    assert ours.dtype == torch.float32
    assert (ours - ref).abs().max().item() <= 1e-5


def test_config_from_official_infers_shapes():
    """Shapes give h, d, N, vocab; n_layer is an argument (layers share weights), default 6."""
    sd = fake_released_state_dict(3, 8, 10, V=200)
    cfg = config_from_official(sd)
    assert (cfg.n_head, cfg.d, cfg.N, cfg.vocab_size, cfg.n_layer) == (3, 8, 10, 200, 6)
    assert (cfg.variant, cfg.U, cfg.rope_theta) == ("official", "rope", 2.0**16)
    assert config_from_official(sd, n_layer=2).n_layer == 2


def test_read_official_state_dict_roundtrip_and_compiled_prefix(tmp_path):
    """A saved released state_dict (also with torch.compile's `_orig_mod.` prefix, without attn.freqs) imports."""
    sd = fake_released_state_dict(2, 4, 6)
    p = tmp_path / "sd.pt"
    torch.save({"_orig_mod." + k: v for k, v in sd.items()}, p)
    got = read_official_state_dict(str(p))
    assert set(got) == set(sd)
    del got["attn.freqs"]
    model = import_official(got, n_layer=2)
    np.testing.assert_array_equal(model.E.detach().numpy(), sd["decoder"].t().numpy())
    np.testing.assert_array_equal(model.D_x.detach().numpy(), sd["encoder"].transpose(1, 2).numpy())


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda sd: None, "no such file"),
        (lambda sd: b"garbage", "weights_only"),
        (lambda sd: _Evil(), "weights_only"),
        (lambda sd: [1, 2, 3], "expected a state_dict"),
        (lambda sd: {k: v for k, v in sd.items() if k != "encoder_v"}, "missing keys ['encoder_v']"),
        (lambda sd: {**sd, "blocks.0.w": torch.zeros(1)}, "unexpected keys ['blocks.0.w']"),
        (lambda sd: {**sd, "decoder": torch.zeros(5, 4)}, "decoder: expected shape (12, 4)"),
        (lambda sd: {**sd, "encoder": torch.zeros(4, 6)}, "encoder: expected shape (n_head, d, N)"),
        (lambda sd: {**sd, "lm_head": torch.zeros(4, 7)}, "lm_head: expected shape (4, 256)"),
        (lambda sd: {**sd, "attn.freqs": sd["attn.freqs"] * 2}, "attn.freqs differ"),
        (lambda sd: {**sd, "embed.weight": torch.zeros(256, 4, dtype=torch.int64)}, "floating-point"),
    ],
)
def test_read_official_state_dict_errors(tmp_path, make, needle):
    """Bad input: one-line ValueError naming the problem (pickle code is never run: weights_only=True)."""
    sd = fake_released_state_dict(2, 4, 6)
    p = tmp_path / "sd.pt"
    obj = make(sd)
    if isinstance(obj, bytes):
        p.write_bytes(obj)
    elif isinstance(obj, _Evil):
        with open(p, "wb") as f:
            pickle.dump(obj, f)
    elif obj is not None:
        torch.save(obj, p)
    with pytest.raises(ValueError) as e:
        read_official_state_dict(str(p))
    msg = str(e.value)
    assert needle in msg and "\n" not in msg, msg
