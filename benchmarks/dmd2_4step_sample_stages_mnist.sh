#!/usr/bin/env bash
# The 4-step DMD2 student with a backward-simulation stage per sample (--set stage_draw=sample), otherwise the 4-step run
# at real-score CFG 1.15 with the GAN on the cleaner 40% of levels whose training seeds 0 / 1 / 2 read 9.03 / 17.52 / 15.85
# (dmd2_nfe4_cfg115_gan40*_mnist.json). Why: on seed 1 that run's raw student jumps by up to 19 FD every five student
# updates (benchmarks/weight_average_probe.py, docs/notes.md), each update following one stage's gradient; with a stage
# per sample every update (and every critic batch) covers all four stages. At CFG 1.25 with the GAN on 10% it read
# 20.42 against 13.56 (dmd_4step_mnist.json). -> dmd2_nfe4_sample_seed1_mnist.json: 89.79 on seed 1 (collapsed), so
# the other seeds were not run (SEEDS names them)
# Every run resumes if interrupted and is skipped once its results exist; ~0.6 s/it with bf16 autocast on 2 CPU threads.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
R=${R:-runs/dmd2_sample}
source benchmarks/dm_4step.sh
SEEDS=${SEEDS:-1}
dm_seeds dmd2_nfe4_sample $R --method dmd2 --set gan_index_max=0.4 --set gan_gen_weight=3e-3 --set stage_draw=sample
.venv/bin/python benchmarks/make_tables.py
