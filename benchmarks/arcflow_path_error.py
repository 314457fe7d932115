"""Where an ArcFlow student's 2-step sample leaves the teacher's path (docs/notes.md, "Why ArcFlow's 2-step
sample is worse than its 1-step one"). From one noise draw (class-conditional, labels 0-9 in turn) it compares,
as RMS per pixel, the student's arcs with the teacher's own ODE (the Heun sampler, 64 steps per leg, uniform
in flow time):

* ``first_arc_at_boundary``: the student's first arc against the teacher's state at the boundary;
* ``two_step_end``: the student's 2-step end against the teacher's end;
* ``second_arc_from_teacher``: the student's second arc started at the teacher's boundary state;
* ``teacher_from_student_boundary``: the teacher's ODE started at the student's boundary state (and
  ``..._vs_student``: the same against the student's 2-step end): large here and small there means the teacher's
  ODE itself amplifies the first arc's error;
* ``one_step_end``: one arc over the whole path.

The boundary is the student's own (its ``final_step``; tau_top / 2 for equal steps). Prints JSON.

    .venv/bin/python benchmarks/arcflow_path_error.py --model RUN [--n 256] [--threads 2]
"""
from __future__ import annotations

import argparse
import json

import torch

from fewstep.model_io import load_denoiser
from fewstep.samplers.arc import arc_flow_step, to_flow
from fewstep.samplers.grids import flow_range
from fewstep.samplers.ode import flow_native, heun, level_coeffs


def teacher_ode(teacher, y, tau0: float, tau1: float, labels, steps: int = 64):
    """The teacher's ODE from the flow point y at tau0 to tau1: the shared Heun sampler on ``steps`` levels
    uniform in flow time (its last step to 0 is Euler), in the teacher's own coordinates and back."""
    taus = torch.linspace(tau0, tau1, steps + 1, dtype=torch.float64)
    sigmas = taus / (1 - taus)
    x, _ = flow_native(teacher.process, y, torch.full((y.shape[0],), tau0))
    x = heun(teacher, x, sigmas, labels)
    if tau1 == 0:
        return x  # x_0 is the same in both coordinates
    _, a1, _ = level_coeffs(teacher.process, sigmas[-1:])
    return to_flow(x, float(a1), tau1)


def arc(student, y, tau0: float, tau1: float, labels):
    n = y.shape[0]
    return arc_flow_step(student, y, torch.full((n,), tau0), torch.full((n,), tau1), labels)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="an ArcFlow run or model folder trained with nfe 2")
    ap.add_argument("--teacher", default="mnist")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    student, cfg = load_denoiser(a.model)
    teacher, _ = load_denoiser(a.teacher)
    student.eval(), teacher.eval()
    top = flow_range(teacher.process)[1]
    if cfg.get("method", {}).get("nfe") != 2:
        raise SystemExit(f"{a.model} is not a 2-step ArcFlow student")
    scale = float(cfg["method"].get("final_step", 1.0))
    mid = top * scale / (1 + scale)  # the boundary of 2 steps whose last is `scale` times the first
    g = torch.Generator().manual_seed(a.seed)
    shape = tuple(cfg["data"]["shape"])
    z = torch.randn(a.n, *shape, generator=g)
    labels = torch.arange(a.n) % 10
    rms = lambda u, v: float(((u - v) ** 2).mean().sqrt())  # noqa: E731
    with torch.no_grad():
        y0 = z * top
        t_mid = teacher_ode(teacher, y0, top, mid, labels)
        t_end = teacher_ode(teacher, t_mid, mid, 0.0, labels)
        s_mid = arc(student, y0, top, mid, labels)
        s_end = arc(student, s_mid, mid, 0.0, labels)
        t_from_s = teacher_ode(teacher, s_mid, mid, 0.0, labels)
        out = {"model": a.model, "n": a.n, "boundary_tau": mid, "boundary_state_std": float(t_mid.std()),
               "first_arc_at_boundary": rms(s_mid, t_mid),
               "two_step_end": rms(s_end, t_end),
               "second_arc_from_teacher": rms(arc(student, t_mid, mid, 0.0, labels), t_end),
               "teacher_from_student_boundary": rms(t_from_s, t_end),
               "teacher_from_student_boundary_vs_student": rms(t_from_s, s_end),
               "one_step_end": rms(arc(student, y0, top, 0.0, labels), t_end)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
