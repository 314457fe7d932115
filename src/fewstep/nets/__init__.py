from .cond import NULL_LABEL, Cond
from .mlp import MLP, MLPConfig
from .registry import build_net
from .unet import UNet, UNetConfig

__all__ = ["Cond", "NULL_LABEL", "MLP", "MLPConfig", "UNet", "UNetConfig", "build_net"]
