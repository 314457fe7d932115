"""``fewstep sample``: a PNG grid of a model's samples (and, with ``--images``, one PNG per sample)."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ..errors import FewstepError
from ..model_io import sample_shape
from .common import cached, labels_for, spec_from


def run(a):
    from ..model_io import load_denoiser
    from ..report import save_grid, save_images
    from ..samplers.generate import generate
    from ..samplers.tiled import Tiled, generate_enlarged, tail_spec

    den, mcfg = load_denoiser(a.model)
    den = cached(den, a.cache)
    spec = spec_from(a, mcfg)
    n = a.n or 100
    shape = sample_shape(mcfg)
    if a.images and len(shape) != 3:
        raise FewstepError("--images needs an image model (this one makes 2-D points)")
    canvas = shape
    if a.width or a.height:  # any-size: a larger canvas in overlapping native-size tiles (samplers/tiled.py)
        if len(shape) != 3:
            raise FewstepError("--width/--height need an image model")
        canvas = (shape[0], a.height or shape[1], a.width or shape[2])
        if canvas[1] < shape[1] or canvas[2] < shape[2]:
            raise FewstepError(f"--width/--height must be at least the model's own {shape[2]}x{shape[1]}")
    if a.enlarge is not None:  # Any-Size-Diffusion: compose at the model's size, enlarge, refine in tiles
        if canvas == shape:
            raise FewstepError("--enlarge needs --width or --height larger than the model's own: the canvas to enlarge to")
        if a.enlarge:  # checked before any sampling: no more refine steps than the grid has
            try:
                tail_spec(den, spec, a.enlarge)
            except ValueError as e:
                raise FewstepError(f"--enlarge: {e}") from None
        samples, nfe = generate_enlarged(den, n, spec, shape, canvas[1:], labels_for(mcfg, n), seed=a.seed,
                                         refine_steps=a.enlarge, bf16=a.bf16, return_nfe=True)
    else:
        model = Tiled(den, shape[1:]) if canvas != shape else den
        samples, nfe = generate(model, n, spec, canvas, labels_for(mcfg, n), seed=a.seed, bf16=a.bf16, return_nfe=True)
    shape = canvas
    out = Path(a.out or "samples.png")
    if out.suffix.lower() != ".png":
        out = out / "samples.png"
    save_grid(samples, out)
    images = [str(p) for p in save_images(samples, out.parent)] if a.images else []
    print(json.dumps({"grid": str(out), "images": images, "n": n, "nfe": nfe, "sampling": asdict(spec), "cache": a.cache,
                      "shape": list(shape)}))
