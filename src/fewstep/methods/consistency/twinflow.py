"""TwinFlow (inclusionAI/TwinFlow, ``src/methodes/twinflow/twinflow.py``): one network F(x_tau, tau, tt)
that is good at 1, 2 and 4 steps, trained on data with no frozen teacher and no critic.

Rectified-flow time tau (1 = noise): x_tau = tau z + (1 - tau) x, velocity v = z - x. The network
predicts the *average* velocity from tau to a target time tt <= tau, so x_tt = x_tau - (tau - tt) F and
the one-step sample is x_0 = x_tau - tau F(x_tau, tau, 0). Its twin is the same network at negative
time: F(x, -tau, -tau) is trained as the flow towards the network's *own* one-step fakes. Each batch is
cut in four quarters, as the official code does:

* ``e2e`` (tau = top, tt = 0) and ``any`` (tt ~ U[0, tau]): the RCGM target (recursive consistency,
  Sun et al., LINs-lab/RCGM): one data step of dt along v, then N Euler steps of an EMA network from
  tau - dt to tt, must add up to the network's own jump: r = ((tau - tt) F - disp) / dt - v, and the
  loss pulls F along -clamp(r, -1, 1) (target sg(F) - clamp(r));
* ``mul`` (tt within 5% of tau): the same target over a short interval, i.e. about flow matching;
* ``adv``: x replaced by the network's one-step fakes, F(x_tau, -tau, -tau) regressed on z - x_fake
  (the twin branch learns the fake distribution's flow).

The velocity target is first "enhanced" with the EMA's own guidance, v + r_e (v_c - v_u) at tt = tau
(training-time CFG, ``enhanced_ratio`` 0.5), so the model samples without CFG. On the ``e2e`` quarter a
rectification term moves the one-step output along the two branches' velocity difference at a fresh
noise level s: the target for F is sg(F - clamp(F(x_s, -s, -s) - F(x_s, s, s))), which moves x_0 =
z - F towards the real flow's denoising of it and away from the fake flow's (DMD's direction, with the
twin as the fake score). The loss is Barron's alpha = 1 reweighting of each sample's MSE (losses.py
``charbonnier_rms``), weighted by tan((1 - (tau - tt)) pi / 2.5) + 1.

Sampling: target time 0 at every step and the predicted (x_0, z) re-combined at the next level, which
is DDIM on the uniform rectified-flow grid (the official sampler's ``few`` style, no stochasticity), so
the shared ``euler`` sampler on the ``flow`` grid samples it. Ours differs from the official network in
one input: it embeds the unsigned time as the teacher did plus a signed target time (negative on the
twin branch), where the official network takes both times signed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ...config import DistillConfig, TrainSettings
from ...nets import build_net
from ...nets.cond import drop_cond, index_cond, null_like, with_extra
from ...nets.ema import ema_update_
from ...noise.base import bcast
from ...noise.precond import Denoiser
from ...samplers.generate import SamplingSpec
from ...samplers.grids import flow_range
from ...samplers.ode import flow_velocity
from ..base import OptimConfig, StudentMethod, adam, cond_of, frozen_copy, trainable_copy
from ..losses import charbonnier_rms

INITS = ("teacher", "scratch")
PARTS = ("e2e", "mul", "any", "adv")  # the batch's quarters, in order


@dataclass
class TwinFlowConfig:
    nfe: int = 1  # steps the model is sampled with by default (flow grid)
    eval_nfes: tuple[int, ...] = (1, 2, 4)  # every step count it is benchmarked at (one model)
    init: str = "teacher"  # "teacher": the teacher's weights (target-time input starts at zero) | "scratch"
    tt_dim: int = 64  # target-time embedding width
    target_ema: float = 0.99  # EMA of the rollout network, reached by TwinFlow's ramp (ema_decay_rate)
    enhance: float = 0.5  # enhanced_ratio: v + enhance (v_c - v_u) of the EMA (class-conditional data only)
    order: int = 2  # estimate_order N: EMA Euler steps in the RCGM target
    rcgm_dt: float = 0.01  # the target's data step from tau to tau - dt
    rectify: float = 0.5  # dist_match_cof: weight of the twin-branch rectification term
    clamp: float = 1.0  # clamp on the RCGM residual and on the twin velocity difference
    loss_c: float = 1e-3  # c of the Charbonnier reweighting
    near: float = 0.05  # the mul quarter's tt lies within this fraction of tau
    cond_drop: float = 0.1  # label dropout, so the null branch the enhancement reads keeps learning
    optim: OptimConfig = field(default_factory=lambda: adam(1e-4, grad_clip=1.0))

    def __post_init__(self):
        self.eval_nfes = tuple(int(k) for k in self.eval_nfes)
        if self.nfe < 1 or not self.eval_nfes or min(self.eval_nfes) < 1:
            raise ValueError("nfe and eval_nfes must be positive step counts")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.tt_dim < 2 or self.order < 1:
            raise ValueError("tt_dim must be >= 2 and order >= 1")
        if not 0 <= self.target_ema < 1 or not 0 < self.rcgm_dt < 0.5 or not 0 < self.near <= 1:
            raise ValueError("need target_ema in [0, 1), rcgm_dt in (0, 0.5) and near in (0, 1]")
        if min(self.enhance, self.rectify) < 0 or self.clamp <= 0 or self.loss_c <= 0:
            raise ValueError("enhance and rectify must be >= 0; clamp and loss_c > 0")
        if not 0 <= self.cond_drop < 1:
            raise ValueError(f"cond_drop must be in [0, 1), got {self.cond_drop}")


def ema_ramp(target: float, updates: int) -> float:
    """TwinFlow's EMA decay after ``updates`` steps: d <- d + (1 - d)(target - d) / 2 from d = 0, so the
    first updates copy the online network and the decay approaches ``target``."""
    d = 0.0
    for _ in range(updates):
        d += (1 - d) * (target - d) * 0.5
    return d


def batch_parts(n: int) -> dict[str, torch.Tensor]:
    """Boolean masks of the four quarters (e2e, mul, any, adv), contiguous, the last taking the rest."""
    if n < len(PARTS):
        raise ValueError(f"twinflow needs a batch of at least {len(PARTS)} (one sample per quarter), got {n}")
    size = round(n / len(PARTS))
    masks, start = {}, 0
    for i, k in enumerate(PARTS):
        stop = n if i == len(PARTS) - 1 else start + size
        m = torch.zeros(n, dtype=torch.bool)
        m[start:stop] = True
        masks[k], start = m, stop
    return masks


def rows(mask, x) -> torch.Tensor:
    """A (B,) boolean mask shaped to select whole samples of ``x``."""
    return mask.view(-1, *([1] * (x.ndim - 1)))


def rcgm_residual(F, v, disp, tau, tt, dt: float) -> torch.Tensor:
    """RCGM's consistency residual: the jump (tau - tt) F must equal a data step dt v plus the EMA's
    rollout displacement ``disp`` from tau - dt to tt; in units of dt, r = ((tau - tt) F - disp) / dt - v.
    Intervals shorter than dt have no rollout: r = F - v (flow matching)."""
    gap = bcast(tau - tt, F)
    short = rows(tau < tt + dt, F)
    return torch.where(short, F - v, (gap * F - disp) / dt - v)


def jump_weight(tau, tt) -> torch.Tensor:
    """tan((1 - (tau - tt)) pi / 2.5) + 1: short jumps (about instantaneous velocities) weigh ~4x a full one."""
    return torch.tan((1 - (tau - tt)) * math.pi / 2.5) + 1


class TwinFlow(StudentMethod):
    name = "twinflow"
    Config = TwinFlowConfig
    architectures = ("unet", "mlp")  # rebuilt with a target-time input
    presets = {
        # MNIST: guidance 1.1 baked into the target (enhance 0.1), the rectification at 0.1 and the official
        # tutorial's LR 2e-4 for 2,400 it: 16.17 / 14.30 / 13.54, 12.64 / 11.05 / 10.63 and 13.12 / 11.48 / 11.02 at
        # 1 / 2 / 4 steps on three training seeds (twinflow_long*_mnist.json)
        # against 36.46 / 30.82 / 30.19 with the official src weight 0.5, guidance 1.25 and 600 it. Through the
        # per-sample normalised loss the rectification pulls as hard however small the twin gap gets; at 0.5 the
        # 1-step FD rose after 100 it as precision fell (docs/notes.md, "TwinFlow's rectification weight and length")
        "mnist": DistillConfig(TwinFlowConfig(enhance=0.1, rectify=0.1, optim=adam(2e-4, grad_clip=1.0)),
                               TrainSettings(max_iters=2400)),
        "toy2d": DistillConfig(TwinFlowConfig(optim=adam(1e-3, grad_clip=1.0)),
                               TrainSettings(max_iters=600, batch_size=256, bf16=False, eval_n=2000)),
    }

    def __init__(self, teacher: Denoiser, cfg=None, shape=(), num_classes: int = 0):
        super().__init__(teacher, cfg, shape, num_classes)
        c = self.cfg
        self.student = trainable_copy(teacher, tt_dim=c.tt_dim)
        if c.init == "scratch":  # the architecture's own initialisation, target-time input included
            self.student = self.student.like(build_net(self.student.net.config())).train()
        self.target = frozen_copy(self.student)  # the EMA that rolls out the RCGM target and enhances v
        self.opt = c.optim.build(self.student.net.parameters())
        self.tau_min, self.tau_top = flow_range(self.process)  # the flow grid's span: e2e starts where sampling does
        self._ramp = (0, 0.0)  # (iteration, its decay): advanced once per step, recomputed after a resume

    def networks(self):
        return {"student": self.student.net, "target": self.target.net}

    def default_sampling(self):
        return SamplingSpec("euler", self.cfg.nfe, "flow")

    def sampling_options(self):
        return [self.default_sampling()] + [SamplingSpec("euler", k, "flow") for k in self.cfg.eval_nfes
                                            if k != self.cfg.nfe]

    # --- the network in flow time -------------------------------------------------------------------
    def velocity(self, den: Denoiser, x_tau, tau, tt, cond):
        """(F, x0): the average velocity from tau to the signed target time tt, and the one-step end
        x_tau - tau F (= the denoiser's x0). ``tau`` is kept inside the process's range."""
        tau = tau.clamp(self.tau_min, self.tau_top)
        return flow_velocity(den, x_tau, tau, with_extra(cond, "tt", tt, x_tau.shape[0], x_tau.device))

    def rollout(self, x, t0, t1, cond) -> torch.Tensor:
        """The EMA's displacement over ``order`` Euler steps of average velocity from t0 to t1 (RCGM's
        multi_fwd): sum of (t_i - t_{i+1}) F(x_i, t_i, t_{i+1})."""
        disp, n = torch.zeros_like(x), self.cfg.order
        for i in range(n):
            tc, tn = t0 + (t1 - t0) * (i / n), t0 + (t1 - t0) * ((i + 1) / n)
            F, _ = self.velocity(self.target, x, tc, tn, cond)
            x = x - bcast(tc - tn, x) * F
            disp = disp + bcast(tc - tn, x) * F
        return disp

    def twin_gap(self, x_fake, cond, rng) -> torch.Tensor:
        """F(x_s, -s, -s) - F(x_s, s, s) at a fresh level s on the path to the fakes, clamped: the twin
        (fake) flow's velocity minus the real one's (TwinFlow's dist_match)."""
        n = x_fake.shape[0]
        s = (self.tau_min + (self.tau_top - self.tau_min) * torch.rand(n, generator=rng)).to(x_fake.device)
        z = torch.randn(x_fake.shape, generator=rng).to(x_fake.device)
        x_s = bcast(s, z) * z + bcast(1 - s, z) * x_fake
        fake_v, _ = self.velocity(self.student, x_s, s, -s, cond)
        real_v, _ = self.velocity(self.student, x_s, s, s, cond)
        return (fake_v - real_v).clamp(-self.cfg.clamp, self.cfg.clamp)

    # --- one iteration ------------------------------------------------------------------------------
    def sample_times(self, parts, rng):
        """(tau, tt) per sample: tau ~ U(0, 1] in the process's range, tt per quarter (e2e: top -> 0;
        mul: within ``near`` of tau; any: U[0, tau]; adv: tt = tau on the twin branch)."""
        n = len(parts["e2e"])
        tau = self.tau_min + (self.tau_top - self.tau_min) * torch.rand(n, generator=rng)
        tt = tau * (1 - torch.rand(n, generator=rng))
        tt_near = tau * (1 - self.cfg.near * torch.rand(n, generator=rng))
        tau = torch.where(parts["e2e"], torch.full_like(tau, self.tau_top), tau)
        tt = torch.where(parts["e2e"], torch.zeros_like(tt), tt)
        tt = torch.where(parts["mul"], tt_near, tt)
        tt = torch.where(parts["adv"], tau, tt)
        return tau, tt

    def advance_target(self, it: int) -> None:
        """The EMA update before the targets are computed, with the ramped decay (TwinFlow's update_ema)."""
        k, d = self._ramp
        if k != it:  # resumed (or skipped): recompute the ramp
            d = ema_ramp(self.cfg.target_ema, it)
        ema_update_(self.target.net, self.student.net, d)
        self._ramp = (it + 1, d + (1 - d) * (self.cfg.target_ema - d) * 0.5)

    def step(self, batch, it, ctx):
        c = self.cfg
        x = batch["x"].float()
        n, dev = x.shape[0], x.device
        cond = drop_cond(cond_of(batch), c.cond_drop, ctx.rng) if self.num_classes else cond_of(batch)
        parts = batch_parts(n)  # drawn on the CPU with the trainer's generator, then moved
        tau, tt = (v.to(dev) for v in self.sample_times(parts, ctx.rng))
        parts = {k: m.to(dev) for k, m in parts.items()}
        adv = parts["adv"]
        self.advance_target(it)
        with ctx.autocast():
            with torch.no_grad():  # the twin branch learns the flow to the network's own one-step fakes
                top = torch.full((int(adv.sum()),), self.tau_top, device=dev)
                _, fakes = self.velocity(self.student, ctx.randn(x[adv].shape), top, torch.zeros_like(top),
                                         index_cond(cond, adv))
                x = x.clone()
                x[adv] = fakes
            z = ctx.randn(x.shape)
            x_tau = bcast(tau, x) * z + bcast(1 - tau, x) * x
            v = z - x
            code = torch.where(adv, -tau, tt)  # the network's signed target time
            F, x0 = self.velocity(self.student, x_tau, tau, code, cond)
            with torch.no_grad():
                target = self.enhanced(v, x_tau, tau, cond, ~adv)
                disp = self.rollout(x_tau - c.rcgm_dt * target, (tau - c.rcgm_dt).clamp_min(tt), tt, cond)
                r = rcgm_residual(F.detach(), target, disp, tau, tt, c.rcgm_dt)
                target = torch.where(rows(adv, x), target, F.detach() - r.clamp(-c.clamp, c.clamp))
            weight = torch.where(adv, torch.ones_like(tau), jump_weight(tau, tt))
            loss = (charbonnier_rms(F, target, c.loss_c) * weight).mean()
            logs = {"flow": loss.detach()}
            e2e = parts["e2e"]
            if c.rectify:
                gap = self.twin_gap(x0[e2e].detach(), index_cond(cond, e2e), ctx.rng)
                rect = charbonnier_rms(F[e2e], (F[e2e] - gap).detach(), c.loss_c).mean()
                loss = loss + c.rectify * rect
                logs["rectify"] = rect.detach()
        self.update(ctx, loss)
        return {"loss": loss.detach(), **logs}

    def enhanced(self, v, x_tau, tau, cond, where):
        """v + enhance (v_c - v_u) from the EMA's instantaneous velocities (tt = tau) on ``where``."""
        if not self.cfg.enhance or cond is None or not self.num_classes:
            return v
        v_c, _ = self.velocity(self.target, x_tau, tau, tau, cond)
        v_u, _ = self.velocity(self.target, x_tau, tau, tau, null_like(cond))
        return torch.where(rows(where, v), v + self.cfg.enhance * (v_c - v_u), v)
