"""What the tensor model will allocate, from its config alone: an upper estimate of a process's peak resident
memory (bytes), computed in Python integers before any tensor exists (so an absurd config.json cannot overflow or
allocate on the way). The caller compares it with the memory there is (`bdh.budget`) and refuses in one line.

Counted, with s the bytes of one float (4 for float32, 8 for float64), n = h N neurons, P = 3 n d + 2 V d
parameters (D_x, D_y, E; embed, lm_head):

    parameters       P s; training adds the gradient and AdamW's two moments: 4 P s
    activations      training keeps every layer's for the backward: ACT_TRAIN floats per (token, layer, neuron);
                     a forward without gradient one layer at a time: ACT_EVAL floats per (token, neuron)
    attention        full: the h T x T score matrix (per layer in training, one layer without gradient);
                     chunked: h T C scores and one (h, N, d) state per block of C tokens
    recurrent state  generate: the state S[l] (B, h, N, d) of every layer, and the prompt's forward
    logits           B T V, three copies (logits, softmax, gradient)
    FIXED            the interpreter, torch, numpy, numba and bdh themselves

The constants are calibrated against the peak resident memory (VmHWM) of the commands on small models
(tests/test_budget.py keeps every estimate between 1x and 4x the measured peak).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import BDHConfig

FIXED = 640 * 2**20  # python + torch + numpy + numba + bdh resident before any model (measured ~330-500 MB; the
# high end is numba compiling its kernels from an empty cache, as in a fresh clone)
ACT_TRAIN = 8  # floats per (token, layer, neuron) kept for the backward (measured ~7)
ACT_EVAL = 6  # floats per (token, neuron) alive at once in a forward without gradient
GENERATE_TOKEN = 16  # bytes per generated token held (the ids, the output list)


@dataclass
class Estimate:
    """An estimate, bytes per part; `total` is their sum. `what` names the command and its sizes."""

    what: str
    parts: dict = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def add(self, other: Estimate) -> Estimate:
        for k, v in other.parts.items():
            self.parts[k] = self.parts.get(k, 0) + v
        return self

    def largest(self) -> str:
        """The part that dominates, e.g. 'activations'."""
        return max(self.parts, key=self.parts.get) if self.parts else "nothing"


def n_params(config: BDHConfig) -> int:
    """P = 3 n d + 2 V d (D_x, D_y, E shared by all layers; embed, lm_head)."""
    return 3 * config.n * config.d + 2 * config.vocab_size * config.d


def _attention(config: BDHConfig, B: int, T: int, chunk: int | None, s: int, layers: int) -> int:
    h, N, d = config.n_head, config.N, config.d
    if chunk is None or chunk >= T:
        return 2 * layers * B * h * T * T * s  # scores and their decayed/masked copy
    blocks = -(-T // chunk)
    return 2 * layers * B * h * T * chunk * s + layers * (blocks if layers > 1 else 2) * B * h * N * d * s


def forward_bytes(config: BDHConfig, B: int, T: int, chunk: int | None, s: int = 4, train: bool = False) -> Estimate:
    """One forward over a (B, T) batch (with what its backward needs when train)."""
    L, n, V = config.n_layer, config.n, config.vocab_size
    P = n_params(config)
    act = ACT_TRAIN * L * B * T * n * s if train else ACT_EVAL * B * T * n * s
    return Estimate(
        f"{'train' if train else 'forward'} B={B} T={T}",
        {
            "parameters": P * s * (4 if train else 1),
            "activations": act,
            "attention": _attention(config, B, T, chunk, s, L if train else 1),
            "logits": 3 * B * T * V * s,
            "fixed": FIXED,
        },
    )


def generate_bytes(config: BDHConfig, prompt: int, tokens: int, s: int = 4, chunk: int | None = None) -> Estimate:
    """`generate`: the prompt's forward, then the recurrent state of every layer and the tokens made."""
    e = forward_bytes(config, 1, prompt, chunk, s)
    e.what = f"generate prompt={prompt} tokens={tokens}"
    e.parts["recurrent state"] = 2 * config.n_layer * config.n_head * config.N * config.d * s
    e.parts["tokens"] = GENERATE_TOKEN * (prompt + tokens)
    return e


def chunk_of(attention, T: int) -> int | None:
    """The block size a forward over T tokens runs with under `attention` (a bdh_gpu.Attention or None = auto)."""
    from .model import Attention

    return Attention.of(attention or "auto").chunk_for(T)
