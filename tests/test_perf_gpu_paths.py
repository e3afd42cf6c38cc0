"""The GPU benchmark's code paths, checked on the CPU (benchmarks/gpu_throughput.py)."""

import pytest
import torch

from bdh_gpu import BDH, Attention, BDHConfig
from benchmarks import gpu_throughput as gt

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_released_math_baseline_equals_model():
    """The full-attention baseline (the released bdh.py forward, float32 RoPE phases) computes the same logits
    as bdh_gpu's official variant (Sec. 4 of the reference), full and chunked, to float32 rounding."""
    torch.manual_seed(0)
    cfg = BDHConfig(n_head=2, d=16, N=32, n_layer=2, dropout=0.0, U="rope")
    model = BDH(cfg).eval()
    idx = torch.randint(0, 256, (2, 48))
    with torch.no_grad():
        ref = gt.ReleasedMath(model).eval()(idx)
        full, chunked = model(idx, attention="full"), model(idx, attention=Attention("chunked", 16))
    assert (full - ref).abs().max() < 1e-4 and (chunked - ref).abs().max() < 1e-4


def test_without_cuda_prints_reason_and_exits_0(capsys):
    """No GPU: a clear one-line reason, exit status 0, no numbers."""
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the no-GPU message does not apply")
    assert gt.main([]) == 0
    out = capsys.readouterr().out
    assert "no CUDA device" in out and "not measured" in out


def test_cpu_smoke_runs_both_paths(capsys, tmp_path):
    """--cpu-smoke trains both paths (released full T x T, ours chunked) under bf16 autocast on the CPU."""
    out = tmp_path / "gpu.json"
    assert gt.main(["--cpu-smoke", "--chunk", "16", "--json", str(out)]) == 0
    import json

    runs = json.load(open(out))["runs"]
    assert [(r["T"], r["path"]) for r in runs] == [(32, "released"), (32, "ours"), (64, "released"), (64, "ours")]
    assert all(r["tokens_per_s"] > 0 and torch.isfinite(torch.tensor(r["loss"])) for r in runs)


def test_flops_and_peak_lookup():
    """MFU bookkeeping: paper-25m forward FLOPs per token and the dense bf16 peak by GPU name."""
    cfg = BDHConfig()  # paper-25m shape
    assert gt.flops_per_token(cfg, 0) == 3.0 * (6 * 6 * 32768 * 256 + 2 * 256 * 256)
    assert gt.peak_flops("NVIDIA H200") == 989e12 and gt.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert gt.peak_flops("some CPU") is None
