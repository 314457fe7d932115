#!/usr/bin/env bash
# Segmented consistency and one-model flows on the shipped MNIST teacher (benchmarks/results/flow_family_mnist.json),
# against the teacher's rows on the Karras grid (teacher_mnist.json) and the rectified-flow grid
# (teacher_mnist_flow.json). 1,000 samples x 3 seeds per row, EMA weights.
# Hyper-SD (TSCD): one run per segment count, 8 -> 4 -> 2 -> 1, each from the previous stage's model (which is
# also that stage's ODE teacher); every stage model is benchmarked at its own steps (DDIM and TCD) and on the
# halvings of its boundaries, so each stage is compared with the previous stage's model at the same NFE.
# LCM (pseudo-Huber per element, now its default) is re-measured here; CD's default loss (L2) did not change.
# TwinFlow: one model from the teacher's weights trained on the MNIST images (no frozen teacher), sampled at 1, 2
# and 4 steps, with the settings it was first measured with (the MNIST preset is now benchmarks/twinflow_long_mnist.sh's
# recipe). ArcFlow: a 2-step policy (4 velocity components), arc sampler at 1, 2 and 4 steps and Euler at 2.
# Each run resumes if interrupted; on 2 CPU threads a Hyper-SD stage takes ~13 min (600 it), LCM ~16 min, TwinFlow
# ~20 min, ArcFlow ~13 min; the benchmark ~80 min (an 8-NFE row: 3,000 samples at ~20 images/s) and it resumes too.
# The published results measure the same recipes trained on one GPU (bf16) by benchmarks/gpu_mnist_runs.sh:
# `R=runs/gpu benchmarks/flow_family_mnist.sh` with those run folders in place goes straight to the benchmark
# (a run whose model folder exists is not trained again).
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
R=${R:-runs/flow}
# d OUT ARGS...: one distillation into OUT, skipped when OUT already holds its finished model
d() { local out=$1; shift; [ -f "$out/model/config.json" ] || $F distill "$@" --out "$out" --threads 2 --resume --no-progress; }
prev=mnist
for M in 8 4 2 1; do
  d $R/hyper_sd$M --teacher $prev --method hyper_sd --nfe $M --max-iters 600 --eval-every 300 --ckpt-every 100
  prev=$R/hyper_sd$M
done
d $R/lcm --teacher mnist --method lcm --nfe 2
d $R/twinflow --teacher mnist --method twinflow --nfe 1 --set enhance=0.25 --set rectify=0.5 --set optim.lr=1e-4 --max-iters 600 --eval-every 200 --ckpt-every 100
d $R/arcflow --teacher mnist --method arcflow --nfe 2 --max-iters 600 --eval-every 200 --ckpt-every 100
$F bench --model $R/hyper_sd8,$R/hyper_sd4,$R/hyper_sd2,$R/hyper_sd1,$R/lcm,$R/twinflow,$R/arcflow --name flow_family_mnist \
  --baseline benchmarks/results/teacher_mnist.json,benchmarks/results/teacher_mnist_flow.json --threads 2
.venv/bin/python benchmarks/make_tables.py
