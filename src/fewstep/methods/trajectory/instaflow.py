"""InstaFlow (Liu et al. 2023): from a reflowed model (reflow.py), a one-step student
x1_hat = G(z at the top level) regressed with L2 onto the reflowed model's own ODE output (LPIPS in the
paper, which has no offline weights for our data). Sampled with one Euler step on the ``flow`` grid.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...config import DistillConfig, TrainSettings
from ..base import adam
from ..losses import pair_regression
from .reflow import CouplingMethod, ReflowConfig


@dataclass
class InstaFlowConfig(ReflowConfig):
    pair_sampler: str = "euler"  # the reflowed model's own ODE (its straight paths need few steps)
    pair_steps: int = 16
    pair_grid: str = "flow"
    eval_nfes: tuple[int, ...] = (1,)

    def __post_init__(self):
        super().__post_init__()
        if self.nfe != 1:
            raise ValueError("instaflow distils a one-step model; use nfe 1")


class InstaFlow(CouplingMethod):
    """InstaFlow: one-step L2 distillation of a reflowed model onto its own ODE output."""

    name = "instaflow"
    Config = InstaFlowConfig
    presets = {"mnist": DistillConfig(InstaFlowConfig(optim=adam(1e-4, grad_clip=1.0), pairs=4000),
                                      TrainSettings(max_iters=600))}

    def step(self, batch, it, ctx):
        n = batch["x"].shape[0]
        z, x1, cond = self.coupling_batch(n, ctx.rng)
        with ctx.autocast():
            loss = pair_regression(self.student, self.sh_top, z, x1, cond)
        self.update(ctx, loss)
        return {"loss": loss.mean()}
