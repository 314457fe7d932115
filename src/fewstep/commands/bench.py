"""``fewstep bench``: a sweep of a model's samplers x NFE x CFG into one results file in the
docs/benchmarks.md schema, with the real-vs-real floor. Rows are saved as they finish, so an interrupted
sweep resumes where it stopped (same model and arguments)."""
from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import torch

from ..errors import FewstepError
from ..hardware import use_bf16
from ..io import write_text_atomic
from ..metrics.benchmark import (
    SPEED_MAX_NFE,
    bench_row,
    machine,
    provenance,
    real_floor,
    row_key,
    student_row,
    student_specs,
    sweep_rows,
    time_row,
    write_results,
)
from ..nets.cache import cache_label
from ..samplers import nfe_of, steps_for_nfe
from ..samplers.generate import SamplingSpec
from .common import cached, command_line, data_format


def cost_fields(row: dict, den, spec, test, bf16, cache) -> dict:
    """The row's network size and measured MACs per image (FLOP counter), and its cache mode (``--cache``'s,
    or the one a DisCa model carries)."""
    from ..metrics.speed import macs_per_image, parameter_count
    from ..nets.cache import cache_label
    from ..samplers.generate import generate

    macs = macs_per_image(lambda b: generate(den, b, spec, test.shape, test.class_balanced_labels(b), seed=0,
                                             batch=b, bf16=bf16))
    row.update(params=parameter_count(den), macs=macs, cache=cache or cache_label(den))
    return row


def run(a):
    command = command_line()
    from ..data import load_dataset
    from ..metrics.features import features_accuracy, load_features
    from ..model_io import load_denoiser, resolve_model_dir
    from ..report import results_table

    models = [m for m in a.model.split(",") if m]
    loaded = [load_denoiser(m) for m in models]
    modes = [None if m == "none" else m for m in (a.cache or ["none"])]
    den, mcfg = loaded[0]
    data = a.data or mcfg.get("data", {}).get("name")
    if not data:
        raise FewstepError("--data is required (the model does not record its dataset)")
    train, test = load_dataset(data, "train", *data_format(mcfg)), load_dataset(data, "test", *data_format(mcfg))
    test = test.subset(a.n)
    feats = load_features(data, shape=test.shape)
    ref_feats = feats.features(test.x)
    out_dir = Path(a.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{a.name}.json"
    key = {"model": str(a.model), "samplers": a.samplers, "nfe": a.nfe, "cfg": a.cfg, "grid": a.grid, "seeds": a.seeds,
           "seeds_max_nfe": a.seeds_max_nfe, "n": a.n, "bf16": a.bf16, "baseline": a.baseline}
    if a.cache:  # only when set, so files written before caching existed still resume
        key["cache"] = a.cache
    old = json.loads(path.read_text()) if path.exists() else {}
    resume = old.get("bench_args") == key and (a.retime or not old.get("complete", False))
    if a.retime and not resume:
        raise FewstepError(f"--retime needs {path} written by this same command (its arguments differ or it is missing)")
    done = {row_key(r): r for r in old.get("rows", [])} if resume else {}
    students = [(m, d, c) for m, (d, c) in zip(models, loaded) if "method" in c]
    teachers = [(m, d, c) for m, (d, c) in zip(models, loaded) if "method" not in c]
    teacher_dir = students[0][2].get("teacher") if students and not teachers else str(resolve_model_dir(teachers[0][0]))
    tcfg = load_denoiser(teacher_dir)[1] if teacher_dir else mcfg
    training = tcfg.get("training", {})
    results = {
        "benchmark": data, "command": command, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), **provenance(exclude=path),
        "teacher": {"checkpoint": teacher_dir, "train_s": training.get("train_s"),
                    "iterations": training.get("iterations"), "command": training.get("command")},
        "floor": {"fd": old.get("floor", {}).get("fd") if resume else None},
        "features": {"test_acc": features_accuracy(data)},
        "bench_args": key, "complete": False, "rows": [],
    }
    if resume:  # rows carried over were measured by the first run: keep its provenance, list each resume
        first = {k: old[k] for k in ("created", "git_commit", "git_dirty", "threads", "torch") if k in old}
        again = {k: results[k] for k in first} | {"command": command} | ({"retime": True} if a.retime else {})
        results["resumed"] = old.get("resumed", []) + [again]
        results.update(first, command=old.get("command", command))
    t0 = time.perf_counter() - (old.get("bench_s_partial", 0.0) if resume else 0.0)
    if a.baseline:  # one or more files (comma-separated): the floor from the first, every file's rows
        bases = [(f, json.loads(Path(f).read_text())) for f in a.baseline.split(",") if f]
        results["floor"] = bases[0][1]["floor"]
        results["baseline_from"] = [{"file": f, "created": b.get("created"), "git_commit": b.get("git_commit")}
                                    for f, b in bases]
        results["rows"] = [dict(r, from_baseline=True) for _, b in bases for r in b["rows"]]
    if results["floor"]["fd"] is None:
        results["floor"]["fd"] = real_floor(train, test, feats)
    from tqdm.auto import tqdm

    todo = []
    for _model, d, c in teachers:
        plan = list(sweep_rows(a.samplers, a.nfe, a.cfg))
        # bf16 sampling is checked against fp32 on one row (docs/benchmarks.md): same FD or it is not used.
        check = [("dpmpp2m", steps_for_nfe("dpmpp2m", 8), a.cfg[0], False)] if use_bf16(a.bf16) else []
        todo += [("teacher", cached(d, mode), c, s, k, cf, bf, mode) for mode in modes
                 for s, k, cf, bf in [(*p, a.bf16) for p in plan] + check]
    todo += [("student", cached(d, mode), c, m, spec, None, a.bf16, mode) for mode in modes
             for m, d, c in students for spec in student_specs(c)]
    timed: dict = {}
    for kind, d, c, sampler, steps, cfg, bf16, mode in tqdm(todo, desc=f"bench {a.name}", dynamic_ncols=True):
        if kind == "student":
            model, sdict = sampler, steps
            k = (c["method"]["method"], sdict["sampler"], sdict["steps"], "student", "bf16" if use_bf16(bf16) else "fp32", model,
                 mode or cache_label(d))  # a DisCa model's rows carry its own cache
            row = done.get(k)
            if row is None:
                row = cost_fields(student_row(d, c, test, feats, ref_feats, a.seeds, bf16, sdict, model),
                                  d, SamplingSpec(**sdict), test, bf16, mode)
            else:
                if a.retime:
                    row["images_per_s"], row["threads"] = time_row(d, SamplingSpec(**sdict), test, bf16), torch.get_num_threads()
                if row.get("macs") is None:  # a row measured before MACs were counted
                    cost_fields(row, d, SamplingSpec(**sdict), test, bf16, mode)
            results["rows"].append(row)
            write_results(path, results)
            continue
        spec = SamplingSpec(sampler, steps, a.grid, cfg)
        dkey = ("teacher", sampler, steps, cfg, "bf16" if use_bf16(bf16) else "fp32", a.grid, mode)
        total_nfe = nfe_of(sampler, steps) * (1 if cfg == 1.0 else 2)
        # with caching in the sweep every row is timed: a cached row's cost is not linear in NFE, and the
        # uncached rows are what it is compared with
        timed_row = total_nfe <= SPEED_MAX_NFE or bool(a.cache)
        if dkey in done:
            row = done[dkey]
            if (a.retime and timed_row) or (row.get("images_per_s_timed") and row.get("threads") != torch.get_num_threads()):
                row["images_per_s"], row["threads"] = time_row(d, spec, test, bf16), torch.get_num_threads()
                row["images_per_s_timed"] = True
            if row.get("macs") is None:  # a row measured before MACs were counted
                cost_fields(row, d, spec, test, bf16, mode)
        else:
            seeds = a.seeds if total_nfe <= a.seeds_max_nfe else 1
            row = bench_row(d, spec, test, feats, ref_feats, len(test), seeds, bf16)
            if timed_row:
                row["images_per_s"] = time_row(d, spec, test, bf16)
                row["images_per_s_timed"], row["threads"] = True, torch.get_num_threads()
            row.update(train_s=None, iterations=None)
            cost_fields(row, d, spec, test, bf16, mode)
        if row.get("images_per_s_timed"):
            timed[(sampler, cfg, bf16, mode)] = (row["nfe"], row["images_per_s"])
        elif (sampler, cfg, bf16, mode) in timed:
            n0, ips0 = timed[(sampler, cfg, bf16, mode)]
            row["images_per_s"], row["images_per_s_timed"] = ips0 * n0 / row["nfe"], False
        results["rows"].append(row)
        results["bench_s_partial"] = round(time.perf_counter() - t0, 1)  # what a resumed run adds to
        write_results(path, results)
    results.pop("bench_s_partial", None)
    results["complete"] = True
    # a retime only re-measures speed: the sweep's own wall time stays the first run's
    results["bench_s"] = old["bench_s"] if a.retime and "bench_s" in old else round(time.perf_counter() - t0, 1)
    write_results(path, results)
    table = results_table(results)
    write_text_atomic(path.with_suffix(".md"), table + "\n")
    print(table)
    print(f"wrote {path}")


