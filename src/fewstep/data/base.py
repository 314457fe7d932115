from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ArrayDataset:
    name: str
    x: torch.Tensor  # (N, C, H, W) images or (N, D) points, in [-1, 1]
    labels: torch.Tensor | None = None  # (N,) long, or None
    num_classes: int = 0
    captions: list | None = None  # per-item text, for text-conditioned data
    meta: dict = field(default_factory=dict)

    def __len__(self):
        return self.x.shape[0]

    @property
    def shape(self):
        return tuple(self.x.shape[1:])

    def batch(self, idx: torch.Tensor) -> dict:
        out = {"x": self.x[idx]}
        if self.labels is not None:
            out["labels"] = self.labels[idx]
        if self.captions is not None:
            out["captions"] = [self.captions[i] for i in idx.tolist()]
        return out

    def subset(self, n: int) -> "ArrayDataset":
        """The first n items in a class-balanced order (every class in proportion), for evaluation."""
        if n >= len(self):
            return self
        if self.labels is None:
            idx = torch.arange(n)
        else:
            order = self.labels.argsort(stable=True)
            idx = order[(torch.arange(n) * len(order)) // n]
        caps = None if self.captions is None else [self.captions[i] for i in idx.tolist()]
        return ArrayDataset(self.name, self.x[idx], None if self.labels is None else self.labels[idx],
                            self.num_classes, caps, dict(self.meta))

    def class_balanced_labels(self, n: int) -> torch.Tensor | None:
        """Labels with the same class balance as this split, for generating n samples."""
        if self.labels is None:
            return None
        reps = -(-n // len(self))
        pool = self.labels.sort().values.repeat_interleave(reps)  # every class in proportion
        return pool[(torch.arange(n) * len(pool)) // n].clone()


def conditions_only(name: str, shape: tuple, num_classes: int = 0, size: int = 60_000) -> ArrayDataset:
    """The training source of an image-free method: no images (x is one zero sample broadcast, no memory),
    labels cycling through the classes so a shuffled batch is near class-balanced; ``name`` is the
    dataset the conditions and the evaluation refer to. ``meta['image_free']`` marks it."""
    x = torch.zeros(1, *shape).expand(size, *shape)
    labels = torch.arange(size) % num_classes if num_classes else None
    return ArrayDataset(name, x, labels, num_classes, meta={"image_free": True})


class BatchSampler:
    """Deterministic shuffled batches: batch ``it`` depends only on (seed, it, batch size, rank).

    Position p = it * batch * world + rank * batch covers epoch p // N at offset p % N of that epoch's
    permutation (seeded by seed and epoch), so resuming at iteration ``it`` resumes the data stream.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms[epoch] = torch.randperm(self.n, generator=g)
        return self._perms[epoch]

    def indices(self, it: int) -> torch.Tensor:
        start = (it * self.world + self.rank) * self.batch_size
        pos = torch.arange(start, start + self.batch_size)
        epochs, offsets = pos // self.n, pos % self.n
        return torch.stack([self._perm(int(e))[int(o)] for e, o in zip(epochs, offsets)])

    def epoch_of(self, it: int) -> float:
        return it * self.world * self.batch_size / self.n
