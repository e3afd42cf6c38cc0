"""The tensor-model commands: bdh train / eval / generate / logits / import-official, and their errors.

Most run in-process (`bdh.cli.main`); a few through `python -m bdh` to check the one-line, exit-2 contract.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from cli_errors import one_line_error as _err

import bdh_gpu
from bdh.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAKESPEARE = os.path.join(REPO, "..", "shared", "data", "tinyshakespeare.txt")
QUICK = [
    "--steps",
    "4",
    "--batch-size",
    "4",
    "--block-size",
    "24",
    "--eval-every",
    "2",
    "--ckpt-every",
    "2",
    "--quiet",
    "--device",
    "cpu",
]


def _bdh(*args):
    return subprocess.run([sys.executable, "-m", "bdh", *args], capture_output=True, text=True, cwd=REPO)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained 4 steps on recall (the directory is a model directory and a checkpoint)."""
    out = str(tmp_path_factory.mktemp("m") / "model")
    assert main(["train", "--data", "recall:4", "--out", out, *QUICK]) == 0
    return out


def test_train_writes_model_checkpoint_and_metrics(trained, capsys):
    files = set(os.listdir(trained))
    assert {"config.json", "model.safetensors", "train_state.safetensors", "train_state.json", "metrics.jsonl"} <= files
    m = bdh_gpu.load(trained)
    assert m.config == bdh_gpu.BDH(bdh_gpu.get_preset("tiny")).config  # the preset, its gains made explicit
    steps = [json.loads(line)["step"] for line in open(os.path.join(trained, "metrics.jsonl"))]
    assert steps == [2, 4]


def test_train_interrupted_then_resumed_matches_straight_run(tmp_path, capsys, monkeypatch):
    """CLI: a 6-step run interrupted (Ctrl-C) after its step-4 checkpoint, then `--resume`, ends bitwise
    equal to an uninterrupted 6-step run."""
    import bdh_gpu.train as T

    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    six = ["--steps", "6", *QUICK[2:]]
    assert main(["train", "--data", "recall:4", "--out", a, *six]) == 0
    real = T.save_checkpoint

    def interrupt_after_4(out_dir, model, opt, gen, step, cfg, extra=None, **kw):
        real(out_dir, model, opt, gen, step, cfg, extra, **kw)
        if step == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(T, "save_checkpoint", interrupt_after_4)
    assert main(["train", "--data", "recall:4", "--out", b, *six]) == 130
    monkeypatch.undo()
    assert json.load(open(os.path.join(b, "train_state.json")))["step"] == 4
    assert main(["train", "--out", b, "--resume", "--quiet"]) == 0
    ma, mb = bdh_gpu.load(a), bdh_gpu.load(b)
    assert all(torch.equal(x, y) for x, y in zip(ma.state_dict().values(), mb.state_dict().values()))


def test_train_and_eval_on_shared_tinyshakespeare(tmp_path, capsys):
    if not os.path.isfile(SHAKESPEARE):
        pytest.skip(f"shared tiny Shakespeare not found at {SHAKESPEARE}")
    out = str(tmp_path / "ts")
    assert main(["train", "--data", SHAKESPEARE, "--out", out, *QUICK]) == 0
    assert "val loss" in capsys.readouterr().out
    assert main(["eval", out, "--data", SHAKESPEARE, "--max-batches", "2", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["block_size"] == 24 and r["scored_bytes"] == 2 * 16 * 24
    assert r["bits_per_byte"] == pytest.approx(r["loss"] / np.log(2))
    assert 2.0 < r["loss"] < 6.0  # a 4-step model: near uniform (ln 256 = 5.55), below it


def test_eval_prints_loss_and_bits_per_byte(trained, capsys):
    assert main(["eval", trained, "--data", "recall:4", "--max-batches", "2"]) == 0
    out = capsys.readouterr().out
    assert "nats/byte" in out and "bits/byte" in out


def test_generate_json_fields(trained, capsys):
    assert main(["generate", trained, "--prompt", "héllo", "--tokens", "12", "--seed", "3", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert len(r["completion_ids"]) == 12 and all(0 <= b < 256 for b in r["completion_ids"])
    assert r["completion"] == bytes(r["completion_ids"]).decode("utf-8", errors="replace")
    assert r["prompt_tokens"] == len("héllo".encode()) and r["tokens_per_s"] > 0
    assert main(["generate", trained, "--prompt", "héllo", "--tokens", "12", "--seed", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["completion_ids"] == r["completion_ids"]  # seeded


def test_generate_greedy_equals_argmax_of_the_parallel_form(trained, capsys, tmp_path):
    """Greedy recurrent decoding picks, at every step, the argmax of the token-parallel logits of the text so
    far (Eq. 4 vs Eq. 8 on the generated sequence)."""
    (tmp_path / "p.txt").write_bytes(b"abc:")
    assert (
        main(
            [
                "generate",
                trained,
                "--prompt-file",
                str(tmp_path / "p.txt"),
                "--tokens",
                "8",
                "--temperature",
                "0",
                "--json",
            ]
        )
        == 0
    )
    ids = json.loads(capsys.readouterr().out)["completion_ids"]
    model = bdh_gpu.load(trained).eval()
    seq = torch.tensor([list(b"abc:") + ids])
    with torch.no_grad():
        pred = model(seq)[0].argmax(-1)
    assert pred[3:-1].tolist() == ids


def test_logits_shape_and_tensor_equals_recurrent(trained, capsys, tmp_path):
    text = tmp_path / "t.txt"
    text.write_bytes(b"First Citizen: before we proceed")
    outs = {}
    for engine in ("tensor", "recurrent"):
        out = str(tmp_path / f"{engine}.npy")
        assert main(["logits", trained, "--text-file", str(text), "--engine", engine, "--out", out]) == 0
        outs[engine] = np.load(out)
        assert outs[engine].shape == (32, 256) and outs[engine].dtype == np.float32
    np.testing.assert_allclose(outs["tensor"], outs["recurrent"], atol=1e-4, rtol=0)
    assert "unknown" not in _err(
        capsys, ["logits", trained, "--text-file", str(text), "--engine", "graphx", "--out", str(tmp_path / "x.npy")]
    )


def _released_state_dict(h=2, d=8, N=16, V=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "encoder": torch.randn(h, d, N, generator=g) * 0.3,
        "encoder_v": torch.randn(h, d, N, generator=g) * 0.3,
        "decoder": torch.randn(h * N, d, generator=g) * 0.3,
        "embed.weight": torch.randn(V, d, generator=g),
        "lm_head": torch.randn(d, V, generator=g) * 0.3,
    }


def test_import_official_round_trip(tmp_path, capsys):
    """A state_dict with the released names and shapes -> model directory: weights mapped (D_x = encoder^T,
    D_y = encoder_v^T, E = decoder^T), config inferred, logits equal to importing in-process."""
    sd = _released_state_dict()
    torch.save(sd, tmp_path / "sd.pt")
    out = str(tmp_path / "imp")
    assert main(["import-official", str(tmp_path / "sd.pt"), "--out", out, "--n-layer", "3"]) == 0
    m = bdh_gpu.load(out)
    c = m.config
    assert (c.n_head, c.d, c.N, c.n_layer, c.variant, c.U) == (2, 8, 16, 3, "official", "rope")
    assert torch.equal(m.D_x, sd["encoder"].transpose(1, 2)) and torch.equal(m.E, sd["decoder"].t())
    assert torch.equal(m.D_y, sd["encoder_v"].transpose(1, 2)) and torch.equal(m.lm_head, sd["lm_head"])
    from bdh_gpu.official import import_official

    ref = import_official(sd, n_layer=3)
    idx = torch.randint(256, (1, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(m.eval()(idx), ref(idx))


# ------------------------------------------------------------------------------------------------ errors


def test_error_unknown_preset_and_variant(tmp_path, capsys):
    assert "unknown preset 'huge'" in _err(
        capsys, ["train", "--data", "recall", "--out", str(tmp_path / "a"), "--preset", "huge"]
    )
    assert "variant" in _err(
        capsys, ["train", "--data", "recall", "--out", str(tmp_path / "a"), "--variant", "transformer"]
    )
    assert "BDHConfig.U" in _err(capsys, ["train", "--data", "recall", "--out", str(tmp_path / "a"), "--U", "xpos"])


def test_error_data_missing_empty_short(tmp_path, capsys):
    out = str(tmp_path / "a")
    assert "not found" in _err(capsys, ["train", "--data", str(tmp_path / "nope.txt"), "--out", out])
    (tmp_path / "e.txt").write_bytes(b"")
    assert "empty" in _err(capsys, ["train", "--data", str(tmp_path / "e.txt"), "--out", out])
    (tmp_path / "s.txt").write_bytes(b"0123456789" * 10)
    line = _err(capsys, ["train", "--data", str(tmp_path / "s.txt"), "--out", out, "--block-size", "64"])
    assert "shorter than one window" in line and "100 bytes" in line and "65" in line


def test_error_not_a_model_directory(tmp_path, capsys):
    assert "not a model directory" in _err(capsys, ["generate", str(tmp_path), "--prompt", "a", "--json"])
    assert "not a directory" in _err(capsys, ["eval", str(tmp_path / "x"), "--data", "recall"])


def test_error_checkpoint_with_mismatched_shapes_or_missing_keys(trained, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    bad = str(tmp_path / "bad")
    shutil.copytree(trained, bad)
    w = load_file(os.path.join(bad, "model.safetensors"))
    w["E"] = w["E"][:, :10].contiguous()
    save_file(w, os.path.join(bad, "model.safetensors"))
    assert "shape mismatch for E" in _err(capsys, ["generate", bad, "--prompt", "a"])
    del w["E"]
    save_file(w, os.path.join(bad, "model.safetensors"))
    assert "missing ['E']" in _err(
        capsys, ["logits", bad, "--text-file", os.path.join(bad, "config.json"), "--out", str(tmp_path / "l.npy")]
    )
    shutil.rmtree(bad)
    shutil.copytree(trained, bad)  # a resume against a training state with a wrong shape
    t = load_file(os.path.join(bad, "train_state.safetensors"))
    from safetensors import safe_open

    with safe_open(os.path.join(bad, "train_state.safetensors"), "pt") as f:
        meta = f.metadata()
    t["model.D_x"] = t["model.D_x"][:, :4].contiguous()
    save_file(t, os.path.join(bad, "train_state.safetensors"), metadata=meta)
    assert (
        "model.D_x" not in (line := _err(capsys, ["train", "--out", bad, "--resume", "--steps", "6", "--quiet"]))
        and "D_x has shape" in line
    )


def test_error_state_dict_not_released(tmp_path, capsys):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pt")
    line = _err(capsys, ["import-official", str(tmp_path / "other.pt"), "--out", str(tmp_path / "o")])
    assert "not a state_dict of the released BDH class" in line
    sd = _released_state_dict()
    sd["decoder"] = sd["decoder"][:5]
    torch.save(sd, tmp_path / "shape.pt")
    assert "decoder" in _err(capsys, ["import-official", str(tmp_path / "shape.pt"), "--out", str(tmp_path / "o")])


def test_error_non_finite_loss_keeps_last_checkpoint(tmp_path):
    """Through the real command: lr 1e20 makes the loss non-finite; the run failed (exit 4, bdh.errors.EXIT_FAILED:
    the input was well-formed, so not 2), one line, no traceback."""
    r = _bdh("train", "--data", "recall:4", "--out", str(tmp_path / "n"), "--lr", "1e20", "--warmup", "0", *QUICK)
    assert r.returncode == 4 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "non-finite" in r.stderr


def test_error_prompt_too_long_or_empty_and_negative_tokens(trained, tmp_path, capsys):
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:
        f.truncate(1_000_001)
    assert "longer than allowed" in _err(capsys, ["generate", trained, "--prompt-file", str(big)])
    assert "prompt is empty" in _err(capsys, ["generate", trained, "--prompt", ""])
    assert "expected 0..1,000,000, got -1" in _err(capsys, ["generate", trained, "--prompt", "a", "--tokens", "-1"])


def test_errors_through_the_command_line_are_one_line(trained):
    r = _bdh("generate", trained, "--prompt", "a", "--tokens", "-5")
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _bdh("train", "--data", "recall", "--out", trained, "--steps", "2", "--quiet")
    assert r.returncode == 2 and "already holds a training checkpoint" in r.stderr
