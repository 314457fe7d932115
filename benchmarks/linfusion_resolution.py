"""Cost of softmax against linear (LinFusion) self-attention as the image grows
(benchmarks/results/linfusion_resolution.json and .md): one network call per image of the shipped MNIST
teacher and of its LinFusion student (same network, linear attention; its cost does not depend on its
trained weights) at increasing sizes, timed, each (size, attention) in a fresh process whose peak resident
memory is measured; beside it the attention matrix a softmax layer would form (tokens^2 x heads x 4 bytes per
image at the attention level with the most tokens), computed. A softmax call whose matrix alone would exceed
``--max-softmax-gb`` is not run (the row says so) while the linear network still is.

    .venv/bin/python benchmarks/linfusion_resolution.py --threads 2
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import shlex
import subprocess
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


def networks():
    """The shipped teacher (softmax attention) and its LinFusion student (linear attention)."""
    teacher, _ = load_denoiser("mnist")
    return teacher, LinFusion(teacher, None, shape=(1, 28, 28), num_classes=10).student.eval()


def one_call(attention: str, size: int, repeats: int, threads: int) -> None:
    """In a fresh process: seconds per call and this process's peak resident memory, as one JSON line."""
    torch.set_num_threads(threads)
    teacher, student = networks()
    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    s = seconds_per_call(teacher if attention == "softmax" else student, size, repeats)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"s": s, "peak_mb": peak_mb, "loaded_mb": base_mb}))


def measured(attention: str, size: int, repeats: int, threads: int) -> dict:
    r = subprocess.run([sys.executable, __file__, "--one", attention, str(size), "--repeats", str(repeats),
                        "--threads", str(threads)], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sizes", default="28,56,112,224,448,896")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-softmax-gb", type=float, default=8.0, help="skip softmax calls whose matrix alone is larger")
    p.add_argument("--one", nargs=2, metavar=("ATTENTION", "SIZE"), help=argparse.SUPPRESS)  # a child process's call
    p.add_argument("--out", default=str(HERE / "results" / "linfusion_resolution.json"))
    a = p.parse_args(argv)
    if a.one:
        return one_call(a.one[0], int(a.one[1]), a.repeats, a.threads)
    out = Path(a.out)
    net = networks()[0].net
    top = min(net.cfg.attn_levels) if net.cfg.attn_levels else len(net.cfg.ch_mult) - 1  # most tokens
    heads = 4
    results = {"benchmark": "linfusion_resolution",
               "command": "python benchmarks/linfusion_resolution.py " + shlex.join(sys.argv[1:]),
               "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
               **provenance(exclude=out), "threads": a.threads, "torch": torch.__version__,
               "max_softmax_gb": a.max_softmax_gb, "rows": []}
    for size in (int(s) for s in a.sizes.split(",")):
        tokens = (size // 2 ** top) ** 2
        matrix_mb = tokens ** 2 * heads * 4 / 2 ** 20
        soft = measured("softmax", size, a.repeats, a.threads) if matrix_mb <= a.max_softmax_gb * 1024 else None
        lin = measured("linear", size, a.repeats, a.threads)
        row = {"size": size, "attention_tokens": tokens, "softmax_matrix_mb": matrix_mb,
               "softmax_s": soft and soft["s"], "softmax_peak_mb": soft and soft["peak_mb"],
               "linear_s": lin["s"], "linear_peak_mb": lin["peak_mb"], "loaded_mb": lin["loaded_mb"]}
        results["rows"].append(row)
        print(row, flush=True)
        write_results(out, results)
    results["complete"] = True
    write_results(out, results)
    write_text_atomic(out.with_suffix(".md"), resolution_table(results))


if __name__ == "__main__":
    main()
