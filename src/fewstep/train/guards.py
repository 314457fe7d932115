"""The per-update context a method calls, with the non-finite guard (skip the step, say so)."""
from __future__ import annotations

import contextlib
import math

import torch

from ..config import LR_DECAYS
from ..hardware import use_bf16
from .distributed import full


class StepContext:
    """Handed to ``Method.step``: the seeded generator, autocast, and ``update``.

    ``update(loss, opt_name)`` = backward, non-finite check on loss and gradients, grad-norm clip,
    LR warm-up, optimizer step, zero grads. A non-finite loss or gradient skips the update (weights
    and optimizer moments untouched) and records it; the trainer stops after too many in a row.
    """

    def __init__(self, optimizers: dict[str, torch.optim.Optimizer], rng: torch.Generator, grad_clip: float = 0.0,
                 warmup: int = 0, bf16: bool = False, device: torch.device | str = "cpu",
                 shared_rng: torch.Generator | None = None, lr_decay: str = "constant", max_iters: int = 0):
        self.optimizers = optimizers  # name -> optimizer, as Method.optimizers() returns them
        self.rng = rng  # per-sample noise and choices; per process in a multi-process run
        self.shared_rng = shared_rng or rng  # choices every process must make alike (e.g. a DMD2 stage)
        self.grad_clip = grad_clip  # default max grad norm of update() (0 = none)
        self.warmup = warmup  # linear LR warm-up iterations
        if lr_decay not in LR_DECAYS:
            raise ValueError(f"lr_decay must be one of {LR_DECAYS}, got {lr_decay!r}")
        self.lr_decay, self.max_iters = lr_decay, max_iters  # the LR's decay over the run (after warm-up)
        self.device = torch.device(device)  # where randn() puts noise and batches live
        self.bf16 = use_bf16(bf16, self.device)  # bf16 autocast in autocast(), where the device is fast at it
        self.device_type = self.device.type
        self.it = 0
        self.skipped: list[str] = []
        self.stepped: list[str] = []  # optimizers that stepped this iteration (the trainer's EMA follows its own)
        self.grad_norms: dict[str, float] = {}
        self.inject_nonfinite_at: set[int] = set()  # test hook: poison the loss at these iterations
        for opt in optimizers.values():
            for g in opt.param_groups:
                g.setdefault("initial_lr", g["lr"])

    def randn(self, shape) -> torch.Tensor:
        """Gaussian noise from the run's generator, on the training device (the same draws on any device)."""
        return torch.randn(shape, generator=self.rng).to(self.device)

    def begin(self, it: int) -> None:
        self.it, self.skipped, self.stepped, self.grad_norms = it, [], [], {}

    def autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=torch.bfloat16)

    def lr_factor(self) -> float:
        """Linear warm-up over ``warmup`` iterations, then ``lr_decay``: "cosine" takes the LR from its value
        at the end of the warm-up to 0 at ``max_iters`` along half a cosine (SGDR without restarts)."""
        warm = min(1.0, (self.it + 1) / self.warmup) if self.warmup > 0 else 1.0
        if self.lr_decay == "constant" or self.max_iters <= self.warmup:
            return warm
        progress = min(max(self.it - self.warmup, 0) / (self.max_iters - self.warmup), 1.0)
        return warm * 0.5 * (1 + math.cos(math.pi * progress))

    def update(self, loss: torch.Tensor, opt_name: str, clip: float | None = None, retain_graph: bool = False,
               lr_scale: float = 1.0) -> bool:
        """Step optimizer ``opt_name`` on the mean of ``loss``; ``clip`` overrides the run's grad clip;
        ``lr_scale`` multiplies the learning rate for this step (a method's own schedule)."""
        opt = self.optimizers[opt_name]
        loss = loss.mean()
        if self.it in self.inject_nonfinite_at:
            loss = loss * float("nan")
        params = [p for g in opt.param_groups for p in g["params"]]
        if not torch.isfinite(loss):
            return self._skip(opt, params, opt_name, "loss")
        loss.backward(retain_graph=retain_graph)
        grads = [p for p in params if p.grad is not None]
        clip = self.grad_clip if clip is None else clip
        clip = clip if clip > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(grads, clip) if grads else torch.tensor(0.0)
        norm = full(norm)  # FSDP2-sharded gradients: the norm over every shard
        if not torch.isfinite(norm):
            return self._skip(opt, params, opt_name, "gradient")
        self.grad_norms[opt_name] = float(norm)
        for g in opt.param_groups:
            g["lr"] = g["initial_lr"] * self.lr_factor() * lr_scale
        opt.step()
        opt.zero_grad(set_to_none=True)
        self.stepped.append(opt_name)
        return True

    def _skip(self, opt, params, name, what) -> bool:
        for p in params:
            p.grad = None
        self.skipped.append(f"{name}: non-finite {what}")
        return False
