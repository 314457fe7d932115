"""Cost of softmax against linear (LinFusion) self-attention as the image grows
(benchmarks/results/linfusion_resolution.json and .md): one network call per image of the shipped MNIST
teacher and of its LinFusion student (same network, linear attention; its cost does not depend on its
trained weights) at increasing sizes, timed, with the attention matrix a softmax layer would form
(tokens^2 x heads x 4 bytes per image at the attention level with the most tokens) computed, not measured.

    .venv/bin/python benchmarks/linfusion_resolution.py --threads 2
"""
from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
import time
from pathlib import Path

import torch

from fewstep.io import write_text_atomic
from fewstep.methods.compress.linfusion import LinFusion
from fewstep.metrics.benchmark import machine, provenance, write_results
from fewstep.model_io import load_denoiser
from fewstep.report import resolution_table

HERE = Path(__file__).parent


def seconds_per_call(den, size: int, repeats: int) -> float:
    x = torch.randn(1, 1, size, size)
    t, y = torch.full((1,), 1.0), torch.tensor([3])
    with torch.no_grad():
        den(x, t, y)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            den(x, t, y)
    return (time.perf_counter() - start) / repeats


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sizes", default="28,56,112,224,448")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(HERE / "results" / "linfusion_resolution.json"))
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    teacher, _ = load_denoiser("mnist")
    student = LinFusion(teacher, None, shape=(1, 28, 28), num_classes=10).student.eval()
    net = teacher.net
    top = min(net.cfg.attn_levels) if net.cfg.attn_levels else len(net.cfg.ch_mult) - 1  # most tokens
    heads = 4
    results = {"benchmark": "linfusion_resolution",
               "command": "python benchmarks/linfusion_resolution.py " + shlex.join(sys.argv[1:]),
               "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
               **provenance(exclude=out), "threads": a.threads, "torch": torch.__version__, "rows": []}
    for size in (int(s) for s in a.sizes.split(",")):
        tokens = (size // 2 ** top) ** 2
        row = {"size": size, "attention_tokens": tokens, "softmax_matrix_mb": tokens ** 2 * heads * 4 / 2 ** 20,
               "softmax_s": seconds_per_call(teacher, size, a.repeats),
               "linear_s": seconds_per_call(student, size, a.repeats)}
        results["rows"].append(row)
        print(row, flush=True)
        write_results(out, results)
    results["complete"] = True
    write_results(out, results)
    write_text_atomic(out.with_suffix(".md"), resolution_table(results))


if __name__ == "__main__":
    main()
