#!/usr/bin/env bash
# Phased DMD's MNIST preset (real-score CFG 1.15, the GAN on the cleanest 10% of levels, 600 it = 150 per phase) with
# one LoRA adapter of rank 8 per phase on the frozen teacher (`--lora-rank 8`) instead of four full experts (9.59 /
# 9.92 / 9.82 with full experts on training seeds 0 / 1 / 2, phased_cfg115*_mnist.json). LoRA's default targets on
# fewstep's UNet: the residual blocks' convolutions, the 1x1 attention projections and the time embedding. The
# adapters' LR is 1e-3 (the full experts' 3e-4 moves a zero-initialised adapter's product far less per step).
#   -> phased_lora_r8_seedS_mnist.json for S in $SEEDS (default 0 1 2)
# Resumes if interrupted; a run whose results exist is skipped. ~0.6 s/it on 2 CPU threads; benchmarks ~2.5 min each.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
R=${R:-runs/phased_lora}
SEEDS=${SEEDS:-"0 1 2"}
source benchmarks/dm_4step.sh
dm_seeds phased_lora_r8 "$R/r8" --method phased_dmd --set gan_gen_weight=3e-3 --lora-rank 8 --set optim.lr=1e-3 \
  --eval-every 150 --ckpt-every 75
.venv/bin/python benchmarks/make_tables.py
