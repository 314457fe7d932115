"""Where training runs: the device of every module a method holds, and of each batch."""
from __future__ import annotations

import torch
from torch import nn


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} requested but CUDA is not available")
    return dev


def move_method(method, device: torch.device) -> None:
    """Move every module a method holds (networks, teacher, heads) to ``device``, in place: the
    optimizers keep their parameters. Called before the EMA copies the network."""
    if device.type == "cpu" and all(p.device.type == "cpu" for m in _modules(method) for p in m.parameters()):
        return
    for m in _modules(method):
        m.to(device)


def _modules(method) -> list[nn.Module]:
    return [v for v in vars(method).values() if isinstance(v, nn.Module)]


def to_device(obj, device: torch.device):
    """A batch (dict of tensors, lists, ``Cond``) on ``device``."""
    from ..nets.cond import Cond

    if torch.is_tensor(obj):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, Cond):
        return obj.to(device)
    return obj
