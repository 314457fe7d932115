"""One expert per phase of the noise range (Phased DMD's mixture of experts, as in Wan 2.2).

A phased network routes each call by the network's time input ``c_noise``: expert k serves the levels
(b_{k+1}, b_k] between the phase boundaries b_0 > b_1 > ... > b_{K-1} (the student's own levels, so a
K-step sampler calls expert k at step k). Two kinds of expert:

* ``PhaseExperts``: K networks of one architecture (a full copy of the teacher per phase);
* ``PhaseLoRA``: one frozen network carrying K named LoRA adapters, adapter k active in phase k (the
  base weights held once, so a K-phase Stable Diffusion student costs K adapters, not K UNets).

Both take the same arguments as the networks they hold, so a ``Denoiser`` wraps either unchanged.
"""
from __future__ import annotations

import torch
from torch import nn


class PhaseRouted(nn.Module):
    """The routing shared by both kinds: which expert serves each sample's level, and a batch spanning
    several phases split per expert. Subclasses say how expert k is called (``call_expert``)."""

    def __init__(self, bounds: list[float], n_experts: int):
        super().__init__()
        if len(bounds) != n_experts or not n_experts:
            raise ValueError(f"one phase boundary per expert is needed, got {n_experts} experts and {len(bounds)} bounds")
        if any(b1 >= b0 for b0, b1 in zip(bounds, bounds[1:])):
            raise ValueError(f"phase boundaries must decrease (noisiest first), got {bounds}")
        self.register_buffer("bounds", torch.tensor([float(b) for b in bounds]), persistent=False)

    def call_expert(self, k: int, x, c_noise, cond=None, **kw):
        raise NotImplementedError

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
            return self.call_expert(first, x, c_noise, cond, **kw)
        if kw or not (cond is None or isinstance(cond, torch.Tensor)):
            raise ValueError("a batch spanning several phases needs plain (tensor or no) conditions")
        out = None
        for k in idx.unique().tolist():
            m = idx == k
            y = self.call_expert(k, x[m], c_noise[m], None if cond is None else cond[m])
            out = y.new_zeros((x.shape[0], *y.shape[1:])) if out is None else out
            out[m] = y
        return out


class PhaseExperts(PhaseRouted):
    """K networks of one architecture, expert k a network of its own."""

    def __init__(self, experts: list[nn.Module], bounds: list[float]):
        super().__init__(bounds, len(experts))
        self.experts = nn.ModuleList(experts)

    def call_expert(self, k, x, c_noise, cond=None, **kw):
        return self.experts[k](x, c_noise, cond, **kw)

    def config(self) -> dict:
        return {"arch": "phase_experts", "expert": self.experts[0].config(), "bounds": self.bounds.tolist()}

    @classmethod
    def from_config(cls, cfg: dict, build) -> "PhaseExperts":
        return cls([build(dict(cfg["expert"])) for _ in cfg["bounds"]], cfg["bounds"])


def phase_adapter_names(k: int) -> list[str]:
    return [f"phase{i}" for i in range(k)]


class PhaseLoRA(PhaseRouted):
    """One network with K named LoRA adapters (nets/lora.py), adapter ``phase{k}`` active in phase k.

    ``net`` is the base, adapted here unless it already carries exactly the K phase adapters (a saved
    student rebuilt by ``from_config``). Its frozen weights may be the teacher's own tensors (the trainer
    shares them, nets/sharing.py): only the adapters train."""

    def __init__(self, net: nn.Module, bounds: list[float], rank: int = 0, alpha: float | None = None,
                 targets: list | None = None):
        super().__init__(bounds, len(bounds))
        from .lora import add_lora

        self.names = phase_adapter_names(len(bounds))
        have = getattr(net, "lora_config", {}).get("lora", {})
        if have.get("names") != self.names:
            if have:
                raise ValueError(f"the base network already carries other LoRA adapters ({have.get('names') or ['default']})")
            add_lora(net, rank, alpha, targets, names=self.names)
        self.net = net

    def call_expert(self, k, x, c_noise, cond=None, **kw):
        from .lora import use_adapter

        with use_adapter(self.net, self.names[k]):
            return self.net(x, c_noise, cond, **kw)

    def config(self) -> dict:
        return {"arch": "phase_lora", "base": {**self.net.config(), **self.net.lora_config},
                "bounds": self.bounds.tolist()}

    @classmethod
    def from_config(cls, cfg: dict, build) -> "PhaseLoRA":
        lora = dict(cfg["base"].get("lora") or {})
        if lora.get("names") != phase_adapter_names(len(cfg["bounds"])):
            raise ValueError(f"a phase_lora base needs one adapter per phase, named phase0..; got {lora.get('names')}")
        return cls(build(dict(cfg["base"])), cfg["bounds"])
