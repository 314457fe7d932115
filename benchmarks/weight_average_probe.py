"""Uniform averages of a run's raw student weights over a window of its checkpoints, written as model folders.

A diagnostic for students whose in-training FD swings: does an average over the last part of the run land where the
run's own EMA (a short window at the end, nets/ema.py) does, or steadier? Needs a run trained with checkpoints kept
along the way (e.g. ``--ckpt-every 25 --keep 30``). Each window becomes ``OUT/avgFROM-TO`` with the run's final
model config and the averaged weights; measure it with ``fewstep eval --model OUT/avgFROM-TO --seeds 3``.

    python benchmarks/weight_average_probe.py --run runs/ema_diag/seed1 --window 300:600 --window 450:600 --out runs/avg
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from fewstep.io import atomic_dir, load_tensors, save_tensors


def checkpoint_iters(run: Path) -> list[int]:
    """Iterations of the run's complete checkpoints (folders named by iteration that hold the student's weights)."""
    return sorted(int(d.name) for d in (run / "checkpoints").iterdir()
                  if d.name.isdigit() and (d / "student.safetensors").exists())


def average_student(run: Path, iters: list[int]) -> dict[str, torch.Tensor]:
    """The mean of the raw student weights at ``iters`` (floating-point tensors; others from the last one)."""
    total: dict[str, torch.Tensor] = {}
    for it in iters:
        state = load_tensors(run / "checkpoints" / f"{it:08d}" / "student.safetensors")
        for k, v in state.items():
            if v.is_floating_point():
                total[k] = total.get(k, 0) + v.double() / len(iters)
            else:
                total[k] = v
    return {k: v.float().contiguous() if v.is_floating_point() else v for k, v in total.items()}


def write_model(dest: Path, config: Path, weights: dict[str, torch.Tensor]) -> Path:
    """A model folder (the run's config, the given weights), published whole or not at all."""
    def write(tmp: Path) -> None:
        shutil.copyfile(config, tmp / "config.json")
        save_tensors(weights, tmp / "model.safetensors")

    return atomic_dir(dest, write)


def parse_window(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition(":")
    try:
        window = int(lo), int(hi)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a window is FROM:TO in iterations, got {text!r}") from None
    if not 0 <= window[0] <= window[1]:
        raise argparse.ArgumentTypeError(f"a window needs 0 <= FROM <= TO, got {text!r}")
    return window


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="training output folder with checkpoints and model/")
    ap.add_argument("--window", type=parse_window, action="append", required=True,
                    help="FROM:TO iterations (inclusive) of the checkpoints to average; repeatable")
    ap.add_argument("--out", type=Path, required=True, help="folder the averaged models are written under")
    args = ap.parse_args(argv)
    if not (args.run / "model" / "config.json").exists():
        raise SystemExit(f"{args.run} has no finished model (model/config.json)")
    available = checkpoint_iters(args.run)
    for lo, hi in args.window:
        iters = [it for it in available if lo <= it <= hi]
        if not iters:
            raise SystemExit(f"no checkpoint of {args.run} lies in {lo}:{hi} (have {available})")
        dest = write_model(args.out / f"avg{lo}-{hi}", args.run / "model" / "config.json", average_student(args.run, iters))
        print(f"{dest}: mean of {len(iters)} checkpoints {iters[0]}-{iters[-1]}")


if __name__ == "__main__":
    main()
