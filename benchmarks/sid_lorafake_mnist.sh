#!/usr/bin/env bash
# SiD with its fake score as LoRA adapters on the teacher (fake_lora, as SwiftBrush's fake score in vsd.py) instead of
# the paper's full trainable copy. VSD's fake score moved from 12.83 to 9.73 (mean of three seeds) when its adapters
# reached the UNet's block convolutions (score_blocklora_mnist.sh); SiD with a full-copy fake score reads 10.63 +- 1.37
# (score_family_mnist.json). Each run is SiD's mnist preset (LR 1e-4, Adam (0, 0.999), 1,200 it) with the fake score
# at rank 32 (alpha 32) on LoRA's default targets and the adapters at 10x the generator's LR (1e-3, vsd.py's ratio),
# bf16 autocast where the CPU has it; training seeds $SEEDS (default 0) -> sid_lorafake_seedS_mnist.json.
# Resumes if interrupted; a run whose results exist is skipped. Benchmarks ~3-4 min each on 2 CPU threads.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
R=${R:-runs/sid_lorafake}
ITERS=${ITERS:-1200}
for s in ${SEEDS:-0}; do
  name=sid_lorafake_seed${s}_mnist out=$R/seed$s
  [ -f "benchmarks/results/$name.json" ] && continue
  [ -f "$out/model/config.json" ] || $F distill --teacher mnist --nfe 1 --method sid --threads 2 --eval-every 200 \
      --ckpt-every 100 --ema-decay 0.99 --resume --no-progress --out "$out" --seed "$s" --max-iters "$ITERS" \
      --set fake_lora.rank=32 --set fake_lora.alpha=32 --set critic_optim.lr=1e-3 "$@"
  $F bench --model "$out" --name "$name" --baseline benchmarks/results/score_family_mnist.json --threads 2
done
