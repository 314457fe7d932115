"""Watermarked student and any-size sampling on MNIST (benchmarks/results/watermark_anysize_mnist.json, .md).

Watermark: a 1-step DMD2 student (``--student``: by default benchmarks/dmd2_mnist.sh's runs/bench/dmd2_A;
benchmarks/gpu_mnist_runs.sh's runs/gpu/dmd2_A_long is another) fine-tuned by the `watermark` method with its
mnist preset (trained here on first use into runs/watermark/<student>); FD, class accuracy and recall of
both students (1,000 samples x 3 seeds), and the key's bit accuracy on 1,000 images of each (noise
seeds the training never drew) with the share of images whose p-value is below 1e-6.

Any-size: the teacher (DPM-Solver++ on the flow grid, 8 NFE) and the 1-step DMD2 student at 56x56,
sampled in overlapping 28x28 tiles fused at every step (samplers/tiled.py); FD on the four 28x28
quadrant crops of 250 canvases (1,000 crops) against the native 28x28 FD (1,000 samples), 1 seed; a
seam score: the mean |horizontal step| on the columns where tiles end over the mean on every column
(1.0 = no seam); a PNG of 2x samples beside the results file.
    .venv/bin/python benchmarks/watermark_anysize_mnist.py                    # both
    .venv/bin/python benchmarks/watermark_anysize_mnist.py --student runs/gpu/dmd2_A_long
    .venv/bin/python benchmarks/watermark_anysize_mnist.py --parts anysize    # results/anysize_mnist.json
"""
from __future__ import annotations

import argparse
import datetime as dt
import shlex
import subprocess
import sys
from pathlib import Path

import torch

from fewstep.data import load_dataset
from fewstep.io import write_text_atomic
from fewstep.methods.provenance.watermark import detection, load_decoder
from fewstep.metrics.benchmark import bench_row, machine, measure, provenance, write_results
from fewstep.metrics.features import load_features
from fewstep.model_io import load_denoiser
from fewstep.report import save_grid, watermark_anysize_table
from fewstep.samplers.generate import SamplingSpec, generate
from fewstep.samplers.tiled import Tiled, tile_starts

HERE = Path(__file__).parent
ROOT = HERE.parent
FEWSTEP = str(Path(sys.executable).parent / "fewstep")
STUDENT = "runs/bench/dmd2_A"  # benchmarks/dmd2_mnist.sh's 1-step DMD2 (real CFG 1.25)


def shown(path) -> str:
    """A run's path as the results file keeps it: relative to the repository when inside it."""
    path = Path(path)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def train_watermark(run: Path, student: Path) -> None:
    if not (run / "model" / "config.json").is_file():
        subprocess.run([FEWSTEP, "distill", "--teacher", str(student), "--method", "watermark", "--threads", "2",
                        "--no-progress", "--resume", "--out", str(run)], check=True)


def watermark_rows(run: Path, student: Path, test, feats, ref_feats, n: int, seeds: int) -> list[dict]:
    import json

    decoder, key, _ = load_decoder(run)
    rows = []
    for name, path in (("dmd2", student), ("watermark", run)):
        den, cfg = load_denoiser(str(path))
        spec = SamplingSpec(**cfg["sampling"])
        row = bench_row(den, spec, test, feats, ref_feats, n, seeds, False, method=name)
        labels = test.class_balanced_labels(n)
        x = generate(den, n, spec, test.shape, labels, seed=1000).clamp(-1, 1)  # seeds no training run drew
        with torch.no_grad():
            det = detection(decoder(x), key)
        row.update(run=shown(path), command=cfg["training"]["command"], bit_acc=sum(det["bit_acc"]) / n,
                   detected=sum(p < 1e-6 for p in det["p_value"]) / n, images_per_s=None)
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("method", "fd", "fd_std", "class_acc", "bit_acc", "detected")}), flush=True)
    return rows


def quadrants(x: torch.Tensor, size: int) -> torch.Tensor:
    return torch.cat([x[:, :, i:i + size, j:j + size] for i in (0, size) for j in (0, size)])


def seam_score(x: torch.Tensor, tile: int, overlap: int) -> float:
    """Mean |x[..., c] - x[..., c-1]| on the columns where a tile ends, over the mean on every column."""
    steps = (x[..., 1:] - x[..., :-1]).abs().mean(dim=(0, 1, 2))
    edges = sorted({s + tile for s in tile_starts(x.shape[-1], tile, overlap)} - {x.shape[-1]})
    return float(steps[[e - 1 for e in edges]].mean() / steps.mean())


def anysize_rows(student: Path, test, feats, ref_feats, canvases: int, out_png: Path) -> list[dict]:
    rows = []
    for name, path, spec in (("teacher", "mnist", SamplingSpec("dpmpp2m", 8, "flow")),
                             ("dmd2", str(student), None)):
        den, cfg = load_denoiser(path)
        spec = spec or SamplingSpec(**cfg["sampling"])
        tiled = Tiled(den, (28, 28))
        labels = test.class_balanced_labels(canvases)
        big = generate(tiled, canvases, spec, (1, 56, 56), labels, seed=0)
        crops = quadrants(big, 28)
        crop_labels = labels.repeat(4)
        native = generate(den, 4 * canvases, spec, test.shape, test.class_balanced_labels(4 * canvases), seed=0)
        m_native = measure(native, test.class_balanced_labels(4 * canvases), test.x, feats, ref_feats)
        m_tiled = measure(crops, crop_labels, test.x, feats, ref_feats)
        row = {"method": name, "sampler": spec.sampler, "grid": spec.grid, "steps": spec.steps, "nfe": spec.steps,
               "cfg": spec.cfg, "seeds": 1, "dtype": "fp32", "canvas": [56, 56], "tile": [28, 28], "overlap": tiled.overlap,
               "fd": m_tiled["fd"], "fd_std": 0.0, "class_acc": m_tiled.get("class_acc"), "recall": m_tiled.get("recall"),
               "precision": m_tiled.get("precision"), "native_fd": m_native["fd"],
               "tiled_over_native": m_tiled["fd"] / m_native["fd"], "seam_score": seam_score(big, 28, tiled.overlap),
               "run": shown(path), "command": cfg.get("training", {}).get("command") or "fewstep train-teacher --data mnist",
               "images_per_s": None}
        rows.append(row)
        save_grid(big[:20], out_png.with_name(f"{out_png.stem}_{name}.png"), nrow=10)
        print({k: row[k] for k in ("method", "fd", "native_fd", "tiled_over_native", "seam_score")}, flush=True)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--student", default=STUDENT, help="the 1-step student to mark (a training output or model folder)")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--parts", default="watermark,anysize", help="which measurements: watermark, anysize or both")
    p.add_argument("--out", help="results file (default: results/<parts>_mnist.json)")
    a = p.parse_args(argv)
    parts = [x for x in a.parts.split(",") if x]
    a.out = a.out or str(HERE / "results" / f"{'_'.join(parts)}_mnist.json")
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    student = ROOT / a.student
    if not (student / "model" / "config.json").is_file() and not (student / "config.json").is_file():
        sys.exit(f"{student}: no trained student there (train it with the script named in --help)")
    run = ROOT / "runs" / "watermark" / student.name
    if "watermark" in parts:
        train_watermark(run, student)
    test = load_dataset("mnist", "test").subset(a.n)
    feats = load_features("mnist", shape=test.shape)
    ref_feats = feats.features(test.x)
    results = {"benchmark": "watermark_anysize", "command": "python benchmarks/watermark_anysize_mnist.py " + shlex.join(sys.argv[1:]),
               "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
               **provenance(exclude=out), "threads": a.threads, "torch": torch.__version__,
               "floor": {"fd": None}, "rows": []}
    if "watermark" in parts:
        results["rows"] += watermark_rows(run, student, test, feats, ref_feats, a.n, a.seeds)
        write_results(out, results)
    if "anysize" in parts:
        results["rows"] += anysize_rows(student, test, feats, ref_feats, a.n // 4, out.with_suffix(".png"))
    results["complete"] = True
    write_results(out, results)
    write_text_atomic(out.with_suffix(".md"), watermark_anysize_table(results))
    print(watermark_anysize_table(results))


if __name__ == "__main__":
    main()
