from __future__ import annotations

from .base import ArrayDataset
from .embedded import digits, mnist, toy2d
from .folder import folder

DATASETS = ("mnist", "digits", "toy2d", "toy2d:8gaussians", "toy2d:moons", "folder:PATH")
_CACHE: dict = {}


def load_dataset(spec: str, split: str = "train", resolution: int | None = None, channels: int | None = None) -> ArrayDataset:
    """``mnist`` | ``digits`` | ``toy2d[:8gaussians|moons]`` | ``folder:PATH``; split train|test.
    ``resolution`` / ``channels`` resize and convert folder images (None: the folder's own)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    key = (spec, split, resolution, channels)
    if key in _CACHE:
        return _CACHE[key]
    if spec == "mnist":
        ds = mnist(split)
    elif spec == "digits":
        ds = digits(split)
    elif spec == "toy2d" or spec.startswith("toy2d:"):
        ds = toy2d(split, spec.split(":", 1)[1] if ":" in spec else "8gaussians")
    elif spec.startswith("folder:"):
        ds = folder(spec.split(":", 1)[1], split, resolution, channels)
    else:
        raise ValueError(f"unknown dataset {spec!r}; expected one of {', '.join(DATASETS)}")
    _CACHE[key] = ds
    return ds
