#!/usr/bin/env bash
# SC-DMD and ASD (one model for 4 / 2 / 1 steps each) as a LoRA of rank 8 on the frozen teacher (`--lora-rank 8`,
# adapters' LR 1e-3) instead of a full copy. Both read best at 1 step and worse as steps rise with a full copy
# (sc_dmd_cfg115_gan40_mnist.json 15.73 / 17.75 / 11.80, asd_cfg115_gan40_mnist.json 28.45 / 18.41 / 12.37 at
# 4 / 2 / 1 steps): the one network's refining steps stop denoising like the teacher. An adapter keeps the network
# close to the teacher at every level, so does FD stop rising with the steps? Otherwise those runs' settings
# (real-score CFG 1.15, the GAN on the cleaner 40% of levels, generator GAN weight 3e-3, EMA 0.99 per student update,
# 600 it):
#   -> sc_dmd_lora_r8_seedS_mnist.json, then asd_lora_r8_seedS_mnist.json, for S in $SEEDS (default 0 1 2)
#   -> sc_dmd_lora_r8_1200_seed0_mnist.json: SC-DMD's adapter for 1,200 it (its in-training FD was still falling at 600)
#   -> asd_lora_r8_trained_seedS_mnist.json: ASD's adapter with `self_target=trained` (each count pulled towards the
#      next trained count, the largest left to DMD2's terms; with n + 1 its 4-step sample was the sharpest and worst)
# Resumes if interrupted; a run whose results exist is skipped. ~0.6 s/it (SC-DMD) and ~1.5 s/it (ASD) with bf16
# autocast on 2 CPU threads; each benchmark ~4 min.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
R=${R:-runs/step_counts_lora}
SEEDS=${SEEDS:-"0 1 2"}
source benchmarks/dm_4step.sh
lora=(--set gan_gen_weight=3e-3 --set gan_index_max=0.4 --lora-rank 8 --set optim.lr=1e-3)
dm_seeds sc_dmd_lora_r8 "$R/sc_dmd" --method sc_dmd "${lora[@]}"
dm_seeds asd_lora_r8 "$R/asd" --method asd "${lora[@]}"
dm_seeds asd_lora_r8_trained "$R/asd_trained" --method asd "${lora[@]}" --set self_target=trained
SEEDS=0 dm_seeds sc_dmd_lora_r8_1200 "$R/sc_dmd_1200" --method sc_dmd "${lora[@]}" --max-iters 1200
.venv/bin/python benchmarks/make_tables.py
