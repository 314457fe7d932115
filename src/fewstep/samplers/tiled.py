"""Any-size sampling: a denoiser over a canvas larger than its training resolution, made of
overlapping native-size tiles whose predictions are fused at every evaluation.

This is MultiDiffusion's step (Bar-Tal et al. 2023, eq. 5: the canvas's update is the per-pixel
weighted mean of the tiles' updates), the mechanism Any-Size-Diffusion's fast tiled upscaling
builds on. Because it wraps the denoiser (``raw(x, t, cond) -> (x0, eps)``), every sampler, grid and
few-step student samples a large canvas unchanged. Weights ramp up over the overlap (a raised cosine,
as Mixture-of-Diffusers' smooth masks) so a tile's edge, where it sees least context, counts least;
they never reach zero, so a canvas border covered by one tile keeps that tile's prediction.

Sampled from noise, every tile composes its own picture: a canvas of centred subjects (digits) does not
compose from tiles. Any-Size-Diffusion (Zheng et al. 2023) therefore composes at the training size
first and only then enlarges, refining the enlarged image with tiled diffusion (its FSTD stage):
``generate_enlarged`` samples at the model's own size, enlarges, noises the result to a late level of
the model's own grid and re-runs that grid's last steps on the canvas in fused tiles. FSTD's random
tile shifts ("implicit overlap", its speed-up over explicit overlap) are not implemented here.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..nets.cond import index_cond
from .generate import SamplingSpec, generate, generate_requests, sigmas_for


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis: the first at 0, the last at size - tile, evenly spaced, with at
    least ``overlap`` pixels shared by neighbours."""
    if size < tile:
        raise ValueError(f"canvas side {size} is smaller than the tile {tile}")
    if size == tile:
        return [0]
    stride = tile - overlap
    if stride < 1:
        raise ValueError(f"overlap {overlap} must be smaller than the tile {tile}")
    n = math.ceil((size - tile) / stride) + 1
    return [round(i * (size - tile) / (n - 1)) for i in range(n)]


def ramp(tile: int, overlap: int) -> torch.Tensor:
    """Per-pixel weight along one axis of a tile: a raised cosine over ``overlap`` pixels at each end."""
    i = torch.arange(tile, dtype=torch.float32) + 0.5
    edge = torch.minimum(i, tile - i) / max(overlap, 1)
    return torch.where(edge >= 1, torch.ones_like(edge), 0.5 - 0.5 * torch.cos(math.pi * edge.clamp(max=1)))


class Tiled(nn.Module):
    """``denoiser`` on (B, C, H, W) canvases of any size >= its tile, tiles of ``tile = (h, w)``."""

    def __init__(self, denoiser: nn.Module, tile: tuple[int, int], overlap: int | None = None, max_batch: int = 256):
        super().__init__()
        self.denoiser, self.tile, self.max_batch = denoiser, tuple(tile), max_batch
        self.overlap = overlap if overlap is not None else min(tile) // 2
        self.process = denoiser.process
        self.nfe_per_call = getattr(denoiser, "nfe_per_call", 1)

    def __getattr__(self, name):  # param, sigma_data, embeds_guidance ... of the wrapped denoiser
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("denoiser"), name)

    def layout(self, H: int, W: int) -> tuple[list[tuple[int, int]], torch.Tensor]:
        """Tile corners and the (h, w) weight of one tile."""
        h, w = self.tile
        corners = [(y, x) for y in tile_starts(H, h, self.overlap) for x in tile_starts(W, w, self.overlap)]
        return corners, ramp(h, self.overlap)[:, None] * ramp(w, self.overlap)[None, :]

    def tiles(self, H: int, W: int) -> int:
        """Native-size evaluations one call on an H x W canvas costs."""
        return len(tile_starts(H, self.tile[0], self.overlap)) * len(tile_starts(W, self.tile[1], self.overlap))

    def raw(self, x, t, cond=None):
        B, _, H, W = x.shape
        h, w = self.tile
        if (H, W) == (h, w):
            return self.denoiser.raw(x, t, cond)
        corners, weight = self.layout(H, W)
        T = len(corners)
        tiles = torch.stack([x[:, :, y:y + h, c:c + w] for y, c in corners], 1).flatten(0, 1)  # (B*T, C, h, w)
        t = torch.as_tensor(t, device=x.device)
        tt = (t.expand(B) if t.ndim == 0 else t).repeat_interleave(T)
        cc = index_cond(cond, torch.arange(B, device=x.device).repeat_interleave(T))
        outs = [self.denoiser.raw(tiles[i:i + self.max_batch], tt[i:i + self.max_batch], index_cond(cc, slice(i, i + self.max_batch)))
                for i in range(0, B * T, self.max_batch)]
        x0_t, eps_t = (torch.cat([o[k] for o in outs]).unflatten(0, (B, T)) for k in (0, 1))
        weight = weight.to(device=x.device, dtype=x0_t.dtype)
        fused = [torch.zeros_like(x) for _ in range(2)]
        total = torch.zeros(H, W, device=x.device, dtype=weight.dtype)
        for k, (y, c) in enumerate(corners):
            for f, pred in zip(fused, (x0_t, eps_t)):
                f[:, :, y:y + h, c:c + w] += weight * pred[:, k]
            total[y:y + h, c:c + w] += weight
        return fused[0] / total, fused[1] / total

    def forward(self, x, t, cond=None):
        return self.raw(x, t, cond)[0]


def enlarge(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Images resized to ``size`` = (H, W) by bicubic interpolation, kept in the data range [-1, 1]."""
    return F.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False).clamp(-1, 1)


def tail_spec(den, spec: SamplingSpec, steps: int) -> SamplingSpec:
    """The last ``steps`` steps of ``spec``'s grid as an explicit grid (its final 0 included)."""
    sigmas = sigmas_for(den, spec)
    if not 1 <= steps < len(sigmas) - 1:
        raise ValueError(f"refine steps must be between 1 and {len(sigmas) - 2} for a {len(sigmas) - 1}-step grid, "
                         f"got {steps}")
    return SamplingSpec(spec.sampler, steps, spec.grid, spec.cfg, [float(v) for v in sigmas[-(steps + 1):]])


def generate_enlarged(den, n: int, spec: SamplingSpec, shape, canvas: tuple[int, int], labels=None, seed: int = 0,
                      refine_steps: int = 0, overlap: int | None = None, bf16: bool = False, return_nfe: bool = False):
    """Any-Size-Diffusion's two stages: n samples composed at the model's own ``shape`` (C, h, w), enlarged
    to ``canvas`` (H, W), then (``refine_steps`` > 0) noised to the level ``refine_steps`` steps before the
    end of ``spec``'s grid and denoised over those steps in overlapping native-size tiles. NFE is in
    native-size evaluations: the native sampling's, plus each refinement call times the tiles per canvas."""
    native, nfe = generate(den, n, spec, shape, labels, seed=seed, bf16=bf16, return_nfe=True)
    big = enlarge(native, canvas)
    if refine_steps:
        tiled = Tiled(den, tuple(shape[1:]), overlap)
        big, nfe_refine = generate(tiled, n, tail_spec(den, spec, refine_steps), (shape[0], *canvas), labels,
                                   seed=seed + 1, bf16=bf16, return_nfe=True, start=big)
        nfe += nfe_refine * tiled.tiles(*canvas)
    return (big, nfe) if return_nfe else big


def enlarge_requests(den, spec: SamplingSpec, shape, canvas: tuple[int, int], requests: list[tuple[int, object, int]],
                     refine_steps: int = 0, bf16: bool = False) -> list[torch.Tensor]:
    """``generate_enlarged`` for several requests in one batch (``generate_requests``'s (n, labels, seed) each):
    every request gets the canvases ``generate_enlarged`` would draw for it alone."""
    native = generate_requests(den, spec, shape, requests, bf16=bf16)
    big = [enlarge(x, canvas) for x in native]
    if not refine_steps:
        return big
    refine = [(n, labels, seed + 1) for n, labels, seed in requests]
    return generate_requests(Tiled(den, tuple(shape[1:])), tail_spec(den, spec, refine_steps), (shape[0], *canvas),
                             refine, bf16=bf16, start=big)
