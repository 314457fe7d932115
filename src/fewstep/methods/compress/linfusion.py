"""LinFusion: softmax self-attention replaced by normalised linear attention (Liu et al. 2024;
Huage001/LinFusion; docs/methods.md section 11).

The student is the teacher's UNet with every self-attention module rebuilt as ``LinearAttention``
(nets/unet.py): the same q/k/v/out weights plus two zero-initialised projections. Only those new
projections train; the loss is the denoising loss plus 0.5 output KD and 0.5 feature KD (the
official weights; here the features are the stage outputs every compression method uses). Its
cost is linear in the number of pixels, so the student samples at sizes where the teacher's
attention matrix would not fit (benchmarks/linfusion_resolution.py measures both).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from torch import nn

from ...config import DistillConfig, TrainSettings
from ...nets.unet import UNet
from ..base import OptimConfig
from .base import CompressionMethod, KDConfig

NEW_PARAMETERS = ("to_q_.", "to_k_.")  # LinearAttention's projections, the only weights LinFusion trains


@dataclass
class LinFusionConfig(KDConfig):
    out_kd_weight: float = 0.5  # LinFusion's output-KD weight
    feat_kd_weight: float = 0.5  # and feature-KD weight
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4))  # the official LR (AdamW)
    train_all: bool = False  # True: train every weight, not only the new projections


class LinFusion(CompressionMethod):
    """A linear-attention student: the teacher with LinFusion attention, new projections trained by KD."""

    name = "linfusion"
    Config = LinFusionConfig
    presets = {"mnist": DistillConfig(LinFusionConfig(optim=OptimConfig(lr=1e-3)),
                                      TrainSettings(max_iters=600, ema_decay=0.99, eval_every=200))}

    def build_student(self, teacher_net):
        if teacher_net.cfg.attention == "linear":
            raise ValueError("this teacher already uses linear attention")
        student = UNet(replace(teacher_net.cfg, attention="linear"))
        missing, unexpected = student.load_state_dict(teacher_net.state_dict(), strict=False)
        if unexpected or any(not any(p in k for p in NEW_PARAMETERS) for k in missing):
            raise ValueError(f"cannot carry the teacher's weights over (missing {missing}, unexpected {unexpected})")
        if not missing:
            raise ValueError("this teacher has no self-attention for LinFusion to replace (attn_levels and mid block)")
        return student

    def freeze_unchanged(self, net: nn.Module) -> None:
        if self.cfg.train_all:
            return
        for name, p in net.named_parameters():
            p.requires_grad_(any(k in name for k in NEW_PARAMETERS))

    def trainable_names(self) -> list[str]:
        return [n for n, p in self.student.net.named_parameters() if p.requires_grad]


