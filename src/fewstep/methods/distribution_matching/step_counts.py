"""What the one-model-for-several-step-counts members of the family share (asd.py, sc_dmd.py): the
step counts a student is trained and sampled with, how often each is trained, and the per-iteration
draw of one of them."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .dmd2 import DMD2, DMD2Config


@dataclass
class StepCountsConfig(DMD2Config):
    stage_critics_ok = False  # its stages change with the step count drawn
    nfe: int = 4  # the default sampling's steps (one of step_counts)
    step_counts: tuple[int, ...] = (1, 2, 4)  # one model, sampled with each
    step_probs: tuple[float, ...] | None = None  # how often each is trained (None: equally often)

    def __post_init__(self):
        super().__post_init__()
        self.step_counts = tuple(int(k) for k in self.step_counts)
        if not self.step_counts or min(self.step_counts) < 1 or self.nfe not in self.step_counts:
            raise ValueError(f"step_counts must be positive and include nfe ({self.nfe}), got {self.step_counts}")
        if self.step_probs is not None:
            self.step_probs = tuple(float(p) for p in self.step_probs)
            if len(self.step_probs) != len(self.step_counts) or min(self.step_probs) < 0 or sum(self.step_probs) <= 0:
                raise ValueError("step_probs needs one non-negative probability per step count, not all zero")
        if self.student_sigmas is not None:
            raise ValueError("each step count's levels follow from the method's rule; student_sigmas is not used")


class StepCountsDMD2(DMD2):
    """DMD2 whose every iteration trains one step count, ``self.steps``."""

    Config = StepCountsConfig

    def __init__(self, teacher, cfg=None, shape=(), num_classes: int = 0):
        super().__init__(teacher, cfg, shape, num_classes)
        self.steps = self.cfg.nfe

    def draw_step_count(self, rng: torch.Generator) -> int:
        counts, probs = self.cfg.step_counts, self.cfg.step_probs or (1.0,) * len(self.cfg.step_counts)
        p = torch.tensor(probs, dtype=torch.float64)
        return counts[int(torch.multinomial(p / p.sum(), 1, generator=rng))]

    def dm_step(self, batch, cond, n, it, ctx):
        """Each iteration trains one step count, drawn from the shared generator (the same on every
        process, and restored with it on resume), for the student and the critic alike."""
        self.steps = self.draw_step_count(ctx.shared_rng)
        logs = super().dm_step(batch, cond, n, it, ctx)
        logs["step_count"] = float(self.steps)
        return logs


