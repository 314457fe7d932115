"""ArcFlow (Yang et al. 2026, "Unleashing 2-Step Text-to-Image Generation via High-Precision Non-Linear
Flow Distillation"), as its public code (pi-Flow's ``ArcFlowImitation``) trains it.

The student predicts, at the start of each of its M steps, a *policy*: K velocity components with
mixture weights and momenta (nets/arc.py), whose velocity along the step follows an arc integrated in
closed form (samplers/arc.py). It is trained by on-policy imitation of the teacher (pi-Flow's pi-ID):
for a data point noised to a step's start tau_src, the detached policy is integrated to a few random
intermediate times tau_a inside the step; there the teacher's velocity u(x_a, tau_a) is the target for
the policy's velocity (its average over [tau_b, tau_a] when a teacher interval follows,
``teacher_mix_iters``: early on the path between states follows the teacher, a ratio decaying to 0;
intervals shorter than ``min_step`` use the velocity at tau_a). The loss is the mean squared error,
averaged over the intermediate states.

Steps are the uniform rectified-flow grid from the process's top level (timestep_ratio 1 in the public
code). The student starts from the teacher: each component's output layer is the teacher's, so the
policy's velocity at a step's start is the teacher's. Where a step starts (``start``): at noised data, as
``ArcFlowImitation`` does (the default), or, as the public data-free variant (``PiFlowImitationDataFree``)
does, at the state the detached policy's own earlier arcs reach from pure noise, which is the state the
sampler will hand that step; the rollout start reads no image.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...config import DistillConfig, TrainSettings
from ...nets.arc import ArcNet, ArcPolicy
from ...nets.cond import index_cond
from ...noise.base import bcast
from ...noise.guidance import guided
from ...noise.precond import Denoiser
from ...samplers.arc import arc_flow_step
from ...samplers.generate import SamplingSpec
from ...samplers.grids import flow_range
from ...samplers.ode import flow_native, flow_velocity
from ..base import OptimConfig, StudentMethod, adam, cond_of, frozen_copy

STARTS = ("data", "rollout")


@dataclass
class ArcFlowConfig:
    nfe: int = 2  # M, the steps the policy is trained for (ArcFlow: 2)
    eval_nfes: tuple[int, ...] = (1, 2, 4)  # step counts it is benchmarked at (the arc sampler)
    components: int = 4  # K velocity components of the policy
    momenta: tuple[float, float] = (-1.0, 1.0)  # initial spread of the components' log-momenta (bias)
    states: int = 2  # num_intermediate_states: teacher queries per step along the policy's path
    teacher_mix_iters: int = 0  # num_decay_iters: the teacher's share of the path decays 1 -> 0 over these
    min_step: float = 2 / 128  # intervals shorter than two of 128 substeps use the local velocity
    teacher_cfg: float = 1.0  # CFG scale of the teacher's velocity (1 = none)
    final_step: float = 1.0  # final_step_size_scale: the last step's length over the others' (pi-Flow); > 1
    #                          shortens the earlier steps, whose small errors the teacher's ODE amplifies below
    start: str = "data"  # where a step starts: "data" = noised data at its start (ArcFlowImitation) |
    #                      "rollout" = the detached policy's own arcs from pure noise (the data-free variant)
    optim: OptimConfig = field(default_factory=lambda: adam(1e-4, grad_clip=1.0))

    def __post_init__(self):
        self.eval_nfes = tuple(int(k) for k in self.eval_nfes)
        self.momenta = tuple(float(v) for v in self.momenta)
        if self.nfe < 1 or not self.eval_nfes or min(self.eval_nfes) < 1:
            raise ValueError("nfe and eval_nfes must be positive step counts")
        if self.components < 1 or self.states < 1 or self.teacher_mix_iters < 0:
            raise ValueError("components and states must be >= 1 and teacher_mix_iters >= 0")
        if len(self.momenta) != 2 or self.min_step <= 0 or self.teacher_cfg < 0:
            raise ValueError("momenta must be (lo, hi), min_step > 0 and teacher_cfg >= 0")
        if self.final_step <= 0:
            raise ValueError(f"final_step must be > 0, got {self.final_step}")
        if self.start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got {self.start!r}")


def segment_times(tau_src, seg, states: int, teacher_ratio: float, rng):
    """Per sample and state, (tau_a, tau_b) inside the step [tau_src - seg, tau_src] (pi-ID's scheduled
    mixing): the policy's share (1 - ratio) of the step is cut at ``states`` sorted uniform points, the
    teacher's share at ``states - 1``; state k's policy interval ends at tau_a, its teacher interval at tau_b."""
    n = tau_src.shape[0]
    cuts = torch.sort(torch.rand(n, states, generator=rng), 1).values * ((1 - teacher_ratio) * seg)[:, None]
    policy = torch.diff(cuts, dim=1, prepend=torch.zeros(n, 1))
    inner = torch.sort(torch.rand(n, states - 1, generator=rng), 1).values
    teacher = torch.diff(inner, dim=1, prepend=torch.zeros(n, 1), append=torch.ones(n, 1)) * (teacher_ratio * seg)[:, None]
    tau_a, tau_b, tau = [], [], tau_src
    for k in range(states):
        a = tau - policy[:, k]
        b = a - teacher[:, k]
        tau_a.append(a)
        tau_b.append(b)
        tau = b
    return torch.stack(tau_a, 1), torch.stack(tau_b, 1)


def imitation_loss(pol: ArcPolicy, y_src, tau_a, tau_b, teacher_velocity, min_step: float) -> torch.Tensor:
    """Per-sample MSE between the policy's (average) velocity and the teacher's at each state, averaged
    over states. Between states the path follows the detached policy to tau_a, then the teacher (Euler)
    to tau_b; ``teacher_velocity(y, tau)`` is the teacher's flow velocity at flow point y."""
    still = ArcPolicy(pol.means.detach(), pol.logits.detach(), pol.log_momenta.detach(), pol.tau_src)
    y, tau, losses = y_src, pol.tau_src, []
    for k in range(tau_a.shape[1]):
        a, b = tau_a[:, k], tau_b[:, k]
        with torch.no_grad():
            y_a = y - still.displacement(tau, a)
            u = teacher_velocity(y_a, a)
        pred = pol.mean_velocity(a, b, min_step)
        losses.append(((pred - u.float()) ** 2).flatten(1).mean(1))
        y, tau = y_a - bcast(a - b, y_a) * u, b
    return torch.stack(losses, 1).mean(1)


class ArcFlow(StudentMethod):
    name = "arcflow"
    Config = ArcFlowConfig
    architectures = ("unet", "mlp")  # the output layer is widened into the policy
    presets = {
        "mnist": DistillConfig(ArcFlowConfig(), TrainSettings(max_iters=600)),
        "toy2d": DistillConfig(ArcFlowConfig(optim=adam(1e-3, grad_clip=1.0)),
                               TrainSettings(max_iters=600, batch_size=256, bf16=False, eval_n=2000)),
    }

    def __init__(self, teacher: Denoiser, cfg=None, shape=(), num_classes: int = 0):
        super().__init__(teacher, cfg, shape, num_classes)
        c = self.cfg
        self.teacher = frozen_copy(teacher)
        net = ArcNet.from_network(teacher.net, c.components, c.momenta, generator=torch.Generator().manual_seed(0))
        self.student = teacher.like(net).train().requires_grad_(True)
        self.opt = c.optim.build(self.student.net.parameters())
        self.tau_min, self.tau_top = flow_range(self.process)  # the flow grid's span: training steps = sampling steps

    def steps(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(start, length) of the M training steps in flow time: equal steps from the top level down to 0,
        the last one ``final_step`` times the others (pi-Flow's ``final_step_size_scale``)."""
        c = self.cfg
        base = self.tau_top / (c.nfe - 1 + c.final_step)
        length = torch.full((c.nfe,), base, dtype=torch.float64)
        length[-1] = base * c.final_step
        start = self.tau_top - torch.cat([torch.zeros(1, dtype=torch.float64), length.cumsum(0)[:-1]])
        return start.float(), length.float()

    def default_sampling(self):
        if self.cfg.final_step == 1.0:
            return SamplingSpec("arc", self.cfg.nfe, "flow")
        tau = self.steps()[0].double()  # the training steps' starts as a sigma_hat grid, then 0
        return SamplingSpec("arc", self.cfg.nfe, "flow", sigmas=(tau / (1 - tau)).tolist() + [0.0])

    def sampling_options(self):
        """The arc sampler at every step count, and Euler on the policy's initial velocity at M steps
        (the same model without its closed-form arcs)."""
        arcs = [self.default_sampling()] + [SamplingSpec("arc", k, "flow") for k in self.cfg.eval_nfes
                                            if k != self.cfg.nfe]
        return arcs + [SamplingSpec("euler", self.cfg.nfe, "flow")]

    def teacher_ratio(self, it: int) -> float:
        k = self.cfg.teacher_mix_iters
        return 1 - min(it, k) / k if k else 0.0

    def teacher_velocity(self, cond):
        teacher = guided(self.teacher, self.cfg.teacher_cfg)

        def velocity(y, tau):
            return flow_velocity(teacher, y, tau.clamp_min(self.tau_min), cond)[0]
        return velocity

    @torch.no_grad()
    def rollout_start(self, z, j, cond, ctx) -> torch.Tensor:
        """Flow states at the start of step j per sample: pure noise at the top level (tau_top z, where the
        sampler starts), moved by the detached policy's closed-form arcs through steps 0 .. j - 1."""
        start, length = self.steps()
        y = z * self.tau_top
        for k in range(int(j.max())):
            go = j > k
            tau0 = torch.full((int(go.sum()),), float(start[k]), device=z.device)
            with ctx.autocast():
                y[go] = arc_flow_step(self.student, y[go], tau0, tau0 - float(length[k]), index_cond(cond, go))
        return y

    def step(self, batch, it, ctx):
        c = self.cfg
        x = batch["x"].float()
        n, cond = x.shape[0], cond_of(batch)
        start, length = self.steps()
        j = torch.randint(0, c.nfe, (n,), generator=ctx.rng)
        tau_src, seg = start[j], length[j]  # a step's start and length on the flow grid
        tau_a, tau_b = segment_times(tau_src, seg, c.states, self.teacher_ratio(it), ctx.rng)
        dev = x.device
        tau_src, tau_a, tau_b = tau_src.to(dev), tau_a.to(dev), tau_b.to(dev)
        if c.start == "rollout":
            y_src = self.rollout_start(ctx.randn(x.shape), j.to(dev), cond, ctx)
        else:
            y_src = bcast(1 - tau_src, x) * x + bcast(tau_src, x) * ctx.randn(x.shape)
        with ctx.autocast():
            xs, ts = flow_native(self.process, y_src, tau_src)
            pol = self.student.policy(xs, ts, cond)
            loss = imitation_loss(pol, y_src, tau_a, tau_b, self.teacher_velocity(cond), c.min_step)
        self.update(ctx, loss)
        return {"loss": loss.mean()}
