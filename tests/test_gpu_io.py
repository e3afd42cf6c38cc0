"""Model directories: config.json + model.safetensors, atomic save, checked load (one-line errors)."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

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
