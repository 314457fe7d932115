#!/usr/bin/env bash
# The 1-step DMD2 MNIST recipe (dmd2_runs.sh: real CFG 1.25, GAN on the cleaner 40%, 1,200 it) trained with bf16
# autocast (the default where the CPU has native bf16) and in fp32 (--no-bf16), same seed, same machine
# (benchmarks/results/dmd2_precision_mnist.json). The bf16 run is dmd2_4step_init_mnist.sh's starting student.
# Both are sampled in fp32 by the benchmark. Every run resumes if interrupted and is skipped once its model exists.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
R=${R:-runs/cpu}
d() { local out=$1; shift; [ -f "$out/model/config.json" ] || $F distill --teacher mnist --method dmd2 --nfe 1 \
        --set real_cfg=1.25 --set gan_index_max=0.4 --max-iters 1200 --ema-decay 0.99 --eval-every 200 "$@" \
        --out "$out" --threads 2 --ckpt-every 100 --resume --no-progress; }
d $R/dmd2_A
d $R/dmd2_A_fp32 --no-bf16
$F bench --model $R/dmd2_A,$R/dmd2_A_fp32 --name dmd2_precision_mnist --no-bf16 \
  --baseline benchmarks/results/teacher_mnist.json,benchmarks/results/teacher_mnist_flow.json --threads 2
.venv/bin/python benchmarks/make_tables.py
