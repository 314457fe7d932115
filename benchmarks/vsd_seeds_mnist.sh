#!/usr/bin/env bash
# VSD without guidance (guidance_range [1, 1], 600 it) on training seeds 1 and 2: seed 0 (`vsd_1`,
# score_family_vsd1_mnist.json) read 12.81 +- 0.78, under the 1.5x-of-the-teacher bar (13.14) in the mean but inside
# its spread, where the CFG-1.25 preset read 14.76. -> vsd_1_seed1_mnist.json, vsd_1_seed2_mnist.json
# Trained and benchmarked as score_family_mnist.sh trains and benchmarks vsd_1 (bf16 autocast training and sampling on
# 2 threads, EMA 0.99, teacher rows carried from score_family_mnist.json). Each run resumes if interrupted and is
# skipped once its results exist; ~0.8 s/it.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
R=${R:-runs/score}
for s in 1 2; do
  name=vsd_1_seed${s}_mnist out=$R/vsd_1_seed$s
  [ -f "benchmarks/results/$name.json" ] && continue
  [ -f "$out/model/config.json" ] || $F distill --teacher mnist --nfe 1 --threads 2 --eval-every 200 --ckpt-every 100 \
      --ema-decay 0.99 --resume --no-progress --out "$out" --method vsd --max-iters 600 --set 'guidance_range=[1,1]' --seed $s
  $F bench --model "$out" --name "$name" --baseline benchmarks/results/score_family_mnist.json --threads 2
done
.venv/bin/python benchmarks/make_tables.py
