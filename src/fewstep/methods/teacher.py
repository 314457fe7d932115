"""Teacher training: denoising score matching (Ho et al. 2020; Karras et al. 2022 for EDM), with the
loss each parameterisation's paper trains with (losses.denoising_loss). Labels are dropped to the null
label with probability ``label_dropout`` so one network serves classifier-free guidance.

The teacher's run configuration and its presets (one per embedded dataset) live here too.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

from ..config import TrainSettings
from ..nets.cond import drop_cond
from ..noise import TimeSampler
from ..noise.precond import Denoiser
from ..samplers.generate import SamplingSpec
from .base import Method, OptimConfig, cond_of
from .losses import denoising_loss


def _teacher_optim() -> OptimConfig:
    return OptimConfig(lr=1e-3, betas=(0.9, 0.999), weight_decay=0.0, grad_clip=1.0)


@dataclass
class TeacherMethodConfig:
    optim: OptimConfig = field(default_factory=_teacher_optim)
    time_sampler: TimeSampler = field(default_factory=TimeSampler)
    label_dropout: float = 0.1  # p of training a sample unconditionally (CFG; Ho & Salimans 2022)

    def __post_init__(self):
        if isinstance(self.time_sampler, dict):
            self.time_sampler = TimeSampler(**self.time_sampler)
        if not 0 <= self.label_dropout < 1:
            raise ValueError(f"label_dropout must be in [0, 1), got {self.label_dropout}")


class DenoisingTeacher(Method):
    """Trains the network it is given (``teacher``) with the denoising loss."""

    name = "teacher"
    Config = TeacherMethodConfig

    def __init__(self, teacher: Denoiser, cfg: TeacherMethodConfig | None = None, shape=(), num_classes: int = 0):
        super().__init__(teacher, cfg, shape, num_classes)
        self.den = teacher
        self.opt = self.cfg.optim.build(self.den.net.parameters())

    def networks(self):
        return {"net": self.den.net}

    def optimizers(self):
        return {"net": self.opt}

    def ema_network(self):
        return "net"

    def generator(self, net=None):
        return self.den if net is None else self.den.like(net)

    def step(self, batch, it, ctx):
        x0 = batch["x"]
        cond = drop_cond(cond_of(batch), self.cfg.label_dropout, ctx.rng)
        t = self.cfg.time_sampler.sample(self.den.process, x0.shape[0], ctx.rng)
        eps = ctx.randn(x0.shape)
        with ctx.autocast():
            loss = denoising_loss(self.den, x0, t, eps, cond)
        ctx.update(loss, "net", clip=self.cfg.optim.grad_clip)
        return {"loss": loss.mean()}

    def default_sampling(self):
        return SamplingSpec("heun", 18, "karras")


# -- the teacher's run configuration and presets -------------------------------------------------
def _train(**kw) -> TrainSettings:
    base = dict(max_iters=4000, batch_size=128, warmup=200, ema_decay=0.999, eval_every=500, ckpt_every=500)
    return TrainSettings(**{**base, **kw})


@dataclass
class TeacherConfig:
    data: str = "mnist"  # dataset spec (fewstep.data.load_dataset)
    arch: dict = field(default_factory=dict)  # architecture config incl. "arch": "unet" | "mlp"
    process: dict = field(default_factory=lambda: {"family": "edm"})  # noise process config
    param: str = "edm"  # denoiser parameterisation (noise/precond.py)
    method: TeacherMethodConfig = field(default_factory=TeacherMethodConfig)
    train: TrainSettings = field(default_factory=_train)  # teachers train longer, with a warm-up and EMA 0.999
    resolution: int | None = None  # folder data only: resize to this side (None: the folder's own)
    channels: int | None = None  # folder data only: 1 grey, 3 RGB (None: the folder's own)
    sized_from_data: bool = False  # the UNet is unet_for(the images' shape), not ``arch`` (folder data)

    def __post_init__(self):
        if not self.arch:
            raise ValueError("teacher config needs an architecture (arch)")

    def to_dict(self) -> dict:
        return asdict(self)


def _unet(**kw):
    return {"arch": "unet", **kw}


def unet_for(shape: tuple) -> dict:
    """A teacher UNet sized from one image's (channels, side): one level per halving down to a 4-8 pixel
    bottleneck (at most 4 levels), self-attention at the lowest level only, 32 base channels (the
    shipped MNIST teacher's width)."""
    c, side = int(shape[0]), int(shape[-1])
    levels = 1
    while levels < 4 and side // 2 ** levels >= 4:
        levels += 1
    ch_mult = (1,) + (2,) * (levels - 1)
    return _unet(in_channels=c, image_size=side, channels=32, ch_mult=ch_mult, num_res_blocks=1,
                 attn_levels=(levels - 1,), time_scale=1000.0)


TEACHER_PRESETS: dict[str, TeacherConfig] = {
    # The shipped MNIST teacher: 1.1 M-param UNet, EDM (Karras et al. 2022) preconditioning and
    # log-normal sigma sampling, bf16 autocast, ~0.6 s/it at batch 128 on 2 CPU threads.
    "mnist": TeacherConfig(
        data="mnist",
        arch=_unet(in_channels=1, image_size=28, channels=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_levels=(2,),
                   num_classes=10, time_scale=1000.0),
        train=_train()),
    # Small and fast: 16x16 digits, for tests and quick checks.
    "digits": TeacherConfig(
        data="digits",
        arch=_unet(in_channels=1, image_size=16, channels=32, ch_mult=(1, 2), num_res_blocks=1, attn_levels=(1,),
                   num_classes=10, time_scale=1000.0),
        train=_train(max_iters=2000)),
    # Your own image folder (folder:PATH): the UNet is sized from the images (unet_for) at their own
    # resolution and colour mode unless --resolution/--channels say otherwise. Batch 64: on a CPU time
    # budget twice the updates at half the batch reach a lower FD sooner (docs/notes.md, the folder demo).
    "folder": TeacherConfig(data="folder", arch=_unet(), sized_from_data=True,
                            train=_train(max_iters=2000, batch_size=64)),
    # 2-D mixtures: residual MLP, seconds per hundred iterations.
    "toy2d": TeacherConfig(
        data="toy2d",
        arch={"arch": "mlp", "dim": 2, "hidden": 256, "depth": 4, "num_classes": 8, "time_scale": 1000.0},
        method=TeacherMethodConfig(optim=OptimConfig(lr=1e-3, grad_clip=1.0),
                                   time_sampler=TimeSampler("lognormal", -0.5, 1.5)),
        train=_train(batch_size=1024, max_iters=3000, warmup=100, ema_decay=0.99, bf16=False, eval_n=2000)),
}


def teacher_preset(name: str) -> TeacherConfig:
    if name not in TEACHER_PRESETS:
        raise ValueError(f"unknown teacher preset {name!r}; expected one of {sorted(TEACHER_PRESETS)}")
    return copy.deepcopy(TEACHER_PRESETS[name])
