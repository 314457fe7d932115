"""One expert network per phase of the noise range (Phased DMD's mixture of experts, as in Wan 2.2).

``PhaseExperts`` holds K networks of one architecture and routes each call by the network's time
input ``c_noise``: expert k serves the levels (b_{k+1}, b_k] between the phase boundaries
b_0 > b_1 > ... > b_{K-1} (the student's own levels, so a K-step sampler calls expert k at step k).
It takes the same arguments as the networks it holds, so a ``Denoiser`` wraps it unchanged.
"""
from __future__ import annotations

import torch
from torch import nn


class PhaseExperts(nn.Module):
    def __init__(self, experts: list[nn.Module], bounds: list[float]):
        super().__init__()
        if len(experts) != len(bounds) or not experts:
            raise ValueError(f"one phase boundary per expert is needed, got {len(experts)} experts and {len(bounds)} bounds")
        if any(b1 >= b0 for b0, b1 in zip(bounds, bounds[1:])):
            raise ValueError(f"phase boundaries must decrease (noisiest first), got {bounds}")
        self.experts = nn.ModuleList(experts)
        self.register_buffer("bounds", torch.tensor([float(b) for b in bounds]), persistent=False)

    def expert_index(self, c_noise: torch.Tensor) -> torch.Tensor:
        """Per sample: how many lower boundaries b_1.. lie at or above its time (with float tolerance)."""
        b = self.bounds[1:].to(c_noise.device)
        tol = 1e-4 * (1 + b.abs())
        return (b.view(1, -1) >= c_noise.float().view(-1, 1) - tol).sum(1)

    def forward(self, x, c_noise, cond=None, **kw):
        c_noise = torch.as_tensor(c_noise, device=x.device).expand(x.shape[0])
        idx = self.expert_index(c_noise)
        first = int(idx[0])
        if bool((idx == first).all()):  # the sampler's and the trainer's case: one level per call
            return self.experts[first](x, c_noise, cond, **kw)
        if kw or not (cond is None or isinstance(cond, torch.Tensor)):
            raise ValueError("a batch spanning several phases needs plain (tensor or no) conditions")
        out = None
        for k in idx.unique().tolist():
            m = idx == k
            y = self.experts[k](x[m], c_noise[m], None if cond is None else cond[m])
            out = y.new_zeros((x.shape[0], *y.shape[1:])) if out is None else out
            out[m] = y
        return out

    def config(self) -> dict:
        return {"arch": "phase_experts", "expert": self.experts[0].config(), "bounds": self.bounds.tolist()}

    @classmethod
    def from_config(cls, cfg: dict, build) -> "PhaseExperts":
        return cls([build(dict(cfg["expert"])) for _ in cfg["bounds"]], cfg["bounds"])
