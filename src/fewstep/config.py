"""Typed run configurations and their named presets.

A preset is a complete, commented config; CLI flags override single fields and everything is
validated in ``__post_init__`` so a bad value fails before any work starts.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field

from .methods.teacher import TeacherMethodConfig
from .noise import TimeSampler


@dataclass
class TeacherConfig:
    data: str = "mnist"  # dataset spec (fewstep.data.load_dataset)
    arch: dict = field(default_factory=dict)  # architecture config incl. "arch": "unet" | "mlp"
    process: dict = field(default_factory=lambda: {"family": "edm"})  # noise process config
    param: str = "edm"  # denoiser parameterisation (noise/precond.py)
    method: TeacherMethodConfig = field(default_factory=TeacherMethodConfig)
    max_iters: int = 4000
    batch_size: int = 128
    warmup: int = 200
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    bf16: bool = True  # bf16 autocast: 1.3-1.9x faster on CPU, same FD (NOTES.md)
    eval_every: int = 500
    eval_n: int = 500  # samples per periodic eval
    ckpt_every: int = 500
    resolution: int = 64  # folder data only
    channels: int = 3  # folder data only

    def __post_init__(self):
        if isinstance(self.method, dict):
            self.method = TeacherMethodConfig(**self.method)
        if not self.arch:
            raise ValueError("teacher config needs an architecture (arch)")

    def to_dict(self) -> dict:
        return asdict(self)


def _unet(**kw):
    return {"arch": "unet", **kw}


TEACHER_PRESETS: dict[str, TeacherConfig] = {
    # The shipped MNIST teacher: 1.1 M-param UNet, EDM (Karras et al. 2022) preconditioning and
    # log-normal sigma sampling, bf16 autocast, ~0.6 s/it at batch 128 on 2 CPU threads.
    "mnist": TeacherConfig(
        data="mnist",
        arch=_unet(in_channels=1, image_size=28, channels=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_levels=(2,),
                   num_classes=10, time_scale=1000.0),
        max_iters=4000),
    # Small and fast: 16x16 digits, for tests and quick checks.
    "digits": TeacherConfig(
        data="digits",
        arch=_unet(in_channels=1, image_size=16, channels=32, ch_mult=(1, 2), num_res_blocks=1, attn_levels=(1,),
                   num_classes=10, time_scale=1000.0),
        max_iters=2000, eval_n=500),
    # 2-D mixtures: residual MLP, seconds per hundred iterations.
    "toy2d": TeacherConfig(
        data="toy2d",
        arch={"arch": "mlp", "dim": 2, "hidden": 256, "depth": 4, "num_classes": 8, "time_scale": 1000.0},
        method=TeacherMethodConfig(lr=1e-3, time_sampler=TimeSampler("lognormal", -0.5, 1.5)),
        batch_size=1024, max_iters=3000, warmup=100, ema_decay=0.99, bf16=False, eval_n=2000),
}


def teacher_preset(name: str) -> TeacherConfig:
    if name not in TEACHER_PRESETS:
        raise ValueError(f"unknown teacher preset {name!r}; expected one of {sorted(TEACHER_PRESETS)}")
    return copy.deepcopy(TEACHER_PRESETS[name])


# -- distillation ---------------------------------------------------------------------------------
@dataclass
class DistillConfig:
    method: str = "dmd2"  # registry name (fewstep.methods.registry)
    method_cfg: dict = field(default_factory=dict)  # fields of the method's Config dataclass
    max_iters: int = 600
    batch_size: int = 64
    warmup: int = 0
    ema_decay: float = 0.99  # generator EMA (evaluate the EMA: the raw DMD generator's FD swings, NOTES.md)
    bf16: bool = True
    eval_every: int = 200
    eval_n: int = 500
    ckpt_every: int = 100


# Presets by "<method>-<data>". The MNIST DMD2 preset follows what a CPU prototype found to work
# (NOTES.md): Adam betas (0, 0.999), LR 3e-4 for both networks, critic 5x per generator update.
DISTILL_PRESETS: dict[str, DistillConfig] = {
    "dmd2-mnist": DistillConfig("dmd2", {"gen_lr": 3e-4, "critic_lr": 3e-4, "betas": (0.0, 0.999), "weight_decay": 0.0,
                                         "gen_every": 5}, max_iters=800),
    "dmd-mnist": DistillConfig("dmd", {"gen_lr": 3e-4, "critic_lr": 3e-4, "betas": (0.0, 0.999), "weight_decay": 0.0,
                                       "regression_pairs": 1000}, max_iters=400),
    "dmd2-digits": DistillConfig("dmd2", {"gen_lr": 3e-4, "critic_lr": 3e-4, "betas": (0.0, 0.999), "weight_decay": 0.0},
                                 max_iters=400),
    "dmd-digits": DistillConfig("dmd", {"gen_lr": 3e-4, "critic_lr": 3e-4, "betas": (0.0, 0.999), "weight_decay": 0.0},
                                max_iters=200),
    "dmd2-toy2d": DistillConfig("dmd2", {"gen_lr": 1e-3, "critic_lr": 1e-3, "betas": (0.0, 0.999), "weight_decay": 0.0,
                                         "gen_every": 5}, max_iters=1500, batch_size=256, bf16=False, eval_n=2000),
    "dmd-toy2d": DistillConfig("dmd", {"gen_lr": 1e-3, "critic_lr": 1e-3, "betas": (0.0, 0.999), "weight_decay": 0.0},
                               max_iters=500, batch_size=256, bf16=False, eval_n=2000),
    # Trajectory family on MNIST: fine-tuning from the teacher with Adam at LR 1e-4..2e-4 (the papers'
    # LRs assume 10^4-10^5 steps); each run is minutes on 2 CPU threads (benchmarks/trajectory_mnist.sh).
    "progressive-mnist": DistillConfig("progressive", {"lr": 2e-4}, max_iters=200, ema_decay=0.0),
    "cd-mnist": DistillConfig("cd", {"lr": 1e-4}, max_iters=600),
    "lcm-mnist": DistillConfig("lcm", {"lr": 1e-4, "w_range": (1.0, 2.0), "eval_cfg": 1.25}, max_iters=600),
    "reflow-mnist": DistillConfig("reflow", {"lr": 1e-4, "pairs": 4000}, max_iters=1000),
    "instaflow-mnist": DistillConfig("instaflow", {"lr": 1e-4, "pairs": 4000}, max_iters=600),
    "guidance_distill-mnist": DistillConfig("guidance_distill", {"lr": 2e-4, "w_range": (1.0, 2.0), "eval_cfg": 1.25},
                                            max_iters=500),
}


_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "tuple": (list, tuple),
          "list": (list, tuple), "dict": (dict,), "None": (type(None),)}


def check_field_types(cls, values: dict) -> None:
    """Refuse values whose type does not match the dataclass field (JSON from ``--set`` or a file):
    a clear message instead of a failure deep inside a method. Unknown field names are refused too."""
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, value in values.items():
        if name not in fields:
            raise ValueError(f"{cls.__name__} has no field {name!r}; fields: {', '.join(sorted(fields))}")
        ann = fields[name].type if isinstance(fields[name].type, str) else getattr(fields[name].type, "__name__", "")
        names = [a.strip() for a in ann.split("|")]
        if not all(n in _TYPES for n in names):
            continue  # a nested config type: its own constructor validates it
        ok = any(isinstance(value, t) and not (isinstance(value, bool) and n in ("int", "float"))
                 for n in names for t in _TYPES[n])
        if ok and isinstance(value, (list, tuple)):
            ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
        if ok and isinstance(value, float):
            ok = math.isfinite(value)
        default = fields[name].default
        if ok and isinstance(default, tuple) and isinstance(value, (list, tuple)) and len(value) != len(default):
            raise ValueError(f"{cls.__name__}.{name} needs {len(default)} values, got {value!r}")
        if not ok:
            raise ValueError(f"{cls.__name__}.{name} must be {ann}, got {value!r}")


def distill_preset(method: str, data: str) -> DistillConfig:
    key = f"{method}-{data.split(':')[0]}"
    if key in DISTILL_PRESETS:
        return copy.deepcopy(DISTILL_PRESETS[key])
    return DistillConfig(method)  # the method's own (paper) defaults
