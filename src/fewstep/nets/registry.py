"""Build architectures from their stored config dicts."""
from __future__ import annotations

from torch import nn

from .mlp import MLP, MLPConfig
from .unet import UNet, UNetConfig

ARCHS = {"unet": (UNet, UNetConfig), "mlp": (MLP, MLPConfig)}


def build_net(cfg: dict) -> nn.Module:
    cfg = dict(cfg)
    if str(cfg.get("arch", "")).startswith("diffusers_"):
        from .adapters.diffusers import build

        return build(cfg)
    if cfg.get("arch") == "phase_experts":
        from .experts import PhaseExperts

        return PhaseExperts.from_config(cfg, build_net)
    if cfg.get("arch") == "phase_lora":  # one base network, one LoRA adapter per phase
        from .experts import PhaseLoRA

        return PhaseLoRA.from_config(cfg, build_net)
    if cfg.get("arch") == "arc":  # ArcFlow's mixture-of-velocities policy around an architecture
        from .arc import ArcNet

        return ArcNet.from_config(cfg, build_net)
    if cfg.get("arch") == "disca":  # a network with DisCa's learned cache (nets/cache.py)
        from .cache import CachedUNet

        return CachedUNet.from_config(cfg, build_net)
    lora = cfg.pop("lora", None)
    net = _build_own(cfg)
    if lora:
        from .lora import add_lora

        add_lora(net, **lora)
    return net


def _build_own(cfg: dict) -> nn.Module:
    arch = cfg.pop("arch", None)
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {sorted(ARCHS)}")
    cls, cfg_cls = ARCHS[arch]
    try:
        return cls(cfg_cls(**cfg))
    except TypeError as e:
        raise ValueError(f"bad {arch} config: {e}") from None
