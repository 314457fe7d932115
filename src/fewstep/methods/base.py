"""The method contract (docs/design.md). The trainer and the CLI know only this interface.

A method is one class in one file, registered by name in methods/registry.py. It is built as
``cls(teacher, cfg, shape=..., num_classes=...)``: ``teacher`` is the frozen model it distils (for the
teacher method itself, the network it trains), ``cfg`` an instance of its typed ``Config`` dataclass
(paper defaults when None; its ``nfe`` field, the student's steps, is what ``--nfe`` sets), ``shape``
one sample's shape and ``num_classes`` the label count (0 = unconditional). It owns its networks, optimizers
and update schedule:

* ``networks()``   every network whose weights a checkpoint saves (trained and auxiliary);
* ``optimizers()`` name -> optimizer; ``step`` updates them through ``ctx.update(loss, name)``, which
  applies the LR warm-up, gradient clipping and the non-finite guard uniformly (train/guards.py);
* ``step(batch, it, ctx)`` one training iteration; returns scalars to log;
* ``generator(net=None)`` the model being produced (``net``, e.g. its EMA, in place of its network);
* ``ema_network()`` the name in ``networks()`` whose EMA is kept, evaluated and saved; the EMA advances
  on iterations where the optimizer of the same name stepped (train/loop.py);
* ``default_sampling()`` / ``sampling_options()`` how the produced model is sampled and benchmarked;
* ``plan(max_iters)`` / ``prepare(cache_dir)`` optional: the run's length, one-off deterministic work;
* ``uses_images`` False for image-free methods (SiD, VSD): their batches carry conditions and a batch
  size only, and ``fewstep distill`` never loads a training set for them (data/base.py conditions_only);
* ``architectures`` the teacher architectures a method that rebuilds the network can work on (block
  removal needs a UNet; None = any); ``Method.__init__`` refuses others with a clear error.

Shared pieces every method uses live here: one optimiser config (``OptimConfig``), one LoRA config
(``LoRAConfig``), the two ways to copy a teacher (``trainable_copy``, ``frozen_copy``; both share the weights
that do not train instead of copying them: nets/sharing.py), and
``StudentMethod`` for methods that train one network named ``student``.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch import nn

from ..config import DistillConfig, fields_of_type
from ..nets.sharing import copy_sharing, copy_sharing_frozen
from ..noise.precond import Denoiser
from ..samplers.generate import SamplingSpec

ALGORITHMS = ("adamw", "adam")


@dataclass
class OptimConfig:
    """One optimiser: every method's networks are trained with one of these."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # max global gradient norm per update (0 = no clipping)
    algorithm: str = "adamw"  # "adamw" (decoupled weight decay) | "adam" (L2 in the gradient)

    def __post_init__(self):
        self.betas = tuple(self.betas)
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("weight_decay and grad_clip must be >= 0")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")

    def build(self, params) -> torch.optim.Optimizer:
        params = [p for p in params if p.requires_grad]  # frozen weights (e.g. under LoRA) stay out
        cls = torch.optim.AdamW if self.algorithm == "adamw" else torch.optim.Adam
        return cls(params, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)


def adam(lr: float, grad_clip: float = 0.0, **kw) -> OptimConfig:
    """Adam without weight decay: what the trajectory and consistency papers fine-tune with."""
    return OptimConfig(lr=lr, grad_clip=grad_clip, algorithm="adam", **kw)


@dataclass
class LoRAConfig:
    """A LoRA student: adapters of this rank on a frozen copy of the teacher (nets/lora.py, peft)."""

    rank: int = 0  # > 0: train LoRA adapters instead of every weight (LCM-LoRA 64, DMD2 SDXL 64)
    alpha: float = 0.0  # LoRA scale numerator (0 = the rank)
    targets: list[str] | None = None  # module names to adapt (None = attention, feed-forward, convs)

    def __post_init__(self):
        if self.rank < 0 or self.alpha < 0:
            raise ValueError("lora rank and alpha must be >= 0")


def trainable_copy(den: Denoiser, lora: LoRAConfig | None = None, boundary: str | None = None,
                   w_dim: int = 0, tt_dim: int = 0) -> Denoiser:
    """A trainable copy of a denoiser: every weight, or (``lora.rank > 0``) LoRA adapters on a frozen copy.
    ``boundary`` adds a consistency boundary condition (noise/precond.py); ``w_dim > 0`` rebuilds the
    architecture with a guidance-scale embedding (LCM Sec. 4.2; Meng et al. Sec. 4), ``tt_dim > 0`` with a
    target-time embedding (TwinFlow); each new embedding's output layer starts at zero, so the copy starts
    as the teacher exactly."""
    extra = {k: d for k, d in (("w_dim", 0 if den.embeds_guidance else w_dim), ("tt_dim", tt_dim)) if d}
    if lora is not None and lora.rank:
        if extra:
            raise ValueError("a LoRA student cannot add an input embedding (use w_dim=0, as LCM-LoRA does)")
        from ..nets.lora import add_lora

        # the base weights stay frozen, so the student's modules hold the teacher's own tensors (no second
        # copy); its adapters live in its modules only, so the teacher computes exactly what it did
        net = add_lora(copy_sharing(den.net, den.net.parameters()), lora.rank, lora.alpha, lora.targets)
        return Denoiser(net, den.process, den.param, den.sigma_data, boundary or den.boundary).train()
    net = _with_embeddings(den.net, extra) if extra else copy.deepcopy(den.net)
    return Denoiser(net, den.process, den.param, den.sigma_data, boundary or den.boundary).train().requires_grad_(True)


def _with_embeddings(net: nn.Module, dims: dict[str, int]) -> nn.Module:
    """``net`` rebuilt with extra scalar embeddings (``{"w_dim": 64}`` adds ``embed.w_mlp``), its weights
    copied and each new embedding's last layer zeroed."""
    from ..nets import build_net

    if not hasattr(net, "config"):
        raise ValueError(f"cannot add {', '.join(dims)} to a {type(net).__name__} (only fewstep's own architectures)")
    new = build_net(dict(net.config(), **dims))
    modules = [k[: -len("_dim")] + "_mlp" for k in dims]
    missing, unexpected = new.load_state_dict(net.state_dict(), strict=False)
    if unexpected or any(not k.startswith(tuple(f"embed.{m}." for m in modules)) for k in missing):
        raise ValueError(f"cannot add {', '.join(dims)} to this architecture (missing {missing}, unexpected {unexpected})")
    for m in modules:
        last = getattr(new.embed, m)[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    return new


def initial_weights(teacher: Denoiser, init: str = "") -> Denoiser:
    """The weights a student starts from: the teacher, or the ``init`` model (a folder, run or shipped name)
    when it has the teacher's network, noise process and parameterisation: a later stage that starts from
    the previous stage's student while the teacher stays the one it distils (Hyper-SD's stages)."""
    if not init:
        return teacher
    from ..model_io import denoiser_config, load_denoiser

    start, _ = load_denoiser(init)
    mine, theirs = denoiser_config(teacher), denoiser_config(start)
    if mine["arch"] != theirs["arch"] or mine["process"] != theirs["process"] or mine["param"] != theirs["param"]:
        raise ValueError(f"init={init!r}: its network, noise process or parameterisation differ from the teacher's")
    return start.to(next(teacher.net.parameters()).device)


def frozen_copy(den: Denoiser) -> Denoiser:
    """A gradient-free copy (a consistency target network, a progressive stage's teacher). Weights that
    do not train (a LoRA student's base) are shared with ``den``, not copied (nets/sharing.py)."""
    return copy_sharing_frozen(den).eval().requires_grad_(False)


@contextmanager
def frozen(*modules: nn.Module):
    """Run with every parameter of ``modules`` frozen, then give each back the ``requires_grad`` it had
    (a fake score that is partly frozen, e.g. adapters on a shared base, stays so)."""
    params = [p for m in modules for p in m.parameters()]
    before = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, b in zip(params, before):
            p.requires_grad_(b)


def cond_of(batch: dict):
    """A batch's condition: a ``Cond`` (text-conditioned data) or class labels, or None."""
    return batch.get("cond", batch.get("labels"))


def uniform_scale(n: int, lo: float, hi: float, rng: torch.Generator) -> torch.Tensor:
    """Per-sample guidance scales w ~ U[lo, hi]."""
    return lo + (hi - lo) * torch.rand(n, generator=rng)


class Method:
    name: ClassVar[str] = "method"  # the registry name (methods/registry.py checks they agree)
    Config: ClassVar[type]  # the typed config dataclass; fields carry their paper defaults
    presets: ClassVar[dict[str, DistillConfig]] = {}  # dataset name -> the run that works there
    uses_images: ClassVar[bool] = True  # False: no loss reads batch["x"] (only its batch size)
    architectures: ClassVar[tuple[str, ...] | None] = None  # teacher architectures it can work on (None: any)

    def __init__(self, teacher: Denoiser, cfg=None, shape: tuple = (), num_classes: int = 0):
        arch = getattr(teacher.net, "config", dict)().get("arch")
        if self.architectures is not None and arch not in self.architectures:
            raise ValueError(f"{self.name} works on {', '.join(self.architectures)} teachers; this teacher's "
                             f"architecture is {arch!r}")
        self.cfg = cfg if cfg is not None else self.Config()
        self.shape, self.num_classes = tuple(shape), num_classes
        self.process = teacher.process
        self.max_iters: int | None = None  # the run's length, once plan() is told it

    def networks(self) -> dict[str, nn.Module]:
        """Every network whose weights are saved and restored (trainable and auxiliary)."""
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def step(self, batch: dict, it: int, ctx) -> dict:
        """One training iteration; returns scalars to log (tensors or floats)."""
        raise NotImplementedError

    def generator(self, net: nn.Module | None = None) -> Denoiser:
        """The model being produced, optionally with ``net`` (e.g. its EMA) in place of its network."""
        raise NotImplementedError

    def plan(self, max_iters: int) -> None:
        """Told the run's length before training (kept as ``self.max_iters`` for methods whose schedule
        depends on it: LR annealing, phases, reward stages)."""
        self.max_iters = max_iters

    def prepare(self, cache_dir) -> None:
        """One-off work before training (e.g. caching teacher ODE pairs); must be deterministic."""

    def ema_network(self) -> str | None:
        """Name (in networks()) of the network whose EMA is kept and evaluated; None for none."""
        return None

    def default_sampling(self) -> SamplingSpec:
        return SamplingSpec()

    def sampling_options(self) -> list[SamplingSpec]:
        """Every way the produced model is meant to be sampled (benchmarks measure each); the default first."""
        return [self.default_sampling()]

    def config(self) -> dict:
        return {"method": self.name, **asdict(self.cfg)}

    @classmethod
    def preset(cls, data: str) -> DistillConfig:
        """The run for dataset ``data`` (``toy2d:moons`` uses ``toy2d``'s); the paper defaults elsewhere."""
        p = cls.presets.get(data.split(":")[0])
        return copy.deepcopy(p) if p is not None else DistillConfig(cls.Config())

    @classmethod
    def optim_fields(cls) -> list[str]:
        """The config's optimiser fields (``--lr`` sets the LR of each)."""
        return fields_of_type(cls.Config, OptimConfig)

    @classmethod
    def supports_lora(cls) -> bool:
        return "lora" in fields_of_type(cls.Config, LoRAConfig)


class StudentMethod(Method):
    """A method that trains one network, ``student`` (a Denoiser), with one optimizer ``self.opt``
    built from ``cfg.optim``; its EMA is what gets evaluated and saved."""

    student: Denoiser
    opt: torch.optim.Optimizer

    def __init__(self, teacher: Denoiser, cfg=None, shape: tuple = (), num_classes: int = 0):
        super().__init__(teacher, cfg, shape, num_classes)
        # the teacher is frozen where it stands, so ``frozen_copy(teacher)`` and a LoRA student's base
        # share its weights instead of copying them (nets/sharing.py)
        teacher.eval().requires_grad_(False)

    def networks(self):
        return {"student": self.student.net}

    def optimizers(self):
        return {"student": self.opt}

    def ema_network(self):
        return "student"

    def generator(self, net=None):
        return self.student if net is None else self.student.like(net)

    def update(self, ctx, loss, **kw) -> bool:
        """Step the student on ``loss`` with its config's gradient clip."""
        return ctx.update(loss, "student", clip=self.cfg.optim.grad_clip, **kw)
