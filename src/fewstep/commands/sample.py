"""``fewstep sample``: a PNG grid of a model's samples."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from .common import cached, labels_for, sample_shape, spec_from


def run(a):
    from ..model_io import load_denoiser
    from ..report import save_grid
    from ..samplers.generate import generate

    den, mcfg = load_denoiser(a.model)
    den = cached(den, a.cache)
    spec = spec_from(a, mcfg)
    n = a.n or 100
    samples, nfe = generate(den, n, spec, sample_shape(mcfg), labels_for(mcfg, n), seed=a.seed, bf16=a.bf16,
                            return_nfe=True)
    out = Path(a.out or "samples.png")
    if out.suffix.lower() != ".png":
        out = out / "samples.png"
    save_grid(samples, out)
    print(json.dumps({"grid": str(out), "n": n, "nfe": nfe, "sampling": asdict(spec), "cache": a.cache}))
