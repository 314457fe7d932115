"""DisCa: a learned feature cache (Zou et al. 2025, "DisCa: ... Distillation-Compatible Learnable Feature
Caching"; docs/methods.md section 12).

DeepCache (nets/cache.py) reuses the deep features of the last full call unchanged for the N-1 calls
that follow; the error grows with the distance between the calls' noise levels. DisCa replaces that
heuristic by a small learned predictor (``CachePredictor``): at a cached call it predicts the deep
features from the cached ones, the shallow skip feature the call computes anyway (fresh and cached) and
both time embeddings. Here the teacher stays frozen and only the predictor trains, on the teacher's own
sampling trajectories (no images): for a full call k and a cached call k + j (1 <= j < N) of one
trajectory, the targets are what the full network computes at k + j,

    L = w_feat ||h_hat - h||^2 / mean(h^2) + w_out ||F(h_hat) - F||^2

(h: the features entering the shallow decoder, F: the network output decoded from them by the frozen
shallow decoder). The predictor's last layer starts at zero, so training starts at DeepCache and every
log line shows the ratio of the predicted output's error to DeepCache's on the same batch.
``out_space="x0"`` weighs the output term by (d x0 / dF)^2 = c_out^2 for EDM: the error in the denoised
sample rather than in the raw output, whose late, nearly clean calls otherwise dominate (docs/notes.md).

The run's model folder is the teacher with its learned cache (architecture ``disca``): it samples,
evaluates and benchmarks like any model, and ``--cache disca:RUN_DIR`` applies its predictor to the
same teacher elsewhere. The paper also distils the steps (Restricted MeanFlow); that part is not here:
pair this cache with a few-step method instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...config import DistillConfig, TrainSettings
from ...nets.cache import CachedUNet, CacheSpec, disca_predictor
from ...nets.cond import NULL_LABEL
from ...noise.precond import Denoiser
from ...samplers.generate import SamplingSpec, generate
from ..base import Method, OptimConfig, frozen_copy


@dataclass
class DisCaConfig:
    interval: int = 2  # a full call every N calls; the predictor serves the N-1 in between
    depth: int = 1  # DeepCache's shallow branch: residual decoder blocks every call runs (1 = the last)
    hidden: int = 32  # the predictor's width
    nfe: int = 16  # the sampler's NFE the model is evaluated at (its default sampling)
    more_nfe: tuple[int, ...] = (32,)  # further NFEs whose trajectories it also learns from (and is benchmarked at)
    sampler: str = "euler"  # the sampler whose trajectories it learns from (and is evaluated with)
    grid: str = "karras"
    sigmas: list[float] | None = None  # explicit levels instead of ``grid`` (a few-step student's own: nfe + 1 levels)
    trajectories: int = 256  # teacher trajectories recorded per NFE before training
    null_share: float = 0.1  # share of trajectories recorded with the null label (so CFG can use the cache)
    feat_weight: float = 1.0  # normalised feature error
    out_weight: float = 1.0  # the network output's error
    out_space: str = "raw"  # "raw": the network output's error | "x0": that error times d x0 / d output
    #                         (c_out for EDM), so noisy calls, which shape the sample, weigh more
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3))

    def __post_init__(self):
        self.more_nfe = tuple(int(n) for n in self.more_nfe)
        if self.interval < 2:
            raise ValueError(f"interval must be >= 2 (a cached call between full ones), got {self.interval}")
        if min(self.nfe, *self.more_nfe, 2) < 2:
            raise ValueError("every NFE must be >= 2")
        from ...samplers.registry import SAMPLERS, steps_for_nfe

        if self.sampler not in SAMPLERS or any(steps_for_nfe(self.sampler, n) is None for n in (self.nfe, *self.more_nfe)):
            raise ValueError(f"sampler {self.sampler!r} cannot spend nfe {(self.nfe, *self.more_nfe)}; "
                             f"samplers: {sorted(SAMPLERS)}")
        if self.sigmas is not None and (len(self.sigmas) != self.nfe + 1 or self.more_nfe or self.sampler == "heun"):
            raise ValueError("explicit sigmas need nfe + 1 levels, one-call steps and no more_nfe")
        if self.trajectories < 1 or self.hidden < 1 or self.depth < 1:
            raise ValueError("trajectories, hidden and depth must be >= 1")
        if not 0 <= self.null_share < 1 or min(self.feat_weight, self.out_weight) < 0:
            raise ValueError("null_share must be in [0, 1) and the loss weights >= 0")
        if self.out_space not in ("raw", "x0"):
            raise ValueError(f"out_space must be 'raw' or 'x0', got {self.out_space!r}")


class _Recorder(Denoiser):
    """The teacher's denoiser that keeps, for each call, the network's input and noise input and the
    native time (every prediction, forward or predict, goes through ``raw``)."""

    def __init__(self, den: Denoiser):
        super().__init__(den.net, den.process, den.param, den.sigma_data, den.boundary)
        self.calls = []

    def raw(self, x, t, cond=None):
        t_, _, _, x_in, c_noise = self._net_inputs(x, t)
        self.calls.append((x_in.detach().cpu(), c_noise.detach().expand(x.shape[0]).cpu(), t_.double().cpu()))
        return super().raw(x, t, cond)


class DisCa(Method):
    """The teacher, frozen, with a DisCa predictor trained on its own trajectories."""

    name = "disca"
    Config = DisCaConfig
    uses_images = False  # trajectories come from the teacher itself
    architectures = ("unet",)
    presets = {"mnist": DistillConfig(DisCaConfig(), TrainSettings(max_iters=1000, ema_decay=0.0, eval_every=500))}

    def __init__(self, teacher: Denoiser, cfg=None, shape=(), num_classes: int = 0):
        super().__init__(teacher, cfg, shape, num_classes)  # refuses other architectures
        self.teacher = frozen_copy(teacher)
        c = self.cfg
        try:
            self.predictor = disca_predictor(self.teacher.net, c.depth, c.hidden).to(next(teacher.parameters()).device)
        except ValueError as e:
            raise ValueError(f"disca: {e}") from None
        self.cached = CachedUNet(self.teacher.net, CacheSpec("disca", interval=c.interval, depth=c.depth), self.predictor)
        self.opt = c.optim.build(self.predictor.parameters())
        self.bank: dict | None = None

    # -- the contract -----------------------------------------------------------------------------
    def networks(self):
        return {"predictor": self.predictor}

    def optimizers(self):
        return {"predictor": self.opt}

    def ema_network(self):
        return "predictor"

    def generator(self, net=None):
        if net is None:
            return self.teacher.like(self.cached)
        return self.teacher.like(CachedUNet(self.teacher.net, self.cached.spec, net))

    def spec(self, nfe: int) -> SamplingSpec:
        from ...samplers.registry import steps_for_nfe

        c = self.cfg
        return SamplingSpec(c.sampler, steps_for_nfe(c.sampler, nfe), c.grid, sigmas=c.sigmas)

    def default_sampling(self):
        return self.spec(self.cfg.nfe)

    def sampling_options(self):
        return [self.spec(n) for n in (self.cfg.nfe, *self.cfg.more_nfe)]

    # -- the teacher's trajectories --------------------------------------------------------------------
    def prepare(self, cache_dir) -> None:
        """Record every network call of ``trajectories`` teacher samples per NFE (its inputs and levels),
        and index the (full call, cached call) pairs a cache with this interval makes."""
        c, xs, levels, labels, pairs, scales = self.cfg, [], [], [], [], []
        offset = 0
        for g, nfe in enumerate((c.nfe, *c.more_nfe)):
            y = self._labels(c.trajectories, seed=g)
            rec = _Recorder(self.teacher)
            generate(rec, c.trajectories, self.spec(nfe), self.shape, y, seed=10_007 + g, batch=c.trajectories)
            calls = len(rec.calls)  # nfe calls, each of the whole batch
            xs.append(torch.stack([x for x, _, _ in rec.calls], 1).flatten(0, 1))  # (T * calls, ...): trajectory-major
            levels.append(torch.stack([c_noise for _, c_noise, _ in rec.calls], 1).flatten())
            scales.append(self.teacher.output_scale(torch.stack([t for _, _, t in rec.calls], 1).flatten()).float())
            if y is not None:
                labels.append(y.repeat_interleave(calls))
            for i in range(c.trajectories):
                base = offset + i * calls
                pairs += [(base + k, base + k + j) for k in range(0, calls, c.interval)
                          for j in range(1, c.interval) if k + j < calls]
            offset += c.trajectories * calls
        self.bank = {"x": torch.cat(xs), "c_noise": torch.cat(levels), "x0_scale": torch.cat(scales),
                     "labels": torch.cat(labels) if labels else None, "pairs": torch.tensor(pairs)}

    def _labels(self, n: int, seed: int):
        if not self.num_classes:
            return None
        g = torch.Generator().manual_seed(seed)
        y = torch.arange(n) % self.num_classes
        return torch.where(torch.rand(n, generator=g) < self.cfg.null_share, torch.full_like(y, NULL_LABEL), y)

    def _calls(self, idx, device):
        b = self.bank
        y = None if b["labels"] is None else b["labels"][idx].to(device)
        return b["x"][idx].to(device), b["c_noise"][idx].to(device), y

    # -- training ------------------------------------------------------------------------------------
    def targets(self, x, c_noise, cond):
        """(features entering the shallow decoder, skip features, embedding) of the full network's call."""
        emb = self.teacher.net.embed(c_noise, cond)
        return (*self.cached.deep(x, emb), emb)

    def out_weights(self, idx, device) -> torch.Tensor:
        """Per-call weight of the output error: 1 (raw) or (d x0 / dF)^2 (``out_space="x0"``: the error in
        the denoised sample, x0 = c_skip x + c_out F)."""
        if self.cfg.out_space == "raw":
            return torch.ones(len(idx), device=device)
        return self.bank["x0_scale"][idx].to(device) ** 2

    def step(self, batch, it, ctx):
        if self.bank is None:
            raise RuntimeError("disca: call prepare() first (it records the teacher's trajectories)")
        n = next(v for v in batch.values() if torch.is_tensor(v)).shape[0]
        device = next(self.predictor.parameters()).device
        pick = self.bank["pairs"][torch.randint(len(self.bank["pairs"]), (n,), generator=ctx.rng)]
        net, start, si = self.teacher.net, self.cached.start, self.cached.skip_index
        with ctx.autocast():
            with torch.no_grad():
                h_c, hs_c, emb_c = self.targets(*self._calls(pick[:, 0], device))
                h, hs, emb = self.targets(*self._calls(pick[:, 1], device))
                out = net.decode(h, hs, emb, start=start)  # the full network's output at the cached call
                reuse = net.decode(h_c, hs, emb, start=start)  # DeepCache's output at this call
            h_hat = self.predictor(h_c, hs_c[si], hs[si], emb_c, emb)
            out_hat = net.decode(h_hat, hs, emb, start=start)
            feat = (h_hat - h).pow(2).flatten(1).mean(1) / h.pow(2).flatten(1).mean(1).clamp(min=1e-8)
            w = self.out_weights(pick[:, 1], device)
            out_err = w * (out_hat - out).pow(2).flatten(1).mean(1)
            loss = self.cfg.feat_weight * feat + self.cfg.out_weight * out_err
        ctx.update(loss.mean(), "predictor", clip=self.cfg.optim.grad_clip)
        base = (w * (reuse - out).pow(2).flatten(1).mean(1)).mean()
        return {"loss": loss.mean(), "feat": feat.mean(), "out": out_err.mean(),
                "vs_deepcache": out_err.mean().detach() / base.clamp(min=1e-12)}
