"""User image folders (``folder:PATH``), following the Hugging Face imagefolder convention:

* class labels from sub-folder names (``PATH/<class>/*.png``), sorted alphabetically, or
* captions from ``PATH/metadata.jsonl`` with ``file_name`` and ``text`` columns.

Images are centre-cropped and resized to ``resolution`` and scaled to [-1, 1]. By default the folder
decides: the resolution is its images' most common short side (the larger one on a tie) and the
colour mode is grey when every image is grey, RGB otherwise (``infer_format``). A held-out split takes
every 10th image (at least one). Files without an image extension are skipped; an image that cannot be
read is an error naming it. A folder with a single class sub-folder is unconditional.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from .base import ArrayDataset

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def _open(path: Path):
    from PIL import Image

    try:
        img = Image.open(path)
        img.verify()  # reads the whole file: a truncated or corrupt image fails here, not mid-training
        return Image.open(path)
    except Exception as e:
        raise ValueError(f"cannot read image {path}: {e}") from None


def infer_format(files: list[Path]) -> tuple[int, int]:
    """(resolution, channels) of a list of images: the most common short side (the larger on a tie), and
    1 when every image is grey, else 3."""
    sides, grey = Counter(), True
    for f in files:
        img = _open(f)
        sides[min(img.size)] += 1
        grey = grey and img.mode in GREY_MODES
    top = max(sides.values())
    return max(s for s, n in sides.items() if n == top), 1 if grey else 3


def _load_image(path: Path, resolution: int, channels: int) -> np.ndarray:
    try:
        img = _open(path).convert("L" if channels == 1 else "RGB")
    except ValueError:
        raise
    except Exception as e:
        raise ValueError(f"cannot read image {path}: {e}") from None
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((resolution, resolution))
    arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def folder(path: str, split: str, resolution: int | None = None, channels: int | None = None) -> ArrayDataset:
    """The folder's ``split`` at ``resolution`` x ``resolution`` with ``channels`` (1 or 3); None: the
    folder's own (``infer_format`` over every image, so both splits agree)."""
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    if resolution is not None and resolution < 4:
        raise ValueError(f"resolution must be >= 4, got {resolution}")
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
        subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if len(subdirs) == 1:  # one class is no condition: its images, unconditional
            root_files = subdirs[0]
            subdirs = []
        else:
            root_files = root
        if subdirs:
            classes = [p.name for p in subdirs]
            pairs = [(f, k) for k, d in enumerate(subdirs) for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_EXTS]
            files, labels = [f for f, _ in pairs], [k for _, k in pairs]
        else:
            files = sorted(f for f in root_files.iterdir() if f.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise ValueError(f"data folder {root} holds no images ({', '.join(sorted(IMAGE_EXTS))})")
    if resolution is None or channels is None:
        res, ch = infer_format(files)
        resolution, channels = resolution or res, channels or ch
    held = [i for i in range(len(files)) if i % 10 == 9] or [len(files) - 1]
    keep = held if split != "train" else ([i for i in range(len(files)) if i not in set(held)] or held)
    x = torch.tensor(np.stack([_load_image(files[i], resolution, channels) for i in keep]))
    y = None if labels is None else torch.tensor([labels[i] for i in keep], dtype=torch.long)
    caps = None if captions is None else [captions[i] for i in keep]
    return ArrayDataset(f"folder:{root}", x, y, len(classes), caps,
                        meta={"classes": classes, "resolution": resolution, "channels": channels})
