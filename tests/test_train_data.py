"""Byte datasets (bdh_gpu.data): windows, the recall task, tiny Shakespeare resolution, and their errors."""

import os
import urllib.error

import pytest
import torch

from bdh_gpu import data as D

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAKESPEARE = os.path.join(REPO, "..", "shared", "data", "tinyshakespeare.txt")


def _write(tmp_path, payload: bytes, name="d.txt"):
    p = tmp_path / name
    p.write_bytes(payload)
    return str(p)


def test_text_windows_are_next_byte_pairs_from_the_right_split(tmp_path):
    """x[t+1] == y[t] within a window; train windows come from the first 90%, eval walks the last 10%."""
    payload = bytes(range(256)) * 4
    ds = D.make_dataset(_write(tmp_path, payload), block_size=8)
    assert len(ds.splits["train"]) == 1024 - 102 and len(ds.splits["val"]) == 102
    x, y = ds.get_batch("train", 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (16, 8) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal((x + 1) % 256, y)  # consecutive bytes of range(256)
    val = list(ds.eval_batches("val", 4, 100))
    starts = torch.cat([b.x[:, 0] for b in val])
    assert torch.equal(starts, torch.tensor(list(payload[922:]))[torch.arange(0, 102 - 8, 8)].long())


def test_text_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="not found"):  # bdh_gpu.InputError: the CLI says it in one line
        D.make_dataset(str(tmp_path / "missing.txt"), 8)
    with pytest.raises(ValueError, match="empty"):
        D.make_dataset(_write(tmp_path, b""), 8)
    with pytest.raises(ValueError, match=r"shorter than one window: .* 50 bytes.*block_size \+ 1 = 65"):
        D.make_dataset(_write(tmp_path, b"x" * 50), 64)


def test_recall_answers_are_the_stored_values():
    """Every scored target is the value paired with the query key earlier in the same window; nothing else
    is scored. This is what makes accuracy above chance a measure of in-context memory."""
    ds = D.RecallData(block_size=40, n_pairs=6)
    x, y = ds.get_batch("train", 64, torch.Generator().manual_seed(3))
    seq = torch.cat([x, y[:, -1:].clamp(min=0)], 1)
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        pairs = row_x[:6]
        assert all(b >= D.RECALL_PAIR_BASE for b in pairs) and row_x[6] == D.RECALL_SEP
        table = {D.RECALL_KEYS[(b - 128) // 8]: D.RECALL_VALUES[(b - 128) % 8] for b in pairs}
        assert len(table) == 6  # distinct keys
        scored = [t for t, v in enumerate(row_y) if v != D.IGNORE]
        assert scored == list(range(7, 40, 2))
        for t in scored:
            assert row_y[t] == table[row_x[t]]
    assert seq.shape == (64, 41)


def test_recall_is_deterministic_given_the_seed_and_eval_is_fixed():
    ds = D.RecallData(block_size=32)
    a = ds.get_batch("train", 8, torch.Generator().manual_seed(5))
    b = ds.get_batch("train", 8, torch.Generator().manual_seed(5))
    c = ds.get_batch("train", 8, torch.Generator().manual_seed(6))
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    e1, e2 = list(ds.eval_batches("val", 8, 2)), list(ds.eval_batches("val", 8, 2))
    assert all(torch.equal(p.x, q.x) for p, q in zip(e1, e2))


def test_recall_errors():
    with pytest.raises(ValueError, match="shorter than one window"):
        D.RecallData(block_size=8, n_pairs=8)
    with pytest.raises(ValueError, match="pairs must be in 1..16"):
        D.RecallData(block_size=64, n_pairs=17)
    with pytest.raises(ValueError, match="integer K"):
        D.make_dataset("recall:x", 64)


def test_tinyshakespeare_local_copy_and_offline_error(tmp_path, monkeypatch):
    """BDH_TINYSHAKESPEARE wins; without it and offline, the error says how to pass a local copy, and the
    cache is left without a partial file."""
    monkeypatch.setenv("BDH_TINYSHAKESPEARE", _write(tmp_path, b"to be or not to be " * 20))
    ds = D.make_dataset("tinyshakespeare", 16)
    assert ds.name == "tinyshakespeare" and len(ds.splits["train"]) == 342
    monkeypatch.delenv("BDH_TINYSHAKESPEARE")
    monkeypatch.setenv("BDH_CACHE", str(tmp_path / "cache"))

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(D.urllib.request, "urlopen", offline)
    with pytest.raises(OSError, match="BDH_TINYSHAKESPEARE"):
        D.make_dataset("tinyshakespeare", 16)
    assert not os.listdir(tmp_path / "cache")


def test_tinyshakespeare_download_is_cached_once(tmp_path, monkeypatch):
    monkeypatch.delenv("BDH_TINYSHAKESPEARE", raising=False)
    monkeypatch.setenv("BDH_CACHE", str(tmp_path))
    calls = []

    class Resp:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def read(self):
            return b"First Citizen:\n" * 100

    def fake(url, timeout):
        calls.append(url)
        return Resp()

    monkeypatch.setattr(D.urllib.request, "urlopen", fake)
    D.make_dataset("tinyshakespeare", 16)
    D.make_dataset("tinyshakespeare", 16)
    assert calls == [D.TINYSHAKESPEARE_URL]
    assert os.listdir(tmp_path) == ["tinyshakespeare.txt"]


def test_shared_tinyshakespeare_file():
    if not os.path.isfile(SHAKESPEARE):
        pytest.skip(f"shared tiny Shakespeare not found at {SHAKESPEARE}")
    ds = D.make_dataset(SHAKESPEARE, 256)
    assert len(ds.splits["train"]) + len(ds.splits["val"]) == 1115394
    x, _ = ds.get_batch("train", 2, torch.Generator().manual_seed(0))
    assert bytes(x[0].tolist()).isascii()
