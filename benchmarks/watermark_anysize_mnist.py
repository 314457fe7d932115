"""Watermarked student and any-size sampling on MNIST (benchmarks/results/watermark_anysize_mnist.json, .md).

Watermark: a 1-step DMD2 student (``--student``: by default benchmarks/dmd2_mnist.sh's runs/bench/dmd2_A;
benchmarks/gpu_mnist_runs.sh's runs/gpu/dmd2_A_long is another) fine-tuned by the `watermark` method with its
mnist preset (trained here on first use into runs/watermark/<student>); FD, class accuracy and recall of
both students (1,000 samples x 3 seeds), and the key's bit accuracy on 1,000 images of each (noise
seeds the training never drew) with the share of images whose p-value is below 1e-6.

Any-size, 56x56 canvases of 28x28 models (samplers/tiled.py), each mode 3 seeds of 250 canvases: the teacher
(DPM-Solver++ on the flow grid, 8 NFE), the 4-step Phased DMD student (benchmarks/dmd_4step_mnist.sh's) and the
1-step DMD2 student. "tiles from noise" samples the canvas in overlapping tiles fused at every step
(MultiDiffusion); "enlarge (+ refine K)" composes at 28x28, enlarges 2x and re-runs the last K steps of the grid
in tiles (Any-Size-Diffusion). Measured: FD of the four 28x28 quadrant crops against the same crops of real
test digits enlarged 2x, FD of the canvas shrunk back to 28x28 against real digits (with its class accuracy),
the native FD (1,000 samples per seed), each with its real-vs-real floor (the crops' FD scale is not the whole
digits'), and a seam score: the mean |horizontal step| on the columns where tiles end over the mean on every
column, over the same for enlarged real digits (1.0 = as real); PNGs of canvases beside the results file.
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
import torch.nn.functional as F

from fewstep.data import load_dataset
from fewstep.io import write_text_atomic
from fewstep.methods.provenance.watermark import detection, load_decoder
from fewstep.metrics.benchmark import balanced_subset, bench_row, machine, measure, provenance, real_floor, write_results
from fewstep.metrics.evaluate import mean_std
from fewstep.metrics.features import load_features
from fewstep.model_io import load_denoiser
from fewstep.report import save_grid, watermark_anysize_table
from fewstep.samplers.generate import SamplingSpec, generate
from fewstep.samplers.tiled import Tiled, enlarge, generate_enlarged, tile_starts

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


# (model, its path, sampling (None: its own), modes): "tiles" samples the canvas from noise in fused tiles;
# an int K enlarges the native sample and re-runs the last K steps of the grid in tiles (0: enlarge only).
ANYSIZE = (("teacher", "mnist", SamplingSpec("dpmpp2m", 8, "flow"), ("tiles", 0, 1, 2, 3)),
           ("phased_dmd", "runs/bench/phased_nfe4_1200", None, ("tiles", 0, 1)),
           ("dmd2", None, None, ("tiles", 0)))


def canvases(den, spec, mode, n: int, labels, seed: int):
    """(n, 1, 56, 56) canvases of ``den`` in one any-size mode, and their NFE in native-size evaluations."""
    if mode == "tiles":
        tiled = Tiled(den, (28, 28))
        big, nfe = generate(tiled, n, spec, (1, 56, 56), labels, seed=seed, return_nfe=True)
        return big, nfe * tiled.tiles(56, 56)
    return generate_enlarged(den, n, spec, (1, 28, 28), (56, 56), labels, seed=seed, refine_steps=mode, return_nfe=True)


def shrink(x: torch.Tensor) -> torch.Tensor:
    """A canvas back at the native 28x28 (area averaging)."""
    return F.interpolate(x.clamp(-1, 1), size=(28, 28), mode="area")


def anysize_rows(student: Path, train, test, feats, ref_feats, n_canvas: int, seeds: int, out_png: Path) -> tuple[dict, list]:
    """Per model and mode, over ``seeds`` seeds: FD of the canvases' 28x28 quadrant crops against the same crops of
    real test digits enlarged 2x (a quarter of a 2x digit is not a digit, so whole digits are no reference for
    crops); FD of the canvases shrunk back to 28x28 against real digits enlarged and shrunk alike (does the canvas
    compose one digit?); the model's native FD; a seam score over the enlarged real digits' at the same columns.
    Each FD has its real-vs-real floor with the same sample counts (training digits against the test digits),
    because crops of 2x digits and whole digits sit at different scales of the feature space."""
    big_real = enlarge(test.x, (56, 56))
    ref_crops, ref_small = feats.features(quadrants(big_real, 28)), feats.features(shrink(big_real))
    train_big = enlarge(balanced_subset(train, n_canvas), (56, 56))
    floors = {"crops": measure(quadrants(train_big, 28), None, None, feats, ref_crops)["fd"],
              "canvas": measure(shrink(train_big), None, None, feats, ref_small)["fd"],
              "native": real_floor(train, test, feats)}
    real_seams = seam_score(big_real, 28, 14)
    print({"floors": floors, "real_seam_score": real_seams}, flush=True)
    rows = []
    for name, path, spec, modes in ANYSIZE:
        path = str(student) if path is None else path if path == "mnist" else str(ROOT / path)
        if path != "mnist" and not Path(path).exists():
            print(f"skipping {name}: {path} is not trained (benchmarks/dmd_4step_mnist.sh trains it)", flush=True)
            continue
        den, cfg = load_denoiser(path)
        spec = spec or SamplingSpec(**cfg["sampling"])
        labels = test.class_balanced_labels(n_canvas)
        native = [measure(generate(den, 4 * n_canvas, spec, test.shape, test.class_balanced_labels(4 * n_canvas), seed=s),
                          test.class_balanced_labels(4 * n_canvas), test.x, feats, ref_feats)["fd"] for s in range(seeds)]
        for mode in modes:
            per_seed = []
            for s in range(seeds):
                big, nfe = canvases(den, spec, mode, n_canvas, labels, s)
                crops = measure(quadrants(big, 28), None, None, feats, ref_crops)
                small = measure(shrink(big), labels, None, feats, ref_small)
                per_seed.append({"fd": crops["fd"], "canvas_fd": small["fd"], "canvas_class_acc": small["class_acc"],
                                 "seam_score": seam_score(big, 28, 14) / real_seams, "nfe": nfe})
            m = mean_std(per_seed) | mean_std([{"native_fd": v} for v in native])
            row = {"method": name, "mode": "tiles from noise" if mode == "tiles" else
                   ("enlarge" if mode == 0 else f"enlarge + refine {mode}"), "refine_steps": None if mode == "tiles" else mode,
                   "sampler": spec.sampler, "grid": spec.grid if spec.sigmas is None else "student", "steps": spec.steps,
                   "cfg": spec.cfg, "seeds": seeds, "dtype": "fp32", "canvas": [56, 56], "tile": [28, 28], "overlap": 14,
                   **{k: m[k] for k in ("fd", "fd_std", "canvas_fd", "canvas_fd_std", "canvas_class_acc", "seam_score",
                                        "nfe", "native_fd", "native_fd_std")},
                   "crop_over_native": m["fd"] / m["native_fd"],
                   "crops_over_floor": m["fd"] / floors["crops"], "native_over_floor": m["native_fd"] / floors["native"],
                   "run": shown(path), "command": cfg.get("training", {}).get("command") or "fewstep train-teacher --data mnist",
                   "images_per_s": None}
            rows.append(row)
            tag = "tiles" if mode == "tiles" else f"enlarge{mode}"
            save_grid(big[:20], out_png.with_name(f"{out_png.stem}_{name}_{tag}.png"), nrow=10)
            print({k: row[k] for k in ("method", "mode", "nfe", "fd", "canvas_fd", "native_fd", "crops_over_floor",
                                       "native_over_floor", "seam_score")}, flush=True)
    return floors, rows


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
        floors, rows = anysize_rows(student, load_dataset("mnist", "train"), test, feats, ref_feats, a.n // 4, a.seeds,
                                    out.with_suffix(".png"))
        results["rows"] += rows
        results["anysize_floors"] = floors
    results["complete"] = True
    write_results(out, results)
    write_text_atomic(out.with_suffix(".md"), watermark_anysize_table(results))
    print(watermark_anysize_table(results))


if __name__ == "__main__":
    main()
