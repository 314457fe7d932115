"""Mean and spread of one recipe over its training runs, from their benchmark results files.

A single training run ranks little here: on the MNIST teacher the same recipe moves by 1-2 FD between training
seeds (and between CPUs with different numerics at the same seed), several times a run's own sampling spread.
This reads the student rows (not the teacher rows carried as a baseline) of the given results files at one NFE
and prints each run, then the mean and the std over runs of FD and class accuracy, and how many runs hold a bar:

    python benchmarks/seed_means.py --nfe 1 --fd-bar 8.76 --acc-bar 0.97 \\
        benchmarks/results/dmd2_levers_seed{0,1,2}_ref_mnist.json

A file with several student rows at that NFE (one per model in a `--model A,B` bench) contributes each of them,
named by its run folder.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from fnmatch import fnmatch
from pathlib import Path


def student_rows(path: Path, nfe: int, method: str | None = None, run_globs: list[str] | None = None) -> list[dict]:
    """The rows of ``path`` that are its own students (not carried teacher rows) at ``nfe``, of ``method`` and
    with a run folder matching one of ``run_globs`` where those are given."""
    res = json.loads(path.read_text())
    if not res.get("complete", False):
        raise SystemExit(f"{path}: results are incomplete (an interrupted bench); rerun its command")
    return [r for r in res["rows"] if not r.get("from_baseline") and r.get("method") != "teacher"
            and int(r.get("nfe", -1)) == nfe and (method is None or r.get("method") == method)
            and (not run_globs or any(fnmatch(str(r.get("run", "")), pat) for pat in run_globs))]


def spread(values: list[float]) -> float:
    """The sample std over runs (0 for a single run)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(runs: list[tuple[str, dict]], fd_bar: float | None, acc_bar: float | None) -> str:
    w = max(34, *(len(name) for name, _ in runs))
    lines = [f"{'run':<{w}} {'FD':>14} {'class acc':>9}"]
    for name, r in runs:
        lines.append(f"{name:<{w}} {r['fd']:>7.2f} ± {r['fd_std']:<4.2f} {r['class_acc']:>9.3f}")
    fds, accs = [r["fd"] for _, r in runs], [r["class_acc"] for _, r in runs]
    label = f"mean of {len(runs)} run{'s' * (len(runs) != 1)} (std over runs)"
    lines.append(f"{label:<{w}} {statistics.mean(fds):>7.2f} ± "
                 f"{spread(fds):<4.2f} {statistics.mean(accs):>9.3f} (std {spread(accs):.3f})")
    if fd_bar is not None or acc_bar is not None:
        held = sum((fd_bar is None or r["fd"] <= fd_bar) and (acc_bar is None or r["class_acc"] >= acc_bar)
                   for _, r in runs)
        bars = [f"FD <= {fd_bar}"] * (fd_bar is not None) + [f"class acc >= {acc_bar}"] * (acc_bar is not None)
        lines.append(f"runs holding {' with '.join(bars)}: {held} of {len(runs)}")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", type=Path, help="benchmark results files (benchmarks/results/*.json)")
    p.add_argument("--nfe", type=int, default=1, help="the students' NFE to read")
    p.add_argument("--method", default=None, help="only this method's rows (a file may bench several)")
    p.add_argument("--run", action="append", default=None, metavar="GLOB",
                   help="only rows whose run folder matches (repeatable), e.g. '*cfg115_s*'")
    p.add_argument("--fd-bar", type=float, default=None, help="count the runs with FD at or under this")
    p.add_argument("--acc-bar", type=float, default=None, help="... and class accuracy at or over this")
    a = p.parse_args(argv)
    runs = []
    for f in a.files:
        rows = student_rows(f, a.nfe, a.method, a.run)
        runs += [(f.stem if len(rows) == 1 else f"{f.stem}: {r.get('run', i)}", r) for i, r in enumerate(rows)]
    if not runs:
        sys.exit(f"no student rows at {a.nfe} NFE{f' of {a.method}' if a.method else ''}"
                 f"{f' from runs {a.run}' if a.run else ''} in the given files")
    print(summarise(runs, a.fd_bar, a.acc_bar))


if __name__ == "__main__":
    main()
