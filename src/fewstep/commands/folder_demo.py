"""``fewstep demo --data folder:PATH``: the demo on your own images. Before the usual distil-measure-report
stages (commands/demo.py) it trains the two things the shipped MNIST demo gets for free, both sized to
the folder: the feature network FD is measured in (kept in the folder, metrics/features.features_dir)
and a teacher (the ``folder`` preset, a UNet sized from the images). A time budget is split across
the stages from measured per-iteration costs, and the plan is printed before anything trains. Every
stage is cached in the output folder (the feature net in the data folder), so re-running resumes."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import FewstepError

# shares of the budget: feature net, teacher, student; the rest measures (teacher curve, student, grids).
# The student gets the largest share: on small folders the teacher is near its floor after ~1,600
# iterations while the 1-step student is still improving steeply (docs/notes.md, the folder demo).
SHARES = {"features": 0.06, "teacher": 0.30, "student": 0.52}
LIMITS = {"features": (30, 1500), "teacher": (30, 8000), "student": (10, 2000)}  # iterations (min, max) per stage
# a distribution-matching iteration (mostly critic updates: DMD2 updates the student every 5th) costs
# 2.2-2.4x a teacher iteration at the same batch (64) on 8x8 and 16x16 folder images (docs/notes.md). The
# student's iterations are re-planned from the teacher stage's measured step time (replan_student),
# since a few startup iterations over-estimate it (a cold allocator, a busy machine for a moment).
STUDENT_COST = 2.4


@dataclass
class Plan:
    features: int
    teacher: int
    student: int
    seconds: dict  # stage -> estimated seconds

    def lines(self, budget_min: float) -> list[str]:
        return [f"plan for a {budget_min:g}-minute budget (estimated from measured iteration times):",
                f"  feature network  {self.features:5d} iterations  ~{self.seconds['features'] / 60:.1f} min",
                f"  teacher          {self.teacher:5d} iterations  ~{self.seconds['teacher'] / 60:.1f} min",
                f"  student          {self.student:5d} iterations  ~{self.seconds['student'] / 60:.1f} min",
                "  then the teacher's sampler curve, the student's FD and speed, and report.html"]


def check_folder(train) -> None:
    """The demo measures FD in a classifier's features, so the folder needs classes (sub-folders)."""
    if train.captions is not None:
        raise FewstepError("the demo takes class sub-folders; a caption folder (metadata.jsonl) is for "
                           "diffusers teachers: fewstep distill --teacher diffusers:PATH --data folder:PATH")
    if not train.num_classes:
        raise FewstepError("the demo needs class sub-folders (PATH/<class>/*.png, two or more): its FD is measured "
                           "in a classifier's features, and a folder without classes has nothing to train it on")


def _seconds_per_iter(step, warmup: int = 3, n: int = 5) -> float:
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t0) / n


def measure_plan(train, budget_min: float, teacher_batch: int, feature_batch: int = 128) -> Plan:
    """Iterations per stage from the budget and a few timed iterations of each network on this data."""
    import torch.nn.functional as F

    from ..methods.losses import denoising_loss
    from ..methods.teacher import TeacherMethodConfig, unet_for
    from ..metrics.features import FeatureNet
    from ..model_io import build_denoiser

    x = train.x[:feature_batch]
    y = train.labels[:feature_batch]
    fnet = FeatureNet(train.shape[0], train.num_classes)
    fopt = torch.optim.AdamW(fnet.parameters())

    def feature_step():
        fopt.zero_grad()
        F.cross_entropy(fnet(x), y).backward()
        fopt.step()

    den = build_denoiser({"arch": {**unet_for(train.shape), "num_classes": train.num_classes},
                          "process": {"family": "edm"}, "param": "edm"})
    topt = torch.optim.AdamW(den.parameters())
    xb = train.x[torch.arange(teacher_batch) % len(train)]
    yb = train.labels[torch.arange(teacher_batch) % len(train)]

    levels = TeacherMethodConfig().time_sampler

    def teacher_step():
        topt.zero_grad()
        t = levels.sample(den.process, teacher_batch, torch.Generator().manual_seed(0))
        denoising_loss(den, xb, t, torch.randn_like(xb), yb).mean().backward()
        topt.step()

    per_it = {"features": _seconds_per_iter(feature_step), "teacher": _seconds_per_iter(teacher_step)}
    per_it["student"] = STUDENT_COST * per_it["teacher"]
    iters = {stage: stage_iterations(stage, budget_min, per_it[stage]) for stage in SHARES}
    seconds = {stage: iters[stage] * per_it[stage] for stage in SHARES}
    return Plan(iters["features"], iters["teacher"], iters["student"], seconds)


def stage_iterations(stage: str, budget_min: float, step_s: float) -> int:
    """A stage's iterations for its share of the budget at ``step_s`` seconds each, within its limits."""
    lo, hi = LIMITS[stage]
    return int(min(hi, max(lo, SHARES[stage] * budget_min * 60 / step_s)))


def feature_stage(data: str, iters: int, seed: int, progress: bool, log) -> float:
    """The folder's feature network (trained once, kept in the folder); returns its held-out accuracy."""
    from ..metrics.features import features_accuracy, features_dir, features_note, save_feature_net, train_feature_net

    if (features_dir(data) / "config.json").is_file():
        acc = features_accuracy(data)
        log(f"feature network found at {features_dir(data)} (held-out accuracy {acc:.3f})")
    else:
        net, info = train_feature_net(data, iters=iters, seed=seed, progress=progress)
        save_feature_net(net, {**info, "command": f"fewstep demo --data {data}", "data": data}, features_dir(data))
        acc = info["test_acc"]
        log(f"feature network: held-out accuracy {acc:.3f} after {iters} iterations ({info['train_s']:.0f} s)")
    note = features_note(acc)
    if note:
        log(f"warning: {note}")
    return acc


def teacher_stage(data: str, out: Path, iters: int, a) -> str:
    """The folder teacher (``folder`` preset), trained or resumed to ``iters`` iterations; its model dir."""
    from ..cli import build_parser
    from . import train_teacher
    from .common import iterations_done

    run = out / "teacher"
    if not (run / "model" / "config.json").is_file() or iterations_done(run) < iters:
        argv = ["train-teacher", "--data", data, "--out", str(run), "--max-iters", str(iters), "--resume",
                "--seed", str(a.seed), "--threads", str(a.threads), "--eval-every", "0"]  # the demo measures it next
        train_teacher.run(build_parser().parse_args(argv + (["--no-progress"] if a.no_progress else [])))
    return str(run / "model")


def folder_stages(a, out: Path, log) -> int:
    """Feature network and teacher for ``--data folder:PATH`` (sets ``a.teacher``); the student's iterations."""
    from ..data import load_dataset
    from ..methods.teacher import teacher_preset

    if not a.data.startswith("folder:"):
        raise FewstepError(f"demo --data takes folder:PATH (your own images), got {a.data!r}; "
                           "the MNIST demo needs no --data")
    if a.teacher != "mnist":
        raise FewstepError("give --data (a teacher is trained for the folder) or --teacher, not both")
    train = load_dataset(a.data, "train")
    check_folder(train)
    plan = measure_plan(train, a.budget_min, teacher_preset("folder").train.batch_size)
    for line in plan.lines(a.budget_min):
        log(line)
    log(f"0/4 feature network and teacher for {a.data} ({'x'.join(map(str, train.shape))} images, "
        f"{train.num_classes} classes, {len(train)} training images)")
    feature_stage(a.data, plan.features, a.seed, not a.no_progress, log)
    a.teacher = teacher_stage(a.data, out, plan.teacher, a)
    if a.max_iters:
        return a.max_iters
    return replan_student(out / "teacher", plan, a.budget_min, log)


def replan_student(teacher_run: Path, plan: Plan, budget_min: float, log) -> int:
    """The student's iterations from the teacher run's measured step time (its record survives re-runs,
    so a resumed demo plans the same student); the startup plan's figure when there is no record."""
    from .common import iterations_done, train_seconds

    seconds, done = train_seconds(teacher_run), iterations_done(teacher_run)
    if not seconds or not done:
        return plan.student
    n = stage_iterations("student", budget_min, STUDENT_COST * seconds / done)
    if n != plan.student:
        log(f"student: {n} iterations (re-planned from the teacher's measured {seconds / done:.3f} s/iteration; "
            f"~{n * STUDENT_COST * seconds / done / 60:.1f} min)")
    return n
