"""What the distribution-matching family shares (DMD, Yin et al. 2023; DMD2, Yin et al. 2024).

Networks: the student G (a copy of the teacher, trainable), the real score = the frozen teacher, and
the fake score = a trainable copy of the teacher that tracks the student's output distribution.

Student update (DMD Eq. 7, as tianweiy/DMD2 main/edm/edm_guidance.py implements it):
    t ~ Karras index U{lo..hi};  x_t = x_hat + sigma_t eps  (no grad)
    g = (mu_fake(x_t) - mu_real(x_t)) / mean_CHW |x_hat - mu_real(x_t)|     (per-sample normaliser)
    L_DM = 0.5 || x_hat - sg(x_hat - g) ||^2     (its gradient w.r.t. x_hat is exactly g)
Fake-score update: the teacher's denoising loss on sg(x_hat) (EDM weighting 1/sigma^2 + 1/sigma_d^2).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ...nets.cond import index_cond
from ...nets.lora import adapters, add_lora, has_adapters, set_adapters
from ...noise.guidance import guided
from ...noise.precond import Denoiser
from ...samplers import make_grid, multistep
from ...samplers.generate import SamplingSpec
from ...samplers.grids import student_levels
from ...samplers.ode import coeffs, initial_noise, level_coeffs
from ..base import LoRAConfig, OptimConfig, StudentMethod, cond_of, initial_weights, trainable_copy
from ..losses import denoising_loss, pair_regression

STAGE_DRAWS = ("batch", "sample", "curriculum")  # how a multi-step student's backward-simulation stage is drawn


def _dmd2_imagenet_optim() -> OptimConfig:
    # DMD2 ImageNet-64: AdamW (0.9, 0.999), LR 2e-6, weight decay 0.01, max_grad_norm 10 (docs/methods.md)
    return OptimConfig(lr=2e-6, betas=(0.9, 0.999), weight_decay=0.01, grad_clip=10.0)


@dataclass
class DMDConfig:
    nfe: int = 1  # student steps; > 1 trains with backward simulation (DMD2 Sec. 4.5)
    student_sigmas: list[float] | None = None  # explicit sigma_hat list of the student's steps (overrides below)
    student_sigma_min: float = 0.5  # multi-step, student_grid "karras": last (smallest) student level
    student_grid: str = "karras"  # multi-step levels: "karras" from the top to student_sigma_min | "flow":
    #                               uniform in rectified-flow time (DMD2 SDXL: uniform in VP time)
    levels_follow_stage: ClassVar[bool] = False  # members whose noise levels follow the batch's one student level
    stage_draw: str = "batch"  # multi-step backward simulation: "batch" = one stage for the whole batch (DMD2's
    #                            code, shared across processes) | "sample": a stage per sample, so each batch the
    #                            critic fits is the mixture of every stage's outputs (measured worse on
    #                            MNIST at 4 steps: docs/notes.md) | "curriculum": one stage per batch, drawn
    #                            from the stages unlocked so far: in the j-th of nfe equal shares of the run,
    #                            stages 0..j (one network trained phase by phase, as Phased DMD's experts are;
    #                            on MNIST at 4 steps it helped neither seed tried: docs/notes.md)
    real_cfg: float = 1.0  # CFG scale on the real score only (1 = none; DMD2 ImageNet uses none)
    dm_index_range: tuple[float, float] = (0.02, 0.98)  # DMD2 min/max_step_percent of a 1000-level Karras grid
    num_levels: int = 1000  # grid the critic, DM loss and GAN draw noise levels from (DMD2 num_train_timesteps)
    level_grid: str = "auto"  # "karras" (DMD2 EDM code) | "uniform": uniform in native time, which on a
    #                           1000-step VP teacher with dm_index_range (0.02, 0.98) is DMD2 SD's U[20, 980] |
    #                           "auto": karras on EDM teachers, uniform on VP and flow ones (as the official code)
    normalize: str = "per_sample"  # DMD2 official; "batch" = one batch-global scalar (FastVideo)
    optim: OptimConfig = field(default_factory=_dmd2_imagenet_optim)  # the student (generator)
    critic_optim: OptimConfig = field(default_factory=_dmd2_imagenet_optim)  # fake score (and GAN head)
    gen_every: int = 1  # student update every N iterations (DMD: 1; DMD2: 5, dfake_gen_update_ratio)
    schedule: str = "official"  # "official": critic every iteration, student on every gen_every-th too;
    #                             "exclusive": student iterations skip the critic (NVlabs/FastGen)
    regression_weight: float = 0.25  # DMD v1 lambda_reg; 0 disables
    regression_pairs: int = 1000  # teacher ODE pairs cached for the regression loss
    regression_steps: int = 16  # DPM-Solver++(2M) steps that make the pairs
    regression_warmup: int = 0  # iterations of regression-only student training first (DMD2 SDXL)
    regression_batch: int = 64
    lora: LoRAConfig = field(default_factory=LoRAConfig)  # LoRA student (DMD2 SDXL LoRA)
    # a model (folder, run or shipped name) the student starts from instead of the teacher, which stays the
    # real score and the fake score's start: Hyper-SD's last, score-distillation stage from its 1-segment
    # TSCD model (methods/consistency/hyper_sd.py). "" = the teacher (DMD, DMD2)
    init: str = ""

    def __post_init__(self):
        self.dm_index_range = tuple(self.dm_index_range)
        if self.nfe < 1:
            raise ValueError(f"nfe must be >= 1, got {self.nfe}")
        if self.normalize not in ("per_sample", "batch"):
            raise ValueError(f"normalize must be 'per_sample' or 'batch', got {self.normalize!r}")
        if self.schedule not in ("official", "exclusive"):
            raise ValueError(f"schedule must be 'official' or 'exclusive', got {self.schedule!r}")
        lo, hi = self.dm_index_range
        if not 0 <= lo < hi <= 1:
            raise ValueError(f"dm_index_range must satisfy 0 <= lo < hi <= 1, got {self.dm_index_range}")
        if self.level_grid not in ("auto", "karras", "uniform"):
            raise ValueError(f"level_grid must be 'auto', 'karras' or 'uniform', got {self.level_grid!r}")
        if self.stage_draw not in STAGE_DRAWS:
            raise ValueError(f"stage_draw must be one of {STAGE_DRAWS}, got {self.stage_draw!r}")
        if self.stage_draw == "sample" and self.levels_follow_stage:
            raise ValueError(f"{type(self).__name__}'s noise levels follow the batch's one student level: stage_draw "
                             f"must be 'batch', got {self.stage_draw!r}")
        if self.student_grid not in ("karras", "flow"):
            raise ValueError(f"student_grid must be 'karras' or 'flow', got {self.student_grid!r}")
        if self.gen_every < 1 or self.real_cfg < 0 or self.num_levels < 2:
            raise ValueError("gen_every must be >= 1, real_cfg >= 0 and num_levels >= 2")
        if self.regression_pairs < 1 or self.regression_steps < 1 or self.regression_batch < 1:
            raise ValueError("regression_pairs, regression_steps and regression_batch must be >= 1")
        if self.student_sigmas is not None and len(self.student_sigmas) != self.nfe:
            raise ValueError(f"student_sigmas has {len(self.student_sigmas)} levels but nfe is {self.nfe}")


def dm_normalise(diff, x_hat, mu_ref, normalize: str = "per_sample"):
    """DMD2's normaliser: ``diff`` / mean|x_hat - mu_ref|, per sample or (``"batch"``) one batch-wide scalar."""
    dims = list(range(1, x_hat.ndim))
    w = (x_hat - mu_ref).abs().mean(dim=dims, keepdim=True) if normalize == "per_sample" else (x_hat - mu_ref).abs().mean()
    return torch.nan_to_num(diff / w)


def dm_gradient(x_hat, mu_fake, mu_real, normalize: str = "per_sample"):
    """DMD's student gradient g = (mu_fake - mu_real) / mean|x_hat - mu_real| (DMD2 edm_guidance)."""
    return dm_normalise(mu_fake - mu_real, x_hat, mu_real, normalize)


def dm_loss(x_hat, grad):
    """0.5 ||x_hat - sg(x_hat - g)||^2 per sample (mean over elements): d/dx_hat = g / numel."""
    return 0.5 * ((x_hat - (x_hat - grad).detach()) ** 2).flatten(1).mean(1)


def level_grid_for(kind: str, process) -> str:
    """The grid the DM loss, fake score and GAN draw levels from: ``auto`` follows the official code of each
    teacher family, Karras levels for EDM teachers (DMD2 ImageNet) and timesteps uniform in native time for
    VP and flow teachers (DMD2 SD/SDXL: U[20, 980] of 1,000)."""
    if kind != "auto":
        return kind
    return "karras" if process.config()["family"] == "edm" else "uniform"


class AdapterSwitch(Denoiser):
    """The teacher's module with its LoRA adapters on (the fake score) or off (the teacher). Off, it
    also evaluates in eval mode: the trainer puts the module in train mode for the adapters' updates."""

    def __init__(self, den: Denoiser, enabled: bool):
        super().__init__(den.net, den.process, den.param, den.sigma_data, den.boundary)
        self.enabled = enabled

    def raw(self, x, t, cond=None):
        was_training = self.net.training
        if not self.enabled:
            self.net.eval()
        try:
            with adapters(self.net, self.enabled):
                return super().raw(x, t, cond)
        finally:
            self.net.train(was_training)


class DistributionMatchingBase(StudentMethod):
    """Networks, noise-level grid, student sampling, DM and critic losses of the family."""

    Config = DMDConfig

    def __init__(self, teacher: Denoiser, cfg=None, shape=(), num_classes: int = 0):
        super().__init__(teacher, cfg, shape, num_classes)
        self.teacher = teacher.eval().requires_grad_(False)
        self.levels = make_grid(level_grid_for(self.cfg.level_grid, self.process), self.process, self.cfg.num_levels,
                                final_zero=False).flip(0)  # ascending
        self.student_sigmas = student_levels(self.process, self.cfg.nfe, self.cfg.student_sigma_min,
                                             self.cfg.student_sigmas, self.cfg.student_grid)
        self.input_level = self.output_level = None  # levels of the last student call (set by student_sample_at)
        self.it = 0  # the iteration being trained (set by step; the curriculum's stage draw reads it)
        self.student = self.build_student(teacher)
        self.fake = self.build_fake(self.teacher)
        self.opt = self.cfg.optim.build(self.student.net.parameters())
        self.opt_critic = self.cfg.critic_optim.build(self.critic_parameters())
        self.pairs = None

    def build_student(self, teacher: Denoiser) -> Denoiser:
        """The trained generator: a copy of the teacher (LoRA adapters with ``cfg.lora``); members with
        another student (e.g. one expert per phase) override this."""
        return trainable_copy(initial_weights(teacher, self.cfg.init), self.cfg.lora)

    def build_fake(self, teacher: Denoiser) -> Denoiser:
        """The fake score: a full trainable copy of the teacher (VSD instead puts LoRA adapters on the
        teacher itself)."""
        return trainable_copy(teacher)

    def adapter_fake_score(self, teacher: Denoiser, lora: LoRAConfig) -> Denoiser:
        """A fake score that is LoRA adapters injected into the teacher's own module, off by default:
        ``self.teacher`` (and whoever else holds the teacher) keeps computing it, the returned fake score
        switches them on; no second copy of the teacher's weights exists (SwiftBrush's fake score, vsd.py)."""
        if has_adapters(teacher.net):
            raise ValueError(f"{self.name} puts its fake score's LoRA adapters on the teacher's own module, and this "
                             "teacher already carries adapters (from an earlier run in this process?): load a fresh teacher")
        add_lora(teacher.net, lora.rank, lora.alpha, lora.targets)
        set_adapters(teacher.net, False)
        self.teacher = AdapterSwitch(teacher, enabled=False)
        return AdapterSwitch(teacher, enabled=True)

    # -- contract --------------------------------------------------------------------------------
    def networks(self):
        return {"student": self.student.net, "fake": self.fake.net}

    def critic_parameters(self):
        return [p for p in self.fake.net.parameters() if p.requires_grad]  # a LoRA fake score: its adapters alone

    def optimizers(self):
        return {"student": self.opt, "critic": self.opt_critic}

    def default_sampling(self):
        return SamplingSpec("multistep", self.cfg.nfe, "karras", 1.0, [float(s) for s in self.student_sigmas])

    def config(self):
        return {**super().config(), "student_sigmas_resolved": [float(s) for s in self.student_sigmas]}

    # -- pieces ----------------------------------------------------------------------------------
    def sample_levels(self, n, rng, lo: float = 0.0, hi: float = 1.0, below: float | None = None,
                      above: float | None = None) -> torch.Tensor:
        """Native times at grid indices drawn uniformly from the fraction [lo, hi] of the grid (ascending);
        with ``below``, only levels sigma_hat < below (cleaner than a student input at that level); with
        ``above``, only levels sigma_hat >= above (at least as noisy as the level a student's output is
        re-noised to). An empty window keeps its nearest grid level."""
        L = self.cfg.num_levels
        bottom, top = int(lo * L), min(int(hi * L) + 1, L)
        if below is not None:
            top = min(top, max(int((self.levels < below).sum()), bottom + 1))
        if above is not None:
            bottom = min(max(bottom, int((self.levels < above).sum())), top - 1)
        idx = torch.randint(bottom, top, (n,), generator=rng)
        return self.process.t_from_sigma_hat(self.levels[idx]).float()

    @property
    def device(self):
        return next(self.student.net.parameters()).device

    def noise(self, shape, rng):
        return torch.randn(shape, generator=rng).to(self.device)

    def active_sigmas(self) -> torch.Tensor:
        """The student levels this iteration trains (methods with several step counts switch them)."""
        return self.student_sigmas

    def student_sample(self, cond, rng, n: int, stage: int | None = None, shared_rng=None):
        """x_hat with gradient through the last student call. Multi-step students start from a
        stage s (DMD2 backward simulation: s steps of the student itself without gradient), drawn from
        ``shared_rng`` so every process of a multi-process run picks the same stage."""
        return self.student_sample_at(cond, rng, n, stage, shared_rng)[0]

    def student_sample_at(self, cond, rng, n: int, stage: int | None = None, shared_rng=None):
        """(x_hat, the level sigma_hat the student's last call started from). Records that level as
        ``input_level`` and the level its output is re-noised to next (0 after the last step) as
        ``output_level``."""
        sig = self.active_sigmas()
        k = len(sig) - 1
        if stage is None and k > 1 and self.cfg.stage_draw == "sample":
            return self.mixed_stage_sample(cond, rng, n, sig)
        s = int(torch.randint(0, self.stages_unlocked(k), (1,), generator=shared_rng or rng)) \
            if stage is None and k > 1 else (stage or 0)
        x = initial_noise(self.process, sig, (n, *self.shape), generator=rng, device=self.device)
        if s > 0:
            with torch.no_grad():
                x = multistep(self.student, x, sig[: s + 1], cond=cond, generator=rng)
        t, _, _ = coeffs(self.process, float(sig[s]))
        self.input_level, self.output_level = float(sig[s]), float(sig[s + 1])
        return self.student(x, torch.full((n,), float(t)), cond), self.input_level

    def share_of_run(self, it: int, k: int) -> int:
        """j such that iteration ``it`` lies in the j-th of k equal shares of the run (Phased DMD's phase, the
        curriculum's last unlocked stage)."""
        return min(it * k // max(self.max_iters or 1, 1), k - 1)

    def stages_unlocked(self, k: int) -> int:
        """How many of the k backward-simulation stages a batch may draw from: all of them, or under
        ``stage_draw="curriculum"`` 1 + j in the j-th of k equal shares of the run (``self.it``, set per step)."""
        return 1 + self.share_of_run(self.it, k) if self.cfg.stage_draw == "curriculum" else k

    def mixed_stage_sample(self, cond, rng, n: int, sig):
        """Backward simulation with a stage s_i per sample: sample i takes s_i student steps without gradient
        (each step evaluates only the samples still moving), then the student's call at sig[s_i] with
        gradient. ``input_level`` / ``output_level`` are None: there is no single level per batch."""
        stages = torch.randint(0, len(sig) - 1, (n,), generator=rng)
        x = initial_noise(self.process, sig, (n, *self.shape), generator=rng, device=self.device)
        with torch.no_grad():
            for j in range(int(stages.max())):
                moving = (stages > j).nonzero().squeeze(1)
                x[moving] = multistep(self.student, x[moving], sig[j:j + 2], cond=index_cond(cond, moving), generator=rng)
        t, _, _ = level_coeffs(self.process, sig[stages])
        self.input_level = self.output_level = None
        return self.student(x, t, cond), None

    def real_score(self) -> Denoiser:
        """The denoiser the DM gradient pulls towards: the teacher (DisBack walks a path to it)."""
        return self.teacher

    def dm_levels(self, n: int, rng) -> torch.Tensor:
        """Re-noising levels of the DM loss (members that follow the student's step override this)."""
        return self.sample_levels(n, rng, *self.cfg.dm_index_range)

    def dm_student_loss(self, x_hat, cond, rng):
        """(per-sample L_DM, its gradient g) at one noise level per sample."""
        c = self.cfg
        t = self.dm_levels(x_hat.shape[0], rng)
        with torch.no_grad():
            x_t = self.process.add_noise(x_hat.detach(), self.noise(x_hat.shape, rng), t)
            mu_fake = self.fake(x_t, t, cond).float()  # fake score: no CFG (DMD2)
            mu_real = guided(self.real_score(), c.real_cfg)(x_t, t, cond).float()
            grad = dm_gradient(x_hat.detach().float(), mu_fake, mu_real, c.normalize)
        return dm_loss(x_hat.float(), grad), grad

    def fake_score_loss(self, x_fake, cond, rng):
        t = self.sample_levels(x_fake.shape[0], rng)
        return denoising_loss(self.fake, x_fake.detach(), t, self.noise(x_fake.shape, rng), cond)

    def regression_loss(self, rng):
        """L2 between G(z) and the teacher's ODE output for the same z (DMD Sec. 3.3)."""
        from ...data.pairs import pair_batch

        z, y, cond = pair_batch(self.pairs, self.cfg.regression_batch, rng, self.device, bool(self.num_classes))
        return pair_regression(self.student, float(self.student_sigmas[0]), z, y, cond)

    def needs_pairs(self) -> bool:
        return self.cfg.regression_weight > 0 or self.cfg.regression_warmup > 0

    def pair_spec(self) -> SamplingSpec:
        return SamplingSpec("dpmpp2m", self.cfg.regression_steps, "karras", self.cfg.real_cfg)

    def regression_warmup_step(self, ctx) -> dict:
        """Regression-only student update (the optional warm start, DMD2 one-step SDXL)."""
        with ctx.autocast():
            reg = self.regression_loss(ctx.rng)
        self.update(ctx, reg)
        return {"loss_reg": reg.mean()}

    def update_critic(self, ctx, loss) -> bool:
        return ctx.update(loss, "critic", clip=self.cfg.critic_optim.grad_clip)

    def step(self, batch, it, ctx):
        """Regression-only warm-up iterations first (if any), then the method's own iteration."""
        self.it = it
        if it < self.cfg.regression_warmup:
            return self.regression_warmup_step(ctx)
        return self.dm_step(batch, cond_of(batch), batch["x"].shape[0], it, ctx)

    def dm_step(self, batch: dict, cond, n: int, it: int, ctx) -> dict:
        """One iteration of the method's update schedule (the family members differ here)."""
        raise NotImplementedError

    def is_student_iteration(self, it: int) -> bool:
        return it % self.cfg.gen_every == 0

    def prepare(self, cache_dir) -> None:
        """Cache the teacher ODE pairs the regression loss needs (same pairs on every resume)."""
        if not self.needs_pairs():
            return
        from ...data.pairs import teacher_pairs

        self.pairs = teacher_pairs(self.teacher, self.cfg.regression_pairs, self.pair_spec(), self.shape,
                                   self.num_classes, seed=12345, cache_dir=cache_dir)
