"""LAPTOP-Diff: one-shot layer pruning by measured output distortion, then normalised feature KD
(Zhang et al. 2024; docs/methods.md section 11, details *unverified* against code).

1. Every prunable layer of the teacher's UNet (``UNet.prunable_layers``: self-attention, residual blocks
   whose widths allow it, the middle block's layers) is scored by the distortion of the teacher's output
   when that layer alone is removed: the teacher's own weighted error (losses.prediction_mse) between
   the pruned and the whole network's predictions on calibration inputs. The paper finds these scores
   nearly additive, which is what makes a one-shot choice sound.
2. One shot: the lowest-scoring layers are removed, in order, until the network holds at most
   ``budget`` of the teacher's parameters. ``selection="random"`` takes the layers in a random order
   instead, under the same budget (the baseline the scored choice must beat at the same size).
3. The pruned network (the teacher's weights, fewer layers) is retrained with the denoising loss plus
   output KD and *normalised* feature KD, sum_l ||F_s - F_t||^2 / ||F_t||^2.

The calibration inputs are the teacher's own samples (a few Euler steps, fixed seed), noised at levels
drawn like its training's: the method needs no data before training starts, and the choice is
deterministic.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace

import torch

from ...config import DistillConfig, TrainSettings
from ...nets.unet import UNet
from ...noise.precond import Denoiser
from ...samplers.generate import SamplingSpec, generate
from ..base import OptimConfig
from ..losses import prediction_mse
from .base import CompressionMethod, KDConfig

SELECTIONS = ("score", "random")


@dataclass
class LaptopConfig(KDConfig):
    budget: float = 0.6  # keep at most this share of the teacher's parameters
    selection: str = "score"  # score: LAPTOP-Diff's one-shot choice | random: layers in random order, same budget
    seed: int = 0  # the random draw, and the calibration samples' noise
    calib_n: int = 64  # calibration samples the layer scores average over
    normalise_features: bool = True  # LAPTOP-Diff's normalised feature KD

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.budget < 1:
            raise ValueError(f"budget must be in (0, 1), got {self.budget}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {self.selection!r}")
        if self.calib_n < 1:
            raise ValueError(f"calib_n must be >= 1, got {self.calib_n}")


def _params(net) -> int:
    return sum(p.numel() for p in net.parameters())


def pruned_unet(net: UNet, layers) -> UNet:
    """``net`` without ``layers`` (with its weights for every layer kept)."""
    out = UNet(replace(net.cfg, pruned=tuple(net.cfg.pruned) + tuple(layers)))
    missing, _ = out.load_state_dict(net.state_dict(), strict=False)
    if missing:
        raise ValueError(f"pruning left weights the teacher does not have: {missing}")
    return out.to(next(net.parameters()).device)


def calibration_inputs(teacher: Denoiser, cfg: LaptopConfig, shape, num_classes: int):
    """(x_t, t, labels): the teacher's samples (8 Euler steps) noised at training-like levels."""
    labels = torch.arange(cfg.calib_n) % num_classes if num_classes else None
    x0 = generate(teacher, cfg.calib_n, SamplingSpec("euler", 8, "karras"), shape, labels, seed=cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    t = cfg.time_sampler.sample(teacher.process, cfg.calib_n, g)
    eps = torch.randn(x0.shape, generator=g)
    return teacher.process.add_noise(x0, eps, t), t, labels


@torch.no_grad()
def layer_scores(teacher: Denoiser, x_t, t, labels) -> dict[str, float]:
    """Each prunable layer -> the mean distortion of the teacher's prediction when it alone is removed."""
    whole = teacher(x_t, t, labels)
    scores = {}
    for layer in teacher.net.prunable_layers():
        cut = teacher.like(pruned_unet(teacher.net, [layer]).eval())
        scores[layer] = float(prediction_mse(teacher, cut(x_t, t, labels), whole, x_t, t).mean())
    return scores


def one_shot(net: UNet, order: list[str], budget: float) -> list[str]:
    """Layers taken from ``order`` until the pruned network holds <= budget x the parameters."""
    limit, chosen = budget * _params(net), []
    for layer in order:
        if _params(pruned_unet(net, chosen)) <= limit:
            break
        chosen.append(layer)
    if _params(pruned_unet(net, chosen)) > limit:
        raise ValueError(f"even without every prunable layer the network keeps more than {budget:.0%} of its "
                         f"parameters; raise the budget")
    return chosen


class Laptop(CompressionMethod):
    """One-shot layer pruning by measured distortion, retrained with normalised feature KD."""

    name = "laptop"
    Config = LaptopConfig
    presets = {"mnist": DistillConfig(LaptopConfig(optim=OptimConfig(lr=2e-4)),
                                      TrainSettings(max_iters=1500, ema_decay=0.999, eval_every=500))}

    def build_student(self, teacher_net):
        c = self.cfg
        teacher = self.teacher
        self.scores = layer_scores(teacher, *calibration_inputs(teacher, c, self.shape, self.num_classes))
        order = sorted(self.scores, key=lambda k: (self.scores[k], k))
        if c.selection == "random":
            random.Random(c.seed).shuffle(order)
        self.pruned_layers = one_shot(teacher_net, order, c.budget)
        return pruned_unet(teacher_net, self.pruned_layers)
