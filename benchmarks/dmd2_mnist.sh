#!/usr/bin/env bash
# DMD2 from the shipped MNIST teacher: 1 step with its MNIST preset (real-score CFG 1.25, the GAN on the
# cleaner 40% of levels, student EMA 0.99 per student update, 1,200 iterations = 240 student updates) and 4 steps, measured against the teacher's rows over every sampler and grid (Karras grid: teacher_mnist.json;
# rectified-flow grid, where DPM-Solver++ is strongest: teacher_mnist_flow.json) ->
# benchmarks/results/dmd2_mnist.json. The same two runs are rows of dmd_family_mnist.json; each resumes if
# interrupted. On 2 CPU threads (fp32) an iteration takes ~2-2.5 s.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
R=runs/bench
$F distill --teacher mnist --method dmd2 --nfe 1 --out $R/dmd2_A --set real_cfg=1.25 --set gan_index_max=0.4 \
  --max-iters 1200 --ema-decay 0.99 --threads 2 --eval-every 200 --ckpt-every 100 --resume
# 4 steps, 600 it each, the GAN on the cleanest 10% of levels: with real-score CFG 1.25 (the preset's) and
# without it (with CFG the 4-step student lost recall as it trained; docs/notes.md)
$F distill --teacher mnist --method dmd2 --nfe 4 --out $R/dmd2_nfe4 --set real_cfg=1.25 --set gan_index_max=0.1 \
  --max-iters 600 --ema-decay 0.99 --threads 2 --eval-every 200 --ckpt-every 100 --resume
$F distill --teacher mnist --method dmd2 --nfe 4 --out $R/dmd2_nfe4_nocfg --set real_cfg=1.0 --set gan_index_max=0.1 \
  --max-iters 600 --ema-decay 0.99 --threads 2 --eval-every 100 --ckpt-every 100 --resume
$F bench --model $R/dmd2_A,$R/dmd2_nfe4,$R/dmd2_nfe4_nocfg --name dmd2_mnist \
  --baseline benchmarks/results/teacher_mnist.json,benchmarks/results/teacher_mnist_flow.json --threads 2
.venv/bin/python benchmarks/make_tables.py
