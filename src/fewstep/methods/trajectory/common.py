"""Pieces the trajectory-following methods share: student construction, target networks, losses."""
from __future__ import annotations

import copy

import torch
from torch import nn

from dataclasses import asdict

from ...nets import build_net
from ...noise.base import _bcast
from ...noise.precond import Denoiser
from ..base import Method


def student_from(teacher: Denoiser, boundary: str | None = None, w_dim: int = 0, lora_rank: int = 0,
                 lora_alpha: float | None = None, lora_targets: list | None = None) -> Denoiser:
    """A trainable copy of the teacher. ``w_dim > 0`` rebuilds the architecture with a guidance-scale
    embedding (LCM Sec. 4.2; Meng et al. Sec. 4) whose output layer starts at zero, so the student
    starts as the teacher exactly; ``boundary`` adds a consistency boundary condition (precond.py)."""
    if w_dim and not teacher.embeds_guidance:
        cfg = dict(teacher.net.config(), w_dim=w_dim)
        net = build_net(cfg)
        missing, unexpected = net.load_state_dict(teacher.net.state_dict(), strict=False)
        if unexpected or any(not k.startswith("embed.w_mlp.") for k in missing):
            raise ValueError(f"cannot add a w-embedding to this architecture (missing {missing}, unexpected {unexpected})")
        last = net.embed.w_mlp[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    else:
        net = copy.deepcopy(teacher.net)
    student = Denoiser(net, teacher.process, teacher.param, teacher.sigma_data, boundary).train().requires_grad_(True)
    if lora_rank:
        if w_dim:
            raise ValueError("a LoRA student cannot add a guidance-scale embedding (use w_dim=0, as LCM-LoRA does)")
        from ...nets.lora import add_lora

        add_lora(student.net, lora_rank, lora_alpha, lora_targets)
    return student


def frozen_copy(den: Denoiser) -> Denoiser:
    """A gradient-free copy (a consistency target network, a progressive stage's teacher)."""
    return copy.deepcopy(den).eval().requires_grad_(False)


def snr_truncated_mse(x0_hat, x0_target, alpha, sigma) -> torch.Tensor:
    """Salimans & Ho 2022 Sec. 4, 'truncated SNR' weighting: max(||x - x~||^2, ||eps - eps~||^2)
    = max(SNR, 1) ||x - x~||^2 with SNR = alpha^2 / sigma^2 (eps errors are x errors times alpha/sigma)."""
    snr = (alpha.float() / sigma.float()) ** 2
    err = ((x0_hat.float() - x0_target.float()) ** 2).flatten(1).mean(1)
    return torch.clamp(snr, min=1.0) * err


def consistency_distance(a, b, kind: str = "l2", c: float = 0.03) -> torch.Tensor:
    """Per-sample distance: 'l2' mean squared error (CD with L2) or pseudo-Huber
    sqrt(||a - b||^2 / d + c^2) - c (Song & Dhariwal 2023; LCM uses c = 0.001 on latents)."""
    sq = ((a.float() - b.float()) ** 2).flatten(1).mean(1)
    if kind == "l2":
        return sq
    if kind == "huber":
        return torch.sqrt(sq + c * c) - c
    raise ValueError(f"loss must be 'l2' or 'huber', got {kind!r}")


def noised(process, x0, eps, sh):
    """x at per-sample levels sh (> 0): alpha x0 + sigma eps, with the native times."""
    from ...samplers.ode import level_coeffs

    t, a, s = level_coeffs(process, sh)
    return _bcast(a, x0) * x0 + _bcast(s, x0) * eps, t, a, s


def uniform_scale(n: int, lo: float, hi: float, rng) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=rng)


class StudentMethod(Method):
    """The contract for methods that train one student (``self.student``, optimizer ``self.opt``,
    typed config ``self.cfg``): its EMA is what gets evaluated and saved."""

    def networks(self):
        return {"student": self.student.net}

    def optimizers(self):
        return {"student": self.opt}

    def ema_network(self):
        return "student"

    def generator(self, net=None):
        return self.student if net is None else self.student.like(net)

    def config(self):
        return {"method": self.name, **asdict(self.cfg)}
