#!/usr/bin/env bash
# DMD2's 1-NFE bar asks for FD <= the teacher's best row (8.76) with class accuracy >= 0.97 at once. With its two 1-step
# levers (real-score CFG 1.15, generator GAN weight 3e-2) the 1-step student read 7.46 / 9.62 / 8.26 on training seeds
# 0 / 1 / 2 (mean 8.45) at class accuracy 0.969 / 0.974 / 0.963 (mean 0.969; dmd2_levers_seed*_ref_mnist.json, trained
# on a CPU like this one). Here the same recipe at real-score CFG 1.2 on the same three seeds: does the higher scale buy
# the missing accuracy for less FD than the bar leaves (0.31 in the mean)? On another CPU, seed 0 at CFG 1.2 read
# 8.91 at 0.969 against 8.78 at 0.972 (dmd2_gan_weight_cfg12_mnist.json). -> dmd2_levers_cfg12_seed{0,1,2}_mnist.json
# Each run resumes if interrupted and is skipped once its results exist; ~0.45 s/it with bf16 autocast on 2 CPU threads
# (1,200 it), benchmarks ~3 min each.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
R=${R:-runs/dmd2_cfg12}
source benchmarks/dm_1step.sh
for s in ${SEEDS:-0 1 2}; do
  name=dmd2_levers_cfg12_seed${s}_mnist
  [ -f "benchmarks/results/$name.json" ] && continue
  dm_1step "$R/seed$s" --method dmd2 --set real_cfg=1.2 --set gan_gen_weight=3e-2 --seed "$s"
  $F bench --model "$R/seed$s" --name "$name" --no-bf16 \
    --baseline benchmarks/results/teacher_mnist.json,benchmarks/results/teacher_mnist_flow.json --threads 2
done
.venv/bin/python benchmarks/make_tables.py
