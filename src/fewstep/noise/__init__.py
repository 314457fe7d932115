"""Noise processes: VP (discrete and continuous), EDM and rectified flow, plus prediction conversions."""
from __future__ import annotations

from .base import PREDICTION_KINDS, NoiseProcess, convert, from_x0_eps, to_x0_eps
from .edm import EDM
from .flow import RectifiedFlow
from .timesteps import TimeSampler
from .vp import VPContinuous, VPDiscrete

FAMILIES = {"edm": EDM, "vp": VPDiscrete, "vp_continuous": VPContinuous, "flow": RectifiedFlow}


def process_from_config(cfg: dict) -> NoiseProcess:
    """Rebuild a process from ``process.config()`` (as stored in a checkpoint's config.json)."""
    cfg = dict(cfg)
    family = cfg.pop("family", None)
    if family not in FAMILIES:
        raise ValueError(f"unknown noise family {family!r}; expected one of {sorted(FAMILIES)}")
    return FAMILIES[family](**cfg)


__all__ = ["PREDICTION_KINDS", "NoiseProcess", "EDM", "VPDiscrete", "VPContinuous", "RectifiedFlow",
           "TimeSampler", "convert", "to_x0_eps", "from_x0_eps", "process_from_config", "FAMILIES"]
