"""Decoupled DMD (Z-Image's "Decoupled DMD", 2025): the real-CFG DMD gradient split in two.

With a real score guided at alpha, DMD's x0-space gradient (base.py) is
    mu_fake^c - mu_cfg = (mu_fake^c - mu_real^c) - (alpha - 1) (mu_real^c - mu_real^u)
                         \\_______ DM _______/   \\__________ CA (CFG augmentation) ______/
The paper finds CA to be the engine (it converts the student fast, alone it over-saturates and
collapses) and DM the regulariser, and re-noises them separately: DM over the full range of levels,
CA only at levels cleaner than the student's own input (for a one-step student: every level below the
top), each with its own noise. Each term is normalised as DMD2 normalises its gradient, by
mean|x_hat - mu_cfg| at its own level, so with one level and one noise for both (``decouple=False``)
the sum is exactly DMD2's real-CFG gradient (tested). Everything else is DMD2 (dmd2.py): the fake
score, the GAN head, the 5:1 schedule, backward simulation.

Left open by the paper (our choices): the weights (1, 1) and the per-term normaliser above.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...noise.guidance import both_branches
from .base import dm_loss, dm_normalise
from .dmd2 import DMD2, DMD2Config, dm_presets


@dataclass
class DecoupledDMDConfig(DMD2Config):
    levels_follow_stage = True  # its CA levels are cleaner than the batch's student input
    real_cfg: float = 2.0  # alpha, the real score's CFG scale whose gradient is split (must be > 1)
    dm_weight: float = 1.0  # weight of the distribution-matching term (the regulariser)
    ca_weight: float = 1.0  # weight of the CFG-augmentation term (the engine)
    decouple: bool = True  # False: both terms at one level with one noise (= DMD2 with real CFG)

    def __post_init__(self):
        super().__post_init__()
        if self.real_cfg <= 1:
            raise ValueError(f"real_cfg must be > 1 (the CA term is (real_cfg - 1)(...)), got {self.real_cfg}")
        if self.dm_weight < 0 or self.ca_weight < 0:
            raise ValueError("dm_weight and ca_weight must be >= 0")


class DecoupledDMD(DMD2):
    """DMD2 whose real-CFG gradient is split into CA and DM terms, re-noised independently."""

    name = "decoupled_dmd"
    Config = DecoupledDMDConfig
    presets = dm_presets(DecoupledDMDConfig, real_cfg=1.25)

    def __init__(self, teacher, cfg=None, shape=(), num_classes: int = 0):
        super().__init__(teacher, cfg, shape, num_classes)
        if not num_classes and not hasattr(teacher.net, "example_cond"):
            raise ValueError("decoupled_dmd needs a conditional teacher (its CA term is a CFG difference)")

    def _terms(self, x_hat, cond, t, eps):
        """(DM gradient, CA gradient) at times t with noise eps, each normalised at its own level."""
        x_t = self.process.add_noise(x_hat, eps, t)
        mu_fake = self.fake(x_t, t, cond).float()
        (mu_c, mu_u), _ = both_branches(self.teacher, x_t, t, cond)
        mu_c, mu_u = mu_c.float(), mu_u.float()
        alpha = self.cfg.real_cfg
        mu_cfg = mu_u + alpha * (mu_c - mu_u)
        dm = dm_normalise(mu_fake - mu_c, x_hat, mu_cfg, self.cfg.normalize)
        ca = dm_normalise(-(alpha - 1) * (mu_c - mu_u), x_hat, mu_cfg, self.cfg.normalize)
        return dm, ca

    def dm_student_loss(self, x_hat, cond, rng):
        c = self.cfg
        n = x_hat.shape[0]
        x = x_hat.detach().float()
        with torch.no_grad():
            t_dm = self.sample_levels(n, rng, *c.dm_index_range)
            g_dm, g_ca = self._terms(x, cond, t_dm, self.noise(x.shape, rng))
            if c.decouple:  # CA re-noised on its own, only cleaner than the student's input
                t_ca = self.sample_levels(n, rng, *c.dm_index_range, below=self.input_level)
                _, g_ca = self._terms(x, cond, t_ca, self.noise(x.shape, rng))
            grad = c.dm_weight * g_dm + c.ca_weight * g_ca
        self.last_terms = {"dm_grad_abs_dm": g_dm.abs().mean(), "dm_grad_abs_ca": g_ca.abs().mean()}
        return dm_loss(x_hat.float(), grad), grad

    def student_loss(self, cond, n, ctx, logs):
        out = super().student_loss(cond, n, ctx, logs)
        logs.update(self.last_terms)
        return out
