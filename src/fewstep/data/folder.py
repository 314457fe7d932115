"""User image folders (``folder:PATH``), following the Hugging Face imagefolder convention:

* class labels from sub-folder names (``PATH/<class>/*.png``), sorted alphabetically, or
* captions from ``PATH/metadata.jsonl`` with ``file_name`` and ``text`` columns.

Images are centre-cropped and resized to ``resolution`` and scaled to [-1, 1]. A held-out split
takes every 10th image (at least one).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .base import ArrayDataset

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def _load_image(path: Path, resolution: int, channels: int) -> np.ndarray:
    from PIL import Image

    try:
        img = Image.open(path)
        img = img.convert("L" if channels == 1 else "RGB")
    except Exception as e:
        raise ValueError(f"cannot read image {path}: {e}") from None
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((resolution, resolution))
    arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def folder(path: str, split: str, resolution: int = 64, channels: int = 3) -> ArrayDataset:
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"data folder {root} does not exist or is not a directory")
    meta = root / "metadata.jsonl"
    captions, labels, classes = None, None, []
    if meta.exists():
        files, captions = [], []
        for i, line in enumerate(meta.read_text().splitlines()):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                files.append(root / row["file_name"])
                captions.append(str(row["text"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(f"{meta}: line {i + 1} needs JSON with 'file_name' and 'text'") from None
    else:
        subdirs = sorted(p for p in root.iterdir() if p.is_dir())
        if subdirs:
            classes = [p.name for p in subdirs]
            pairs = [(f, k) for k, d in enumerate(subdirs) for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_EXTS]
            files, labels = [f for f, _ in pairs], [k for _, k in pairs]
        else:
            files = sorted(f for f in root.iterdir() if f.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise ValueError(f"data folder {root} holds no images ({', '.join(sorted(IMAGE_EXTS))})")
    held = [i for i in range(len(files)) if i % 10 == 9] or [len(files) - 1]
    keep = held if split != "train" else ([i for i in range(len(files)) if i not in set(held)] or held)
    x = torch.tensor(np.stack([_load_image(files[i], resolution, channels) for i in keep]))
    y = None if labels is None else torch.tensor([labels[i] for i in keep], dtype=torch.long)
    caps = None if captions is None else [captions[i] for i in keep]
    return ArrayDataset(f"folder:{root}", x, y, len(classes), caps, meta={"classes": classes})
