#!/usr/bin/env bash
# DMD2 (1 and 4 steps, and 1 step with CFG 1.25 on the real score) and DMD (1 step) students from
# the shipped MNIST teacher, measured against the teacher rows of teacher_mnist.json
# (benchmarks/results/dmd2_mnist.json). The 1-step DMD2 student is the one `fewstep demo` trains.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
$F demo --threads 2                                  # -> runs/demo/student (600 iterations)
$F distill --teacher mnist --method dmd2 --nfe 4 --out runs/bench/dmd2_nfe4 --threads 2 --max-iters 400 --resume
$F distill --teacher mnist --method dmd --nfe 1 --out runs/bench/dmd_nfe1 --threads 2 --max-iters 200 --resume
$F distill --teacher mnist --method dmd2 --nfe 1 --out runs/bench/dmd2_nfe1_cfg --set real_cfg=1.25 --threads 2 \
  --max-iters 600 --resume
$F bench --model runs/demo/student,runs/bench/dmd2_nfe4,runs/bench/dmd_nfe1,runs/bench/dmd2_nfe1_cfg \
  --name dmd2_mnist --baseline benchmarks/results/teacher_mnist.json --threads 2
.venv/bin/python benchmarks/make_tables.py
