"""Byte-level datasets for training and evaluating BDH-GPU.

Every dataset yields windows of `block_size` input bytes `x` (B, T) and next-byte targets `y` (B, T),
int64; a target of `IGNORE` (-100) is not scored. Two kinds:

- `TextData`: the bytes of a file (or of tiny Shakespeare, downloaded once into a cache). The first 90% is
  the train split, the last 10% the validation split; training draws random windows, evaluation walks the
  validation split in consecutive windows.
- `RecallData`: a synthetic in-context associative-recall task. Each window is one episode: `K` key-value
  pairs with distinct keys, a `:`, then queries `key value` drawn from the same `K` keys until the window is
  full. A pair is ONE byte, `0x80 + 8 * key + value` (16 keys, 8 values); a query is the key's letter
  (`a`..`p`) followed by the value's digit (`0`..`7`). Only the answer digits are scored, so the task is
  solvable only by reading the pairs back from the model's state (its working memory); chance accuracy is 1/8.
  (One byte per pair makes the recall one associative look-up: the released model's attention has no
  softmax to sharpen a previous-token head, so a two-byte `kv` pair would also demand an induction circuit.)

`make_dataset(spec, block_size)` turns a `--data` argument into one of these.
"""

from __future__ import annotations

import errno
import http.client
import math
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import NamedTuple

import torch

from .config import InputError

IGNORE = -100
TINYSHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
VAL_FRACTION = 0.1

# recall alphabet: a pair is the byte 0x80 + 8 * key + value; a query is a key letter, its answer a digit
RECALL_KEYS = b"abcdefghijklmnop"
RECALL_VALUES = b"01234567"
RECALL_PAIR_BASE = 0x80
RECALL_SEP = ord(":")


class Batch(NamedTuple):
    x: torch.Tensor  # (B, T) int64 input bytes
    y: torch.Tensor  # (B, T) int64 next bytes, IGNORE where not scored


def cache_dir() -> str:
    """`$BDH_CACHE`, else ~/.cache/bdh."""
    return os.environ.get("BDH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "bdh")


def tinyshakespeare_path(download: bool = True) -> str:
    """Path of a local copy of tiny Shakespeare.

    `$BDH_TINYSHAKESPEARE` (a local copy) wins; else the cached copy; else it is downloaded once into the
    cache, atomically (a temp file in the same directory, then `os.replace`).
    """
    local = os.environ.get("BDH_TINYSHAKESPEARE")
    if local:
        if not os.path.isfile(local):
            raise InputError(f"BDH_TINYSHAKESPEARE={local} is not a file")
        return local
    path = os.path.join(cache_dir(), "tinyshakespeare.txt")
    if os.path.isfile(path) or not download:
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        with urllib.request.urlopen(TINYSHAKESPEARE_URL, timeout=30) as r:
            payload = r.read()
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
        why = getattr(e, "reason", None) or e
        raise OSError(  # the environment (no network), not the input: exit code 3 in the CLI
            errno.ENETUNREACH,
            f"tinyshakespeare: could not download it from {TINYSHAKESPEARE_URL} ({why}); offline? pass "
            f"--data PATH to a local copy, or set $BDH_TINYSHAKESPEARE=/path/to/input.txt",
        ) from None
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tinyshakespeare-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def read_bytes(path: str) -> torch.Tensor:
    """The bytes of a file as a uint8 tensor; a missing or empty file is an InputError (an unreadable one, OSError)."""
    if not os.path.exists(path):
        raise InputError(f"data file not found: {path}")
    if not os.path.isfile(path):
        raise InputError(f"data path is not a file: {path}")
    with open(path, "rb") as f:
        raw = f.read()
    if not raw:
        raise InputError(f"data file is empty: {path}")
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8)


class TextData:
    """Next-byte prediction on the bytes of a file: 90% train, 10% validation (the end of the file)."""

    kind = "text"

    def __init__(self, data: torch.Tensor, block_size: int, name: str = "text"):
        if block_size < 1:
            raise InputError(f"block size must be >= 1 (got {block_size})")
        self.name, self.block_size = name, block_size
        n_val = int(len(data) * VAL_FRACTION)
        self.splits = {"train": data[: len(data) - n_val], "val": data[len(data) - n_val :]}
        for split, d in self.splits.items():
            if len(d) < block_size + 1:
                raise InputError(
                    f"data shorter than one window: {name} has {len(data)} bytes, its {split} split "
                    f"{len(d)}; a window needs block_size + 1 = {block_size + 1} bytes "
                    f"(need at least {math.ceil((block_size + 1) / VAL_FRACTION)} bytes, or a smaller --block-size)"
                )

    def get_batch(self, split: str, batch_size: int, generator: torch.Generator) -> Batch:
        """`batch_size` random windows of the split, drawn with `generator`."""
        d, T = self.splits[split], self.block_size
        ix = torch.randint(len(d) - T, (batch_size,), generator=generator)
        return self._windows(d, ix)

    def eval_batches(self, split: str, batch_size: int, max_batches: int) -> Iterator[Batch]:
        """Consecutive, non-overlapping windows from the start of the split (deterministic)."""
        d, T = self.splits[split], self.block_size
        starts = torch.arange(0, len(d) - T, T)[: batch_size * max_batches]
        for k in range(0, len(starts), batch_size):
            yield self._windows(d, starts[k : k + batch_size])

    def _windows(self, d: torch.Tensor, ix: torch.Tensor) -> Batch:
        T = self.block_size
        offs = ix[:, None] + torch.arange(T + 1)[None, :]  # (B, T+1)
        w = d[offs].long()
        return Batch(w[:, :-1], w[:, 1:])


class RecallData:
    """In-context associative recall: K pair bytes, `:`, then queries `kv`, one episode per window.

    Scored bytes are the query answers only; `chance` is 1 / number of values.
    """

    kind = "recall"
    chance = 1.0 / len(RECALL_VALUES)

    def __init__(self, block_size: int, n_pairs: int = 8, val_seed: int = 0x5EED):
        if not 1 <= n_pairs <= len(RECALL_KEYS):
            raise InputError(f"recall pairs must be in 1..{len(RECALL_KEYS)} (got {n_pairs})")
        need = n_pairs + 3  # pairs, ':', and one query key + answer
        if block_size + 1 < need:
            raise InputError(
                f"data shorter than one window: a recall episode with {n_pairs} pairs and one "
                f"query needs {need} bytes, a window has block_size + 1 = {block_size + 1}"
            )
        self.name, self.block_size, self.n_pairs, self.val_seed = f"recall:{n_pairs}", block_size, n_pairs, val_seed
        self.n_queries = (block_size - n_pairs + 1) // 2  # fills T + 1 bytes; the last may lose its answer

    def episodes(self, batch_size: int, generator: torch.Generator) -> Batch:
        K, Q, T = self.n_pairs, self.n_queries, self.block_size
        keys_all = torch.tensor(list(RECALL_KEYS))
        vals_all = torch.tensor(list(RECALL_VALUES))
        kidx = torch.rand(batch_size, len(RECALL_KEYS), generator=generator).argsort(dim=1)[:, :K]  # distinct keys
        vidx = torch.randint(len(RECALL_VALUES), (batch_size, K), generator=generator)
        qidx = torch.randint(K, (batch_size, Q), generator=generator)  # which pair each query asks for
        keys, vals = keys_all[kidx], vals_all[vidx]  # (B, K) letters, digits
        pairs = RECALL_PAIR_BASE + len(RECALL_VALUES) * kidx + vidx  # (B, K) one byte per pair
        qk, qv = keys.gather(1, qidx), vals.gather(1, qidx)  # (B, Q)
        queries = torch.stack([qk, qv], dim=2).reshape(batch_size, 2 * Q)
        sep = torch.full((batch_size, 1), RECALL_SEP)
        seq = torch.cat([pairs, sep, queries], dim=1)[:, : T + 1]  # (B, T+1)
        scored = torch.zeros_like(seq, dtype=torch.bool)
        scored[:, K + 2 :: 2] = True  # answers sit at K+1 + 2q + 1
        x, y = seq[:, :-1], seq[:, 1:].clone()
        y[~scored[:, 1:]] = IGNORE
        return Batch(x.long(), y.long())

    def get_batch(self, split: str, batch_size: int, generator: torch.Generator) -> Batch:
        """Training episodes come from `generator`; validation episodes from a fixed seed (see eval_batches)."""
        return self.episodes(batch_size, generator)

    def eval_batches(self, split: str, batch_size: int, max_batches: int) -> Iterator[Batch]:
        """The same `max_batches` episodes every time: a fixed seed per split, independent of training."""
        g = torch.Generator().manual_seed(self.val_seed + (0 if split == "val" else 1))
        for _ in range(max_batches):
            yield self.episodes(batch_size, g)


def make_dataset(spec: str, block_size: int):
    """`--data` argument -> dataset: `recall`, `recall:K` (K pairs), `tinyshakespeare`, or a file path."""
    if spec == "recall" or spec.startswith("recall:"):
        k = spec.partition(":")[2]
        if k and not k.isdigit():
            raise InputError(f"--data recall:K needs an integer K (got {spec!r})")
        return RecallData(block_size, n_pairs=int(k) if k else 8)
    if spec == "tinyshakespeare":
        path = tinyshakespeare_path()
        return TextData(read_bytes(path), block_size, name="tinyshakespeare")
    return TextData(read_bytes(spec), block_size, name=os.path.basename(spec) or spec)
