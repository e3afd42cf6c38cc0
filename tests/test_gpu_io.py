"""Model directories: config.json + model.safetensors, atomic save, checked load (one-line errors)."""

import json
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import bdh_gpu
from bdh_gpu import BDH, BDHConfig, load, save


def small_model(dtype=torch.float32, **kw):
    torch.manual_seed(0)
    cfg = BDHConfig(**{**dict(n_head=2, d=8, N=6, n_layer=2, dropout=0.0), **kw})
    return BDH(cfg).to(dtype).eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kw", [{}, dict(variant="paper", U="alibi"), dict(variant="normfree", U="rope+alibi")])
def test_round_trip(tmp_path, dtype, kw):
    """save then load gives the same config, dtype and bit-identical logits; no temporary files remain."""
    model = small_model(dtype, **kw)
    save(model, str(tmp_path / "m"))
    assert sorted(os.listdir(tmp_path / "m")) == ["config.json", "model.safetensors"]
    back = load(str(tmp_path / "m"))
    assert back.config == model.config and back.E.dtype == dtype
    idx = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(back.eval()(idx), model(idx))
    save(back, str(tmp_path / "m"))  # overwrite in place
    assert sorted(os.listdir(tmp_path / "m")) == ["config.json", "model.safetensors"]


def _write(tmp_path, mutate_cfg=None, mutate_tensors=None):
    d = tmp_path / "m"
    save(small_model(), str(d))
    if mutate_cfg is not None:
        cfg = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(mutate_cfg(cfg) if callable(mutate_cfg) else mutate_cfg)
    if mutate_tensors is not None:
        t = load_file(str(d / "model.safetensors"))
        save_file(mutate_tensors(t), str(d / "model.safetensors"))
    return str(d)


def _del(t, k):
    t = dict(t)
    del t[k]
    return t


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda p: str(p / "nope"), "not a directory"),
        (lambda p: (p / "f.txt").write_text("x") and str(p / "f.txt"), "not a directory"),
        (lambda p: (p / "empty").mkdir() or str(p / "empty"), "no config.json"),
        (lambda p: _write(p, "{not json"), "bad JSON"),
        (lambda p: _write(p, lambda c: json.dumps({**c, "n_embd": 3})), "unknown keys ['n_embd']"),
        (lambda p: _write(p, lambda c: json.dumps({**c, "U": "xpos"})), "BDHConfig.U: expected one of"),
        (lambda p: (os.remove(_write(p) + "/model.safetensors"), str(p / "m"))[1], "no model.safetensors"),
        (
            lambda p: (open(_write(p) + "/model.safetensors", "wb").write(b"\x00" * 20), str(p / "m"))[1],
            "not a readable safetensors file",
        ),
        (lambda p: _write(p, mutate_tensors=lambda t: _del(t, "D_y")), "missing ['D_y']"),
        (lambda p: _write(p, mutate_tensors=lambda t: {**t, "encoder": torch.zeros(1)}), "unexpected ['encoder']"),
        (
            lambda p: _write(p, mutate_tensors=lambda t: {**t, "E": torch.zeros(8, 10)}),
            "shape mismatch for E: expected (8, 12) (from config.json), got (8, 10)",
        ),
        (
            lambda p: _write(p, lambda c: json.dumps({**c, "N": 8})),
            "shape mismatch for D_x: expected (2, 8, 8) (from config.json), got (2, 6, 8)",
        ),
    ],
)
def test_load_errors(tmp_path, make, needle):
    """Every bad model directory: one-line ValueError naming the problem (expected vs got for shapes)."""
    path = make(tmp_path)
    with pytest.raises(ValueError) as e:
        load(path)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg, msg


def test_save_is_atomic(tmp_path, monkeypatch):
    """A failure while writing leaves the previous model directory intact and no temporary files."""
    d = str(tmp_path / "m")
    save(small_model(), d)
    before = {f: open(os.path.join(d, f), "rb").read() for f in os.listdir(d)}
    import bdh_gpu.io as io

    def boom(tensors, path, metadata=None):
        open(path, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(io, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save(small_model(variant="paper"), d)
    assert {f: open(os.path.join(d, f), "rb").read() for f in os.listdir(d)} == before


# ---- the torch-free reader of a rank's slice (bdh_gpu.modeldir, docs/distributed.md) ---------------------------

SLICE_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn]


@pytest.mark.parametrize("dtype", SLICE_DTYPES, ids=str)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_numpy_slices_equal_the_torch_reader(tmp_path, dtype, data):
    """`bdh_gpu.load_weights` (numpy: the safetensors header parsed, each slice read through a memory map) gives
    bit for bit what safetensors' torch reader gives (`load_weights_torch`, the reader before, kept for float8)
    for neurons lo..hi-1 (E's columns, or all of them with E_all), the gains folded in, in every dtype a model
    directory may hold; float8 (no numpy type) goes through the torch reader."""
    from bdh_gpu.modeldir import load_weights_torch

    variant = data.draw(st.sampled_from(["normfree", "official"]))
    h, N = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 5))
    torch.manual_seed(data.draw(st.integers(0, 99)))
    model = BDH(BDHConfig(n_head=h, d=3, N=N, n_layer=1, variant=variant, U="alibi", dropout=0.0))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 2.0)  # not only tiny values: float16 / float8 round them differently
    folder = str(tmp_path / f"m{h}{N}{variant}")
    tensors = {k: t.to(dtype).contiguous() for k, t in model.state_dict().items()}
    from bdh_gpu.io import write_model_dir

    write_model_dir(model.config.to_dict(), tensors, folder)
    n = h * N
    lo = data.draw(st.integers(0, n))
    hi = data.draw(st.integers(lo, n))
    E_all = data.draw(st.booleans())
    got = bdh_gpu.load_weights(folder, lo, hi, E_all)
    ref = load_weights_torch(folder, model.config, lo, hi, E_all)
    assert got["E_lo"] == ref["E_lo"] and got["config"] == ref["config"]
    for k in ("D_x", "D_y", "E", "embed", "lm_head"):
        assert got[k].dtype == np.float64 and got[k].shape == ref[k].shape, k
        assert np.array_equal(got[k], ref[k]), k
    assert got["D_x"].shape == (hi - lo, 3) and got["E"].shape == (3, n if E_all else hi - lo)


@pytest.mark.parametrize(
    "corrupt,needle",
    [
        (lambda b: (2**40).to_bytes(8, "little") + b[8:], "header length"),
        (lambda b: b[:8] + b"[" + b[9:], "header"),
        (lambda b: b[: len(b) - 4], "bad header entry"),
    ],
    ids=["length", "json", "truncated"],
)
def test_numpy_reader_refuses_a_bad_file_in_one_line(tmp_path, corrupt, needle):
    """A damaged model.safetensors (a header length past the end, a header that is not JSON, a file cut short
    of its last tensor's bytes) is one InputError line naming the file, never a numpy or mmap traceback; a
    non-finite weight names the tensor and its count."""
    save(small_model(), str(tmp_path / "m"))
    path = tmp_path / "m" / "model.safetensors"
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(bdh_gpu.InputError) as e:
        bdh_gpu.load_weights(str(tmp_path / "m"), 0, 4)
    assert needle in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value), str(e.value)
    model = small_model()
    with torch.no_grad():
        model.D_y[1, 3, 5] = float("nan")
    save(model, str(tmp_path / "nan"))
    with pytest.raises(bdh_gpu.InputError, match=r"D_y holds 1 non-finite value \(nan or inf\) of 96"):
        bdh_gpu.load_weights(str(tmp_path / "nan"), 0, 12)
