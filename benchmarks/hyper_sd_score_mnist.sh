#!/usr/bin/env bash
# Hyper-SD's last stage, score distillation at 1 step (benchmarks/results/hyper_sd_score_mnist.json): the TSCD
# chain 8 -> 4 segments (each from the previous stage, flow_family_mnist.sh), then 2 and 1 segments from the
# previous stage's weights with the original teacher's ODE at LR 2e-5 (the 1-segment stage with an EMA target;
# hyper_sd_init_mnist.sh), then DMD2 at 1 step started from the 1-segment model (`--set init=`), the teacher
# staying the real score and the fake score's start. The 1-segment model and its score-distilled successor are
# benchmarked at 1 NFE against the teacher's rows on both grids, beside the same
# DMD2 stage started from the teacher (the control). On 2 CPU threads (fp32) each TSCD stage takes
# ~13 min (600 it), the DMD2 stage ~2.9 s/it; every run resumes if interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
R=${R:-runs/cpu}
# d OUT ARGS...: one distillation into OUT, skipped when OUT already holds its finished model
d() { local out=$1; shift; [ -f "$out/model/config.json" ] || $F distill "$@" --out "$out" --threads 2 --resume --no-progress; }
h() { local out=$1; shift; d "$out" --method hyper_sd --max-iters 600 --eval-every 300 --ckpt-every 100 "$@"; }
h $R/hyper_sd8 --teacher mnist --nfe 8
h $R/hyper_sd4 --teacher $R/hyper_sd8 --nfe 4
h $R/hyper_sd2i_lr2e-5 --teacher mnist --nfe 2 --set init=$R/hyper_sd4 --lr 2e-5
h $R/hyper_sd1i_ema --teacher mnist --nfe 1 --set init=$R/hyper_sd2i_lr2e-5 --lr 2e-5 --set target=ema
# the score-distillation stage: the 1-step DMD2 recipe of dmd2_runs.sh (real CFG 1.25, GAN on the cleaner 40%)
d $R/hyper_sd1_dmd2 --teacher mnist --method dmd2 --nfe 1 --set init=$R/hyper_sd1i_ema --set real_cfg=1.25 \
  --set gan_index_max=0.4 --max-iters 400 --ema-decay 0.99 --eval-every 100 --ckpt-every 100
# the control: the same DMD2 stage from the teacher itself, same budget (does the TSCD start carry anything?)
d $R/dmd2_400 --teacher mnist --method dmd2 --nfe 1 --set real_cfg=1.25 --set gan_index_max=0.4 --max-iters 400 \
  --ema-decay 0.99 --eval-every 100 --ckpt-every 100
$F bench --model $R/hyper_sd1i_ema,$R/hyper_sd1_dmd2,$R/dmd2_400 --name hyper_sd_score_mnist \
  --baseline benchmarks/results/teacher_mnist.json,benchmarks/results/teacher_mnist_flow.json --threads 2
.venv/bin/python benchmarks/make_tables.py
