"""Hyper-SD's trajectory segmented consistency distillation (TSCD; Ren et al. 2024; docs/methods.md section 7).

Only Hyper-SD's paper text is public, so the mechanics are those of Phased Consistency Models
(G-U-N/Phased-Consistency-Model ``train_pcm_lora_sd15.py``), which TSCD's description matches: the
teacher's probability-flow ODE on a fine grid of N levels (DDIM-50 in PCM; ``num_scales``, ``grid``) is
cut into M segments at the fine indices b_j = floor(j N / M), j = 0..M-1, counted from the clean end
(``segment_starts``). Per sample, a fine index i ~ U{0..N-1} is drawn; the student's prediction at the
noisier end s_{i+1} of that fine step is DDIM-jumped to the clean end of its segment, b(i) = max{b_j <= i}
(PCM's online boundary scalings c_skip = 0, c_out = 1):

    pred   = DDIM(x0_theta(x_{i+1}), eps_theta(x_{i+1}); s_{i+1} -> s_b(i))
    x_i    = one DDIM step of the (optionally guided) teacher from s_{i+1} to s_i
    target = x_i                                          if i = b(i) (the step ends on the boundary)
             DDIM(x0_target(x_i), eps_target(x_i); s_i -> s_b(i))   otherwise, without gradient

and the loss is the consistency distance (pseudo-Huber per element by default, as PCM). The target
network is the student itself without gradient (PCM's LoRA script; ``target="online"``) or an EMA of it
(``target="ema"``, CM's target network). A model trained with M segments samples in M deterministic DDIM
steps on the segment boundaries (top, s_b(M-1), ..., s_b(1), 0).

Hyper-SD trains the segment counts 8 -> 4 -> 2 -> 1 one after another, each from the previous stage's
weights. One run is one stage (as ``progressive``): ``fewstep distill --teacher RUN_DIR --method hyper_sd
--nfe 4`` continues from the 8-segment run, whose model is then also the stage's ODE teacher (the
paper is silent). ``--teacher mnist --set init=RUN_DIR`` instead starts from the previous stage's weights
and keeps the original teacher's ODE: on MNIST the chained ODE teachers made the 2- and 1-segment stages
worse than their predecessors at the same NFE, the original teacher's ODE at a 5x lower LR did not
(docs/notes.md). The model also samples with TCD's stochastic sampler (samplers/few_step.py ``tcd``,
gamma 0.3), which Hyper-SD's models use; DDIM is TCD at gamma 0. Hyper-SD's 1-step score-distillation stage
is distribution matching started from the 1-segment model: ``fewstep distill --teacher mnist --method dmd2
--nfe 1 --set init=RUN_DIR`` (the DMD family's ``init``; benchmarks/hyper_sd_score_mnist.sh). Not here: its
human-feedback stage.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...config import DistillConfig, TrainSettings
from ...nets.ema import ema_update_
from ...noise.guidance import guided
from ...noise.precond import Denoiser
from ...samplers import make_grid
from ...samplers.generate import SamplingSpec
from ...samplers.ode import ddim_to, noised
from ..base import LoRAConfig, OptimConfig, StudentMethod, adam, cond_of, frozen_copy, initial_weights, trainable_copy
from ..losses import CONSISTENCY_LOSSES, consistency_distance


@dataclass
class HyperSDConfig:
    nfe: int = 4  # M, this stage's segments = the model's sampling steps (Hyper-SD: 8 -> 4 -> 2 -> 1)
    num_scales: int = 50  # N, fine steps of the teacher ODE (PCM: DDIM-50)
    grid: str = "flow"  # the fine grid (samplers/grids.py); "uniform" on a 1000-step VP teacher is PCM's DDIM-50
    teacher_cfg: float = 1.0  # CFG scale of the teacher's DDIM step (1 = none)
    target: str = "online"  # "online": the student without gradient (PCM LoRA) | "ema": an EMA target network
    target_ema: float = 0.95  # mu of the EMA target (target="ema")
    loss: str = "huber"  # consistency distance (methods/losses.py): pseudo-Huber per element, as PCM
    huber_c: float = 0.001  # PCM / LCM
    optim: OptimConfig = field(default_factory=lambda: adam(1e-6, grad_clip=1.0))  # PCM SD1.5 LoRA uses 5e-6
    lora: LoRAConfig = field(default_factory=LoRAConfig)  # LoRA student (Hyper-SD ships LoRAs)
    # a model (folder, run or shipped name) the student starts from while --teacher stays the ODE teacher:
    # a later stage from the previous stage's weights with the original teacher's trajectory ("" = the teacher)
    init: str = ""

    def __post_init__(self):
        if self.nfe < 1 or self.num_scales < self.nfe:
            raise ValueError(f"need 1 <= nfe <= num_scales, got nfe={self.nfe}, num_scales={self.num_scales}")
        if self.target not in ("online", "ema"):
            raise ValueError(f"target must be 'online' or 'ema', got {self.target!r}")
        if not 0 <= self.target_ema < 1:
            raise ValueError(f"target_ema must be in [0, 1), got {self.target_ema}")
        if self.loss not in CONSISTENCY_LOSSES:
            raise ValueError(f"loss must be one of {CONSISTENCY_LOSSES}, got {self.loss!r}")
        if self.teacher_cfg < 0 or self.huber_c <= 0:
            raise ValueError("teacher_cfg must be >= 0 and huber_c > 0")


def segment_starts(num_scales: int, segments: int) -> torch.Tensor:
    """Fine indices (from the clean end) where each segment starts: floor(linspace(0, N, M, endpoint=False))."""
    return torch.div(torch.arange(segments) * num_scales, segments, rounding_mode="floor")


def segment_of(i: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """The start b(i) = max{b_j <= i} of the segment holding each fine index i."""
    return starts[(i.unsqueeze(1) >= starts.unsqueeze(0)).sum(1) - 1]


class HyperSD(StudentMethod):
    """One TSCD stage: consistency within each of M segments of the teacher's trajectory."""

    name = "hyper_sd"
    Config = HyperSDConfig
    presets = {
        "mnist": DistillConfig(HyperSDConfig(optim=adam(1e-4, grad_clip=1.0)), TrainSettings(max_iters=600)),
        "toy2d": DistillConfig(HyperSDConfig(optim=adam(1e-3, grad_clip=1.0), loss="l2"),
                               TrainSettings(max_iters=600, batch_size=256, bf16=False, eval_n=2000)),
    }

    def __init__(self, teacher: Denoiser, cfg=None, shape=(), num_classes: int = 0):
        super().__init__(teacher, cfg, shape, num_classes)
        c = self.cfg
        self.teacher = frozen_copy(teacher)
        self.student = trainable_copy(initial_weights(teacher, c.init), c.lora)
        self.target = frozen_copy(self.student) if c.target == "ema" else None
        self.levels = make_grid(c.grid, self.process, c.num_scales).flip(0)  # ascending: levels[0] = 0, levels[N] = top
        self.starts = segment_starts(c.num_scales, c.nfe)
        self.opt = c.optim.build(self.student.net.parameters())

    def networks(self):
        return {"student": self.student.net, **({"target": self.target.net} if self.target is not None else {})}

    def boundary_levels(self, segments: int | None = None) -> list[float]:
        """The k-step sampling grid (default k = M): the top level, then each of k segments' clean end,
        descending to 0. Halving M keeps a subset of the boundaries (floor(2j N / 2k) = floor(j N / k))."""
        starts = self.starts if segments is None else segment_starts(self.cfg.num_scales, segments)
        return [float(self.levels[-1])] + [float(self.levels[b]) for b in starts.flip(0)]

    def default_sampling(self):
        return SamplingSpec("euler", self.cfg.nfe, self.cfg.grid, 1.0, self.boundary_levels())

    def sampling_options(self):
        """DDIM and TCD's stochastic sampler (gamma 0.3) on the M segment boundaries, and DDIM on every
        halving of them (M/2, M/4, ..., 1 steps: what the next stages are compared with at equal NFE)."""
        M, opts = self.cfg.nfe, [self.default_sampling()]
        opts.append(SamplingSpec("tcd", M, self.cfg.grid, 1.0, self.boundary_levels()))
        k = M // 2
        while k >= 1:
            if M % k == 0:  # the k-step boundaries are a subset of the M-step ones
                opts.append(SamplingSpec("euler", k, self.cfg.grid, 1.0, self.boundary_levels(k)))
            k //= 2
        return opts

    def config(self):
        return {**super().config(), "segment_levels": self.boundary_levels()}

    def step(self, batch, it, ctx):
        x = batch["x"]
        n, cond = x.shape[0], cond_of(batch)
        i = torch.randint(0, self.cfg.num_scales, (n,), generator=ctx.rng)
        b = segment_of(i, self.starts)
        sh_start, sh_end, sh_b = self.levels[i + 1], self.levels[i], self.levels[b]
        x_start, _, _, _ = noised(self.process, x, ctx.randn(x.shape), sh_start)
        with ctx.autocast():
            with torch.no_grad():
                x_end, _, _ = ddim_to(guided(self.teacher, self.cfg.teacher_cfg), x_start, sh_start, sh_end, cond)
                target = self.segment_target(x_end.float(), sh_start, sh_end, sh_b, i == b, cond)
            pred, _, _ = ddim_to(self.student, x_start, sh_start, sh_b, cond)
            loss = consistency_distance(pred, target, self.cfg.loss, self.cfg.huber_c)
        if self.update(ctx, loss) and self.target is not None:
            ema_update_(self.target.net, self.student.net, self.cfg.target_ema)
        return {"loss": loss.mean(), "segment": b.float().mean()}

    def segment_target(self, x_end, sh_start, sh_end, sh_b, on_boundary, cond):
        """x_end where the fine step ends on its segment's start, else the target network's jump there
        (boundary samples are evaluated from a valid level, sh_start, and the result discarded)."""
        net = self.target if self.target is not None else self.student
        jumped, _, _ = ddim_to(net, x_end, torch.where(on_boundary, sh_start, sh_end), sh_b, cond)
        keep = on_boundary.view(-1, *([1] * (x_end.ndim - 1))).to(x_end.device)
        return torch.where(keep, x_end, jumped.float())
