#!/usr/bin/env bash
# Hyper-SD's later stages with the original teacher's ODE (benchmarks/results/hyper_sd_init_mnist.json):
# `--teacher mnist --set init=<previous stage>` instead of `--teacher <previous stage>` (flow_family_mnist.sh).
# The 2-segment stage from the 4-segment model at the preset LR (1e-4) and at 2e-5, then the 1-segment stage
# from the better one at 2e-5 (the student itself as the consistency target, and an EMA target); each is
# compared with the previous stage's model at the same NFE (flow_family_mnist.json and this file). The EMA-target
# stage, still improving at 600 iterations, is then continued to 1,200 (hyper_sd1i_ema_1200: a copy of its
# folder resumed with --max-iters 1200; a resumed run ends where an uninterrupted one would, tests/test_reliability.py). PREV (default runs/gpu, where benchmarks/gpu_mnist_runs.sh puts the chain) must hold
# hyper_sd4. On 2 CPU threads (fp32) each 600 iterations take ~13 min; the benchmark ~6 min.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
PREV=${PREV:-runs/gpu}
R=runs/cpu
d() { local out=$1; shift; [ -f "$out/model/config.json" ] || $F distill --teacher mnist --method hyper_sd "$@" --out "$out" \
        --max-iters 600 --threads 2 --eval-every 300 --ckpt-every 100 --resume --no-progress; }
d $R/hyper_sd2i --nfe 2 --set init=$PREV/hyper_sd4
d $R/hyper_sd2i_lr2e-5 --nfe 2 --set init=$PREV/hyper_sd4 --lr 2e-5
d $R/hyper_sd1i_lr2e-5 --nfe 1 --set init=$R/hyper_sd2i_lr2e-5 --lr 2e-5
d $R/hyper_sd1i_ema --nfe 1 --set init=$R/hyper_sd2i_lr2e-5 --lr 2e-5 --set target=ema
if [ ! -f $R/hyper_sd1i_ema_1200/model/config.json ]; then
  [ -d $R/hyper_sd1i_ema_1200 ] || cp -r $R/hyper_sd1i_ema $R/hyper_sd1i_ema_1200
  $F distill --teacher mnist --method hyper_sd --nfe 1 --set init=$R/hyper_sd2i_lr2e-5 --lr 2e-5 --set target=ema \
    --out $R/hyper_sd1i_ema_1200 --max-iters 1200 --threads 2 --eval-every 300 --ckpt-every 100 --resume --no-progress
fi
$F bench --model $R/hyper_sd2i,$R/hyper_sd2i_lr2e-5,$R/hyper_sd1i_lr2e-5,$R/hyper_sd1i_ema,$R/hyper_sd1i_ema_1200 --name hyper_sd_init_mnist \
  --baseline benchmarks/results/teacher_mnist.json,benchmarks/results/teacher_mnist_flow.json --threads 2
.venv/bin/python benchmarks/make_tables.py
