"""Classifier-free guidance (Ho & Salimans 2022).

Convention, fixed once for the whole package: ``D_w = D_u + w (D_c - D_u)`` with the *standard*
scale ``w``; **w = 1 means no guidance** (one network evaluation), w = 0 is the unconditional model.
LCM's w, diffusers' ``guidance_scale - 1`` and Meng et al.'s ``(1 + w) c - w u`` are this scale minus
one: convert at their boundaries with ``scale_from_meng(w) = w + 1``.
"""
from __future__ import annotations

import torch
from torch import nn


def scale_from_meng(w: float) -> float:
    """Meng et al. / LCM guidance strength w  ->  our standard scale."""
    return w + 1.0


class Guided(nn.Module):
    """A Denoiser whose x0 (and eps) predictions are classifier-free guided.

    ``null_cond`` is the unconditional condition (e.g. the null class label, the empty prompt's
    embedding); it is broadcast to the batch by the condition object's ``null_like``.
    Both branches run in one batched call, so a guided evaluation counts as 2 NFE.
    """

    def __init__(self, denoiser: nn.Module, scale: float):
        super().__init__()
        self.denoiser, self.scale = denoiser, float(scale)
        self.process = denoiser.process
        self.nfe_per_call = 1 if self.scale == 1.0 else 2

    @property
    def param(self) -> str:  # the guided denoiser's parameterisation (a denoising loss on guided output)
        return self.denoiser.param

    @property
    def sigma_data(self) -> float:
        return self.denoiser.sigma_data

    def raw(self, x, t, cond=None):
        if self.scale == 1.0 or cond is None:
            return self.denoiser.raw(x, t, cond)
        return cfg_raw(self.denoiser, x, t, cond, self.scale)

    def forward(self, x, t, cond=None):
        return self.raw(x, t, cond)[0]


def both_branches(denoiser, x, t, cond):
    """((x0_c, x0_u), (eps_c, eps_u)): the conditional and unconditional predictions, in one batched call."""
    from ..nets.cond import cat_cond, null_like

    t = torch.as_tensor(t, device=x.device)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    x0, eps = denoiser.raw(torch.cat([x, x]), torch.cat([t, t]), cat_cond(cond, null_like(cond)))
    return x0.chunk(2), eps.chunk(2)


def cfg_raw(denoiser, x, t, cond, scale):
    """Guided (x0, eps) with a scalar or per-sample (B,) scale, both branches in one batched call."""
    from .base import bcast

    (x0_c, x0_u), (e_c, e_u) = both_branches(denoiser, x, t, cond)
    w = bcast(torch.as_tensor(scale, dtype=x0_c.dtype, device=x.device), x0_c)
    return x0_u + w * (x0_c - x0_u), e_u + w * (e_c - e_u)


def with_scale(cond, scale, n: int, device=None):
    """``cond`` with the guidance scale set as ``extra['w']`` (a float or (B,) tensor) for students that
    embed it (LCM, guidance distillation). Labels stay labels; a missing condition becomes Cond()."""
    from ..nets.cond import with_extra

    return with_extra(cond, "w", scale, n, device)


class ScaleEmbedded(nn.Module):
    """A guidance-embedding student at a fixed CFG scale: one network evaluation per call."""

    def __init__(self, denoiser: nn.Module, scale: float):
        super().__init__()
        self.denoiser, self.scale, self.process, self.nfe_per_call = denoiser, float(scale), denoiser.process, 1

    def raw(self, x, t, cond=None):
        return self.denoiser.raw(x, t, with_scale(cond, self.scale, x.shape[0], x.device))

    def forward(self, x, t, cond=None):
        return self.raw(x, t, cond)[0]


def guided(denoiser: nn.Module, scale: float) -> nn.Module:
    """The CFG wrapper; scale 1 returns the denoiser itself. A student that embeds the guidance scale
    gets it as an input instead (one evaluation, the scale it was distilled for)."""
    if getattr(denoiser, "embeds_guidance", False):
        return ScaleEmbedded(denoiser, scale)
    return denoiser if float(scale) == 1.0 else Guided(denoiser, scale)
