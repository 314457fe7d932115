#!/usr/bin/env bash
# The 1-step DMD2 MNIST recipe (dmd2_runs.sh: real CFG 1.25, GAN on the cleaner 40%, 1,200 it) trained with bf16
# autocast (the default where the CPU has native bf16) and in fp32 (--no-bf16), same seed, same machine
# (benchmarks/results/dmd2_precision_mnist.json). The bf16 run is dmd2_4step_init_mnist.sh's starting student.
# Both are sampled in fp32 by the benchmark. Every run resumes if interrupted and is skipped once its model exists.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
R=${R:-runs/cpu}
source benchmarks/dm_1step.sh
dm_1step $R/dmd2_A --method dmd2
dm_1step $R/dmd2_A_fp32 --method dmd2 --no-bf16
$F bench --model $R/dmd2_A,$R/dmd2_A_fp32 --name dmd2_precision_mnist --no-bf16 \
  --baseline benchmarks/results/teacher_mnist.json,benchmarks/results/teacher_mnist_flow.json --threads 2
.venv/bin/python benchmarks/make_tables.py
