"""SNOOPI (Nguyen et al. 2024): SwiftBrush made robust with Proper Guidance (PG-SB, docs/methods.md
section 6). The VSD loss of vsd.py with the CFG scale of teacher and fake score drawn from
U[kappa_min, kappa_max] once per iteration instead of fixed: the broader output distributions make the
VSD gradient less sensitive to the backbone and to the one scale a fixed recipe would pick.
Ranges: (0.5, 4) on SD1.5 per docs/methods.md; on the MNIST teacher (whose own sampling CFG is 1.25)
a range around it, (1, 1.5).
NASA, SNOOPI's other half, is a sampling-time change to a text UNet's cross-attention (negative prompts
for a one-step student): nets/adapters/nasa.py. Class-conditional fewstep nets have no cross-attention,
so there is no negative class for them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...config import DistillConfig, TrainSettings
from ..base import LoRAConfig
from .dmd import cpu_optim
from .vsd import VSD, VSDConfig


@dataclass
class SNOOPIConfig(VSDConfig):
    guidance_range: tuple[float, float] = (0.5, 4.0)  # PG-SB's kappa ~ U[min, max] per iteration (SD1.5)
    fake_lora: LoRAConfig = field(default_factory=lambda: LoRAConfig(rank=64, alpha=64.0))  # SNOOPI: rank 64

    def __post_init__(self):
        super().__post_init__()
        if self.guidance_range[0] == self.guidance_range[1]:
            raise ValueError("snoopi draws its guidance scale from a range: give guidance_range=(lo, hi) with lo < hi "
                             "(a fixed scale is vsd)")


class SNOOPI(VSD):
    """PG-SB: VSD with a random guidance scale per iteration for both scores."""

    name = "snoopi"
    Config = SNOOPIConfig
    presets = {  # LRs as vsd.py's (the adapters 10x the student)
        "mnist": DistillConfig(SNOOPIConfig(guidance_range=(1.0, 1.5), optim=cpu_optim(1e-4), critic_optim=cpu_optim(1e-3),
                                            fake_lora=LoRAConfig(rank=32, alpha=32.0)),
                               TrainSettings(max_iters=1200)),
        "digits": DistillConfig(SNOOPIConfig(guidance_range=(1.0, 1.5), optim=cpu_optim(1e-4), critic_optim=cpu_optim(1e-3),
                                             fake_lora=LoRAConfig(rank=32, alpha=32.0)),
                                TrainSettings(max_iters=600)),
        "toy2d": DistillConfig(SNOOPIConfig(guidance_range=(0.75, 1.25), optim=cpu_optim(3e-4), critic_optim=cpu_optim(3e-3),
                                            fake_lora=LoRAConfig(rank=16, alpha=16.0)),
                               TrainSettings(max_iters=400, batch_size=256, bf16=False, eval_n=2000)),
    }
