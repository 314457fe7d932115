"""What every architecture-distillation method shares (docs/methods.md section 11): a student network
built from the teacher's by an operation of the method (``build_student``) and initialised from its
weights, trained on real images with the denoising loss plus output- and feature-level knowledge
distillation from the frozen teacher at the same noisy input (BK-SDM, Kim et al. 2023, Eq. 4):

    L = w_task ||eps_s - eps||^2 + w_out ||eps_s - eps_t||^2 + w_feat sum_l ||F_s^l - F_t^l||^2

(in the parameterisation's own weighting, losses.prediction_mse; an EDM denoiser's is a unit MSE on
its raw outputs). The student keeps the teacher's noise levels, conditioning and sampler: it is a
smaller many-step model, evaluated at the same sampler and NFE as the teacher, and a starting point
for any few-step method (``fewstep distill --teacher RUN_DIR``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ...nets.cond import drop_cond
from ...noise import TimeSampler
from ...noise.precond import Denoiser
from ...samplers.generate import SamplingSpec
from ..base import OptimConfig, StudentMethod, cond_of, frozen_copy
from ..losses import feature_kd, prediction_mse


@dataclass
class KDConfig:
    """The KD objective and the evaluation sampler every compression method shares."""

    nfe: int = 16  # network evaluations the compressed model is evaluated with (like the teacher's row)
    sampler: str = "euler"  # its sampler (heun: NFE = 2 steps - 1)
    grid: str = "karras"
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-5))  # BK-SDM: AdamW, constant 5e-5
    time_sampler: TimeSampler = field(default_factory=TimeSampler)  # noise levels (EDM log-normal)
    task_weight: float = 1.0  # denoising loss on the real image (BK-SDM lambda = 1 for each term)
    out_kd_weight: float = 1.0  # output KD
    feat_kd_weight: float = 1.0  # feature KD over every stage the student shares with the teacher
    normalise_features: bool = False  # divide each stage's KD by its teacher features' power (LAPTOP-Diff)
    label_dropout: float = 0.1  # train this share with the null label, as the teacher, so CFG keeps working

    def __post_init__(self):
        if isinstance(self.time_sampler, dict):
            self.time_sampler = TimeSampler(**self.time_sampler)
        if self.nfe < 1:
            raise ValueError(f"nfe must be >= 1, got {self.nfe}")
        if self.sampler == "heun" and self.nfe % 2 == 0:
            raise ValueError(f"heun takes an odd NFE (2 steps - 1), got {self.nfe}")
        if min(self.task_weight, self.out_kd_weight, self.feat_kd_weight) < 0:
            raise ValueError("loss weights must be >= 0")
        if not 0 <= self.label_dropout < 1:
            raise ValueError(f"label_dropout must be in [0, 1), got {self.label_dropout}")


class CompressionMethod(StudentMethod):
    """A student of another architecture, trained with denoising + output KD + feature KD."""

    architectures = ("unet",)  # the teacher's network must return its stages (fewstep's UNet does)

    def __init__(self, teacher: Denoiser, cfg=None, shape=(), num_classes: int = 0):
        super().__init__(teacher, cfg, shape, num_classes)  # refuses other architectures
        self.teacher = frozen_copy(teacher)
        net = self.build_student(self.teacher.net)
        self.student = Denoiser(net, teacher.process, teacher.param, teacher.sigma_data).train().requires_grad_(True)
        self.freeze_unchanged(self.student.net)
        self.opt = self.cfg.optim.build(self.student.net.parameters())

    def build_student(self, teacher_net: nn.Module) -> nn.Module:
        """The student network, initialised from ``teacher_net`` (not modified)."""
        raise NotImplementedError

    def freeze_unchanged(self, net: nn.Module) -> None:
        """Methods that train only new parameters (LinFusion) freeze the rest here."""

    def default_sampling(self):
        c = self.cfg
        steps = (c.nfe + 1) // 2 if c.sampler == "heun" else c.nfe
        return SamplingSpec(c.sampler, steps, c.grid)

    def losses(self, x0, cond, t, eps):
        """Per-sample (task, output KD, feature KD) at the noisy input x_t = add_noise(x0, eps, t)."""
        x_t = self.process.add_noise(x0, eps, t)
        (x0_s, _), f_s = self.student.features(x_t, t, cond)
        with torch.no_grad():
            (x0_t, _), f_t = self.teacher.features(x_t, t, cond)
        task = prediction_mse(self.student, x0_s, x0, x_t, t)
        out_kd = prediction_mse(self.student, x0_s, x0_t.detach(), x_t, t)
        pairs = self.kd_features(f_s, f_t)
        feat_kd = feature_kd({k: f_s[k] for k in pairs}, {k: f_t[k] for k in pairs}, self.cfg.normalise_features)
        return task, out_kd, feat_kd

    def kd_features(self, f_s: dict, f_t: dict) -> list[str]:
        """The features feature KD compares: every stage output the student shares with the teacher
        (BK-SDM); KOALA picks the decoder's self-attention instead."""
        return [k for k in f_s if k in f_t and "." not in k]

    def step(self, batch, it, ctx):
        c = self.cfg
        x0 = batch["x"]
        cond = drop_cond(cond_of(batch), c.label_dropout, ctx.rng)
        t = c.time_sampler.sample(self.process, x0.shape[0], ctx.rng)
        eps = ctx.randn(x0.shape)
        with ctx.autocast():
            task, out_kd, feat_kd = self.losses(x0, cond, t, eps)
            loss = c.task_weight * task + c.out_kd_weight * out_kd + c.feat_kd_weight * feat_kd
        self.update(ctx, loss)
        return {"loss": loss.mean(), "task": task.mean(), "out_kd": out_kd.mean(), "feat_kd": feat_kd.mean()}
