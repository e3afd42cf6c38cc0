"""Import a state_dict saved from the released `BDH` class (pathwaycom/bdh, bdh.py).

Name mapping (released -> ours; see docs/bdh_gpu.md):
  encoder    (h, d, N)  -> D_x (h, N, d)   transpose of the last two axes
  encoder_v  (h, d, N)  -> D_y (h, N, d)   transpose of the last two axes
  decoder    (h*N, d)   -> E   (d, h*N)    transpose
  embed.weight (V, d)   -> embed.weight
  lm_head    (d, V)     -> lm_head
  attn.freqs (1,1,1,N)  -> checked against our RoPE frequencies (theta 2^16), not stored
A `torch.compile`d model saves every key with the prefix `_orig_mod.`; it is stripped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from .config import BDHConfig, InputError
from .model import BDH, rope_frequencies

RELEASED_KEYS = ("encoder", "encoder_v", "decoder", "embed.weight", "lm_head")
OPTIONAL_KEYS = ("attn.freqs",)  # a persistent buffer in the released class (torch >= 2.5 nn.Buffer)
RELEASED_THETA = 2.0**16
RELEASED_DROPOUT = 0.1


def read_official_state_dict(path: str) -> dict:
    """torch.load(path, weights_only=True) and check it is a state_dict of the released BDH class."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise  # the file could not be read: the environment's (a permission), not its content
    except Exception as e:  # any other bytes (a text file: the unpickler's KeyError, ...) are not a state_dict
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        why = msg if "pickle" in type(e).__name__.lower() else f"{type(e).__name__} {msg}".strip()
        raise InputError(f"{path}: not a torch state_dict loadable with weights_only=True ({why})") from None
    return check_official_state_dict(sd, source=path)


def check_official_state_dict(sd, source: str = "state_dict") -> dict:
    """Return a plain {name: tensor} dict with the released keys, or raise a one-line InputError (a ValueError)."""
    if not isinstance(sd, Mapping):
        raise InputError(f"{source}: expected a state_dict (a dict of tensors), got {type(sd).__name__}")
    if sd and all(isinstance(k, str) and k.startswith("_orig_mod.") for k in sd):
        sd = {k[len("_orig_mod.") :]: v for k, v in sd.items()}
    keys = set(sd)
    missing = sorted(set(RELEASED_KEYS) - keys)
    unexpected = sorted(str(k) for k in keys - set(RELEASED_KEYS) - set(OPTIONAL_KEYS))
    if missing or unexpected:
        raise InputError(
            f"{source}: not a state_dict of the released BDH class: missing keys {missing}, "
            f"unexpected keys {unexpected}"
        )
    for k in keys:
        if not isinstance(sd[k], torch.Tensor) or not sd[k].is_floating_point():
            raise InputError(
                f"{source}: {k} should be a floating-point tensor, got {type(sd[k]).__name__}"
                f"{'' if not isinstance(sd[k], torch.Tensor) else ' of ' + str(sd[k].dtype)}"
            )
    config_from_official(sd, source=source)  # shape checks
    return dict(sd)


def config_from_official(sd: Mapping, n_layer: int = 6, source: str = "state_dict") -> BDHConfig:
    """Infer h, d, N, vocab from the shapes. n_layer cannot be inferred (every layer shares the same weights):
    it is an argument, default 6 as released. dropout is the released 0.1 (training only)."""
    enc = sd["encoder"]
    if enc.dim() != 3:
        raise InputError(f"{source}: encoder: expected shape (n_head, d, N), got {tuple(enc.shape)}")
    h, d, N = enc.shape
    V = sd["embed.weight"].shape[0] if sd["embed.weight"].dim() == 2 else -1
    expect = {"encoder_v": (h, d, N), "decoder": (h * N, d), "embed.weight": (V, d), "lm_head": (d, V)}
    for k, shape in expect.items():
        if tuple(sd[k].shape) != shape:
            raise InputError(
                f"{source}: {k}: expected shape {shape} (from encoder {tuple(enc.shape)}), got {tuple(sd[k].shape)}"
            )
    if "attn.freqs" in sd:
        f = sd["attn.freqs"]
        if tuple(f.shape) != (1, 1, 1, N):
            raise InputError(f"{source}: attn.freqs: expected shape {(1, 1, 1, N)}, got {tuple(f.shape)}")
        ref = rope_frequencies(N, RELEASED_THETA)
        if not torch.allclose(f.reshape(-1).double(), ref, rtol=1e-6, atol=0):
            raise InputError(f"{source}: attn.freqs differ from the released RoPE frequencies (theta 2^16)")
    config = BDHConfig(
        n_head=int(h),
        d=int(d),
        N=int(N),
        n_layer=n_layer,
        vocab_size=int(V),
        dropout=RELEASED_DROPOUT,
        U="rope",
        variant="official",
        rope_theta=RELEASED_THETA,
    )
    return config.validate()


def import_official(sd: Mapping, n_layer: int = 6) -> BDH:
    """A float32 BDH (variant official, U rope) whose logits equal the released code's for the same weights."""
    sd = check_official_state_dict(sd)
    model = BDH(config_from_official(sd, n_layer))
    with torch.no_grad():
        model.D_x.copy_(sd["encoder"].transpose(1, 2))
        model.D_y.copy_(sd["encoder_v"].transpose(1, 2))
        model.E.copy_(sd["decoder"].t())
        model.embed.weight.copy_(sd["embed.weight"])
        model.lm_head.copy_(sd["lm_head"])
    return model.eval()
