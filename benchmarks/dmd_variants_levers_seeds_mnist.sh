#!/usr/bin/env bash
# Decoupled DMD with DMD2's two levers (real-score CFG 1.15, generator GAN weight 3e-2) on training seeds 1 and 2
# (benchmarks/results/dmd_variants_levers_seeds_mnist.json). Seed 0 read 8.70 at class accuracy 0.972
# (dmd_variants_levers_mnist.sh), DMD2's seeds 0 / 1 / 2 with the same levers 8.78 / 9.22 / 8.36
# (dmd2_gan_weight_mnist.sh): does it hold DMD2's 1-step bar (<= 8.76 at class accuracy >= 0.97) on more than one
# seed? The 1-step recipe otherwise (dm_1step). Each run resumes if interrupted and is skipped once its model exists;
# ~0.8 s/it with bf16 autocast on 2 CPU threads (~2.4 s/it where training falls back to fp32).
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
R=${R:-runs/variants_lev}
source benchmarks/dm_1step.sh
for s in 1 2; do
  dm_1step $R/decoupled_s$s --set real_cfg=1.15 --set gan_gen_weight=3e-2 --method decoupled_dmd --seed $s
done
$F bench --model $R/decoupled_s1,$R/decoupled_s2 --name dmd_variants_levers_seeds_mnist --no-bf16 \
  --baseline benchmarks/results/teacher_mnist.json,benchmarks/results/teacher_mnist_flow.json --threads 2
.venv/bin/python benchmarks/make_tables.py
