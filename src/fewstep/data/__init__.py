"""Datasets: embedded (mnist, digits, toy2d) and user image folders (folder:PATH).

Every dataset is an ``ArrayDataset``: images/points scaled to [-1, 1] and integer labels (or
captions), split deterministically. Batches are a pure function of (seed, iteration), so the data
position of a resumed run is just its iteration counter.
"""
from __future__ import annotations

from .base import ArrayDataset, BatchSampler, conditions_only
from .registry import DATASETS, load_dataset

__all__ = ["ArrayDataset", "BatchSampler", "conditions_only", "DATASETS", "load_dataset"]
