"""Building blocks shared by our small architectures."""
from __future__ import annotations

import math

import torch
from torch import nn

from .cond import labels_of


def timestep_embedding(c_noise: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of a (B,) time input (Vaswani et al. 2017; as in DDPM/ADM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=c_noise.device) / half)
    args = c_noise.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class CondEmbedding(nn.Module):
    """Time + class (+ optional extra scalars) embedding, summed then MLP'd.

    ``num_classes = 0`` means unconditional; labels < 0 use the learned null embedding (CFG).
    ``w_dim > 0`` adds a sinusoidal embedding of an extra scalar ``cond.extra['w']`` (LCM's
    w-embedding, guidance distillation; 1 when absent). ``tt_dim > 0`` adds one of a signed target
    time ``cond.extra['tt']`` in [-1, 1] (TwinFlow's second time input; 0, the clean end, when absent).
    """

    def __init__(self, dim: int, emb_dim: int, num_classes: int = 0, time_scale: float = 1.0, w_dim: int = 0,
                 tt_dim: int = 0):
        super().__init__()
        self.dim, self.time_scale, self.num_classes = dim, time_scale, num_classes
        self.w_dim, self.tt_dim = w_dim, tt_dim
        self.time_mlp = nn.Sequential(nn.Linear(dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes > 0 else None
        self.w_mlp = _scalar_mlp(w_dim, emb_dim)
        self.tt_mlp = _scalar_mlp(tt_dim, emb_dim)

    def forward(self, c_noise: torch.Tensor, cond) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(c_noise * self.time_scale, self.dim))
        if self.label_emb is not None:
            labels = labels_of(cond)
            if labels is None:
                labels = torch.full((emb.shape[0],), -1, dtype=torch.long, device=emb.device)
            labels = torch.where(labels < 0, torch.full_like(labels, self.num_classes), labels)
            emb = emb + self.label_emb(labels)
        if self.w_mlp is not None:
            emb = emb + self.w_mlp(timestep_embedding(1000.0 * _extra(cond, "w", emb, 1.0), self.w_dim))
        if self.tt_mlp is not None:
            emb = emb + self.tt_mlp(timestep_embedding(1000.0 * _extra(cond, "tt", emb, 0.0), self.tt_dim))
        return emb


def _scalar_mlp(dim: int, emb_dim: int) -> nn.Module | None:
    return nn.Sequential(nn.Linear(dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)) if dim else None


def _extra(cond, key: str, emb: torch.Tensor, default: float) -> torch.Tensor:
    """The (B,) scalar ``cond.extra[key]``, or ``default`` for every sample when the condition lacks it."""
    v = cond.extra.get(key) if cond is not None and not torch.is_tensor(cond) else None
    return torch.full((emb.shape[0],), default, device=emb.device) if v is None else v.to(emb.device)
