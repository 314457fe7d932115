"""Watermarked students: every image a few-step student makes carries a fixed bit string (its key).

Stable Signature (Fernandez et al. 2023), the mechanism the mission's watermarked-student work
(Safe-SD, DiffMark) builds on: a message encoder/decoder pair is trained first and then frozen, and the
generator alone is fine-tuned so that the decoder reads the key from everything it makes, while
staying close to the original generator:

1. Encoder/decoder pre-training (iterations < ``decoder_warmup``), HiDDeN-style on training images x
   with random messages m in {0,1}^L:
       x_m = clip(x + alpha * u_m / rms(u_m)),   u_m = sum_i (2 m_i - 1) P_i
       L = BCE(D(aug(x_m)), m) + BCE(D(aug(x)), 1/2)
   P_i are learned per-bit patterns (the encoder) and D the decoder. The residual's strength is fixed
   (RMS ``alpha``) instead of traded against an image loss, so it cannot collapse to zero, and alpha is
   the one knob between detectability and fidelity. The 1/2 target on unmarked images makes D read
   them at chance, so a plain model's images agree with any key at about 0.5.
2. Student fine-tuning (the rest), P and D frozen:
       L = w_fid ||G(z, c) - sg(clip(G0(z, c) + alpha * u_k / rms(u_k)))||^2 + w_bits BCE(D(aug(G(z, c))), k)
   G0 is the original (frozen) student on the same noise and labels; G is sampled exactly as it is
   served (its sampler and steps, with gradients through every step). The fidelity target is the
   original image *with the key's pattern*, so the student is told what to add, not only that the
   decoder should change its mind (which, with the BCE alone, it does by redrawing the digit).

Departures (docs/decisions.md): HiDDeN's encoder is a network of the image and the message with its
residual weighed against an image loss; that residual collapsed to zero on MNIST, so here the encoder
is a message-only pattern at a fixed strength. Stable Signature's perceptual loss (Watson-VGG) is
plain MSE to the marked original. aug is what an image meets on the way (Gaussian noise, a shift of a
pixel, clipping to [-1, 1]).

Measured (benchmarks/results/watermark_anysize_mnist.json, the mnist preset on a 1-step DMD2 student,
1,000 images on noise the training never drew): key bit accuracy 0.995 on the marked student's images
against 0.518 on the original student's, 99.3% of marked images detected at p < 1e-6 and none of the
original's; FD 12.42 +- 0.92 against the original's 12.91 +- 0.93 (3 seeds).

Detection (``fewstep detect``): bit accuracy against the key and the chance of at least that many
matching bits from an unmarked image, P(Binomial(L, 1/2) >= matches) (Stable Signature Sec. 3).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ...config import DistillConfig, TrainSettings
from ...noise.precond import Denoiser
from ...samplers.generate import SamplingSpec, sigmas_for
from ...samplers.ode import initial_noise
from ...samplers.registry import STOCHASTIC, sample
from ..base import OptimConfig, StudentMethod, adam, cond_of, frozen_copy, trainable_copy


@dataclass
class WatermarkConfig:
    nfe: int = 1  # steps of the student being marked, sampled as it is served
    sampler: str = "multistep"  # its sampler (DMD/consistency students: multistep)
    grid: str = "karras"  # its time grid
    bits: int = 32  # key length
    key: str = ""  # the key as a string of 0/1 ("" = drawn from key_seed)
    key_seed: int = 2024
    alpha: float = 0.03  # RMS of the key's pattern on [-1, 1] images (0.03: 36 dB PSNR)
    aug_noise: float = 0.02  # std of the Gaussian noise added before decoding
    aug_shift: int = 0  # random shift of up to this many pixels before decoding (robustness to crops; 1 pixel
    # decorrelates pixel-level patterns, and pre-training then stalls at chance for hundreds of iterations)
    w_bits: float = 0.01  # student: weight of the key's BCE through the frozen decoder
    w_fid: float = 1.0  # student: weight of the distance to the original student's image with the key's pattern
    decoder_warmup: int = 500  # first iterations: patterns and decoder learn random messages; then frozen
    channels: int = 32  # width of the decoder
    optim: OptimConfig = field(default_factory=lambda: adam(1e-4, grad_clip=1.0))  # the student
    decoder_optim: OptimConfig = field(default_factory=lambda: adam(1e-3, grad_clip=1.0))  # patterns + decoder,
    # decayed linearly to a tenth over the warm-up (a constant LR leaves the decoder's accuracy swinging)

    def __post_init__(self):
        if self.nfe < 1 or self.bits < 1 or self.channels < 1 or self.decoder_warmup < 0:
            raise ValueError("nfe, bits and channels must be >= 1, decoder_warmup >= 0")
        if self.key and (len(self.key) != self.bits or set(self.key) - {"0", "1"}):
            raise ValueError(f"key must be {self.bits} characters of 0/1, got {self.key!r}")
        if min(self.aug_noise, self.w_bits, self.w_fid) < 0 or self.aug_shift < 0:
            raise ValueError("weights and augmentations must be >= 0")
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha (the pattern's RMS on [-1, 1] images) must be in (0, 1], got {self.alpha}")


def key_bits(cfg: WatermarkConfig) -> torch.Tensor:
    if cfg.key:
        return torch.tensor([float(c) for c in cfg.key])
    return torch.randint(0, 2, (cfg.bits,), generator=torch.Generator().manual_seed(cfg.key_seed)).float()


class KeyPatterns(nn.Module):
    """The encoder: one learned image-sized pattern per bit; a message is their signed sum at RMS alpha."""

    def __init__(self, bits: int, shape: tuple, alpha: float):
        super().__init__()
        self.alpha = alpha
        self.patterns = nn.Parameter(0.1 * torch.randn(bits, *shape))

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        """(n, bits) in {0, 1} -> (n, *shape) residuals, each at RMS exactly alpha."""
        u = torch.einsum("nb,b...->n...", 2 * m - 1, self.patterns.to(m.dtype))
        rms = u.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-8)
        return self.alpha * u / rms.view(-1, *[1] * (u.dim() - 1))


class MessageDecoder(nn.Module):
    """An image to ``bits`` logits: strided convolutions, then a linear layer over the whole (4x smaller)
    map. Global average pooling (HiDDeN's) learns far slower on small images: the bits' patterns are
    told apart by where they sit, which averaging throws away."""

    def __init__(self, channels: int, bits: int, width: int, size: tuple[int, int]):
        super().__init__()
        h, w = (-(-s // 4) for s in size)
        self.net = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.SiLU(),
                                 nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
                                 nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
                                 nn.Flatten(), nn.Linear(2 * width * h * w, bits))

    def forward(self, x):
        return self.net(x)


def augment(x, noise: float, shift: int, rng: torch.Generator):
    """What an image meets between generation and detection, in small: clipping, a shift and noise."""
    x = x.clamp(-1, 1)
    if shift:
        dy, dx = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=rng))
        x = torch.roll(x, (dy, dx), dims=(2, 3))
    return x + noise * torch.randn(x.shape, generator=rng).to(x.device) if noise else x


def load_decoder(run) -> tuple[MessageDecoder, torch.Tensor, dict]:
    """(decoder, key, its config) of a watermark run: the training output folder (its model's config
    and its latest checkpoint's decoder)."""
    from pathlib import Path

    from ...errors import FewstepError
    from ...io import load_state_strict, load_tensors, read_json

    run = Path(run)
    cfg_path, weights = run / "model" / "config.json", run / "latest" / "decoder.safetensors"
    if not cfg_path.is_file() or not weights.is_file():
        raise FewstepError(f"{run}: not a watermark run (needs model/config.json and latest/decoder.safetensors)")
    cfg = read_json(cfg_path)
    method = cfg.get("method", {})
    if method.get("method") != "watermark":
        raise FewstepError(f"{run}: its model was not trained by the watermark method")
    shape = cfg["data"]["shape"]
    decoder = MessageDecoder(shape[0], method["bits"], method["channels"], shape[1:])
    load_state_strict(decoder, load_tensors(weights), weights)
    key = torch.tensor([float(b) for b in method["key_resolved"]])
    return decoder.eval().requires_grad_(False), key, {"shape": shape, **method}


def detection(logits: torch.Tensor, key: torch.Tensor) -> dict:
    """Bit accuracy per image against the key, and the chance an unmarked image matches as many bits."""
    match = ((logits > 0).float() == key.to(logits.device)).float().sum(1)
    L = key.numel()
    p = [sum(math.comb(L, j) for j in range(int(k), L + 1)) / 2**L for k in match.tolist()]
    return {"bit_acc": (match / L).tolist(), "p_value": p}


class Watermark(StudentMethod):
    """Fine-tunes a student (given as ``--teacher``) to carry a key its decoder reads."""

    name = "watermark"
    Config = WatermarkConfig
    architectures = ("unet",)
    presets = {"mnist": DistillConfig(WatermarkConfig(), TrainSettings(max_iters=1100, batch_size=64, ema_decay=0.0,
                                                                       eval_every=400, ckpt_every=100))}

    def __init__(self, teacher: Denoiser, cfg=None, shape=(), num_classes: int = 0):
        super().__init__(teacher, cfg, shape, num_classes)
        c = self.cfg
        self.original = frozen_copy(teacher)
        self.student = trainable_copy(teacher)
        self.encoder = KeyPatterns(c.bits, self.shape, c.alpha)
        self.decoder = MessageDecoder(self.shape[0], c.bits, c.channels, self.shape[1:])
        self.key = key_bits(c)
        self.opt = c.optim.build(self.student.net.parameters())
        self.opt_decoder = c.decoder_optim.build([*self.encoder.parameters(), *self.decoder.parameters()])

    def networks(self):
        return {"student": self.student.net, "encoder": self.encoder, "decoder": self.decoder}

    def optimizers(self):
        return {"student": self.opt, "decoder": self.opt_decoder}

    def default_sampling(self):
        return SamplingSpec(self.cfg.sampler, self.cfg.nfe, self.cfg.grid)

    def config(self):
        return {**super().config(), "key_resolved": "".join(str(int(b)) for b in self.key)}

    def render(self, den: Denoiser, n: int, cond, rng: torch.Generator):
        """The student's images for noise from ``rng``, sampled as it is served (differentiable)."""
        spec = self.default_sampling()
        sigmas = sigmas_for(den, spec)
        x = initial_noise(den.process, sigmas, (n, *self.shape), generator=rng, device=next(den.parameters()).device)
        return sample(den, x, sigmas, spec.sampler, cond=cond, generator=rng if spec.sampler in STOCHASTIC else None)

    def read(self, x, rng):
        return self.decoder(augment(x, self.cfg.aug_noise, self.cfg.aug_shift, rng))

    def marked(self, x, m):
        """x with message m's pattern, as an image (clipped to [-1, 1])."""
        return (x + self.encoder(m.to(x.device).expand(x.shape[0], -1))).clamp(-1, 1)

    def coder_loss(self, x, rng):
        """Stage 1: random messages on training images are read back; unmarked images read at chance."""
        m = torch.randint(0, 2, (x.shape[0], self.cfg.bits), generator=rng).float().to(x.device)
        marked = F.binary_cross_entropy_with_logits(self.read(self.marked(x, m), rng), m, reduction="none").mean(1)
        plain = F.binary_cross_entropy_with_logits(self.read(x, rng), torch.full_like(m, 0.5), reduction="none").mean(1)
        return marked + plain, marked

    def key_bce(self, logits):
        return F.binary_cross_entropy_with_logits(logits, self.key.to(logits.device).expand_as(logits), reduction="none").mean(1)

    def step(self, batch, it, ctx):
        c, n, cond = self.cfg, batch["x"].shape[0], cond_of(batch)
        if it < c.decoder_warmup:
            with ctx.autocast():
                loss, marked = self.coder_loss(batch["x"].float(), ctx.rng)
            ctx.update(loss, "decoder", clip=c.decoder_optim.grad_clip, lr_scale=1 - 0.9 * it / c.decoder_warmup)
            return {"coder_loss": loss.mean(), "message_bce": marked.mean()}
        self.encoder.requires_grad_(False)  # frozen from here on: only the student can make the key appear
        self.decoder.requires_grad_(False)
        state = ctx.rng.get_state()
        with ctx.autocast():
            x = self.render(self.student, n, cond, ctx.rng)
        ctx.rng.set_state(state)  # the same noise and labels for the original student
        with torch.no_grad(), ctx.autocast():
            target = self.marked(self.render(self.original, n, cond, ctx.rng).float(), self.key)
        with ctx.autocast():
            logits = self.read(x.float(), ctx.rng)
            bits, fid = self.key_bce(logits), (x.float() - target).pow(2).flatten(1).mean(1)
            loss = c.w_bits * bits + c.w_fid * fid
        self.update(ctx, loss)
        return {"loss": loss.mean(), "bits_bce": bits.mean(), "fidelity": fid.mean(),
                "bit_acc_key": ((logits > 0).float() == self.key.to(logits.device)).float().mean()}
