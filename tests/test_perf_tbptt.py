"""Truncated BPTT with the state carried across segments (bdh_gpu/tbptt.py; paper App. B.2)."""

import numpy as np
import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st

from bdh_gpu import BDH, Attention, BDHConfig
from bdh_gpu.config import U_KINDS, VARIANTS
from bdh_gpu.tbptt import StreamBatches, evaluate_stream, segment_loss, train_tbptt
from bdh_gpu.train import TrainConfig, loss_fn

TOL = 1e-10


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _close(got, ref, what):
    got, ref = got.detach().numpy(), ref.detach().numpy()
    err, scale = float(np.abs(got - ref).max()), max(1.0, float(np.abs(ref).max()))
    assert err <= TOL * scale, f"{what}: max abs diff {err:.3e}"


@given(data=st.data())
def test_two_segments_equal_one_sequence(data):
    """Eq. 8: the detached state rho at the end of segment 1 is the initial state of segment 2, so the logits and
    the loss of the two segments equal those of one forward pass (Eq. 4) over the whole sequence; chunked or not."""
    variant, U = data.draw(st.sampled_from(VARIANTS)), data.draw(st.sampled_from(U_KINDS))
    cfg = BDHConfig(
        n_head=data.draw(st.integers(1, 2)),
        d=data.draw(st.integers(2, 5)),
        N=4,
        n_layer=data.draw(st.integers(1, 2)),
        dropout=0.0,
        U=U,
        variant=variant,
        alibi_max_bias=1.0,
    )
    torch.manual_seed(data.draw(st.integers(0, 999)))
    model = BDH(cfg).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2 if variant == "normfree" else 0.5)
    T1, T2 = data.draw(st.integers(1, 20)), data.draw(st.integers(1, 20))
    chunk = data.draw(st.sampled_from([None, 1, 3, 8]))
    note(f"{cfg} T1={T1} T2={T2} chunk={chunk}")
    seq = torch.randint(0, 256, (2, T1 + T2 + 1), generator=torch.Generator().manual_seed(T1 * 31 + T2))
    x, y = seq[:, :-1], seq[:, 1:]
    model.train()  # TBPTT runs in training mode (dropout 0 here)
    ref = model(x, attention="full")
    attention = "full" if chunk is None else Attention("chunked", chunk)
    l1, g1, s1 = segment_loss(model, x[:, :T1], y[:, :T1], None, attention)
    l2, g2, s2 = segment_loss(model, x[:, T1:], y[:, T1:], s1, attention)
    assert not any(S.requires_grad for S in s1.S)  # detached: the gradient stops at the boundary
    _close(torch.cat([g1, g2], 1), ref, "two segments vs one sequence (logits)")
    whole = loss_fn(ref, y)
    _close((l1 * T1 + l2 * T2) / (T1 + T2), whole, "two segments vs one sequence (loss)")
    assert s2.t == T1 + T2


def test_stream_batches_are_contiguous_and_reset():
    """Segment k+1 of stream b starts where segment k ended; after a pass the streams restart with reset=True."""
    data = torch.arange(250, dtype=torch.uint8)
    s = StreamBatches(data, batch_size=2, segment=40)  # streams of 125 bytes: 3 segments each
    a, b, c, d = s.next(), s.next(), s.next(), s.next()
    assert a.reset and not b.reset and not c.reset and d.reset
    assert torch.equal(a.x[:, 1:], a.y[:, :-1]) and torch.equal(b.x[:, 0], a.y[:, -1])
    assert a.x[1, 0] == 125 and torch.equal(d.x, a.x)
    with pytest.raises(ValueError, match="segment"):
        StreamBatches(data, batch_size=4, segment=100)


def test_train_tbptt_learns_a_periodic_stream():
    """The training loop carries the state across updates and lowers the loss on a periodic byte stream."""
    torch.manual_seed(0)
    text = torch.tensor(list(b"the dragon hatchling. " * 200), dtype=torch.uint8)
    model = BDH(BDHConfig(n_head=2, d=16, N=32, n_layer=1, dropout=0.0))
    streams = StreamBatches(text, batch_size=4, segment=32)
    cfg = TrainConfig(steps=40, lr=1e-2, warmup_steps=2, batch_size=4, block_size=32, eval_every=1000)
    out = train_tbptt(model, streams, cfg, attention=Attention("chunked", 8))
    assert len(out["losses"]) == 40 and out["resets"] >= 1
    assert np.mean(out["losses"][-5:]) < 0.5 * np.mean(out["losses"][:5]), out["losses"]
    ev = evaluate_stream(model, text, batch_size=2, segment=64, max_segments=3, attention=Attention("chunked", 16))
    assert ev["scored_bytes"] == 2 * 64 * 3 and ev["bits_per_byte"] < 4.0
