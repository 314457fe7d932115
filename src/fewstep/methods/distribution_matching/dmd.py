"""DMD v1 (Yin et al. 2023, "One-step Diffusion with Distribution Matching Distillation").

The distribution-matching gradient (base.py) plus a regression loss to teacher ODE outputs for fixed
noise (Sec. 3.3; L2 here, LPIPS in the paper, which has no offline weights for our data), student and
fake score updated 1:1.
"""
from __future__ import annotations

from ...config import DistillConfig, TrainSettings
from ..base import OptimConfig
from .base import DistributionMatchingBase, DMDConfig


def cpu_optim(lr: float) -> OptimConfig:
    """What a CPU prototype found to work for DM students on small data (docs/notes.md): Adam betas
    (0, 0.999), no weight decay, the same LR for student and critic."""
    return OptimConfig(lr=lr, betas=(0.0, 0.999), weight_decay=0.0, grad_clip=10.0)


class DMD(DistributionMatchingBase):
    """DMD v1: DM gradient + regression to teacher ODE pairs, student and fake score 1:1."""

    name = "dmd"
    presets = {
        "mnist": DistillConfig(DMDConfig(optim=cpu_optim(3e-4), critic_optim=cpu_optim(3e-4), regression_pairs=1000),
                               TrainSettings(max_iters=400)),
        "digits": DistillConfig(DMDConfig(optim=cpu_optim(3e-4), critic_optim=cpu_optim(3e-4)),
                                TrainSettings(max_iters=200)),
        "toy2d": DistillConfig(DMDConfig(optim=cpu_optim(1e-3), critic_optim=cpu_optim(1e-3)),
                               TrainSettings(max_iters=500, batch_size=256, bf16=False, eval_n=2000)),
    }

    def dm_step(self, batch, cond, n, it, ctx):
        logs = {}
        with ctx.autocast():
            x_hat = self.student_sample(cond, ctx.rng, n, shared_rng=ctx.shared_rng)
            l_dm, grad = self.dm_student_loss(x_hat, cond, ctx.rng)
            loss = l_dm
            if self.cfg.regression_weight > 0:
                reg = self.regression_loss(ctx.rng)
                loss = loss + self.cfg.regression_weight * reg.mean()
                logs["loss_reg"] = reg.mean()
        self.update(ctx, loss)
        with ctx.autocast():
            l_fake = self.fake_score_loss(x_hat.detach(), cond, ctx.rng)
        self.update_critic(ctx, l_fake)
        logs.update(loss_dm=l_dm.mean(), loss_fake=l_fake.mean(), dm_grad_abs=grad.abs().mean())
        return logs
