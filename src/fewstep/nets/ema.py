"""Exponential moving average of a network's weights."""
from __future__ import annotations

import torch
from torch import nn

from .sharing import copy_sharing_frozen, shares_storage


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, decay: float) -> None:
    """target <- decay * target + (1 - decay) * online for floating-point weights; other tensors copied."""
    for e, p in zip(target.state_dict().values(), online.state_dict().values()):
        if hasattr(p, "full_tensor"):  # an FSDP2-sharded online network: gathered (every rank updates alike)
            p = p.full_tensor()
        if shares_storage(e, p):  # a frozen weight both networks hold (a LoRA student's base)
            continue
        if e.is_floating_point():
            e.lerp_(p.detach(), 1 - decay)
        else:
            e.copy_(p)


class EMA:
    def __init__(self, net: nn.Module, decay: float, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay, self.warmup, self.num_updates = decay, warmup, 0
        # weights that do not train (a LoRA student's base) are shared, not copied: only the adapters average
        self.net = copy_sharing_frozen(net).eval().requires_grad_(False)

    def current_decay(self) -> float:
        # Warm-up (as in timm / diffusers EMAModel): early averages forget the random init quickly.
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        ema_update_(self.net, net, self.current_decay())
        self.num_updates += 1
