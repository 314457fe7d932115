"""Benchmark rows in the docs/benchmarks.md schema: quality (mean and std over seeds), speed, cost,
the real-vs-real floor, and the provenance every results file records."""
from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch

from ..hardware import use_bf16
from ..io import write_json_atomic
from ..samplers import steps_for_nfe
from ..samplers.generate import SamplingSpec, generate
from .evaluate import mean_std, measure
from .fid import fd
from .speed import images_per_second

SPEED_MAX_NFE = 8  # speed is timed up to this NFE; above, scaled from the sampler's timed row


def _git(*args) -> str | None:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def git_commit() -> str | None:
    return _git("rev-parse", "HEAD")


def _porcelain_path(line: str) -> str:
    """The path of one ``git status --porcelain`` line (the status letters may have lost their leading
    blank to stripping; a rename lists 'old -> new')."""
    path = line.strip().split(maxsplit=1)[-1]
    return path.split(" -> ")[-1]


def provenance(exclude: Path | None = None) -> dict:
    """What a results file needs to be reproduced: the commit, whether the tree differed from it
    (uncommitted changes to tracked files other than ``exclude``, the results file being written, which
    an interrupted run leaves half-filled, and its markdown table, which a re-timing rewrites), the
    thread count and the torch build."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    top = _git("rev-parse", "--show-toplevel")
    if status and exclude is not None and top:
        skip = {Path(exclude).resolve(), Path(exclude).with_suffix(".md").resolve()}
        status = "\n".join(line for line in status.splitlines() if (Path(top) / _porcelain_path(line)).resolve() not in skip)
    return {"git_commit": git_commit(), "git_dirty": None if status is None else bool(status),
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads"


def balanced_subset(ds, n: int, seed: int = 0) -> torch.Tensor:
    """n items of ds with its class balance (for the floor), chosen by a fixed seed."""
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
    if ds.labels is None:
        return ds.x[perm[:n]]
    k = ds.num_classes
    picks = [perm[ds.labels[perm] == c][: n // k] for c in range(k)]
    return ds.x[torch.cat(picks)]


def real_floor(train, test, feats) -> float:
    return fd(feats.features(balanced_subset(train, len(test))), feats.features(test.x))


def sweep_rows(samplers, nfes, cfgs):
    """(sampler, steps, cfg) for each requested row, skipping NFE a sampler cannot hit or repeats.
    NFE is the total per image: a guided row (cfg != 1) spends 2 per step, so it gets half the steps."""
    seen = set()
    for cfg in cfgs:
        for sampler in samplers:
            for nfe in nfes:
                steps = steps_for_nfe(sampler, nfe if cfg == 1.0 else nfe // 2)
                if steps is None or (sampler, steps, cfg) in seen:
                    continue
                seen.add((sampler, steps, cfg))
                yield sampler, steps, cfg


def bench_row(den, spec, test, feats, ref_feats, n, seeds, bf16, method="teacher"):
    labels = test.class_balanced_labels(n)
    per_seed = []
    nfe = None
    for s in range(seeds):
        samples, nfe = generate(den, n, spec, test.shape, labels, seed=s, bf16=bf16, return_nfe=True)
        per_seed.append(measure(samples, labels, test.x, feats, ref_feats))
    stats = mean_std(per_seed)
    row = {"method": method, "sampler": spec.sampler, "grid": spec.grid, "steps": spec.steps, "nfe": nfe,
           "cfg": spec.cfg, "seeds": seeds, "dtype": "bf16" if use_bf16(bf16) else "fp32"}
    for k in ("fd", "class_acc", "precision", "recall"):
        if k in stats:
            row[k] = stats[k]
            row[f"{k}_std"] = stats[f"{k}_std"]
    return row


def time_row(den, spec, test, bf16) -> float:
    return images_per_second(lambda b: generate(den, b, spec, test.shape, test.class_balanced_labels(b), seed=0,
                                                batch=b, bf16=bf16), batch=256, warmup=1, repeats=1)


def write_results(path: Path, results: dict) -> None:
    write_json_atomic(results, path)


def student_specs(mcfg) -> list[dict]:
    """The sampling specs a student is measured at: its own, then any others its method lists."""
    return mcfg.get("sampling_options") or [mcfg["sampling"]]


def student_row(den, mcfg, test, feats, ref_feats, seeds, bf16, spec_dict=None, model=None):
    """One row for a distilled student at one of its samplings, with cost from its config."""
    spec = SamplingSpec(**(spec_dict or mcfg["sampling"]))
    row = bench_row(den, spec, test, feats, ref_feats, len(test), seeds, bf16, method=mcfg["method"]["method"])
    row["run"] = model
    row["images_per_s"], row["images_per_s_timed"] = time_row(den, spec, test, bf16), True
    row["threads"] = torch.get_num_threads()
    row["real_cfg"] = mcfg["method"].get("real_cfg", 1.0)  # guidance distilled into the student
    row["model"] = mcfg.get("training", {}).get("command")
    training = mcfg.get("training", {})
    row.update(train_s=training.get("train_s"), iterations=training.get("iterations"), command=training.get("command"),
               ema=bool(training.get("distill", {}).get("ema_decay", 0)))
    row["real_images"] = mcfg.get("data", {}).get("real_images")  # training images the run could read (0: image-free)
    every = int(mcfg["method"].get("gen_every", 1) or 1)  # DMD2-style schedules update the student every N-th iteration
    if row["iterations"] is not None:
        row["student_updates"] = -(-int(row["iterations"]) // every)
    return row


def row_key(r):
    if r["method"] == "teacher":
        return ("teacher", r["sampler"], r["steps"], r["cfg"], r["dtype"], r.get("grid", "karras"), r.get("cache"))
    return (r["method"], r["sampler"], r["steps"], "student", r["dtype"], r.get("run"), r.get("cache"))


def best_per_nfe(rows: list[dict]) -> list[dict]:
    """The teacher's best row (lowest FD) at each NFE over every sampler, grid and CFG it was run with:
    the curve a student has to beat."""
    best: dict = {}
    for r in rows:
        if r.get("fd") is not None and (r["nfe"] not in best or r["fd"] < best[r["nfe"]]["fd"]):
            best[r["nfe"]] = r
    return [best[k] for k in sorted(best)]


def matched_row(teacher_rows: list[dict], fd: float) -> dict | None:
    """The teacher's cheapest row whose FD is at least as good as ``fd`` (None if none is)."""
    ok = [r for r in best_per_nfe(teacher_rows) if r["fd"] <= fd]
    return ok[0] if ok else None
