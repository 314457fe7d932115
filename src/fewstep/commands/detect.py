"""``fewstep detect``: the key a watermark run's decoder reads from each image, with its bit accuracy
and the chance an unmarked image would match as many bits (methods/provenance/watermark.py)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import FewstepError


def read_image(path: Path, shape) -> torch.Tensor:
    """A PNG as (C, H, W) in [-1, 1], converted to the model's channels; its size must be the model's."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
        img.load()
    except (OSError, UnidentifiedImageError) as e:
        raise FewstepError(f"{path}: not a readable image ({e})") from None
    img = img.convert("L" if shape[0] == 1 else "RGB")
    if tuple(img.size) != (shape[2], shape[1]):
        raise FewstepError(f"{path}: {img.size[0]}x{img.size[1]} pixels; the decoder reads {shape[2]}x{shape[1]} images")
    import numpy as np

    x = torch.tensor(np.asarray(img), dtype=torch.float32) / 127.5 - 1
    return x[None] if x.ndim == 2 else x.permute(2, 0, 1)


def run(a):
    from ..methods.provenance.watermark import detection, load_decoder

    decoder, key, cfg = load_decoder(a.decoder)
    x = torch.stack([read_image(Path(p), cfg["shape"]) for p in a.images])
    with torch.no_grad():
        logits = decoder(x)
    res = detection(logits, key)
    for i, p in enumerate(a.images):
        bits = "".join(str(int(b)) for b in (logits[i] > 0).tolist())
        print(json.dumps({"image": p, "bits": bits, "key": cfg["key_resolved"], "bit_acc": round(res["bit_acc"][i], 4),
                          "p_value": res["p_value"][i], "watermarked": res["p_value"][i] < a.threshold}))
