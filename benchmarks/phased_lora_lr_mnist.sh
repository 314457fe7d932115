#!/usr/bin/env bash
# Which of the two changes in Phased DMD's LoRA experts moved its result: the parameterisation or the learning rate?
# The LoRA experts (rank 8, LR 1e-3; phased_lora_r8_seedS_mnist.json) read 8.60 / 9.05 / 11.97 on training seeds
# 0 / 1 / 2 against the full experts' 9.59 / 9.92 / 9.82 at LR 3e-4 (phased_cfg115*_mnist.json). Here each change
# alone, on training seed 0 (the seed where LoRA read lowest), otherwise the Phased DMD MNIST preset:
#   full experts at LR 1e-3 -> phased_full_lr1e3_seed0_mnist.json
#   LoRA experts at LR 3e-4 -> phased_lora_r8_lr3e4_seed0_mnist.json
# Resumes if interrupted; a run whose results exist is skipped. ~0.5-0.6 s/it with bf16 autocast on 2 CPU threads.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
R=${R:-runs/phased_lora_lr}
SEEDS=${SEEDS:-0}
source benchmarks/dm_4step.sh
phased=(--method phased_dmd --set gan_gen_weight=3e-3 --eval-every 150 --ckpt-every 75)
dm_seeds phased_full_lr1e3 "$R/full_lr1e3" "${phased[@]}" --set optim.lr=1e-3
dm_seeds phased_lora_r8_lr3e4 "$R/lora_lr3e4" "${phased[@]}" --lora-rank 8 --set optim.lr=3e-4
.venv/bin/python benchmarks/make_tables.py
