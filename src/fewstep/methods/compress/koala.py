"""KOALA: self-attention matters in knowledge distillation of latent diffusion models (Lee et al. 2023;
docs/methods.md section 11).

KOALA compresses SDXL's UNet where its weights are, in the deep low-resolution stages: it cuts their
depth and drops the middle block (KOALA-700M), keeping the high-resolution stages whole
(``nets/surgery.koala_config``; kept blocks start from the teacher's, as in BK-SDM). Its finding is
about the distillation target: feature KD on the decoder's self-attention beats KD on every stage
output, so the feature term here compares the residual branch of each decoder level's last
self-attention (``up{l}.attn`` of nets/unet.py), beside the denoising loss and output KD
(all weights 1, as the paper).
"""
from __future__ import annotations

from dataclasses import dataclass

from ...config import DistillConfig, TrainSettings
from ...nets.surgery import koala_config, rebuild
from ..base import OptimConfig
from .base import CompressionMethod, KDConfig


@dataclass
class KOALAConfig(KDConfig):
    keep_levels: int = 1  # high-resolution stages kept whole; the deeper ones lose a block each
    attention_kd: bool = True  # feature KD on decoder self-attention (KOALA); False: every stage output (BK-SDM)

    def __post_init__(self):
        super().__post_init__()
        if self.keep_levels < 0:
            raise ValueError(f"keep_levels must be >= 0, got {self.keep_levels}")


class KOALA(CompressionMethod):
    """A student cut in its deep stages, distilled with self-attention feature KD."""

    name = "koala"
    Config = KOALAConfig
    presets = {"mnist": DistillConfig(KOALAConfig(optim=OptimConfig(lr=2e-4)),
                                      TrainSettings(max_iters=1500, ema_decay=0.999, eval_every=500))}

    def build_student(self, teacher_net):
        return rebuild(teacher_net, koala_config(teacher_net.cfg, self.cfg.keep_levels))

    def kd_features(self, f_s, f_t):
        if not self.cfg.attention_kd:
            return super().kd_features(f_s, f_t)
        keys = [k for k in f_s if k in f_t and k.endswith(".attn")]
        if not keys:
            raise ValueError("koala's self-attention KD needs decoder self-attention the student shares with the "
                             "teacher (attn_levels); use --set attention_kd=false for stage outputs")
        return keys
