"""A small class-conditional UNet (DDPM/ADM style) for 8x8 to 64x64 images.

The architecture sees only ``(x, c_noise, cond)``; preconditioning lives in the Denoiser.
``forward(..., return_bottleneck=True)`` also returns the mid-block output, which DMD2's
discriminator head reads (Yin et al. 2024, Sec. 4.3).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import CondEmbedding


@dataclass
class UNetConfig:
    in_channels: int = 1
    image_size: int = 28
    channels: int = 32  # base width; ~0.5 M params at 24, ~10 M at 96 (with ch_mult (1, 2, 2))
    ch_mult: tuple = (1, 2, 2)  # width multiplier per resolution level
    num_res_blocks: int = 2  # residual blocks per level (encoder); decoder has one more
    attn_levels: tuple = (2,)  # levels (0 = full resolution) that get self-attention
    num_classes: int = 10  # 0 = unconditional
    dropout: float = 0.0
    time_scale: float = 1.0  # multiplies c_noise before the sinusoidal embedding
    w_dim: int = 0  # > 0: embed cond.extra['w'] (guidance-scale embedding)

    def __post_init__(self):
        self.ch_mult, self.attn_levels = tuple(self.ch_mult), tuple(self.attn_levels)
        if self.channels < 8 or self.channels % 8:
            raise ValueError(f"UNet channels must be a positive multiple of 8, got {self.channels}")
        if not self.ch_mult or self.num_res_blocks < 1:
            raise ValueError("UNet needs at least one level and one residual block per level")
        if self.image_size % (2 ** (len(self.ch_mult) - 1)):
            raise ValueError(f"image_size {self.image_size} is not divisible by 2^{len(self.ch_mult) - 1}")


def _norm(c):
    return nn.GroupNorm(min(8, c // 4), c)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, emb_dim, dropout):
        super().__init__()
        self.n1, self.c1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)  # scale-shift (ADM, Dhariwal & Nichol 2021)
        self.n2, self.c2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        nn.init.zeros_(self.c2.weight), nn.init.zeros_(self.c2.bias)  # residual starts as identity
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.c1(F.silu(self.n1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.n2(h) * (1 + scale) + shift
        h = self.c2(self.drop(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    def __init__(self, c, heads=4):
        super().__init__()
        self.norm, self.qkv, self.out, self.heads = _norm(c), nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1), heads
        nn.init.zeros_(self.out.weight), nn.init.zeros_(self.out.bias)

    def forward(self, x):
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).unbind(1)
        h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.out(h.transpose(-1, -2).reshape(B, C, H, W))


class UNet(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        ch, emb_dim = cfg.channels, 4 * cfg.channels
        self.embed = CondEmbedding(ch, emb_dim, cfg.num_classes, cfg.time_scale, cfg.w_dim)
        self.inp = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        self.down, skips, c = nn.ModuleList(), [ch], ch
        for lvl, m in enumerate(cfg.ch_mult):
            for _ in range(cfg.num_res_blocks):
                self.down.append(nn.ModuleList([ResBlock(c, ch * m, emb_dim, cfg.dropout),
                                                Attention(ch * m) if lvl in cfg.attn_levels else nn.Identity()]))
                c = ch * m
                skips.append(c)
            if lvl < len(cfg.ch_mult) - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid1, self.mid_attn = ResBlock(c, c, emb_dim, cfg.dropout), Attention(c)
        self.mid2 = ResBlock(c, c, emb_dim, cfg.dropout)
        self.bottleneck_channels = c
        self.up = nn.ModuleList()
        for lvl, m in reversed(list(enumerate(cfg.ch_mult))):
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(nn.ModuleList([ResBlock(c + skips.pop(), ch * m, emb_dim, cfg.dropout),
                                              Attention(ch * m) if lvl in cfg.attn_levels else nn.Identity()]))
                c = ch * m
            if lvl > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.out = nn.Sequential(_norm(c), nn.SiLU(), nn.Conv2d(c, cfg.in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight), nn.init.zeros_(self.out[-1].bias)

    def forward(self, x, c_noise, cond=None, return_bottleneck: bool | str = False):
        """The prediction; with ``return_bottleneck`` also the mid-block features, and with
        ``return_bottleneck="only"`` those alone (the decoder is not run: a GAN head needs no output)."""
        emb = self.embed(c_noise, cond)
        h, hs = self.encode(x, emb)
        h = self.middle(h, emb)
        mid = h
        if return_bottleneck == "only":
            return mid
        out = self.decode(h, hs, emb)
        return (out, mid) if return_bottleneck else out

    # -- pieces (caching samplers, nets/cache.py, run parts of the network) ----------------------
    def encode(self, x, emb, skips: int | None = None):
        """(h, skip features): the input conv and the down blocks, stopping once ``skips`` features are
        collected (None: all)."""
        h = self.inp(x)
        hs = [h]
        for blk in self.down:
            if skips is not None and len(hs) >= skips:
                break
            h = blk[1](blk[0](h, emb)) if isinstance(blk, nn.ModuleList) else blk(h)
            hs.append(h)
        return h, hs

    def middle(self, h, emb):
        return self.mid2(self.mid_attn(self.mid1(h, emb)), emb)

    def decode(self, h, hs, emb, start: int = 0, stop: int | None = None):
        """The up blocks ``start:stop`` (each resolution block takes the newest skip from ``hs``), then,
        when run to the end, the output head."""
        for blk in self.up[start:stop]:
            h = blk[1](blk[0](torch.cat([h, hs.pop()], dim=1), emb)) if isinstance(blk, nn.ModuleList) else blk(h)
        return self.out(h) if stop is None else h

    def num_skips(self) -> int:
        return 1 + len(self.down)

    def up_index_taking(self, skip: int) -> int:
        """Index in ``self.up`` of the block that consumes skip feature ``skip`` (0 = the input conv's)."""
        taken = 0
        for i, blk in enumerate(self.up):
            if isinstance(blk, nn.ModuleList):
                if self.num_skips() - 1 - taken == skip:
                    return i
                taken += 1
        raise ValueError(f"no up block takes skip {skip}")

    def config(self) -> dict:
        return {"arch": "unet", **asdict(self.cfg)}
