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
    """Time + class (+ optional scalar such as a guidance scale w) embedding, summed then MLP'd.

    ``num_classes = 0`` means unconditional; labels < 0 use the learned null embedding (CFG).
    ``w_dim > 0`` adds a sinusoidal embedding of an extra scalar ``cond.extra['w']`` (LCM's
    w-embedding, guidance distillation).
    """

    def __init__(self, dim: int, emb_dim: int, num_classes: int = 0, time_scale: float = 1.0, w_dim: int = 0):
        super().__init__()
        self.dim, self.time_scale, self.num_classes, self.w_dim = dim, time_scale, num_classes, w_dim
        self.time_mlp = nn.Sequential(nn.Linear(dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes > 0 else None
        self.w_mlp = nn.Sequential(nn.Linear(w_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)) if w_dim else None

    def forward(self, c_noise: torch.Tensor, cond) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(c_noise * self.time_scale, self.dim))
        if self.label_emb is not None:
            labels = labels_of(cond)
            if labels is None:
                labels = torch.full((emb.shape[0],), -1, dtype=torch.long, device=emb.device)
            labels = torch.where(labels < 0, torch.full_like(labels, self.num_classes), labels)
            emb = emb + self.label_emb(labels)
        if self.w_mlp is not None:
            w = cond.extra.get("w") if cond is not None and not torch.is_tensor(cond) else None
            w = torch.ones(emb.shape[0], device=emb.device) if w is None else w.to(emb.device)
            emb = emb + self.w_mlp(timestep_embedding(1000.0 * w, self.w_dim))
        return emb
