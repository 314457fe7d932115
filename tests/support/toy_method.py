"""The README's "Adding a method" walkthrough, as a test uses it: a whole method in one file.

``mean_match`` trains a one-step student by matching the first two moments of its samples to the
teacher's many-step samples. It is deliberately simple; what matters is that nothing outside this
file (and one ``register_method`` call) had to change for the CLI, its help and the contract test to
pick it up.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fewstep.config import DistillConfig, TrainSettings
from fewstep.methods.base import OptimConfig, StudentMethod, cond_of, frozen_copy, trainable_copy
from fewstep.samplers import SamplingSpec, generate


@dataclass
class MeanMatchConfig:
    nfe: int = 1  # student steps (one here)
    teacher_steps: int = 8  # DPM-Solver++ steps of the teacher's reference samples
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3))

    def __post_init__(self):
        if self.nfe != 1 or self.teacher_steps < 1:
            raise ValueError("mean_match is a one-step method (nfe 1) and needs teacher_steps >= 1")


class MeanMatch(StudentMethod):
    """Match the mean and std of one-step samples to the teacher's (a toy, not a paper)."""

    name = "mean_match"
    Config = MeanMatchConfig
    presets = {"toy2d": DistillConfig(MeanMatchConfig(), TrainSettings(max_iters=20, batch_size=64, bf16=False))}

    def __init__(self, teacher, cfg=None, shape=(), num_classes: int = 0):
        super().__init__(teacher, cfg, shape, num_classes)
        self.teacher = frozen_copy(teacher)
        self.student = trainable_copy(teacher)
        self.opt = self.cfg.optim.build(self.student.net.parameters())

    def default_sampling(self):
        return SamplingSpec("euler", 1, "karras")

    def step(self, batch, it, ctx):
        n = batch["x"].shape[0]
        cond = cond_of(batch)
        with torch.no_grad():
            ref = generate(self.teacher, n, SamplingSpec("dpmpp2m", self.cfg.teacher_steps, "karras"), self.shape,
                           cond, seed=it)
        x = self.student.process.prior((n, *self.shape), generator=ctx.rng)
        t = torch.full((n,), self.student.process.t_max)
        with ctx.autocast():
            out = self.student(x, t, cond).float()
            loss = (out.mean(0) - ref.mean(0)) ** 2 + (out.std(0) - ref.std(0)) ** 2
        self.update(ctx, loss.sum().expand(n))
        return {"loss": loss.sum()}
