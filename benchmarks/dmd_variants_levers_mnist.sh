#!/usr/bin/env bash
# The 1-step DMD variants with DMD2's two levers for 28x28 images (benchmarks/results/dmd_variants_levers_mnist.json):
# real-score CFG 1.15 (the dmd2 preset) and the generator's GAN weight at 3e-2 (dmd2_gan_weight_mnist.sh: three
# training seeds of DMD2 read 8.78 / 9.22 / 8.36 with them, against 10.78 +- 0.35 for the CFG-1.25 recipe that
# dmd_variants_1step_mnist.sh gave every variant). The same recipe otherwise (dm_1step: the GAN on the cleaner 40%
# of levels, EMA 0.99 per student update, 1,200 it = 240 student updates, bf16 autocast where the CPU has it):
# - decoupled_dmd: CA and DM re-noised apart (it read 11.18 / 11.06 with the CFG-1.25 recipe, bf16 / fp32);
# - disback: with its path recorded at LR 1e-5 (11.93 with the CFG-1.25 recipe);
# - flash_dmd: with its reward at weight 0.01 (12.39 with the CFG-1.25 recipe), benchmarked on its own.
# Every run resumes if interrupted and is skipped once its model exists; 15-50 min per run on 2 CPU threads
# (~2.4 s/it on a CPU without native bf16, where training falls back to fp32).
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
R=${R:-runs/variants_lev}
source benchmarks/dm_1step.sh
LEVERS=(--set real_cfg=1.15 --set gan_gen_weight=3e-2)
dm_1step $R/decoupled "${LEVERS[@]}" --method decoupled_dmd
dm_1step $R/disback "${LEVERS[@]}" --method disback --set record_lr=1e-5
$F bench --model $R/decoupled,$R/disback --name dmd_variants_levers_mnist --no-bf16 \
  --baseline benchmarks/results/teacher_mnist.json,benchmarks/results/teacher_mnist_flow.json --threads 2
# Flash-DMD with its reward at weight 0.01 (12.39 with the CFG-1.25 recipe), against DMD2 with the same levers
dm_1step $R/flash "${LEVERS[@]}" --method flash_dmd --set reward_weight=0.01
$F bench --model $R/flash --name dmd_variants_levers_flash_mnist --no-bf16 \
  --baseline benchmarks/results/teacher_mnist.json,benchmarks/results/teacher_mnist_flow.json --threads 2
.venv/bin/python benchmarks/make_tables.py
