"""A small class-conditional UNet (DDPM/ADM style) for 8x8 to 64x64 images.

The architecture sees only ``(x, c_noise, cond)``; preconditioning lives in the Denoiser.
``forward(..., return_bottleneck=True)`` also returns the mid-block output, which DMD2's
discriminator head reads (Yin et al. 2024, Sec. 4.3); ``return_features=True`` returns every stage's
output (architecture distillation's feature KD, methods/compress).

Block counts may differ per level, and the middle block may be absent: a block-removed student
(BK-SDM, nets/surgery.py) is the same class with fewer blocks. Skips pair per level: level l's
decoder blocks take, newest first, the features level l's encoder produced (the feature entering the
level, then each residual block's output); a decoder level with fewer blocks than those features
leaves the oldest ones unused.
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
    tt_dim: int = 0  # > 0: embed cond.extra['tt'] (TwinFlow's signed target time)
    out_channels: int = 0  # output channels (0: in_channels; ArcFlow's policy head is wider)
    down_blocks: tuple | None = None  # residual blocks per encoder level (None: num_res_blocks each)
    up_blocks: tuple | None = None  # residual blocks per decoder level (None: one more than the encoder's)
    mid_block: bool = True  # False: no middle block (BK-SDM-Small and -Tiny remove it)
    attention: str = "softmax"  # self-attention: softmax | linear (LinFusion's normalised linear attention)
    pruned: tuple = ()  # layers removed (LAPTOP-Diff): "down.i"/"up.i" residual blocks, "....attn", "mid1", ...

    def __post_init__(self):
        self.ch_mult, self.attn_levels = tuple(self.ch_mult), tuple(self.attn_levels)
        if self.down_blocks is not None:
            self.down_blocks = tuple(int(b) for b in self.down_blocks)
        if self.up_blocks is not None:
            self.up_blocks = tuple(int(b) for b in self.up_blocks)
        if self.channels < 8 or self.channels % 8:
            raise ValueError(f"UNet channels must be a positive multiple of 8, got {self.channels}")
        if not self.ch_mult or self.num_res_blocks < 1:
            raise ValueError("UNet needs at least one level and one residual block per level")
        if self.image_size % (2 ** (len(self.ch_mult) - 1)):
            raise ValueError(f"image_size {self.image_size} is not divisible by 2^{len(self.ch_mult) - 1}")
        self.pruned = tuple(sorted(set(self.pruned)))
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        downs, ups = self.level_blocks()
        if len(downs) != len(self.ch_mult) or len(ups) != len(self.ch_mult):
            raise ValueError(f"down_blocks and up_blocks need one count per level ({len(self.ch_mult)})")
        if any(d < 0 for d in downs) or any(not 1 <= u <= d + 1 for d, u in zip(downs, ups)):
            raise ValueError(f"each level needs 0 <= encoder blocks and 1 <= decoder blocks <= encoder blocks + 1; "
                             f"got down_blocks {downs}, up_blocks {ups}")

    def level_blocks(self) -> tuple[tuple, tuple]:
        """(encoder, decoder) residual blocks per level, defaults resolved."""
        downs = self.down_blocks if self.down_blocks is not None else (self.num_res_blocks,) * len(self.ch_mult)
        ups = self.up_blocks if self.up_blocks is not None else tuple(d + 1 for d in downs)
        return downs, ups


ATTENTIONS = ("softmax", "linear")


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


class LinearAttention(Attention):
    """LinFusion's normalised non-causal linear attention (Liu et al. 2024; Huage001/LinFusion), in place
    of softmax self-attention with the same q/k/v/out weights plus two new projections P_q, P_k, zero at
    the start: with h the normalised input, q = W_q (h + P_q h), k = W_k (h + P_k h), v = W_v h, and per
    head, with phi = elu + 1 and L tokens,

        out_i = phi(q_i) (sum_j phi(k_j)^T v_j / L) / (phi(q_i) . mean_j phi(k_j) + 1e-4),

    linear in L (no L x L matrix), so it runs at sizes where softmax attention's memory would not fit."""

    def __init__(self, c, heads=4):
        super().__init__(c, heads)
        self.to_q_, self.to_k_ = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1)
        for proj in (self.to_q_, self.to_k_):
            nn.init.zeros_(proj.weight), nn.init.zeros_(proj.bias)

    def forward(self, x):
        B, C, H, W = x.shape
        h = self.norm(x)
        w_q, w_k, w_v = self.qkv.weight.chunk(3, dim=0)
        b_q, b_k, b_v = self.qkv.bias.chunk(3, dim=0)
        q = F.conv2d(h + self.to_q_(h), w_q, b_q)
        k = F.conv2d(h + self.to_k_(h), w_k, b_k)
        v = F.conv2d(h, w_v, b_v)
        out = linear_attention(*(t.reshape(B, self.heads, C // self.heads, H * W).transpose(-1, -2) for t in (q, k, v)))
        return x + self.out(out.transpose(-1, -2).reshape(B, C, H, W))


def linear_attention(q, k, v, eps: float = 1e-4):
    """(B, heads, L, d) queries, keys, values -> (B, heads, L, d), LinFusion's normalised form."""
    q, k = F.elu(q) + 1, F.elu(k) + 1
    kv = k.transpose(-1, -2) @ v / k.shape[-2]  # (d, d): sum_j phi(k_j)^T v_j / L
    norm = q @ k.mean(dim=-2, keepdim=True).transpose(-1, -2)  # (L, 1): phi(q_i) . mean_j phi(k_j)
    return (q @ kv) / (norm + eps)


class Pruned(nn.Module):
    """A removed layer: its input passes through (a residual layer without its residual branch)."""

    def forward(self, x, emb=None):
        return x


class UNet(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        ch, emb_dim = cfg.channels, 4 * cfg.channels
        self.embed_dim = emb_dim
        downs, ups = cfg.level_blocks()
        last = len(cfg.ch_mult) - 1
        self.embed = CondEmbedding(ch, emb_dim, cfg.num_classes, cfg.time_scale, cfg.w_dim, cfg.tt_dim)
        self.inp = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        # positions name each block by what it is, ("res", level, k) or ("down"/"up", level): block
        # removal (nets/surgery.py) copies weights between networks by position
        self.down, self.down_pos = nn.ModuleList(), []
        skip_ch, level_skips, c = [ch], [], ch  # channels per skip feature; skip indices per level
        for lvl, m in enumerate(cfg.ch_mult):
            level_skips.append([len(skip_ch) - 1])  # the feature entering the level
            for k in range(downs[lvl]):
                self.down.append(self._res(c, ch * m, lvl, emb_dim))
                self.down_pos.append(("res", lvl, k))
                c = ch * m
                level_skips[-1].append(len(skip_ch))
                skip_ch.append(c)
            if lvl < last:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                self.down_pos.append(("down", lvl))
                skip_ch.append(c)
        if cfg.mid_block:
            self.mid1, self.mid_attn = ResBlock(c, c, emb_dim, cfg.dropout), self._attention(c)
            self.mid2 = ResBlock(c, c, emb_dim, cfg.dropout)
        self.bottleneck_channels, self.skip_channels = c, skip_ch
        self.up, self.up_pos, self.up_skips = nn.ModuleList(), [], []
        for lvl, m in reversed(list(enumerate(cfg.ch_mult))):
            for k, skip in enumerate(reversed(level_skips[lvl][-ups[lvl]:])):  # newest first
                self.up.append(self._res(c + skip_ch[skip], ch * m, lvl, emb_dim))
                self.up_pos.append(("res", lvl, k))
                self.up_skips.append(skip)
                c = ch * m
            if lvl > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
                self.up_pos.append(("up", lvl))
                self.up_skips.append(None)
        self.out = nn.Sequential(_norm(c), nn.SiLU(), nn.Conv2d(c, cfg.out_channels or cfg.in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight), nn.init.zeros_(self.out[-1].bias)
        for name in cfg.pruned:
            if not (name.endswith(".attn") and name[:-len(".attn")] in cfg.pruned):  # gone with its block
                self._prune(name)

    # -- layer pruning (LAPTOP-Diff, nets/surgery.py) -------------------------------------------------
    def prunable_layers(self) -> list[str]:
        """Every layer whose removal keeps all shapes: self-attention (residual), residual blocks whose
        input and output widths agree (a decoder block's removal also leaves its skip feature unused),
        and the middle block's three layers."""
        names = [f"{part}.{i}.attn" for part in ("down", "up") for i, blk in enumerate(getattr(self, part))
                 if isinstance(blk, nn.ModuleList) and isinstance(blk[1], Attention)]
        names += [f"down.{i}" for i, blk in enumerate(self.down)
                  if isinstance(blk, nn.ModuleList) and isinstance(blk[0], ResBlock) and isinstance(blk[0].skip, nn.Identity)]
        names += [f"up.{i}" for i, blk in enumerate(self.up)
                  if isinstance(blk, nn.ModuleList) and isinstance(blk[0], ResBlock)
                  and blk[0].c1.in_channels - self._skip_channels(i) == blk[0].c2.out_channels]
        names += [n for n in ("mid1", "mid_attn", "mid2") if isinstance(getattr(self, n, None), (ResBlock, Attention))]
        return sorted(names)

    def _skip_channels(self, i: int) -> int:
        return self.skip_channels[self.up_skips[i]]

    def _prune(self, name: str) -> None:
        if name not in self.prunable_layers():
            raise ValueError(f"cannot prune {name!r}: not a prunable layer of this UNet (prunable: "
                             f"{', '.join(self.prunable_layers())})")
        part, _, rest = name.partition(".")
        if part in ("mid1", "mid_attn", "mid2"):
            setattr(self, part, Pruned())
            return
        i, _, attn = rest.partition(".")
        blk = getattr(self, part)[int(i)]
        if attn:
            blk[1] = Pruned()
        else:
            blk[0], blk[1] = Pruned(), Pruned()

    def _res(self, cin, cout, lvl, emb_dim):
        attn = self._attention(cout) if lvl in self.cfg.attn_levels else nn.Identity()
        return nn.ModuleList([ResBlock(cin, cout, emb_dim, self.cfg.dropout), attn])

    def _attention(self, c):
        return LinearAttention(c) if self.cfg.attention == "linear" else Attention(c)

    def forward(self, x, c_noise, cond=None, return_bottleneck: bool | str = False, return_features: bool = False):
        """The prediction; with ``return_bottleneck`` also the mid-block features, and with
        ``return_bottleneck="only"`` those alone (the decoder is not run: a GAN head needs no output).
        ``return_features``: (prediction, {stage: output}) with stages ``down{l}`` / ``up{l}`` (a level's
        last residual block, before its down/upsampling) and ``mid``, and ``up{l}.attn`` (the residual
        branch of a decoder level's last self-attention), for feature distillation."""
        feats = {} if return_features else None
        emb = self.embed(c_noise, cond)
        h, hs = self.encode(x, emb, feats=feats)
        h = self.middle(h, emb, feats=feats)
        mid = h
        if return_bottleneck == "only":
            return mid
        out = self.decode(h, hs, emb, feats=feats)
        if return_features:
            return out, feats
        return (out, mid) if return_bottleneck else out

    # -- pieces (caching samplers, nets/cache.py, run parts of the network) ----------------------
    def encode(self, x, emb, skips: int | None = None, feats: dict | None = None):
        """(h, skip features): the input conv and the down blocks, stopping once ``skips`` features are
        collected (None: all)."""
        h = self.inp(x)
        hs = [h]
        for blk, pos in zip(self.down, self.down_pos):
            if skips is not None and len(hs) >= skips:
                break
            h = blk[1](blk[0](h, emb)) if pos[0] == "res" else blk(h)
            if feats is not None and pos[0] == "res":
                feats[f"down{pos[1]}"] = h
            hs.append(h)
        return h, hs

    def middle(self, h, emb, feats: dict | None = None):
        if not self.cfg.mid_block:
            return h
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        if feats is not None:
            feats["mid"] = h
        return h

    def decode(self, h, hs, emb, start: int = 0, stop: int | None = None, feats: dict | None = None):
        """The up blocks ``start:stop`` (each residual block concatenates its skip feature from ``hs``,
        indexed as ``encode`` returned them), then, when run to the end, the output head."""
        for i in range(len(self.up))[start:stop]:
            blk, pos = self.up[i], self.up_pos[i]
            if pos[0] == "res" and isinstance(blk[0], Pruned):  # removed with its skip (LAPTOP-Diff)
                if feats is not None:
                    feats[f"up{pos[1]}"] = h
            elif pos[0] == "res":
                r = blk[0](torch.cat([h, hs[self.up_skips[i]]], dim=1), emb)
                h = blk[1](r)
                if feats is not None:
                    feats[f"up{pos[1]}"] = h
                    if isinstance(blk[1], Attention):  # the stage's last self-attention branch (KOALA's KD target)
                        feats[f"up{pos[1]}.attn"] = h - r
            else:
                h = blk(h)
        return self.out(h) if stop is None else h

    def num_skips(self) -> int:
        return 1 + len(self.down)

    def shallow_branch(self, depth: int) -> tuple[int, int]:
        """(index in ``self.up`` where the last ``depth`` residual decoder blocks start, the number of skip
        features they need from the encoder): DeepCache's shallow branch of depth ``depth``. On a standard
        UNet the skips needed are exactly ``depth`` (the input conv's and the first depth - 1 blocks')."""
        res = [i for i, s in enumerate(self.up_skips) if s is not None]
        if not 1 <= depth < len(res):
            raise ValueError(f"deepcache depth must be in [1, {len(res) - 1}] for this UNet, got {depth}")
        start = res[-depth]
        return start, 1 + max(s for s in self.up_skips[start:] if s is not None)

    def config(self) -> dict:
        return {"arch": "unet", **asdict(self.cfg)}
