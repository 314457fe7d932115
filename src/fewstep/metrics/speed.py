"""Throughput measurement: images/s at a fixed batch after warm-up (docs/benchmarks.md)."""
from __future__ import annotations

import time

import torch


def images_per_second(generate, batch: int = 256, warmup: int = 1, repeats: int = 2) -> float:
    """``generate(n)`` produces n samples; returns the best of ``repeats`` timed calls."""
    with torch.no_grad():
        for _ in range(warmup):
            generate(batch)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            generate(batch)
            best = min(best, time.perf_counter() - t0)
    return batch / best
