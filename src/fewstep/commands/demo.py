"""``fewstep demo``: the main job. From the shipped MNIST teacher, distil a 1-step DMD2 student,
measure teacher and student on the same metric, and write a self-contained report.html.
Every stage caches its result in the output folder, so re-running resumes where it stopped.
``--data folder:PATH`` first trains a feature network and a teacher for that folder
(commands/folder_demo.py), within ``--budget-min``."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..io import write_json_atomic, write_text_atomic

# (sampler, grid) -> NFE: the teacher's curve over the samplers and grids that matter; the student is
# compared with the best of them at each NFE (DPM-Solver++ on the rectified-flow grid is the strongest)
DEMO_TEACHER_CURVE = {("euler", "karras"): [1, 2, 4, 8, 16], ("dpmpp2m", "karras"): [1, 2, 4, 8, 16],
                      ("heun", "karras"): [3, 7, 15], ("euler", "flow"): [2, 4, 8], ("dpmpp2m", "flow"): [2, 3, 4, 8, 16]}


def _cached(path: Path, compute):
    if path.is_file():
        return json.loads(path.read_text())
    val = compute()
    write_json_atomic(val, path)
    return val


def run(a) -> Path:
    from ..data import load_dataset
    from ..metrics.benchmark import bench_row, matched_row, real_floor, time_row
    from ..metrics.features import load_features
    from ..model_io import load_denoiser
    from ..report import fd_vs_nfe_plot, file_b64, html_report, save_grid
    from ..samplers import steps_for_nfe
    from ..samplers.generate import SamplingSpec, generate
    from .common import data_format, iterations_done, train_seconds
    from .distill import DistillRequest, distill

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    log = lambda m: print(f"[demo] {m}", file=sys.stderr, flush=True)
    max_iters = a.max_iters or 600
    if a.data:
        from .folder_demo import folder_stages

        max_iters = folder_stages(a, out, log)
    teacher, tcfg = load_denoiser(a.teacher)
    data = tcfg["data"]["name"]
    train, test = load_dataset(data, "train", *data_format(tcfg)), load_dataset(data, "test", *data_format(tcfg))
    test = test.subset(a.n)
    feats = load_features(data, shape=test.shape)
    ref = feats.features(test.x)

    log(f"1/4 distilling a {a.method} student from teacher {a.teacher!r} into {out / 'student'} "
        f"({max_iters} iterations; re-running resumes)")
    student_dir = out / "student"
    if not (student_dir / "model" / "config.json").is_file() or iterations_done(student_dir) < max_iters:
        t0 = time.perf_counter()
        distill(DistillRequest(teacher=a.teacher, method=a.method, nfe=a.nfe, out=str(student_dir), seed=a.seed,
                               threads=a.threads, max_iters=max_iters, ckpt_every=50, eval_every=a.eval_every,
                               resume=True, progress=not a.no_progress))
        log(f"distillation took {time.perf_counter() - t0:.0f} s")
    student, scfg = load_denoiser(str(student_dir / "model"))
    sspec = SamplingSpec(**scfg["sampling"])

    log("2/4 measuring the teacher's samplers (FD against NFE)")
    from tqdm.auto import tqdm

    def teacher_curve():
        rows = []
        plan = [(s, g, n) for (s, g), nfes in DEMO_TEACHER_CURVE.items() for n in nfes]
        for sampler, grid, nfe in tqdm(plan, desc="teacher curve", disable=a.no_progress):
            spec = SamplingSpec(sampler, steps_for_nfe(sampler, nfe), grid, 1.0)
            rows.append(bench_row(teacher, spec, test, feats, ref, len(test), 1, True))
        return {"floor": real_floor(train, test, feats), "rows": rows}

    curve = _cached(out / "teacher_curve.json", teacher_curve)
    best = min(curve["rows"], key=lambda r: r["fd"])

    log("3/4 measuring the student and the speed-up")

    def spec_of(r):
        return SamplingSpec(r["sampler"], r["steps"], r.get("grid", "karras"), 1.0)

    def student_eval():
        row = bench_row(student, sspec, test, feats, ref, len(test), a.seeds, True, method=a.method)
        row["images_per_s"] = time_row(student, sspec, test, True)
        matched = matched_row(curve["rows"], row["fd"])
        return {"student": row, "teacher_best_images_per_s": time_row(teacher, spec_of(best), test, True),
                "matched": matched and {**matched, "images_per_s": time_row(teacher, spec_of(matched), test, True)},
                "train_s": train_seconds(student_dir), "iterations": iterations_done(student_dir)}

    ev = _cached(out / "student_eval.json", student_eval)

    log("4/4 writing sample grids and report.html")
    labels = test.class_balanced_labels(100)
    grids = {}
    for name, den, spec in (("teacher_1", teacher, SamplingSpec("euler", 1, "karras")),
                            ("teacher_best", teacher, spec_of(best)),
                            ("student", student, sspec)):
        path = out / f"grid_{name}.png"
        save_grid(generate(den, 100, spec, train.shape, labels, seed=0, bf16=True), path)
        grids[name] = path
    s, t1 = ev["student"], next(r for r in curve["rows"] if r["sampler"] == "euler" and r["nfe"] == 1)
    m = ev.get("matched")
    speedup = s["images_per_s"] / (m["images_per_s"] if m else ev["teacher_best_images_per_s"])
    basis = (f"at matched FD (teacher {m['sampler']}/{m['grid']} at {m['nfe']:.0f} NFE, FD {m['fd']:.2f})" if m
             else "against the teacher's best row (it never reaches the student's FD in this sweep)")
    plot = fd_vs_nfe_plot(curve["rows"], [s], curve["floor"])
    fmt = lambda v, d=2: f"{v:.{d}f}"
    tables = [("Quality (FD on classifier features; lower is better)", ["model", "sampler", "NFE", "FD", "class acc"],
               [["teacher", t1["sampler"], t1["nfe"], fmt(t1["fd"]), fmt(t1["class_acc"], 3)],
                ["teacher (best here)", best["sampler"], best["nfe"], fmt(best["fd"]), fmt(best["class_acc"], 3)],
                [f"{a.method} student", f"{s['nfe']:.0f} step(s)", s["nfe"], f"{fmt(s['fd'])} ± {fmt(s['fd_std'])}",
                 fmt(s["class_acc"], 3)],
                ["real data (floor)", "-", "-", fmt(curve["floor"]), "-"]]),
              ("Speed (batch 256, this machine; every number timed)", ["model", "NFE", "images/s", "speed-up"],
               [["teacher (best FD)", best["nfe"], fmt(ev["teacher_best_images_per_s"], 0), "-"]]
               + ([["teacher (cheapest row at least as good as the student)", m["nfe"], fmt(m["images_per_s"], 0), "1.0x"]]
                  if m else [])
               + [[f"{a.method} student", s["nfe"], fmt(s["images_per_s"], 0), f"{speedup:.1f}x {basis}"]]),
              ("Distillation cost", ["iterations", "wall time (s)"], [[ev["iterations"], fmt(ev["train_s"] or 0, 0)]])]
    shape = "x".join(str(d) for d in train.shape)
    intro = (f"Teacher <code>{a.teacher}</code> ({data}, images {shape}); student distilled with {a.method} to "
             f"{s['nfe']:.0f} network evaluation(s). FD over {len(test)} held-out images, student averaged over "
             f"{a.seeds} seeds.")
    notes = [f"The student reaches FD {fmt(s['fd'])} at {s['nfe']:.0f} NFE; the teacher needs {best['nfe']} NFE for its best "
             f"FD {fmt(best['fd'])} in this sweep, and scores {fmt(t1['fd'])} at 1 NFE.",
             f"Speed-up {basis}: {speedup:.1f}x.",
             "Teacher curve: Euler, Heun and DPM-Solver++ on the Karras and rectified-flow grids, 1 seed per point, "
             "NFE up to 16; the bold line is the teacher's best at each NFE (the full sweeps are in benchmarks/results/).",
             f"Run: <code>{' '.join(sys.argv)}</code>; outputs in <code>{out}</code>."]
    page = html_report(f"fewstep demo: a {s['nfe']:.0f}-step {data} generator from a diffusion teacher", intro, plot,
                       [("teacher, 1 NFE", file_b64(grids["teacher_1"])),
                        (f"teacher, {best['sampler']}/{best.get('grid', 'karras')} {best['nfe']:.0f} NFE",
                         file_b64(grids["teacher_best"])),
                        (f"{a.method} student, {s['nfe']:.0f} NFE", file_b64(grids["student"]))], tables, notes)
    report = write_text_atomic(out / "report.html", page)
    summary = {"report": str(report.resolve()), "student_fd": s["fd"], "teacher_best_fd": best["fd"],
               "teacher_best_nfe": best["nfe"], "speedup": speedup, "speedup_at_matched_fd": bool(m)}
    print(json.dumps(summary))
    log(f"done: open {report.resolve()}")
    return report
