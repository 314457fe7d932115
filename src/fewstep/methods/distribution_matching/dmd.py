"""Distribution Matching Distillation (DMD, Yin et al. 2023) - and the machinery DMD2 extends.

Networks: generator G (a copy of the teacher, trainable), real score = the frozen teacher, fake
score = a trainable copy of the teacher that tracks the generator's output distribution.

Generator update (DMD Eq. 7, as tianweiy/DMD2 main/edm/edm_guidance.py implements it):
    t ~ Karras index U{lo..hi};  x_t = x_hat + sigma_t eps  (no grad)
    g = (mu_fake(x_t) - mu_real(x_t)) / mean_CHW |x_hat - mu_real(x_t)|     (per-sample normaliser)
    L_DM = 0.5 || x_hat - sg(x_hat - g) ||^2     (its gradient w.r.t. x_hat is exactly g)
DMD (v1) adds a regression loss to teacher ODE outputs for fixed noise (Sec. 3.3), L2 here
(LPIPS in the paper, which has no offline weights for our data), and updates 1:1.
Fake-score update: the teacher's denoising loss on sg(x_hat) (EDM weighting 1/sigma^2 + 1/sigma_d^2).
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch

from ...noise.guidance import guided
from ...noise.precond import Denoiser
from ...samplers import make_grid, multistep
from ...samplers.grids import student_levels
from ...samplers.ode import coeffs, initial_noise
from ...nets.lora import trainable
from ..base import Method, SamplingSpec, cond_of, trainable_copy
from ..registry import register
from ..teacher import denoising_loss


@dataclass
class DMDConfig:
    nfe: int = 1  # student steps; > 1 trains with backward simulation (DMD2 Sec. 4.5)
    student_sigmas: list | None = None  # explicit sigma_hat list of the student's steps (overrides below)
    student_sigma_min: float = 0.5  # multi-step: last (smallest) student level, Karras-spaced from the top
    real_cfg: float = 1.0  # CFG scale on the real score only (1 = none; DMD2 ImageNet uses none)
    dm_index_range: tuple = (0.02, 0.98)  # DMD2 min/max_step_percent of a 1000-level Karras grid
    num_levels: int = 1000  # Karras grid the critic and DM loss draw noise levels from (DMD2 num_train_timesteps)
    normalize: str = "per_sample"  # DMD2 official; "batch" = one batch-global scalar (FastVideo)
    gen_lr: float = 2e-6  # DMD2 ImageNet-64
    critic_lr: float = 2e-6
    betas: tuple = (0.9, 0.999)  # METHODS.md: AdamW (0.9, 0.999); the MNIST preset uses (0, 0.999)
    weight_decay: float = 0.01
    gen_every: int = 1  # generator update every N iterations (DMD: 1; DMD2: 5, dfake_gen_update_ratio)
    schedule: str = "official"  # "official": critic every iteration, generator on every gen_every-th too;
    #                             "exclusive": generator iterations skip the critic (NVlabs/FastGen)
    gen_grad_clip: float = 10.0  # DMD2 max_grad_norm
    critic_grad_clip: float = 10.0
    regression_weight: float = 0.25  # DMD v1 lambda_reg; 0 disables
    regression_pairs: int = 1000  # teacher ODE pairs cached for the regression loss
    regression_steps: int = 16  # DPM-Solver++(2M) steps that make the pairs
    regression_warmup: int = 0  # iterations of regression-only generator training first (DMD2 SDXL)
    regression_batch: int = 64
    lora_rank: int = 0  # > 0: the generator is LoRA adapters on a frozen teacher copy (DMD2 SDXL LoRA)
    lora_alpha: float = 0.0  # LoRA scale numerator (0 = the rank)
    lora_targets: list | None = None  # module names to adapt (None = attention, feed-forward, convs)

    def __post_init__(self):
        self.dm_index_range = tuple(self.dm_index_range)
        self.betas = tuple(self.betas)
        if self.nfe < 1:
            raise ValueError(f"nfe must be >= 1, got {self.nfe}")
        if self.normalize not in ("per_sample", "batch"):
            raise ValueError(f"normalize must be 'per_sample' or 'batch', got {self.normalize!r}")
        if self.schedule not in ("official", "exclusive"):
            raise ValueError(f"schedule must be 'official' or 'exclusive', got {self.schedule!r}")
        lo, hi = self.dm_index_range
        if not 0 <= lo < hi <= 1:
            raise ValueError(f"dm_index_range must satisfy 0 <= lo < hi <= 1, got {self.dm_index_range}")
        if self.gen_every < 1 or self.gen_lr <= 0 or self.critic_lr <= 0 or self.real_cfg < 0:
            raise ValueError("gen_every must be >= 1, learning rates > 0 and real_cfg >= 0")
        if self.student_sigmas is not None and len(self.student_sigmas) != self.nfe:
            raise ValueError(f"student_sigmas has {len(self.student_sigmas)} levels but nfe is {self.nfe}")


def dm_gradient(x_hat, mu_fake, mu_real, normalize: str = "per_sample"):
    """DMD's generator gradient g = (mu_fake - mu_real) / mean|x_hat - mu_real| (DMD2 edm_guidance)."""
    dims = list(range(1, x_hat.ndim))
    if normalize == "per_sample":
        w = (x_hat - mu_real).abs().mean(dim=dims, keepdim=True)
    else:
        w = (x_hat - mu_real).abs().mean()
    return torch.nan_to_num((mu_fake - mu_real) / w)


def dm_loss(x_hat, grad):
    """0.5 ||x_hat - sg(x_hat - g)||^2 per sample (mean over elements): d/dx_hat = g / numel."""
    return 0.5 * ((x_hat - (x_hat - grad).detach()) ** 2).flatten(1).mean(1)


class DistributionMatchingBase(Method):
    """Shared by DMD and DMD2: networks, noise-level grid, student sampling, DM and critic losses."""

    Config = DMDConfig

    def __init__(self, teacher: Denoiser, cfg=None, shape=None, num_classes: int = 0):
        self.cfg = cfg or self.Config()
        self.teacher = teacher.eval().requires_grad_(False)
        self.process = teacher.process
        self.G = trainable_copy(teacher, self.cfg.lora_rank, self.cfg.lora_alpha, self.cfg.lora_targets)
        self.fake = copy.deepcopy(teacher).train().requires_grad_(True)
        self.shape, self.num_classes = tuple(shape), num_classes
        self.levels = make_grid("karras", self.process, self.cfg.num_levels, final_zero=False).flip(0)  # ascending
        self.student_sigmas = self._student_sigmas()
        self.opt_g = torch.optim.AdamW(trainable(self.G.net.parameters()), lr=self.cfg.gen_lr, betas=self.cfg.betas,
                                       weight_decay=self.cfg.weight_decay)
        self.opt_c = torch.optim.AdamW(self.critic_parameters(), lr=self.cfg.critic_lr, betas=self.cfg.betas,
                                       weight_decay=self.cfg.weight_decay)
        self.pairs = None

    # -- contract --------------------------------------------------------------------------------
    def networks(self):
        return {"generator": self.G.net, "fake": self.fake.net}

    def critic_parameters(self):
        return list(self.fake.net.parameters())

    def optimizers(self):
        return {"generator": self.opt_g, "critic": self.opt_c}

    def ema_network(self):
        return "generator"

    def generator(self, net=None):
        return self.G if net is None else self.G.like(net)

    def default_sampling(self):
        return SamplingSpec("multistep", self.cfg.nfe, "karras", 1.0, [float(s) for s in self.student_sigmas])

    def config(self):
        return {"method": self.name, **asdict(self.cfg), "student_sigmas_resolved": [float(s) for s in self.student_sigmas]}

    # -- pieces ----------------------------------------------------------------------------------
    def _student_sigmas(self) -> torch.Tensor:
        """The student's noise levels, followed by 0. One step: the process's top level."""
        return student_levels(self.process, self.cfg.nfe, self.cfg.student_sigma_min, self.cfg.student_sigmas)

    def sample_levels(self, n, rng, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
        """Native times at Karras-grid indices drawn uniformly from [lo, hi] of the grid."""
        L = self.cfg.num_levels
        idx = torch.randint(int(lo * L), min(int(hi * L) + 1, L), (n,), generator=rng)
        return self.process.t_from_sigma_hat(self.levels[idx]).float()

    @property
    def device(self):
        return next(self.G.net.parameters()).device

    def noise(self, shape, rng):
        return torch.randn(shape, generator=rng).to(self.device)

    def student_sample(self, cond, rng, n: int, stage: int | None = None, shared_rng=None):
        """x_hat with gradient through the last generator call. Multi-step students start from a
        stage s (DMD2 backward simulation: s steps of the student itself without gradient), drawn from
        ``shared_rng`` so every process of a multi-process run picks the same stage."""
        sig = self.student_sigmas
        k = len(sig) - 1
        s = int(torch.randint(0, k, (1,), generator=shared_rng or rng)) if stage is None and k > 1 else (stage or 0)
        x = initial_noise(self.process, sig, (n, *self.shape), generator=rng, device=self.device)
        if s > 0:
            with torch.no_grad():
                x = multistep(self.G, x, sig[: s + 1], cond=cond, generator=rng)
        t, _, _ = coeffs(self.process, float(sig[s]))
        return self.G(x, torch.full((n,), float(t)), cond)

    def dm_generator_loss(self, x_hat, cond, rng):
        c = self.cfg
        n = x_hat.shape[0]
        t = self.sample_levels(n, rng, *c.dm_index_range)
        with torch.no_grad():
            x_t = self.process.add_noise(x_hat.detach(), self.noise(x_hat.shape, rng), t)
            mu_fake = self.fake(x_t, t, cond).float()  # fake score: no CFG (DMD2)
            mu_real = guided(self.teacher, c.real_cfg)(x_t, t, cond).float()
            grad = dm_gradient(x_hat.detach().float(), mu_fake, mu_real, c.normalize)
        return dm_loss(x_hat.float(), grad), grad

    def fake_score_loss(self, x_fake, cond, rng):
        t = self.sample_levels(x_fake.shape[0], rng)
        return denoising_loss(self.fake, x_fake.detach(), t, self.noise(x_fake.shape, rng), cond)

    def regression_loss(self, rng):
        """L2 between G(z) and the teacher's ODE output for the same z (DMD Sec. 3.3)."""
        from ...data.pairs import one_step_regression, pair_batch

        z, y, cond = pair_batch(self.pairs, self.cfg.regression_batch, rng, self.device, bool(self.num_classes))
        return one_step_regression(self.G, float(self.student_sigmas[0]), z, y, cond)

    def needs_pairs(self) -> bool:
        return self.cfg.regression_weight > 0 or self.cfg.regression_warmup > 0

    def pair_spec(self) -> SamplingSpec:
        return SamplingSpec("dpmpp2m", self.cfg.regression_steps, "karras", self.cfg.real_cfg)

    def regression_warmup_step(self, ctx) -> dict:
        """Regression-only generator update (the optional warm start, DMD2 one-step SDXL)."""
        with ctx.autocast():
            reg = self.regression_loss(ctx.rng)
        ctx.update(reg, "generator", clip=self.cfg.gen_grad_clip)
        return {"loss_reg": reg.mean()}

    def is_generator_iteration(self, it: int) -> bool:
        return it % self.cfg.gen_every == 0

    def prepare(self, cache_dir) -> None:
        """Cache the teacher ODE pairs the regression loss needs (same pairs on every resume)."""
        if not self.needs_pairs():
            return
        from ...data.pairs import teacher_pairs

        self.pairs = teacher_pairs(self.teacher, self.cfg.regression_pairs, self.pair_spec(), self.shape,
                                   self.num_classes, seed=12345, cache_dir=cache_dir)


@register("dmd")
class DMD(DistributionMatchingBase):
    """DMD v1: DM gradient + regression to teacher ODE pairs, generator and fake score 1:1."""

    def step(self, batch, it, ctx):
        cond = cond_of(batch)
        n = batch["x"].shape[0]
        logs = {}
        if it < self.cfg.regression_warmup:
            return self.regression_warmup_step(ctx)
        with ctx.autocast():
            x_hat = self.student_sample(cond, ctx.rng, n, shared_rng=getattr(ctx, "shared_rng", None))
            l_dm, grad = self.dm_generator_loss(x_hat, cond, ctx.rng)
            loss = l_dm
            if self.cfg.regression_weight > 0:
                reg = self.regression_loss(ctx.rng)
                loss = loss + self.cfg.regression_weight * reg.mean()
                logs["loss_reg"] = reg.mean()
        ctx.update(loss, "generator", clip=self.cfg.gen_grad_clip)
        with ctx.autocast():
            l_fake = self.fake_score_loss(x_hat.detach(), cond, ctx.rng)
        ctx.update(l_fake, "critic", clip=self.cfg.critic_grad_clip)
        logs.update(loss_dm=l_dm.mean(), loss_fake=l_fake.mean(), dm_grad_abs=grad.abs().mean())
        return logs
