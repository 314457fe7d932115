#!/usr/bin/env bash
# SC-DMD (Salt) on the shipped MNIST teacher (benchmarks/results/sc_dmd_mnist.json): one model sampled at 4, 2
# and 1 deterministic steps on the nested grid, with the 4-step flags of dmd_variants_mnist.sh (real-score CFG
# 1.25, the GAN on the cleanest 10% of levels, EMA 0.99, 600 it = 120 student updates), beside dmd2_nfe4
# (13.56 +- 0.69, dmd_family_mnist.json) and ASD's one model (dmd_variants_mnist.json). Salt's claim: the FD
# does not get worse as the step count rises. Resumes if interrupted; skipped once its model exists.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
R=${R:-runs/variants}
[ -f $R/sc_dmd_nfe4/model/config.json ] || $F distill --teacher mnist --method sc_dmd --nfe 4 --set real_cfg=1.25 \
  --set gan_index_max=0.1 --max-iters 600 --ema-decay 0.99 --eval-every 200 --out $R/sc_dmd_nfe4 --threads 2 \
  --ckpt-every 100 --resume --no-progress
$F bench --model $R/sc_dmd_nfe4 --name sc_dmd_mnist --no-bf16 \
  --baseline benchmarks/results/teacher_mnist.json,benchmarks/results/teacher_mnist_flow.json --threads 2
.venv/bin/python benchmarks/make_tables.py
