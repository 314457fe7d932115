"""Teacher ODE pairs (noise -> sample) for regression losses (DMD's L_reg, reflow couplings),
generated once and cached on disk as safetensors next to the run."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..hardware import use_bf16
from ..io import load_tensors, save_tensors_atomic


def pair_batch(pairs: dict, n: int, rng: torch.Generator, device, conditional: bool):
    """(noise, teacher output, labels or None) for n pairs drawn uniformly, on ``device``."""
    idx = torch.randint(0, pairs["x0"].shape[0], (n,), generator=rng)
    cond = pairs["labels"][idx].to(device) if conditional else None
    return pairs["noise"][idx].to(device), pairs["x0"][idx].to(device), cond


def teacher_pairs(teacher, n: int, spec, shape, num_classes: int, seed: int, cache_dir: Path, bf16: bool = True,
                  batch: int = 250) -> dict:
    """{"noise": z (unit std), "labels", "x0": teacher ODE output from sigma_0 * z}, cached by content key."""
    from dataclasses import asdict

    from ..noise.guidance import guided
    from ..samplers import sample, sigmas_for
    from ..samplers.ode import coeffs

    key = hashlib.sha1(json.dumps({"n": n, "spec": asdict(spec), "shape": list(shape), "seed": seed,
                                   "k": num_classes}, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"pairs-{key}.safetensors"
    if path.is_file():
        return load_tensors(path)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn((n, *shape), generator=g)
    labels = torch.arange(n) % num_classes if num_classes else torch.zeros(n, dtype=torch.long)
    sigmas = sigmas_for(teacher, spec)
    _, _, s0 = coeffs(teacher.process, float(sigmas[0]))
    model = guided(teacher, spec.cfg)
    outs = []
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if use_bf16(bf16) else torch.autocast("cpu", enabled=False)
    with torch.no_grad(), ctx:
        for i in range(0, n, batch):
            cond = labels[i:i + batch] if num_classes else None
            outs.append(sample(model, s0 * z[i:i + batch], sigmas, spec.sampler, cond=cond).float())
    pairs = {"noise": z, "labels": labels, "x0": torch.cat(outs)}
    save_tensors_atomic(pairs, path)
    return pairs
