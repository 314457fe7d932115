"""DMD2 (Yin et al. 2024, "Improved Distribution Matching Distillation").

On top of DMD (base.py, dmd.py), following tianweiy/DMD2 main/edm/*:
* no regression loss; two time-scale update rule: the critic (fake score + GAN head) updates every
  iteration and the generator every ``gen_every``-th (Sec. 4.2; dfake_gen_update_ratio = 5).
  ``schedule="exclusive"`` is NVlabs/FastGen's alternation (generator iterations skip the critic);
* a GAN: a small head on the fake score's bottleneck features classifies noised real vs generated
  samples (Sec. 4.3). Critic: softplus(D(fake)) + softplus(-D(real)) x 1e-2; generator:
  softplus(-D(G(z))) x 3e-3 (ImageNet-64 weights). The generator's GAN gradient flows through the
  frozen fake score to x_hat but never updates it;
* multi-step students trained with backward simulation (Sec. 4.5): see ``student_sample``. With
  ``critic_per_stage`` (ours, not in the paper) each backward-simulation stage has its own fake score and
  GAN head, fitted to that stage's outputs only, as Phased DMD's fresh fake score per phase is: one
  shared critic fits the mixture of the stages' outputs and hands each stage the mixture's error
  (docs/decisions.md).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ...config import DistillConfig, TrainSettings
from ...noise.precond import Denoiser
from ..base import frozen
from .base import DistributionMatchingBase, DMDConfig
from .dmd import cpu_optim


@dataclass
class DMD2Config(DMDConfig):
    gen_every: int = 5  # DMD2 dfake_gen_update_ratio (5 ImageNet/SDXL, 10 SD1.5)
    regression_weight: float = 0.0  # DMD2 drops DMD's regression loss
    gan_gen_weight: float = 3e-3  # DMD2 ImageNet-64 gen_cls_loss_weight
    gan_disc_weight: float = 1e-2  # guidance_cls_loss_weight; larger collapses the fake score (DMD2 #73)
    gan_index_max: float = 1.0  # diffusion GAN: tau uniform over this fraction of the Karras grid
    critic_per_stage: bool = False  # multi-step: one fake score + GAN head per backward-simulation stage, each
    #                                 trained on (and scoring) that stage's outputs only; the stage is drawn
    #                                 per iteration. False = DMD2's one critic for every stage
    stage_critics_ok: ClassVar[bool] = True  # members whose critic is not one per student stage set False

    def __post_init__(self):
        super().__post_init__()
        if self.gan_gen_weight < 0 or self.gan_disc_weight < 0 or not 0 < self.gan_index_max <= 1:
            raise ValueError("GAN weights must be >= 0 and gan_index_max in (0, 1]")
        if self.critic_per_stage and not self.stage_critics_ok:
            raise ValueError(f"critic_per_stage is not supported by {type(self).__name__}'s method")
        if self.critic_per_stage and (self.nfe < 2 or self.stage_draw != "batch"):
            raise ValueError("critic_per_stage needs a multi-step student (nfe >= 2) with stage_draw='batch', got "
                             f"nfe={self.nfe}, stage_draw={self.stage_draw!r}")


class DiscriminatorHead(nn.Module):
    """DMD2's cls_pred_branch: stride-2 k4 conv + GroupNorm + SiLU, pooled, 1x1 conv to a logit.
    Pooling instead of a second fixed-stride conv lets one head fit any bottleneck resolution.
    Vectors (MLP bottlenecks) get a two-layer MLP head."""

    def __init__(self, feat_shape):
        super().__init__()
        self.feat_shape = tuple(feat_shape)
        c = feat_shape[0]
        if len(feat_shape) == 3:
            self.body = nn.Sequential(nn.Conv2d(c, c, 4, stride=2, padding=1), nn.GroupNorm(min(32, c // 4), c), nn.SiLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, 1, 1), nn.Flatten())
        else:
            self.body = nn.Sequential(nn.Linear(c, c), nn.SiLU(), nn.Linear(c, 1))

    def forward(self, feats):
        return self.body(feats).squeeze(1)


def bottleneck_head(teacher: Denoiser, shape, num_classes: int) -> DiscriminatorHead:
    """A discriminator head sized by probing the teacher's bottleneck (the fake score's features have
    the same shape); DMD2's GAN and SiDA's discriminator use it."""
    with torch.no_grad():
        n = 2
        x = torch.zeros((n, *shape))
        cond = torch.zeros(n, dtype=torch.long) if num_classes else None
        if hasattr(teacher.net, "example_cond"):  # e.g. prompt embeddings for a text-to-image UNet
            cond = teacher.net.example_cond(n)
        feats = teacher.bottleneck(x, torch.ones(n), cond)
    return DiscriminatorHead(tuple(feats.shape[1:]))


def critic_params(fake: Denoiser, head) -> list:
    """The trainable parameters of one critic: a fake score and its discriminator head (if any)."""
    return list(fake.net.parameters()) + (list(head.parameters()) if head is not None else [])


class FakeScoreDiscriminator:
    """A discriminator head on the fake score's bottleneck, trained with it as the critic and frozen with it
    during student updates (DMD2's GAN, SiDA's discriminator). Mixed in before the family base."""

    def __init__(self, teacher: Denoiser, cfg=None, shape=(), num_classes: int = 0):
        c = cfg if cfg is not None else self.Config()
        try:
            self.head = bottleneck_head(teacher, shape, num_classes)
        except NotImplementedError as e:  # a transformer teacher (SD3, Flux) has no bottleneck features
            if c.gan_gen_weight > 0 or c.gan_disc_weight > 0:
                raise ValueError(f"{e}: train without it (gan_gen_weight=0, gan_disc_weight=0)") from None
            self.head = None
        super().__init__(teacher, cfg, shape, num_classes)

    def networks(self):
        return {**super().networks(), **({"disc": self.head} if self.head is not None else {})}

    def critic_parameters(self):
        return critic_params(self.fake, self.head)

    def critic_networks(self) -> list:
        """The networks a student update reads without training them (frozen during it)."""
        return [self.fake] + ([self.head] if self.head is not None else [])


class DMD2(FakeScoreDiscriminator, DistributionMatchingBase):
    """DMD2: DM gradient + a GAN on the fake score's features, critic updated more often, no regression."""

    name = "dmd2"
    Config = DMD2Config
    presets = None  # set below (dm_presets needs the class's config)

    def __init__(self, teacher: Denoiser, cfg=None, shape=(), num_classes: int = 0):
        super().__init__(teacher, cfg, shape, num_classes)
        self.stage = None  # the backward-simulation stage this iteration trains (set with critic_per_stage)
        if self.cfg.critic_per_stage:
            # attributes, not a list: device moves and DDP find a method's networks among its attributes
            for s in range(self.cfg.nfe):
                fresh = s > 0
                setattr(self, f"stage_fake{s}", self.build_fake(self.teacher) if fresh else self.fake)
                head = self.head if not fresh or self.head is None else bottleneck_head(self.teacher, shape, num_classes)
                setattr(self, f"stage_head{s}", head)
            self.opt_critic = self.cfg.critic_optim.build(self.critic_parameters())

    # -- one critic, or one per stage ------------------------------------------------------------
    def stage_critics(self) -> list[tuple]:
        """(fake score, GAN head or None) pairs: one per stage with ``critic_per_stage``, else the one critic."""
        if not hasattr(self, "stage_fake0"):
            return [(self.fake, self.head)]
        return [(getattr(self, f"stage_fake{s}"), getattr(self, f"stage_head{s}")) for s in range(self.cfg.nfe)]

    def use_stage(self, s: int) -> None:
        """Train stage s this iteration: its critic becomes ``self.fake`` / ``self.head``."""
        self.stage = s
        self.fake, self.head = self.stage_critics()[s]

    def networks(self):
        nets = {"student": self.student.net}
        for s, (fake, head) in enumerate(self.stage_critics()):
            nets["fake" if s == 0 else f"fake{s}"] = fake.net
            if head is not None:
                nets["disc" if s == 0 else f"disc{s}"] = head
        return nets

    def critic_parameters(self):
        return [p for pair in self.stage_critics() for p in critic_params(*pair)]

    def critic_networks(self) -> list:
        return [m for pair in self.stage_critics() for m in pair if m is not None]

    def student_sample(self, cond, rng, n, stage=None, shared_rng=None):
        """Backward simulation from the iteration's stage when one critic per stage fixes it."""
        return super().student_sample(cond, rng, n, self.stage if stage is None else stage, shared_rng)

    def gan_levels(self, n: int, rng) -> torch.Tensor:
        """Noise levels of the diffusion GAN: the cleaner ``gan_index_max`` fraction of the grid."""
        return self.sample_levels(n, rng, 0.0, self.cfg.gan_index_max)

    def gan_logits(self, x, cond, rng, head=None):
        """Logits of ``head`` (default the GAN head) on the fake score's bottleneck at noised x."""
        t = self.gan_levels(x.shape[0], rng)
        x_t = self.process.add_noise(x, self.noise(x.shape, rng), t)
        return (head or self.head)(self.fake.bottleneck(x_t, t, cond).float())

    def student_loss(self, cond, n, ctx, logs):
        """(per-sample student loss, x_hat): the DM term, DMD2's GAN term and the optional regression."""
        c = self.cfg
        x_hat = self.student_sample(cond, ctx.rng, n, shared_rng=ctx.shared_rng)
        l_dm, grad = self.dm_student_loss(x_hat, cond, ctx.rng)
        loss = l_dm
        if c.gan_gen_weight > 0:
            l_gan = F.softplus(-self.gan_logits(x_hat, cond, ctx.rng))
            loss = loss + c.gan_gen_weight * l_gan
            logs["loss_gen_gan"] = l_gan.mean()
        if c.regression_weight > 0:
            reg = self.regression_loss(ctx.rng)
            loss = loss.mean() + c.regression_weight * reg.mean()
            logs["loss_reg"] = reg.mean()
        logs.update(loss_dm=l_dm.mean(), dm_grad_abs=grad.abs().mean())
        return loss, x_hat

    def student_update(self, cond, n, ctx, logs):
        """One student step; the critic's networks pass gradients to x_hat but are not updated (Sec. 4.3)."""
        with frozen(*self.critic_networks()):
            with ctx.autocast():
                loss, x_hat = self.student_loss(cond, n, ctx, logs)
            self.update(ctx, loss)
        return x_hat.detach()

    def critic_loss(self, x_fake, x_real, cond, ctx, logs):
        """Per-sample critic loss: the fake score's denoising loss on sg(x_hat) + DMD2's GAN term."""
        c = self.cfg
        l_fake = self.fake_score_loss(x_fake, cond, ctx.rng)
        loss = l_fake
        if c.gan_disc_weight > 0:
            d_fake = self.gan_logits(x_fake, cond, ctx.rng)
            d_real = self.gan_logits(x_real, cond, ctx.rng)
            l_d = F.softplus(d_fake) + F.softplus(-d_real)
            loss = loss + c.gan_disc_weight * l_d
            logs.update(loss_disc=l_d.mean(), d_real=torch.sigmoid(d_real).mean(), d_fake=torch.sigmoid(d_fake).mean())
        logs["loss_fake"] = l_fake.mean()
        return loss

    def critic_update(self, x_fake, x_real, cond, ctx, logs):
        with ctx.autocast():
            loss = self.critic_loss(x_fake, x_real, cond, ctx, logs)
        self.update_critic(ctx, loss)

    def dm_step(self, batch, cond, n, it, ctx):
        logs = {}
        x_fake = None
        if self.cfg.critic_per_stage:  # one stage for the student and critic updates of this iteration
            self.use_stage(int(torch.randint(0, self.cfg.nfe, (1,), generator=ctx.shared_rng or ctx.rng)))
            logs["stage"] = float(self.stage)
        gen_it = self.is_student_iteration(it)
        if gen_it:
            x_fake = self.student_update(cond, n, ctx, logs)
        if not gen_it or self.cfg.schedule == "official":
            if x_fake is None:
                with torch.no_grad(), ctx.autocast():
                    x_fake = self.student_sample(cond, ctx.rng, n, shared_rng=ctx.shared_rng).float()
            self.critic_update(x_fake.float(), batch["x"], cond, ctx, logs)
        return logs


def dm_presets(config_cls, **fields) -> dict:
    """MNIST, digits and toy2d runs for a DMD2-family config (``fields`` set on each). MNIST follows what
    a CPU prototype found to work (docs/notes.md): Adam betas (0, 0.999), LR 3e-4 for both networks,
    critic 5x per student update."""
    def cfg(lr):
        return config_cls(optim=cpu_optim(lr), critic_optim=cpu_optim(lr), **fields)

    return {"mnist": DistillConfig(cfg(3e-4), TrainSettings(max_iters=800)),
            "digits": DistillConfig(cfg(3e-4), TrainSettings(max_iters=400)),
            # your own small images (folder:PATH) on a CPU: the MNIST settings, not the papers' GPU ones
            "folder": DistillConfig(cfg(3e-4), TrainSettings(max_iters=800)),
            "toy2d": DistillConfig(cfg(1e-3), TrainSettings(max_iters=1500, batch_size=256, bf16=False, eval_n=2000))}


DMD2.presets = dm_presets(DMD2Config)
# MNIST: real-score CFG 1.15 (class accuracy with less sharpening asked of the DM term), the GAN on the cleaner 40%
# of levels (on 28x28 images the noisier half is nearly pure noise and the head stayed at chance), EMA per student
# update (train/loop.py), 1,200 it. CFG 1.15 against 1.25, three training seeds each (dmd2_levers_mnist.json,
# dmd2_seeds_mnist.json, dmd2_precision_mnist.json): FD 9.52 vs 10.84 mean, lower on every seed; class
# accuracy 0.971 vs 0.978. Trained in fp32 (one seed) the two tie: 10.28 vs 10.00 (docs/decisions.md).
# The generator's GAN weight stays DMD2's 3e-3: 3e-2 (the GAN's pull against the element-averaged DM loss as on
# ImageNet's larger images) reads lower FD on every seed (8.79 vs 9.52 mean, dmd2_gan_weight_mnist.json) but class
# accuracy 0.967, under 0.97 on two of three runs (docs/notes.md).
DMD2.presets["mnist"] = DistillConfig(
    DMD2Config(optim=cpu_optim(3e-4), critic_optim=cpu_optim(3e-4), real_cfg=1.15, gan_index_max=0.4),
    TrainSettings(max_iters=1200))
# your own class folders (the folder demo's default method): the MNIST recipe at CFG 1.25, the scale
# folder_demo.json was measured with (folder teachers are trained with label dropout, so real-score CFG
# works); the demo sets the length from its time budget
DMD2.presets["folder"] = copy.deepcopy(DMD2.presets["mnist"])
DMD2.presets["folder"].method.real_cfg = 1.25
# the mini SD (pipelines/mini_sd.py, --data mnist-captions) with a LoRA student: real-score CFG at the
# teacher's evaluated scale 2 (DMD2 SD1.5 uses 1.75), adapters at a higher LR than the full fake score
DMD2.presets["mnist-captions"] = DistillConfig(
    DMD2Config(optim=cpu_optim(1e-3), critic_optim=cpu_optim(3e-4), real_cfg=2.0), TrainSettings(max_iters=600))
