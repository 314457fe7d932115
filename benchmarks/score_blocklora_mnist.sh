#!/usr/bin/env bash
# VSD and SNOOPI, whose fake score is LoRA on the teacher, with LoRA's default targets on fewstep's UNet now covering
# the residual blocks' convolutions, the 1x1 attention projections and the time embedding (before: the time-embedding
# linears alone). Each run is the method's MNIST preset:
# - vsd (no guidance, 600 it), training seeds $SEEDS (default 0 1 2; with the old targets 12.81 / 13.73 / 11.95,
#   score_family_vsd1_mnist.json, vsd_1_seed1_mnist.json, vsd_1_seed2_mnist.json) -> vsd_blocklora_seedS_mnist.json
# - snoopi (guidance drawn from U[1, 1.5], 1,200 it), training seed 0 (12.56 +- 0.15 with the old targets,
#   score_family_mnist.json) -> snoopi_blocklora_seed0_mnist.json
# WITH_SNOOPI=0 runs the VSD seeds alone. Resumes if interrupted; a run whose results exist is skipped. ~0.8 s/it on 2 CPU threads; benchmarks ~2-3 min each.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
R=${R:-runs/score_blocklora}
run() { local method=$1 seed=$2 name=$3 out=$R/$1_seed$2; shift 3
  [ -f "benchmarks/results/$name.json" ] && return 0
  [ -f "$out/model/config.json" ] || $F distill --teacher mnist --nfe 1 --threads 2 --eval-every 200 --ckpt-every 100 \
      --ema-decay 0.99 --resume --no-progress --out "$out" --method "$method" --seed "$seed" "$@"
  $F bench --model "$out" --name "$name" --baseline benchmarks/results/score_family_mnist.json --threads 2; }
for s in ${SEEDS:-0 1 2}; do run vsd "$s" "vsd_blocklora_seed${s}_mnist"; done
[ "${WITH_SNOOPI:-1}" = 0 ] || run snoopi 0 snoopi_blocklora_seed0_mnist
