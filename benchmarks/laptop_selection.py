"""LAPTOP-Diff's one-shot choice against random choices under the same parameter budget, before any
retraining (benchmarks/results/laptop_selection.json): the shipped MNIST teacher pruned to <= 0.6x its
parameters by the measured-distortion scores, and by three random layer orders; each pruned network is
sampled as the teacher (Euler, 16 NFE, Karras grid, 1,000 samples, 1 seed) with the teacher's weights.
What the choice alone buys; compress_mnist.json has the retrained scored student.

    .venv/bin/python benchmarks/laptop_selection.py --threads 2
"""
from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
from pathlib import Path

import torch

from fewstep.config import build_config
from fewstep.data import load_dataset
from fewstep.io import write_text_atomic
from fewstep.methods.compress.laptop import Laptop
from fewstep.metrics.benchmark import bench_row, machine, provenance, real_floor, write_results
from fewstep.metrics.features import load_features
from fewstep.metrics.speed import macs_per_image, parameter_count
from fewstep.model_io import load_denoiser
from fewstep.report import results_table
from fewstep.samplers.generate import SamplingSpec, generate

HERE = Path(__file__).parent


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--budget", type=float, default=0.6)
    p.add_argument("--random-draws", type=int, default=3)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--out", default=str(HERE / "results" / "laptop_selection.json"))
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    teacher, tcfg = load_denoiser("mnist")
    train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test").subset(a.n)
    feats = load_features("mnist")
    ref = feats.features(test.x)
    spec = SamplingSpec("euler", 16, "karras")
    results = {"benchmark": "mnist", "command": "python benchmarks/laptop_selection.py " + shlex.join(sys.argv[1:]),
               "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
               **provenance(exclude=out), "threads": a.threads, "torch": torch.__version__,
               "teacher": {"checkpoint": "mnist", **{k: tcfg.get("training", {}).get(k) for k in ("train_s", "iterations",
                                                                                                "command")}},
               "floor": {"fd": real_floor(train, test, feats)}, "complete": False, "rows": []}
    choices = [("teacher", None)] + [("score", 0)] + [("random", s) for s in range(a.random_draws)]
    for selection, seed in choices:
        if selection == "teacher":
            den, name, layers = teacher, "teacher", []
        else:
            cfg = build_config(Laptop.Config, {"budget": a.budget, "selection": selection, "seed": seed})
            method = Laptop(teacher, cfg, shape=test.shape, num_classes=test.num_classes)
            den, layers = method.student.eval(), method.pruned_layers
            name = f"selection={selection}" + (f", seed {seed}" if selection == "random" else "")
        row = bench_row(den, spec, test, feats, ref, len(test), 1, False, method="teacher" if not layers else "laptop")
        row.update(run=name, pruned=layers, iterations=0 if layers else None, params=parameter_count(den),
                   command=results["command"] if layers else None,
                   macs=macs_per_image(lambda b, den=den: generate(den, b, spec, test.shape, test.class_balanced_labels(b),
                                                          seed=0, batch=b)))
        results["rows"].append(row)
        print(f"{name}: FD {row['fd']:.2f}, class acc {row['class_acc']:.3f}, params {row['params']}, pruned {layers}",
              flush=True)
        write_results(out, results)
    results["complete"] = True
    write_results(out, results)
    write_text_atomic(out.with_suffix(".md"), results_table(results) + "\n")


if __name__ == "__main__":
    main()
