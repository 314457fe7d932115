"""Build architectures from their stored config dicts."""
from __future__ import annotations

from torch import nn

from .mlp import MLP, MLPConfig
from .unet import UNet, UNetConfig

ARCHS = {"unet": (UNet, UNetConfig), "mlp": (MLP, MLPConfig)}


def build_net(cfg: dict) -> nn.Module:
    cfg = dict(cfg)
    arch = cfg.pop("arch", None)
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {sorted(ARCHS)}")
    cls, cfg_cls = ARCHS[arch]
    try:
        return cls(cfg_cls(**cfg))
    except TypeError as e:
        raise ValueError(f"bad {arch} config: {e}") from None
