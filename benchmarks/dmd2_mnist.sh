#!/usr/bin/env bash
# DMD2 from the shipped MNIST teacher at 1 step (the MNIST recipe at real-score CFG 1.25) and 4 steps (with and without real-score
# CFG), measured against the teacher's rows over every sampler and grid (Karras grid: teacher_mnist.json;
# rectified-flow grid, where DPM-Solver++ is strongest: teacher_mnist_flow.json) ->
# benchmarks/results/dmd2_mnist.json. The same three runs (benchmarks/dmd2_runs.sh) are rows of
# dmd_family_mnist.json; each resumes if interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
R=runs/bench
source benchmarks/dmd2_runs.sh
$F bench --model $R/dmd2_A,$R/dmd2_nfe4,$R/dmd2_nfe4_nocfg --name dmd2_mnist \
  --baseline benchmarks/results/teacher_mnist.json,benchmarks/results/teacher_mnist_flow.json --threads 2
.venv/bin/python benchmarks/make_tables.py
