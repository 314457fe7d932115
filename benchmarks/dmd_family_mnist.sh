#!/usr/bin/env bash
# The distribution-matching family on the shipped MNIST teacher (benchmarks/results/dmd_family_mnist.json),
# measured against the teacher's rows on the Karras grid (teacher_mnist.json) and on the rectified-flow
# grid (teacher_mnist_flow.json: DPM-Solver++ there is the strongest untrained baseline).
# Each distillation resumes if interrupted; on 2 CPU threads (fp32) a DMD2 iteration takes ~2 s.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
R=runs/bench
# the teacher's flow-grid rows (Euler and DPM-Solver++, 3 seeds up to 8 NFE)
[ -f benchmarks/results/teacher_mnist_flow.json ] || \
  $F bench --model mnist --name teacher_mnist_flow --grid flow --samplers euler,dpmpp2m --nfe 1,2,3,4,6,8,16 --threads 2
# DMD2 at 1 and 4 steps, with and without real-score CFG at 4 (benchmarks/dmd2_runs.sh)
source benchmarks/dmd2_runs.sh
# 4-step DMD2 without the GAN (both GAN weights 0), to tell the GAN's part in the 4-step students' recall loss
$F distill --teacher mnist --method dmd2 --nfe 4 --out $R/dmd2_nfe4_nogan --set real_cfg=1.25 --set gan_gen_weight=0 \
  --set gan_disc_weight=0 --max-iters 600 --ema-decay 0.99 --threads 2 --eval-every 100 --ckpt-every 100 --resume
# the variants at 4 steps, side by side with dmd2_nfe4 (same CFG, GAN range, EMA and iterations)
# flash_dmd's preset was then GAN weight 3e-3 with the reward at 0.05 (now DMD2's 1-step levers and 3e-3): pinned here
$F distill --teacher mnist --method flash_dmd --nfe 4 --out $R/flash_nfe4 --set real_cfg=1.25 --set gan_index_max=0.1 \
  --set gan_gen_weight=3e-3 --set reward_weight=0.05 \
  --max-iters 600 --ema-decay 0.99 --threads 2 --eval-every 100 --ckpt-every 100 --resume
$F distill --teacher mnist --method phased_dmd --nfe 4 --out $R/phased_nfe4 --set real_cfg=1.25 --set gan_index_max=0.1 \
  --max-iters 600 --ema-decay 0.99 --threads 2 --eval-every 150 --ckpt-every 75 --resume
MODELS=$R/dmd2_A,$R/dmd2_nfe4,$R/dmd2_nfe4_nocfg,$R/dmd2_nfe4_nogan,$R/flash_nfe4,$R/phased_nfe4
# the other variants are measured by their own scripts: dmd_variants_mnist.sh (decoupled_dmd and asd at 4 steps),
# dmd_variants_1step_mnist.sh (decoupled_dmd, disback and flash_dmd at 1 step), sc_dmd_mnist.sh; SiD is in
# score_family_mnist.sh
$F bench --model "$MODELS" --name dmd_family_mnist \
  --baseline benchmarks/results/teacher_mnist.json,benchmarks/results/teacher_mnist_flow.json --threads 2
.venv/bin/python benchmarks/make_tables.py
