"""Text-to-image distillation measured on the miniature Stable Diffusion (benchmarks/results/text2img_mnist.json, .md).

1. The teacher: the shipped mini SD (``--teacher mnist-t2i``, fewstep/assets/teachers/mnist-t2i), a diffusers
   ``StableDiffusionPipeline`` folder trained on captioned MNIST by ``fewstep train-text2img``
   (pipelines/mini_sd.py); ``--teacher runs/t2i/teacher/pipeline`` trains a fresh one first.
2. LoRA students through the normal ``--teacher diffusers:PATH`` route on ``--data mnist-captions``
   (``--students``, default lcm at 2 steps and dmd2 at 1 step), each exported with ``fewstep export``.
3. Rows: the teacher with each of ``--teacher-samplings`` (DPM-Solver++ on the Karras, trailing and flow
   grids, Euler on the trailing grid) at NFE 1-32 without CFG and with CFG 2 (a guided step costs 2),
   each student at its own sampling, and each exported student sampled by diffusers' own pipeline
   (``load_lora_weights`` + the exported scheduler and timesteps). 1,000 prompts naming balanced digits,
   half in held-out phrasings and half in training ones (data/captions.py ``evaluation_prompts``), 3 noise
   seeds up to 8 NFE (1 above); FD and precision/recall in the shipped MNIST classifier's features (decoded
   32x32 images, centre 28x28) against the 1,000 held-out digits; prompt adherence (``prompt_acc``) = the
   classifier's accuracy against the prompted digit, over all prompts and per half (``prompt_acc_held_out``,
   ``prompt_acc_train_phrasings``);
   images/s end to end (latents and VAE decode), batch 256, timed.

    .venv/bin/python benchmarks/text2img_mnist.py                      # train what is missing, then bench
    .venv/bin/python benchmarks/text2img_mnist.py --students lcm:2     # one student
    .venv/bin/python benchmarks/text2img_mnist.py --students lcm:2 --carry benchmarks/results/text2img_mnist.json
        # re-measure one student; the teacher's rows and the other students' come from the file (same teacher only)
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

from fewstep.io import write_text_atomic
from fewstep.metrics.benchmark import machine, provenance, write_results
from fewstep.metrics.evaluate import mean_std
from fewstep.nets.adapters.diffusers import load_pipeline_teacher, quiet_hf, resolve_pipeline
from fewstep.pipelines.mini_sd import TextEvaluator, decode, to_mnist_images
from fewstep.report import text2img_table
from fewstep.samplers.generate import SamplingSpec

HERE = Path(__file__).parent
ROOT = HERE.parent
FEWSTEP = str(Path(sys.executable).parent / "fewstep")
RUNS = ROOT / "runs" / "t2i"
OUT = HERE / "results" / "text2img_mnist.json"


def sh(*args: str) -> None:
    print("+", " ".join(shlex.quote(a) for a in args), flush=True)
    subprocess.run(list(args), check=True)


def teacher_pipeline(spec: str, threads: int) -> Path:
    """The teacher's pipeline folder: the shipped one by name (``mnist-t2i``), or a folder; a missing
    ``.../pipeline`` folder is trained first by ``fewstep train-text2img --out ...``."""
    pipe = resolve_pipeline(spec)
    info = pipe / "fewstep_training.json"
    if not info.is_file() or "eval" not in json.loads(info.read_text()):
        if pipe.name != "pipeline":
            raise SystemExit(f"{pipe} is not a trained mini SD pipeline (give --teacher mnist-t2i or DIR/pipeline)")
        sh(FEWSTEP, "train-text2img", "--out", str(pipe.parent), "--threads", str(threads), "--no-progress")
    return pipe


def train(pipe: Path, threads: int, students: list[tuple[str, int]]) -> None:
    for method, nfe in students:
        run = RUNS / f"{method}_{nfe}"
        if not (run / "model" / "config.json").is_file():
            sh(FEWSTEP, "distill", "--teacher", f"diffusers:{pipe}", "--method", method, "--nfe", str(nfe),
               "--data", "mnist-captions", "--lora-rank", "16", "--threads", str(threads), "--resume", "--no-progress",
               "--out", str(run))
        if not (RUNS / f"{method}_{nfe}_export" / "fewstep_sampling.json").is_file():
            sh(FEWSTEP, "export", "--model", str(run), "--format", "diffusers", "--out", str(RUNS / f"{method}_{nfe}_export"))


KEPT = ("fd", "prompt_acc", "prompt_acc_held_out", "prompt_acc_train_phrasings", "precision", "recall")


def _images_per_s(make, n: int = 256) -> float:
    make(8)  # warm-up
    t0 = time.perf_counter()
    make(n)
    return n / (time.perf_counter() - t0)


def fewstep_row(ev: TextEvaluator, den, spec: SamplingSpec, nfe: float, seeds: int) -> dict:
    from fewstep.samplers.generate import generate

    row = mean_std([ev.measure(den, spec, seed=s) for s in range(seeds)])
    keep = {k: v for k, v in row.items() if k.split("_std")[0] in KEPT}
    make = lambda n: to_mnist_images(decode(ev.vae, generate(den, n, spec, ev.shape, _cond_head(ev.cond, n))))  # noqa: E731
    with torch.no_grad():
        ips = _images_per_s(make)
    return {"sampler": spec.sampler, "grid": spec.grid, "steps": spec.steps, "nfe": nfe, "cfg": spec.cfg, "seeds": seeds,
            **keep, "images_per_s": ips, "images_per_s_timed": True}


def _cond_head(cond, n: int):
    """The first n prompts' condition, cycling when n exceeds them (for timing a batch of 256)."""
    from fewstep.nets.cond import Cond

    reps = -(-n // cond.text.shape[0])
    return Cond(text=cond.text.repeat(reps, 1, 1)[:n], null_text=cond.null_text)


def export_row(ev: TextEvaluator, pipe_dir: Path, export: Path, seeds: int, cfg: float) -> dict:
    """The exported student sampled by diffusers' StableDiffusionPipeline itself, same prompts."""
    import diffusers

    meta = json.loads((export / "fewstep_sampling.json").read_text())
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(pipe_dir, local_files_only=True)
    sched_dir = export / "scheduler"
    if sched_dir.is_dir():
        cls = getattr(diffusers, json.loads((sched_dir / "scheduler_config.json").read_text())["_class_name"])
        pipe.scheduler = cls.from_pretrained(export, subfolder="scheduler")
    if meta.get("lora"):
        pipe.load_lora_weights(export)
    pipe.set_progress_bar_config(disable=True)
    prompts = ev.prompts

    def make(prompts_n, seed=0):
        out = []
        g = torch.Generator().manual_seed(seed)
        for i in range(0, len(prompts_n), 250):
            im = pipe(prompts_n[i:i + 250], timesteps=meta["timesteps"], guidance_scale=cfg, output_type="pt", generator=g).images
            out.append(to_mnist_images(im * 2 - 1))
        return torch.cat(out)

    row = mean_std([{k: v for k, v in ev.measure_images(make(prompts, 1000 + s)).items() if k in KEPT} for s in range(seeds)])
    with torch.no_grad():
        ips = _images_per_s(lambda n: make((prompts * (n // len(prompts) + 1))[:n]))
    return {"sampler": "diffusers", "grid": "exported timesteps", "steps": len(meta["timesteps"]), "nfe": len(meta["timesteps"]),
            "cfg": cfg, "seeds": seeds, **row, "images_per_s": ips, "images_per_s_timed": True}


def carried_rows(path: Path, teacher: dict, students: list[tuple[str, int]]) -> tuple[list[dict], list[dict]]:
    """(teacher rows, rows of students not re-measured) of an earlier results file, each marked ``carried``;
    refused unless that file measured this very teacher."""
    old = json.loads(path.read_text())
    if old.get("teacher") != teacher:
        raise SystemExit(f"{path} measured another teacher ({old.get('teacher', {}).get('command')}); re-measure the teacher")
    source = f"{path} as {old['command'].strip()} wrote it at commit {old.get('git_commit', '?')[:10]}"
    mark = lambda r: r if r.get("carried") else {**r, "carried": source}  # noqa: E731  (a row keeps its first source)
    again = {m for m, _ in students}
    return ([mark(r) for r in old["rows"] if r["model"] == "teacher"],
            [mark(r) for r in old["rows"] if r["model"] != "teacher" and r["method"] not in again])


def bench(pipe_dir: Path, students: list[tuple[str, int]], seeds: int, teacher_nfes: list[int],
          teacher_samplings: list[tuple[str, str]], carry: Path | None = None) -> dict:
    from fewstep.model_io import load_denoiser

    info = json.loads((pipe_dir / "fewstep_training.json").read_text())
    about = {"pipeline": _shown(pipe_dir), "vae": info["vae"]["report"], "text": info["text"]["report"],
             "unet": info["unet"], "command": info["command"]}
    ev = TextEvaluator(pipe_dir, n=1000)
    teacher, _ = load_pipeline_teacher(pipe_dir)
    rows, others = carried_rows(carry, about, students) if carry else ([], [])
    measured = [] if carry else teacher_samplings
    for sampler, grid in measured:  # every sampler and grid: students face the teacher's best row
        for cfg in (1.0, 2.0):
            for nfe in teacher_nfes:
                steps = nfe if cfg == 1 else nfe // 2
                if steps < 1:
                    continue
                spec = SamplingSpec(sampler, steps, grid, cfg=cfg)
                rows.append({"model": "teacher", "method": "teacher", **fewstep_row(ev, teacher, spec, nfe, seeds if nfe <= 8 else 1)})
                print(json.dumps(rows[-1]), flush=True)
    for method, nfe in students:
        run = RUNS / f"{method}_{nfe}"
        den, cfg = load_denoiser(str(run))
        spec = SamplingSpec(**cfg["sampling"])
        train = cfg.get("training", {})
        common = {"model": str(run.relative_to(ROOT)), "method": method, "iterations": train.get("iterations"),
                  "train_s": train.get("train_s"), "command": train.get("command")}
        nfe_used = spec.steps * (2 if spec.cfg != 1 else 1)
        rows.append({**common, **fewstep_row(ev, den, spec, nfe_used, seeds)})
        print(json.dumps(rows[-1]), flush=True)
        rows.append({**common, "exported": True, **export_row(ev, pipe_dir, RUNS / f"{method}_{nfe}_export", seeds, spec.cfg)})
        print(json.dumps(rows[-1]), flush=True)
    return {"teacher": about, "rows": rows + others}


def _shown(path: Path) -> str:
    """A path relative to the repository where it is inside it (the shipped teacher, runs/...)."""
    try:
        return str(path.resolve().relative_to(ROOT.resolve()))
    except ValueError:
        return str(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="mnist-t2i",
                   help="the shipped mini SD (default) or a pipeline folder; a missing DIR/pipeline is trained first")
    p.add_argument("--students", default="lcm:2,dmd2:1", help="method:nfe pairs (default lcm:2,dmd2:1)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--teacher-nfe", default="1,2,4,8,16,32")
    p.add_argument("--teacher-samplings", default="dpmpp2m/karras,dpmpp2m/trailing,dpmpp2m/flow,euler/trailing",
                   help="sampler/grid pairs of the teacher rows (on this teacher the trailing and flow grids beat Karras at <= 4 NFE)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--stage", choices=("train", "bench", "all"), default="all")
    p.add_argument("--carry", type=Path, help="an earlier results file of the same teacher: its teacher rows and the rows "
                                              "of students not in --students are carried, not re-measured")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    quiet_hf()
    students = [(m, int(n)) for m, n in (s.split(":") for s in a.students.split(",") if s)]
    pipe = teacher_pipeline(a.teacher, a.threads)
    if a.stage in ("train", "all"):
        train(pipe, a.threads, students)
    if a.stage == "train":
        return
    t0 = time.time()
    res = {"benchmark": "text2img_mnist", "command": "python benchmarks/text2img_mnist.py " + " ".join(map(shlex.quote, sys.argv[1:])),
           "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
           **provenance(exclude=OUT), "complete": False, "rows": []}
    samplings = [tuple(sg.split("/", 1)) for sg in a.teacher_samplings.split(",")]
    res.update(bench(pipe, students, a.seeds, [int(n) for n in a.teacher_nfe.split(",")], samplings, a.carry))
    res["complete"], res["bench_s"] = True, round(time.time() - t0, 1)
    write_results(OUT, res)
    write_text_atomic(OUT.with_suffix(".md"), text2img_table(res))
    print(text2img_table(res))


if __name__ == "__main__":
    main()
