"""The method contract (DESIGN.md). The trainer knows only this interface.

A method owns its networks, optimizers and update schedule. ``step`` does its own backward and
optimizer calls through ``ctx.update(...)`` so alternating updates stay readable; the context
applies the LR warm-up, gradient clipping and the non-finite guard uniformly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..noise.precond import Denoiser


def trainable_copy(den: Denoiser, lora_rank: int = 0, lora_alpha: float | None = None,
                   lora_targets: list | None = None) -> Denoiser:
    """A trainable copy of a denoiser: every weight, or (lora_rank > 0) LoRA adapters on a frozen copy."""
    import copy

    g = copy.deepcopy(den).train()
    if lora_rank:
        from ..nets.lora import add_lora

        add_lora(g.net, lora_rank, lora_alpha, lora_targets)
    else:
        g.requires_grad_(True)
    return g


def cond_of(batch: dict):
    """A batch's condition: a ``Cond`` (text-conditioned data) or class labels, or None."""
    return batch.get("cond", batch.get("labels"))


@dataclass
class SamplingSpec:
    sampler: str = "heun"  # a key of fewstep.samplers.SAMPLERS
    steps: int = 18  # grid steps (Heun: NFE = 2 steps - 1)
    grid: str = "karras"
    cfg: float = 1.0  # CFG scale, 1 = none
    sigmas: list | None = None  # an explicit sigma_hat grid overrides grid/steps (few-step students)


class Method:
    name: str = "method"

    def networks(self) -> dict[str, nn.Module]:
        """Every network whose weights are saved and restored (trainable and auxiliary)."""
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def step(self, batch: dict, it: int, ctx) -> dict:
        """One training iteration; returns scalars to log (tensors or floats)."""
        raise NotImplementedError

    def generator(self, net: nn.Module | None = None) -> Denoiser:
        """The model being produced, optionally with ``net`` (e.g. its EMA) in place of its network."""
        raise NotImplementedError

    def plan(self, max_iters: int) -> None:
        """Told the run's length before training (methods with their own LR schedule use it)."""

    def prepare(self, cache_dir) -> None:
        """One-off work before training (e.g. caching teacher ODE pairs); must be deterministic."""

    def ema_network(self) -> str | None:
        """Name (in networks()) of the network whose EMA is kept and evaluated; None for none."""
        return None

    def default_sampling(self) -> SamplingSpec:
        return SamplingSpec()

    def sampling_options(self) -> list[SamplingSpec]:
        """Every way the produced model is meant to be sampled (benchmarks measure each); the default first."""
        return [self.default_sampling()]

    def config(self) -> dict:
        return {"method": self.name}
