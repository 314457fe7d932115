"""DisBack (Zhang et al. 2024, "Distribution Backtracking Builds A Faster Convergence Trajectory for
One-step Diffusion Distillation"; SYZhang0805/DisBack), on DMD2 (dmd2.py).

Score distillation starts with a mismatch: the teacher's score describes the data, far from the untrained
student's outputs. DisBack gives the student intermediate targets between the two:
1. Degradation recording (``prepare``, once, deterministic, cached): a copy of the teacher is fine-tuned
   with the teacher's own denoising loss on samples of the *initial* student, and ``path_points``
   evenly spaced snapshots are kept: theta_1 .. theta_N, drifting from the teacher (theta_0) towards a
   score of the initial student's distribution.
2. Distribution backtracking: DMD2 whose real score walks that path backwards, theta_N, theta_{N-1},
   .., theta_1, each for an equal share of the first ``backtrack_fraction`` of the run, then the teacher
   itself for the rest. The fake score starts from theta_N (it already describes the initial student),
   not from the teacher.
Left open (our choices): equal shares per path point, the recording length and LR (the critic's
optimiser, or ``record_lr``: how far the snapshots drift), the GAN of DMD2 kept throughout.
Text-conditioned teachers need prompts for the recording, which ``prepare`` does not have: they are refused.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ...config import DistillConfig, TrainSettings
from ...io import load_tensors, save_tensors_atomic
from ..base import trainable_copy
from ..losses import denoising_loss
from .dmd import cpu_optim
from .dmd2 import DMD2, DMD2Config, dm_presets


@dataclass
class DisBackConfig(DMD2Config):
    stage_critics_ok = False  # its fake score walks the degradation path
    record_iters: int = 200  # degradation recording: fine-tuning steps of a teacher copy on initial-student samples
    path_points: int = 4  # snapshots kept along the degradation path (evenly spaced)
    record_batch: int = 64  # batch of the recording fine-tune
    backtrack_fraction: float = 0.5  # share of the run spent on the path points (in reverse); the rest uses the teacher
    fake_from_path_end: bool = True  # start the fake score at theta_N (DisBack) instead of the teacher
    record_seed: int = 0  # the recording is deterministic for a seed (and cached)
    record_lr: float = 0.0  # LR of the recording fine-tune; 0: the critic's (the official SDXL recording: 5e-7)

    def __post_init__(self):
        super().__post_init__()
        if self.record_iters < 1 or not 1 <= self.path_points <= self.record_iters or self.record_batch < 1:
            raise ValueError("record_iters >= 1, 1 <= path_points <= record_iters and record_batch >= 1 are needed")
        if not 0 <= self.backtrack_fraction <= 1:
            raise ValueError(f"backtrack_fraction must be in [0, 1], got {self.backtrack_fraction}")
        if self.record_lr < 0:
            raise ValueError(f"record_lr must be >= 0 (0: the critic's LR), got {self.record_lr}")


class DisBack(DMD2):
    """DMD2 whose real score backtracks a recorded degradation path to the teacher."""

    name = "disback"
    Config = DisBackConfig
    presets = dm_presets(DisBackConfig)

    def __init__(self, teacher, cfg=None, shape=(), num_classes: int = 0):
        super().__init__(teacher, cfg, shape, num_classes)
        if hasattr(teacher.net, "example_cond"):
            raise ValueError("disback records its path with class labels or none; text-conditioned teachers are not supported")
        self.path: list[dict] | None = None
        self.path_score = copy.deepcopy(teacher).eval().requires_grad_(False)  # its own tensors: path points load into it
        self.loaded_point: int | None = None
        self.point = -1  # -1: the teacher; j >= 0: path point theta_{j+1}

    def record_optim(self):
        """The recording's optimiser: the critic's, at ``record_lr`` when set. The step size sets how far
        each path point drifts from the teacher, so it is part of the path's cache key."""
        c = self.cfg
        return replace(c.critic_optim, lr=c.record_lr) if c.record_lr else c.critic_optim

    # -- stage 1: degradation recording ------------------------------------------------------------
    def record_path(self) -> list[dict]:
        """theta_1..theta_N: snapshots of a teacher copy fine-tuned on the initial student's samples."""
        c = self.cfg
        g = torch.Generator().manual_seed(c.record_seed)
        net = trainable_copy(self.teacher)
        opt = self.record_optim().build(net.net.parameters())
        every = c.record_iters // c.path_points
        points = []
        for i in range(1, c.record_iters + 1):
            n = c.record_batch
            cond = torch.randint(0, self.num_classes, (n,), generator=g).to(self.device) if self.num_classes else None
            with torch.no_grad():
                x = self.student_sample(cond, g, n, shared_rng=g).float()
            loss = denoising_loss(net, x, self.sample_levels(n, g), self.noise(x.shape, g), cond).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if i % every == 0 and len(points) < c.path_points:
                points.append({k: v.detach().clone() for k, v in net.net.state_dict().items()})
        return points

    def prepare(self, cache_dir) -> None:
        super().prepare(cache_dir)
        c = self.cfg
        key = hashlib.sha1(json.dumps({"record": [c.record_iters, c.path_points, c.record_batch, c.record_seed],
                                       "optim": asdict(self.record_optim()), "nfe": c.nfe,
                                       "levels": [c.num_levels, c.level_grid]}, sort_keys=True).encode()).hexdigest()[:12]
        path = Path(cache_dir) / f"disback-path-{key}.safetensors"
        if path.is_file():
            flat = load_tensors(path)
            self.path = [{k.split(".", 1)[1]: v for k, v in flat.items() if k.startswith(f"p{j}.")}
                         for j in range(c.path_points)]
        else:
            self.path = self.record_path()
            save_tensors_atomic({f"p{j}.{k}": v for j, p in enumerate(self.path) for k, v in p.items()}, path)
        if c.fake_from_path_end:  # a resumed run's checkpoint overwrites this afterwards
            self.fake.net.load_state_dict(self.path[-1])

    # -- stage 2: distribution backtracking --------------------------------------------------------
    def point_of(self, it: int) -> int:
        """The path point the real score is at iteration ``it``: N-1 .. 0 in equal shares, then -1 (teacher)."""
        N = self.cfg.path_points
        back = int(self.cfg.backtrack_fraction * (self.max_iters or 0))
        if it >= back:
            return -1
        return N - 1 - it * N // back

    def real_score(self):
        if self.point < 0:
            return self.teacher
        if self.loaded_point != self.point:
            self.path_score.net.load_state_dict(self.path[self.point])
            self.loaded_point = self.point
        return self.path_score

    def dm_step(self, batch, cond, n, it, ctx):
        if self.path is None:
            raise RuntimeError("disback: prepare() records the degradation path before training")
        self.point = self.point_of(it)
        logs = super().dm_step(batch, cond, n, it, ctx)
        logs["path_point"] = float(self.point + 1)  # 0 = the teacher
        return logs


DisBack.presets["mnist"] = DistillConfig(
    DisBackConfig(optim=cpu_optim(3e-4), critic_optim=cpu_optim(3e-4), real_cfg=1.25, gan_index_max=0.4),
    TrainSettings(max_iters=1200))
