"""RoPE phase accuracy at positions up to 1e7 (issue 2, item 2) and the frequencies of the released code."""

import math

import mpmath
import numpy as np
import pytest
import torch

from bdh_gpu import BDH, BDHConfig
from bdh_gpu.model import rope_cos_sin, rope_frequencies

POSITIONS = [10_000_000, 10_000_001, 9_999_937, 2**23 + 12345]


def exact_cos_sin(t, f):
    """cos, sin of 2 pi frac(t f) for the float32 frequency f, with 50 significant digits (mpmath)."""
    mpmath.mp.dps = 50
    cycles = mpmath.mpf(t) * mpmath.mpf(float(f))
    phase = 2 * mpmath.pi * (cycles - mpmath.floor(cycles))
    return float(mpmath.cos(phase)), float(mpmath.sin(phase))


def test_frequencies_are_the_released_float32_values():
    """Reference Sec. 4: f_i = theta^(-q(i)/N)/(2 pi), q(i) = 2 floor(i/2), float32; pairs share a frequency."""
    N = 64
    f = rope_frequencies(N, 2.0**16)
    assert f.dtype == torch.float64 and torch.equal(f[0::2], f[1::2])
    assert torch.equal(f.float().double(), f)  # float32 values, held exactly
    expect = [np.float32(1.0 / (2.0**16) ** (2 * (i // 2) / N) / (2 * math.pi)) for i in range(N)]
    np.testing.assert_allclose(f.numpy(), np.array(expect, dtype=np.float64), rtol=2e-7, atol=0)


def test_numpy_frequencies_within_3_float32_ulps_of_the_released_torch_recipe():
    """Reference Sec. 4: `bdh_gpu.positional.rope_frequencies` (numpy, no torch: the one definition the tensor model
    and the graph compiles share) holds float32 values, equal within pairs, within 3 float32 ulps of the released
    recipe computed with torch's float32 pow (which is 1-ulp accurate and machine dependent; the power here is
    math.pow rounded once), and exactly torch's where its pow rounds the same. Prints the worst ulp distance."""
    from bdh_gpu import positional

    worst, differ, total = 0.0, 0, 0
    for theta in (2.0**16, 10000.0, 500000.0):
        for N in list(range(2, 1025, 2)) + [8192, 32768]:
            q = (torch.arange(N, dtype=torch.float32) / 2).floor() * 2
            released = (1.0 / (float(theta) ** (q / N)) / (2 * math.pi)).double().numpy()
            ours = positional.rope_frequencies(N, theta)
            assert np.array_equal(ours.astype(np.float32).astype(np.float64), ours) and np.array_equal(
                ours[::2], ours[1::2]
            )
            ulps = np.abs(ours - released) / np.spacing(released.astype(np.float32)).astype(np.float64)
            worst, differ, total = max(worst, ulps.max()), differ + int((ulps > 0).sum()), total + N
    print(f"worst {worst:g} float32 ulps; {differ} of {total} frequencies differ from torch's float32 recipe")
    assert worst <= 3
    assert torch.equal(rope_frequencies(64, 2.0**16), torch.from_numpy(positional.rope_frequencies(64, 2.0**16)))


def test_phase_accurate_at_1e7_and_released_float32_recipe_is_not():
    """At t ~ 1e7 our cos/sin (float64 phase, then cast) are within 2 float32 ulps of a 50-digit reference;
    the released recipe (t * f formed in float32, % 1, * 2 pi) is off by more than 0.05."""
    N = 256
    f = rope_frequencies(N, 2.0**16)
    pos = torch.tensor(POSITIONS)
    c, s = rope_cos_sin(pos, f)
    c32, s32 = c.float().double().numpy(), s.float().double().numpy()
    ref = np.array([[exact_cos_sin(t, f[2 * m]) for m in range(N // 2)] for t in POSITIONS])  # (P, N/2, 2)
    ours_err = max(np.abs(c32 - ref[..., 0]).max(), np.abs(s32 - ref[..., 1]).max())
    assert ours_err <= 1.2e-7, ours_err
    f32 = f.float()[::2]
    ph = (pos.float()[:, None] * f32[None, :]) % 1 * (2 * math.pi)  # the released float32 recipe
    rel_err = max(
        np.abs(ph.cos().double().numpy() - ref[..., 0]).max(), np.abs(ph.sin().double().numpy() - ref[..., 1]).max()
    )
    assert rel_err > 0.05, rel_err


@pytest.mark.parametrize("U", ["rope", "rope+alibi"])
def test_float32_step_at_position_1e7_matches_float64(U):
    """A float32 model stepping at position 1e7 gives the float64 model's logits to 1e-5 (phase kept exact)."""
    cfg = BDHConfig(n_head=2, d=16, N=32, n_layer=2, dropout=0.0, U=U)
    torch.manual_seed(0)
    m32 = BDH(cfg).eval()
    with torch.no_grad():
        for p in m32.parameters():
            p.normal_(0.0, 0.3)
    m64 = BDH(cfg).double().eval()
    m64.load_state_dict({k: v.double() for k, v in m32.state_dict().items()})
    idx = torch.tensor([[3, 141, 59, 26, 53]])
    outs = []
    with torch.no_grad():
        for m in (m32, m64):
            state = m.init_state(1)
            state = state._replace(t=10_000_000, t_ref=10_000_000)
            logits, state = m.prefill(idx[:, :3], state)
            last, _ = m.step(idx[:, 3], state)
            outs.append(torch.cat([logits[0], last], 0).double())
    assert (outs[0] - outs[1]).abs().max().item() <= 1e-5
