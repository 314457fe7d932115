#!/usr/bin/env bash
# DMD2 (1 and 4 steps) and DMD (1 step) students from the shipped MNIST teacher, measured against
# the teacher rows of teacher_mnist.json (benchmarks/results/dmd2_mnist.json).
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
$F distill --teacher mnist --method dmd2 --nfe 1 --out runs/bench/dmd2_nfe1 --threads 2 --resume
$F distill --teacher mnist --method dmd2 --nfe 4 --out runs/bench/dmd2_nfe4 --threads 2 --resume
$F distill --teacher mnist --method dmd --nfe 1 --out runs/bench/dmd_nfe1 --threads 2 --resume
$F bench --model runs/bench/dmd2_nfe1,runs/bench/dmd2_nfe4,runs/bench/dmd_nfe1 --name dmd2_mnist \
  --baseline benchmarks/results/teacher_mnist.json --threads 2
.venv/bin/python benchmarks/make_tables.py
