"""Your own images end to end (benchmarks/results/folder_demo.json, .md): ``fewstep demo --data folder:PATH``
on two folders this script writes, each a plain folder of PNGs in class sub-folders:

* ``digits``: scikit-learn's handwritten digits (1,797 grey 8x8 images, 10 classes), as shipped;
* ``shapes``: synthetic 16x16 colour images, 4 classes (disc, square, triangle, cross) of random size,
  position and colour on a random dark background, drawn anti-aliased, 500 per class (with hard 0/1
  edges the feature network's FD measures aliasing more than shape: docs/notes.md, the folder demo).

Each demo trains the folder's feature network, a teacher sized from the images (the ``folder`` preset) and
a 1-step DMD2 student within ``--budget-min`` minutes on this machine, then measures the teacher's sampler
curve and the student (demo outputs in runs/folder_demo/<name>: report.html, teacher_curve.json,
student_eval.json). Collected per folder: the feature network's held-out accuracy, the real-data floor, the
teacher's best FD over its curve, the student's FD over 3 seeds, and the demo's wall time.
    .venv/bin/python benchmarks/folder_demo.py [--budget-min 20] [--datasets digits,shapes]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from fewstep.io import write_text_atomic
from fewstep.metrics.benchmark import machine, provenance, write_results
from fewstep.report import table_for

HERE = Path(__file__).parent
ROOT = HERE.parent
FEWSTEP = str(Path(sys.executable).parent / "fewstep")
SHAPES = ("disc", "square", "triangle", "cross")


def write_digits(root: Path) -> Path:
    """scikit-learn's digits (values 0..16) as 8-bit grey PNGs, one sub-folder per digit."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    for i, (img, y) in enumerate(zip(d.images, d.target)):
        (root / str(y)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((img * 255 / 16).round().astype("uint8"), mode="L").save(root / str(y) / f"{i:04d}.png")
    return root


def shape_mask(kind: str, size: int, rng, supersample: int = 4) -> np.ndarray:
    """The fraction of each pixel a filled shape of random size and position covers on a size x size
    canvas, from a ``supersample``-times finer rendering (anti-aliased edges, as any renderer or camera
    gives; 1: hard 0/1 edges)."""
    r = rng.uniform(0.22, 0.38) * size
    cy, cx = rng.uniform(r, size - r, 2)
    k = supersample
    y, x = (np.mgrid[:size * k, :size * k] + 0.5) / k
    return _inside(kind, y, x, cy, cx, r).reshape(size, k, size, k).mean(axis=(1, 3))


def _inside(kind: str, y: np.ndarray, x: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    if kind == "disc":
        return (y - cy) ** 2 + (x - cx) ** 2 <= r * r
    if kind == "square":
        return (abs(y - cy) <= r * 0.8) & (abs(x - cx) <= r * 0.8)
    if kind == "triangle":  # apex up: inside when below the two slanted edges and above the base
        top, base = cy - r, cy + r * 0.8
        half = (y - top) / (base - top) * r
        return (y >= top) & (y <= base) & (abs(x - cx) <= half)
    w = max(r * 0.3, 1.0)  # cross
    return ((abs(y - cy) <= w) & (abs(x - cx) <= r)) | ((abs(x - cx) <= w) & (abs(y - cy) <= r))


def write_shapes(root: Path, per_class: int = 500, size: int = 16, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for kind in SHAPES:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            bg = rng.uniform(0, 0.35, 3)
            fg = rng.uniform(0.45, 1.0, 3)
            alpha = shape_mask(kind, size, rng)[..., None]
            img = alpha * fg + (1 - alpha) * bg
            Image.fromarray((img * 255).round().astype("uint8"), mode="RGB").save(root / kind / f"{i:04d}.png")
    return root


WRITERS = {"digits": write_digits, "shapes": write_shapes}


def run_demo(data: Path, out: Path, budget: float) -> tuple[str, float]:
    cmd = [FEWSTEP, "demo", "--data", f"folder:{data}", "--budget-min", f"{budget:g}", "--out", str(out),
           "--threads", "2", "--no-progress"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return "fewstep " + shlex.join(cmd[1:]), time.perf_counter() - t0


def collect(name: str, data: Path, out: Path, command: str, wall_s: float) -> tuple[dict, list[dict]]:
    from fewstep.metrics.features import features_accuracy

    curve = json.loads((out / "teacher_curve.json").read_text())
    ev = json.loads((out / "student_eval.json").read_text())
    teacher_cfg = json.loads((out / "teacher" / "model" / "config.json").read_text())
    best = min(curve["rows"], key=lambda r: r["fd"])
    one = next(r for r in curve["rows"] if r["sampler"] == "euler" and r["nfe"] == 1)
    student = dict(ev["student"], method=ev["student"].get("method") or "dmd2", command=command, dataset=name,
                   iterations=ev["iterations"], train_s=ev["train_s"])
    rows = [dict(r, method="teacher", dataset=name) for r in curve["rows"]] + [student]
    summary = {"data": str(data), "shape": teacher_cfg["data"]["shape"], "classes": teacher_cfg["data"]["num_classes"],
               "feature_acc": features_accuracy(f"folder:{data}"), "floor": curve["floor"],
               "teacher_iterations": teacher_cfg["training"]["iterations"],
               "teacher_best": {k: best[k] for k in ("sampler", "grid", "nfe", "fd", "class_acc")},
               "teacher_1nfe_fd": one["fd"], "student_fd": student["fd"], "student_fd_std": student["fd_std"],
               "student_class_acc": student["class_acc"], "student_iterations": ev["iterations"],
               "teacher_s_per_it": teacher_cfg["training"]["train_s"] / max(teacher_cfg["training"]["iterations"], 1),
               "student_s_per_it": (ev["train_s"] or 0) / max(ev["iterations"], 1),
               "wall_min": round(wall_s / 60, 1), "command": command}
    return summary, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-min", type=float, default=20.0)
    ap.add_argument("--datasets", default="digits,shapes")
    ap.add_argument("--root", default=str(ROOT / "runs" / "folder_demo"))
    ap.add_argument("--out", default=str(HERE / "results" / "folder_demo.json"))
    a = ap.parse_args()
    root, out = Path(a.root), Path(a.out)
    results = {"benchmark": "folder_demo", "command": "python benchmarks/folder_demo.py " + shlex.join(sys.argv[1:]),
               "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
               **provenance(exclude=out), "budget_min": a.budget_min, "datasets": {}, "rows": [], "complete": False}
    for name in a.datasets.split(","):
        data = root / "data" / name
        if not data.is_dir():
            WRITERS[name](data)
        command, wall_s = run_demo(data, root / name, a.budget_min)
        summary, rows = collect(name, data, root / name, command, wall_s)
        results["datasets"][name] = summary
        results["rows"] += rows
        print(json.dumps({name: summary}), flush=True)
    results["complete"] = True
    write_results(out, results)
    write_text_atomic(out.with_suffix(".md"), table_for(results) + "\n")


if __name__ == "__main__":
    main()
