"""``fewstep bench``: a sweep of a model's samplers x NFE x CFG into one results file in the
BENCHMARKS.md schema, with the real-vs-real floor. Rows are saved as they finish, so an interrupted
sweep resumes where it stopped (same model and arguments)."""
from __future__ import annotations

import datetime as dt
import json
import platform
import subprocess
import time
from pathlib import Path

import torch

from .errors import FewstepError
from .methods.base import SamplingSpec
from .metrics.evaluate import generate, mean_std, measure
from .metrics.fid import fd
from .metrics.speed import images_per_second
from .samplers import nfe_of, steps_for_nfe

SPEED_MAX_NFE = 8  # speed is timed up to this NFE; above, scaled from the sampler's timed row


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


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
           "cfg": spec.cfg, "seeds": seeds, "dtype": "bf16" if bf16 else "fp32"}
    for k in ("fd", "class_acc", "precision", "recall"):
        if k in stats:
            row[k] = stats[k]
            row[f"{k}_std"] = stats[f"{k}_std"]
    return row


def time_row(den, spec, test, bf16) -> float:
    return images_per_second(lambda b: generate(den, b, spec, test.shape, test.class_balanced_labels(b), seed=0,
                                                batch=b, bf16=bf16), batch=256, warmup=1, repeats=1)


def write_results(path: Path, results: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(path)


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
    return row


def run_bench(a, command: str):
    from .data import load_dataset
    from .metrics.features import load_features
    from .model_io import load_denoiser, resolve_model_dir
    from .report import results_table

    models = [m for m in a.model.split(",") if m]
    loaded = [load_denoiser(m) for m in models]
    den, mcfg = loaded[0]
    data = a.data or mcfg.get("data", {}).get("name")
    if not data:
        raise FewstepError("--data is required (the model does not record its dataset)")
    train, test = load_dataset(data, "train"), load_dataset(data, "test")
    test = test.subset(a.n)
    feats = load_features(data)
    ref_feats = feats.features(test.x)
    out_dir = Path(a.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{a.name}.json"
    key = {"model": str(a.model), "samplers": a.samplers, "nfe": a.nfe, "cfg": a.cfg, "grid": a.grid, "seeds": a.seeds,
           "seeds_max_nfe": a.seeds_max_nfe, "n": a.n, "bf16": a.bf16, "baseline": a.baseline}
    old = json.loads(path.read_text()) if path.exists() else {}
    resume = old.get("bench_args") == key and not old.get("complete", False)
    done = {_row_key(r): r for r in old.get("rows", [])} if resume else {}
    students = [(m, d, c) for m, (d, c) in zip(models, loaded) if "method" in c]
    teachers = [(m, d, c) for m, (d, c) in zip(models, loaded) if "method" not in c]
    teacher_dir = students[0][2].get("teacher") if students and not teachers else str(resolve_model_dir(teachers[0][0]))
    tcfg = load_denoiser(teacher_dir)[1] if teacher_dir else mcfg
    training = tcfg.get("training", {})
    results = {
        "benchmark": data, "command": command, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), "git_commit": git_commit(),
        "teacher": {"checkpoint": teacher_dir, "train_s": training.get("train_s"),
                    "iterations": training.get("iterations"), "command": training.get("command")},
        "floor": {"fd": old.get("floor", {}).get("fd") if resume else None},
        "bench_args": key, "complete": False, "rows": [],
    }
    t0 = time.perf_counter()
    if a.baseline:
        base = json.loads(Path(a.baseline).read_text())
        results["floor"] = base["floor"]
        results["baseline_from"] = {"file": a.baseline, "created": base.get("created"), "git_commit": base.get("git_commit")}
        results["rows"] = [dict(r, from_baseline=True) for r in base["rows"]]
    if results["floor"]["fd"] is None:
        results["floor"]["fd"] = real_floor(train, test, feats)
    from tqdm.auto import tqdm

    todo = []
    for m, d, c in teachers:
        plan = list(sweep_rows(a.samplers, a.nfe, a.cfg))
        # bf16 sampling is checked against fp32 on one row (BENCHMARKS.md): same FD or it is not used.
        check = [("dpmpp2m", steps_for_nfe("dpmpp2m", 8), a.cfg[0], False)] if a.bf16 else []
        todo += [("teacher", d, c, s, k, cf, bf) for s, k, cf, bf in [(*p, a.bf16) for p in plan] + check]
    todo += [("student", d, c, m, spec, None, a.bf16) for m, d, c in students for spec in student_specs(c)]
    timed: dict = {}
    for kind, d, c, sampler, steps, cfg, bf16 in tqdm(todo, desc=f"bench {a.name}", dynamic_ncols=True):
        if kind == "student":
            model, sdict = sampler, steps
            k = (c["method"]["method"], sdict["sampler"], sdict["steps"], "student", "bf16" if bf16 else "fp32", model)
            row = done.get(k) or student_row(d, c, test, feats, ref_feats, a.seeds, bf16, sdict, model)
            results["rows"].append(row)
            write_results(path, results)
            continue
        spec = SamplingSpec(sampler, steps, a.grid, cfg)
        dkey = ("teacher", sampler, steps, cfg, "bf16" if bf16 else "fp32", a.grid)
        if dkey in done:
            row = done[dkey]
            if row.get("images_per_s_timed") and row.get("threads") != torch.get_num_threads():
                row["images_per_s"], row["threads"] = time_row(d, spec, test, bf16), torch.get_num_threads()
        else:
            total_nfe = nfe_of(sampler, steps) * (1 if cfg == 1.0 else 2)
            seeds = a.seeds if total_nfe <= a.seeds_max_nfe else 1
            row = bench_row(d, spec, test, feats, ref_feats, len(test), seeds, bf16)
            if total_nfe <= SPEED_MAX_NFE:
                row["images_per_s"] = time_row(d, spec, test, bf16)
                row["images_per_s_timed"], row["threads"] = True, torch.get_num_threads()
            row.update(train_s=None, iterations=None)
        if row.get("images_per_s_timed"):
            timed[(sampler, cfg, bf16)] = (row["nfe"], row["images_per_s"])
        elif (sampler, cfg, bf16) in timed:
            n0, ips0 = timed[(sampler, cfg, bf16)]
            row["images_per_s"], row["images_per_s_timed"] = ips0 * n0 / row["nfe"], False
        results["rows"].append(row)
        write_results(path, results)
    results["complete"] = True
    results["bench_s"] = round(time.perf_counter() - t0, 1)
    write_results(path, results)
    table = results_table(results)
    path.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"wrote {path}")


def _row_key(r):
    if r["method"] == "teacher":
        return ("teacher", r["sampler"], r["steps"], r["cfg"], r["dtype"], r.get("grid", "karras"))
    return (r["method"], r["sampler"], r["steps"], "student", r["dtype"], r.get("run"))
