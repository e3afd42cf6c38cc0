"""Transformer baselines (benchmarks/baselines.py) and the quality benchmark's quick path (benchmarks/quality.py)."""

import json
import os

import pytest
import torch

from bdh_gpu import BDH, BDHConfig
from benchmarks.baselines import Transformer, TransformerConfig, n_params, rope, sized
from benchmarks.quality import Profile, run_profile

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("target", [28_672, 229_376, 1_638_400])
def test_sized_hits_the_parameter_count(kind, target):
    """sized() lands within 5% (in practice ~1%) of the target: equal-parameter comparison with BDH-GPU
    (3nd + 2*256*d parameters, reference Sec. 3)."""
    model = sized(kind, target, n_layer=4, n_head=4, block_size=128)
    assert abs(n_params(model) - target) <= 0.05 * target, n_params(model)
    assert abs(n_params(model) - target) <= 0.01 * target, n_params(model)


def test_bdh_parameter_count_formula():
    """The targets come from BDH-GPU's own count, 3nd + 2*256*d."""
    cfg = BDHConfig(n_head=4, d=64, N=256, n_layer=4)
    assert n_params(BDH(cfg)) == 3 * cfg.n * cfg.d + 2 * 256 * cfg.d


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_baselines_are_causal(kind):
    """Changing the byte at position t changes no logit before t (and does change some at or after t)."""
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(kind=kind, d=32, n_layer=2, n_head=4, hidden=48, block_size=64)).double()
    model.eval()
    idx = torch.randint(0, 256, (2, 40))
    t = 17
    idx2 = idx.clone()
    idx2[:, t] = (idx2[:, t] + 1) % 256
    with torch.no_grad():
        a, b = model(idx), model(idx2)
    assert torch.equal(a[:, :t], b[:, :t])
    assert (a[:, t:] - b[:, t:]).abs().max() > 1e-6


def test_llama_has_rope_rmsnorm_swiglu_and_gpt2_ties_its_head():
    """Llama-style: no positional table, RMSNorm, three-matrix SwiGLU, untied head; GPT-2-style: tied head."""
    g = Transformer(TransformerConfig(kind="gpt2", d=16, n_layer=1, n_head=2, hidden=64, block_size=8))
    l = Transformer(TransformerConfig(kind="llama", d=16, n_layer=1, n_head=2, hidden=40, block_size=8))
    assert g.lm_head is None and g.pos is not None
    assert l.pos is None and l.lm_head is not None and type(l.norm).__name__ == "RMSNorm"
    assert {k for k, _ in l.blocks[0].mlp.named_parameters()} == {"gate.weight", "up.weight", "down.weight"}
    q = torch.randn(1, 1, 5, 8, dtype=torch.float64)  # RoPE is a rotation: norms kept, t = 0 fixed
    r = rope(q, 10000.0)
    assert torch.allclose(r.norm(dim=-1), q.norm(dim=-1)) and torch.allclose(r[..., 0, :], q[..., 0, :])


def test_quality_quick_path_writes_outputs(tmp_path):
    """The quality benchmark trains all three models at equal parameters and tokens on tiny Shakespeare and the
    recall task and writes the JSON and one PNG per task into the given directory."""
    prof = Profile(
        BDHConfig(n_head=1, d=8, N=16, n_layer=1, dropout=0.0),
        n_layer=1,
        n_head=2,
        text_block=16,
        recall_block=16,
        recall_pairs=3,
        batch_size=2,
        steps=2,
        lr=1e-3,
        warmup=1,
        eval_every=2,
        eval_batches=1,
        chunk_size=4,
    )
    data = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "tinyshakespeare.txt")
    if not os.path.isfile(data):  # reason printed by pytest -ra
        pytest.skip(f"tiny Shakespeare not found at {data}")
    report = run_profile(prof, out_dir=str(tmp_path), data_path=data, log=lambda s: None)
    files = sorted(os.listdir(tmp_path))
    assert files == ["quality_custom.json", "quality_custom_recall.png", "quality_custom_shakespeare.png"]
    saved = json.load(open(tmp_path / "quality_custom.json"))
    for task in ("tinyshakespeare", "recall"):
        models = saved["tasks"][task]["models"]
        params = [m["params"] for m in models.values()]
        assert set(models) == {"bdh", "gpt2", "llama"}
        assert max(params) - min(params) <= 0.05 * min(params)
        assert len({m["tokens"] for m in models.values()}) == 1
        assert all(0 < m["val_bpb"] < 20 for m in models.values())
    assert report["tasks"]["recall"]["models"]["bdh"]["tokens"] == 2 * 2 * 16
