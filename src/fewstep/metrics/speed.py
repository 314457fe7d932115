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


def macs_per_image(generate, batch: int = 4) -> float:
    """Multiply-accumulates per sample, counted by torch's FLOP counter over one ``generate(batch)``
    (convolutions, matmuls, attention; elementwise work is not counted): what caching or pruning saves."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        generate(batch)
    return counter.get_total_flops() / 2 / batch


def parameter_count(den) -> int:
    """Parameters of a denoiser's network (shared weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in den.net.parameters()}.values())
