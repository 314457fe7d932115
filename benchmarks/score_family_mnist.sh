#!/usr/bin/env bash
# The score family on the shipped MNIST teacher (benchmarks/results/score_family_mnist.json): SiD, SwiftBrush
# VSD and SNOOPI (PG-SB) at 1 NFE, none of which reads a training image, and SiDA (SiD + a discriminator on
# real images), against the teacher's
# rows on the Karras grid (teacher_mnist.json) and the rectified-flow grid (teacher_mnist_flow.json).
# SNOOPI's robustness claim: VSD at three fixed guidance scales against SNOOPI with the scale drawn from
# U[1, that scale] per iteration (FD and class accuracy per pair). Each run resumes if interrupted.
# On 2 CPU threads (fp32) an iteration takes ~1.5-2 s (1,200 it: ~40 min per run).
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
R=runs/score
d() { $F distill --teacher mnist --nfe 1 --threads 2 --eval-every 200 --ckpt-every 100 --ema-decay 0.99 --resume \
        --no-progress "$@"; }
d --method sid --out $R/sid
d --method sida --out $R/sida
MODELS=$R/sid,$R/sida
for k in 1.5 3 5; do
  d --method vsd --out $R/vsd_$k --set "guidance_range=[$k,$k]"
  d --method snoopi --out $R/snoopi_$k --set "guidance_range=[1,$k]"
  MODELS=$MODELS,$R/vsd_$k,$R/snoopi_$k
done
$F bench --model "$MODELS" --name score_family_mnist \
  --baseline benchmarks/results/teacher_mnist.json,benchmarks/results/teacher_mnist_flow.json --threads 2
.venv/bin/python benchmarks/make_tables.py
