#!/usr/bin/env bash
# Phased DMD on the flow grid's student levels. The preset's Karras levels are 80 / 21.4 / 4.19 / 0.5, where the teacher
# itself reads 34.24 at 4 NFE (DPM-Solver++) against 9.85 on the flow grid (80 / 2.86 / 0.98 / 0.33), and the last
# phase (0.5 -> 0) barely moves the in-training FD (phased_cfg115*_mnist.json: 11.2 -> 11.2). Otherwise the preset
# (real-score CFG 1.15, the GAN on the cleanest 10% of levels, generator GAN weight 3e-3, EMA 0.99 per student update,
# 600 it = 150 per phase):
# - training seed 0 -> phased_flow_seed0_mnist.json; with SEEDS="1 2" more seeds (those run: docs/notes.md)
# Resumes if interrupted; a run whose results exist is skipped; ~0.55 s/it with bf16 autocast on 2 CPU threads.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
R=${R:-runs/phased_flow}
SEEDS=${SEEDS:-0}
source benchmarks/dm_4step.sh
dm_seeds phased_flow "$R" --method phased_dmd --set gan_gen_weight=3e-3 --set student_grid=flow \
  --eval-every 150 --ckpt-every 75
.venv/bin/python benchmarks/make_tables.py
