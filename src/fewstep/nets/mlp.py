"""A residual MLP denoiser for 2-D (or any flat low-dimensional) data."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch.nn.functional as F
from torch import nn

from .layers import CondEmbedding


@dataclass
class MLPConfig:
    dim: int = 2  # data dimension
    hidden: int = 256
    depth: int = 4  # residual blocks
    num_classes: int = 0
    time_scale: float = 1.0
    w_dim: int = 0  # > 0: embed cond.extra['w'] (guidance-scale embedding)
    tt_dim: int = 0  # > 0: embed cond.extra['tt'] (TwinFlow's signed target time)
    out_dim: int = 0  # output width (0: dim; ArcFlow's policy head is wider)

    def __post_init__(self):
        if self.dim < 1 or self.hidden < 8 or self.depth < 1:
            raise ValueError("MLP needs dim >= 1, hidden >= 8 and depth >= 1")


class MLP(nn.Module):
    def __init__(self, cfg: MLPConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = CondEmbedding(64, cfg.hidden, cfg.num_classes, cfg.time_scale, cfg.w_dim, cfg.tt_dim)
        self.inp = nn.Linear(cfg.dim, cfg.hidden)
        self.blocks = nn.ModuleList(nn.ModuleList([nn.LayerNorm(cfg.hidden), nn.Linear(cfg.hidden, 2 * cfg.hidden),
                                                   nn.Linear(2 * cfg.hidden, cfg.hidden)]) for _ in range(cfg.depth))
        self.out = nn.Sequential(nn.LayerNorm(cfg.hidden), nn.Linear(cfg.hidden, cfg.out_dim or cfg.dim))
        self.bottleneck_channels = cfg.hidden

    def forward(self, x, c_noise, cond=None, return_bottleneck: bool = False):
        emb = self.embed(c_noise, cond)
        h = self.inp(x) + emb
        for norm, l1, l2 in self.blocks:
            h = h + l2(F.silu(l1(norm(h) + emb)))
        out = self.out(h)
        return (out, h) if return_bottleneck else out

    def config(self) -> dict:
        return {"arch": "mlp", **asdict(self.cfg)}
