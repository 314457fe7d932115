#!/usr/bin/env bash
# 4-step DMD2 started from a finished 1-step DMD2 student (benchmarks/results/dmd2_4step_init_mnist.json): the
# 1-step MNIST recipe of dmd2_runs.sh (1,200 it), then the 4-step recipe of dmd2_runs.sh (real CFG 1.25, GAN on
# the cleanest 10%, 600 it) with `--set init=` that student instead of the teacher, the teacher staying the real
# score and the fake score's start. Measured beside the 1-step student it starts from, against the teacher's rows
# on both grids. Every run resumes if interrupted and is skipped once its model exists.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
R=${R:-runs/cpu}
d() { local out=$1; shift; [ -f "$out/model/config.json" ] || $F distill --teacher mnist --method dmd2 "$@" --out "$out" \
        --ema-decay 0.99 --threads 2 --ckpt-every 100 --resume --no-progress; }
d $R/dmd2_A --nfe 1 --set real_cfg=1.25 --set gan_index_max=0.4 --max-iters 1200 --eval-every 200
d $R/dmd2_nfe4_init --nfe 4 --set init=$R/dmd2_A --set real_cfg=1.25 --set gan_index_max=0.1 --max-iters 600 --eval-every 100
$F bench --model $R/dmd2_A,$R/dmd2_nfe4_init --name dmd2_4step_init_mnist \
  --baseline benchmarks/results/teacher_mnist.json,benchmarks/results/teacher_mnist_flow.json --threads 2
.venv/bin/python benchmarks/make_tables.py
