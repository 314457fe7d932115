#!/usr/bin/env bash
# Two 4-step distribution-matching experiments on the shipped MNIST teacher (benchmarks/results/dmd_4step_mnist.json),
# each changing one thing against a run of dmd_family_mnist.sh (docs/notes.md has the in-training curves):
# * DMD2 with the backward-simulation stage drawn per sample (stage_draw=sample) instead of per batch, otherwise
#   dmd2_nfe4's settings (real-score CFG 1.25, the GAN on the cleanest 10% of levels, EMA 0.99, 600 it);
# * Phased DMD at 1,200 iterations (300 per phase) instead of 600, otherwise phased_nfe4's settings.
# On 2 CPU threads (fp32) an iteration takes ~1.3-1.6 s on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
R=runs/bench
$F distill --teacher mnist --method dmd2 --nfe 4 --out $R/dmd2_nfe4_mix --set real_cfg=1.25 --set gan_index_max=0.1 \
  --set stage_draw=sample --max-iters 600 --ema-decay 0.99 --threads 2 --eval-every 100 --ckpt-every 100 --resume
$F distill --teacher mnist --method phased_dmd --nfe 4 --out $R/phased_nfe4_1200 --set real_cfg=1.25 --set gan_index_max=0.1 \
  --max-iters 1200 --ema-decay 0.99 --threads 2 --eval-every 150 --ckpt-every 150 --resume
$F bench --model $R/phased_nfe4_1200,$R/dmd2_nfe4_mix --name dmd_4step_mnist \
  --baseline benchmarks/results/teacher_mnist.json,benchmarks/results/teacher_mnist_flow.json --threads 2
.venv/bin/python benchmarks/make_tables.py
