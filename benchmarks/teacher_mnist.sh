#!/usr/bin/env bash
# The shipped MNIST teacher and its baseline sweep (benchmarks/results/teacher_mnist.json).
# Training the teacher is only needed to reproduce the shipped weights:
#   fewstep train-teacher --data mnist --out runs/teacher_mnist --threads 2
#   (then copy runs/teacher_mnist/model to src/fewstep/assets/teachers/mnist)
set -euo pipefail
cd "$(dirname "$0")/.."
CFG=${CFG:-1.25}
.venv/bin/fewstep bench --model mnist --name teacher_mnist --cfg "1,${CFG}" --threads 2
.venv/bin/python benchmarks/make_tables.py
