"""BK-SDM: block-removed knowledge-distilled diffusion models (Kim et al. 2023; Nota-NetsPresso/BK-SDM).

The student is the teacher with residual+attention pairs removed (nets/surgery.py: *base* one pair
per stage, *small* also the middle block, *tiny* also the innermost stage), initialised from the
teacher's weights of the kept blocks, and trained with the denoising loss plus output-level KD and
feature-level KD at every stage output (Eq. 4, all weights 1; methods/compress/base.py). The paper
trains with AdamW at a constant 5e-5 (batch 256, 50K iterations) on 0.22M image-text pairs.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...config import DistillConfig, TrainSettings
from ...nets.surgery import VARIANTS, remove_blocks
from ..base import OptimConfig
from .base import CompressionMethod, KDConfig


@dataclass
class BKSDMConfig(KDConfig):
    variant: str = "small"  # base | small | tiny (Sec. 3.1): the blocks removed

    def __post_init__(self):
        super().__post_init__()
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")


class BKSDM(CompressionMethod):
    """A block-removed student distilled from its teacher with output and feature KD."""

    name = "bk_sdm"
    Config = BKSDMConfig
    architectures = ("unet", "diffusers_unet")  # fewstep's UNet and diffusers' UNet2DConditionModel
    # MNIST: 1,500 iterations at batch 64 and LR 2e-4 (the paper's 5e-5 assumes 50K iterations)
    presets = {"mnist": DistillConfig(BKSDMConfig(optim=OptimConfig(lr=2e-4)),
                                      TrainSettings(max_iters=1500, ema_decay=0.999, eval_every=500)),
               "digits": DistillConfig(BKSDMConfig(optim=OptimConfig(lr=2e-4)),
                                       TrainSettings(max_iters=300, ema_decay=0.99, eval_every=100))}

    def build_student(self, teacher_net):
        return remove_blocks(teacher_net, self.cfg.variant)
