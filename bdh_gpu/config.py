"""BDHConfig: the one configuration of the tensor model (stored as config.json in every model directory).

Symbols follow the paper (arXiv:2509.26507, Sec. 3): `h` heads split the `n = h*N` neurons, `d` is the
low-rank dimension, `L` layers share one set of weights, the vocabulary is the 256 byte values.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .errors import InputError

U_KINDS = ("rope", "alibi", "rope+alibi", "none")

VARIANTS = ("official", "paper", "normfree")
LN_EPS = 1e-5  # the LayerNorm eps, as nn.LayerNorm in the released code (the graph compiles share it)
MAX_LAYERS = 4096  # a sanity bound: the paper's models have 6-12; 10**9 layers would compute for years


@dataclass
class BDHConfig:
    n_head: int = 4  # h: heads; each owns N neurons and a separate, parameter-free LN of its attention
    d: int = 256  # d: low-rank (embedding) dimension, `n_embd` in the released code
    N: int = 8192  # neurons per head (released: mlp_internal_dim_multiplier * d // n_head)
    n_layer: int = 6  # L: layers, all sharing the same D_x, D_y, E
    vocab_size: int = 256  # bytes
    dropout: float = 0.1  # on y, training mode only (as released)
    U: str = "rope"  # positional operator: "rope" | "alibi" | "rope+alibi" | "none"
    variant: str = "official"  # "official" (released bdh.py) | "paper" (Eq. 8) | "normfree" (Eq. 7)
    rope_theta: float = 2.0**16  # RoPE base: pair m of every head turns by theta^(-2m/N) radians per token
    alibi_max_bias: float = 8.0  # ALiBi: head k (0-based) damps by u_k = exp(-2^(-alibi_max_bias*(k+1)/h)) per token
    gains: dict | None = None  # constant multipliers of the parameters (see `default_gains`); None = the variant's
    # default, fixed (made explicit) when a model is built; {} = all 1 (as released)

    @property
    def n(self) -> int:
        """Total number of neurons, n = h * N."""
        return self.n_head * self.N

    @property
    def uses_rope(self) -> bool:
        return self.U in ("rope", "rope+alibi")

    @property
    def uses_alibi(self) -> bool:
        return self.U in ("alibi", "rope+alibi")

    def validate(self) -> BDHConfig:
        """Raise InputError (one line, naming the field, expected vs got) on the first bad field."""

        def bad(field, expected):
            raise InputError(f"BDHConfig.{field}: expected {expected}, got {getattr(self, field)!r}")

        for field in ("n_head", "d", "N", "n_layer", "vocab_size"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                bad(field, "a positive int")
        if self.n_layer > MAX_LAYERS:
            bad("n_layer", f"at most {MAX_LAYERS:,} (the layers share one set of weights; a forward runs them in turn)")
        if self.vocab_size < 2:
            bad("vocab_size", "an int >= 2")
        if not _is_real(self.dropout) or not 0.0 <= self.dropout < 1.0:
            bad("dropout", "a float in [0, 1)")
        if self.U not in U_KINDS:
            bad("U", f"one of {', '.join(U_KINDS)}")
        if self.variant not in VARIANTS:
            bad("variant", f"one of {', '.join(VARIANTS)}")
        if self.uses_rope and self.N % 2:
            bad("N", f"an even int (U={self.U!r} rotates neuron pairs (2m, 2m+1))")
        if not _is_real(self.rope_theta) or not math.isfinite(self.rope_theta) or self.rope_theta <= 1.0:
            bad("rope_theta", "a finite float > 1")
        if not _is_real(self.alibi_max_bias) or not math.isfinite(self.alibi_max_bias) or self.alibi_max_bias <= 0:
            bad("alibi_max_bias", "a finite float > 0")
        if self.gains is not None and (
            not isinstance(self.gains, dict)
            or not set(self.gains) <= set(GAIN_NAMES)
            or not all(_is_real(g) and math.isfinite(g) and g > 0 for g in self.gains.values())
        ):
            bad("gains", f"None or a dict of finite floats > 0 with keys among {', '.join(GAIN_NAMES)}")
        return self

    def resolved_gains(self) -> dict:
        """The gain of every parameter, {name: float} over GAIN_NAMES (missing names are 1)."""
        g = default_gains(self) if self.gains is None else self.gains
        return {k: float(g.get(k, 1.0)) for k in GAIN_NAMES}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BDHConfig:
        """Build and validate a config; unknown keys are an error (missing keys take the defaults)."""
        if not isinstance(data, dict):
            raise InputError(f"BDHConfig: expected a JSON object, got {type(data).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise InputError(f"BDHConfig: unknown keys {unknown}; valid keys are {known}")
        data = dict(data)
        data.setdefault("gains", {})  # configs written before gains existed: every gain 1, as they were trained
        for key in ("dropout", "rope_theta", "alibi_max_bias"):  # JSON may store 0 for 0.0
            if isinstance(data.get(key), int) and not isinstance(data.get(key), bool):
                data[key] = float(data[key])
        return cls(**data).validate()


GAIN_NAMES = ("embed", "D_x", "D_y", "E", "lm_head")
INIT_STD = 0.02  # every parameter starts as normal(0, 0.02), as released; the gains set the effective scale


def default_gains(config: BDHConfig) -> dict:
    """Constant gains g_p of the `normfree` variant (Eq. 7); {} (all 1) for `official` and `paper`.

    The model computes with g_p * p for every parameter p, and the graph compiles fold g_p into the edge weights
    (`BDH.effective_weights`), so a gain changes nothing in Eq. 7 or Obs. 4: it is a reparametrisation. Why:
    Eq. 7 has no LayerNorm, and y = (D_y E sigma x)^+ * x multiplies three sums over n or d terms, so with the
    released init (std 0.02 everywhere) every product vanishes (logits ~1e-17) and with O(1) weights it
    explodes (~1e4). The gains give the effective weights these scales at init (std of g_p p):
        embed 1,  D_x 1/sqrt(d),  lm_head 1/sqrt(d)     fan-in scales: x_0 = (D_x z)^+ and the logits are O(1)
        E     1/(8 sqrt(n))                             the value E y is ~0.1 x, so x_l = x_{l-1} + (D_x E y)^+
                                                        stays O(1) over the layers instead of growing
        D_y   0.63 / (sqrt(d) n^(3/4))                  E sigma x sums ~n t score terms; this keeps
                                                        rms(y_l) / rms(y_{l-1}) near 1 at init (measured on the
                                                        tiny and small presets; a 1/n law under-corrects by n^1/4)
    while the parameters themselves keep std 0.02, so Adam's step relative to a weight is the released model's.
    Measured: tiny normfree (U = alibi) reaches 0.977 held-out recall accuracy at step 400 (docs/training.md).
    """
    if config.variant != "normfree":
        return {}
    n, d = config.n, config.d
    s = 1.0 / INIT_STD
    return {
        "embed": s,
        "D_x": s / math.sqrt(d),
        "D_y": s * 0.63 / (math.sqrt(d) * n**0.75),
        "E": s / (8 * math.sqrt(n)),
        "lm_head": s / math.sqrt(d),
    }


def _is_real(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


PRESETS: dict[str, BDHConfig] = {
    # learns the built-in recall task in minutes on 2 CPU cores
    "tiny": BDHConfig(n_head=2, d=32, N=256, n_layer=2, dropout=0.0),
    "small": BDHConfig(n_head=4, d=128, N=1024, n_layer=4, dropout=0.1),
    # the released defaults: n = 32768, 3nd + 2*256*d = 25,296,896 parameters
    "paper-25m": BDHConfig(n_head=4, d=256, N=8192, n_layer=6, dropout=0.1),
}


def get_preset(name: str) -> BDHConfig:
    """A fresh copy of a preset (mutating it does not change PRESETS)."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name])
