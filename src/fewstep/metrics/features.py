"""The feature network behind FD, precision/recall and class accuracy (docs/benchmarks.md).

A small CNN classifier trained by ``fewstep train-features`` on a dataset's train split with a fixed
seed; its penultimate layer (128-d) is the feature space. Weights for mnist and digits ship in
``fewstep/assets/features/`` with the command that trained them in the JSON beside them.
For 2-D toy data the features are the points themselves (no classifier).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FewstepError
from ..io import atomic_dir, load_state_strict, load_tensors, read_json, save_tensors, write_json

FEATURES_DIR = Path(__file__).resolve().parent.parent / "assets" / "features"


class FeatureNet(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32, feat_dim: int = 128):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), nn.SiLU(), nn.Conv2d(w, w, 3, padding=1), nn.SiLU(), nn.AvgPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.SiLU(), nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.SiLU(), nn.AvgPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(4 * w, feat_dim), nn.SiLU())
        self.head = nn.Linear(feat_dim, num_classes)
        self.cfg = {"in_channels": in_channels, "num_classes": num_classes, "width": width, "feat_dim": feat_dim}

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


class PointFeatures(nn.Module):
    """Features for low-dimensional point data: the point itself plus fixed random Fourier features
    (Rahimi & Recht 2007) at length scale ``bandwidth``. A Gaussian fit of the raw 2-D points cannot
    tell 8 modes from one blob of the same covariance; the Fourier features make FD see the modes."""

    num_classes = 0

    def __init__(self, dim: int = 2, n_features: int = 64, bandwidth: float = 0.2, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("W", torch.randn(dim, n_features, generator=g) / bandwidth)
        self.register_buffer("b", 2 * torch.pi * torch.rand(n_features, generator=g))

    def features(self, x):
        x = x.flatten(1)
        return torch.cat([x, torch.cos(x @ self.W + self.b)], dim=1)


def _shift(x: torch.Tensor, g: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels (the only augmentation)."""
    B, _, H, W = x.shape
    xp = F.pad(x, (pad,) * 4, value=-1.0)
    dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=g).tolist()
    return xp[:, :, dy:dy + H, dx:dx + W]


def train_feature_net(data: str, iters: int = 1500, batch_size: int = 128, seed: int = 0, lr: float = 2e-3,
                      progress: bool = True, resolution: int | None = None, channels: int | None = None):
    from ..data import BatchSampler, load_dataset

    train, test = load_dataset(data, "train", resolution, channels), load_dataset(data, "test", resolution, channels)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = FeatureNet(train.shape[0], train.num_classes)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=iters)
    sampler = BatchSampler(len(train), batch_size, seed)
    it_range = range(iters)
    if progress:
        from tqdm.auto import tqdm

        it_range = tqdm(it_range, desc=f"train features ({data})", dynamic_ncols=True)
    t0 = time.perf_counter()
    for it in it_range:
        b = train.batch(sampler.indices(it))
        loss = F.cross_entropy(net(_shift(b["x"], g)), b["labels"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    with torch.no_grad():
        acc = (net(test.x).argmax(1) == test.labels).float().mean().item()
    return net, {"test_acc": acc, "train_s": time.perf_counter() - t0, "iters": iters, "batch_size": batch_size,
                 "seed": seed, "lr": lr, "shape": list(train.shape)}


def save_feature_net(net: FeatureNet, info: dict, path: Path) -> None:
    def write(tmp):
        save_tensors(net.state_dict(), tmp / "model.safetensors")
        write_json({"format": "fewstep-features-v1", "net": net.cfg, **info}, tmp / "config.json")

    atomic_dir(Path(path), write)


WEAK_FEATURES_ACC = 0.9  # below this held-out accuracy an FD in the network's features is weak evidence


def features_dir(data: str) -> Path:
    """Where a dataset's feature network lives: shipped ones by dataset name, an image folder's inside
    the folder (``PATH/.fewstep/features``, which the folder loader skips), so every verb finds it."""
    if data.startswith("folder:"):
        return Path(data.split(":", 1)[1]) / ".fewstep" / "features"
    return FEATURES_DIR / data


def features_accuracy(data: str, path: str | None = None) -> float | None:
    """The feature network's held-out class accuracy as recorded when it was trained (None: unknown)."""
    cfg = Path(path) if path else features_dir(data)
    try:
        return read_json(cfg / "config.json").get("test_acc")
    except (OSError, ValueError, FewstepError):
        return None


def features_note(acc: float | None) -> str | None:
    """A warning when FD rests on a feature network that does not separate the data's classes well."""
    if acc is None or acc >= WEAK_FEATURES_ACC:
        return None
    return (f"the feature network's held-out accuracy is {acc:.2f} (< {WEAK_FEATURES_ACC}): FD in its features is "
            "weak evidence; train it longer (fewstep train-features --iters)")


def load_features(data: str, path: str | None = None, shape: tuple | None = None) -> nn.Module:
    """The feature extractor for a dataset: shipped (by dataset name), an image folder's own
    (``features_dir``), or from ``path``; ``shape`` (one image's) must be what it was trained on."""
    if path is None and (data == "toy2d" or data.startswith("toy2d:")):
        return PointFeatures()
    d = Path(path) if path else features_dir(data)
    if not (d / "config.json").is_file():
        raise FewstepError(f"no feature network for dataset {data!r} at {d}; train one with "
                           f"'fewstep train-features --data {data} --out DIR' and pass --features DIR")
    cfg = read_json(d / "config.json")
    if shape is not None and cfg.get("shape") and list(cfg["shape"]) != list(shape):
        raise FewstepError(f"the feature network at {d} was trained on {'x'.join(map(str, cfg['shape']))} images, these "
                           f"are {'x'.join(map(str, shape))}; train one at this size (fewstep train-features --data {data} "
                           "--resolution/--channels --out DIR) and pass --features DIR")
    net = FeatureNet(**cfg["net"])
    load_state_strict(net, load_tensors(d / "model.safetensors"), d / "model.safetensors")
    return net.eval().requires_grad_(False)
