#!/usr/bin/env bash
# DMD2's two levers for 28x28 images (real-score CFG 1.15, the generator's GAN weight 3e-2; they took the 1-step
# DMD2, Decoupled DMD and DisBack students to 8.4-9.2, dmd2_gan_weight_mnist.sh, dmd_variants_levers_mnist.sh) on the
# multi-step members of the family, each otherwise with the 4-step flags it was first measured with (the GAN on the
# cleanest 10% of levels, EMA 0.99 per student update, 600 it = 120 student updates):
# - dmd2 at 4 steps (13.56 +- 0.69 with CFG 1.25, dmd_family_mnist.json)  -> dmd2_nfe4_levers_mnist.json
# - sc_dmd, one model for 4 / 2 / 1 steps (13.11 at 1 step, sc_dmd_mnist.json) -> sc_dmd_levers_mnist.json
# - asd, one model for 1 / 2 / 4 steps (14.40 at 1 step, dmd_variants_mnist.json) -> asd_levers_mnist.json
# Every run resumes if interrupted and is skipped once its model exists; on 2 CPU threads without native bf16
# (fp32 training) ~2-5 s/it, 20-50 min per run; each benchmark ~2-5 min.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
R=${R:-runs/levers4}
BASE=benchmarks/results/teacher_mnist.json,benchmarks/results/teacher_mnist_flow.json
d() { local out=$1; shift; [ -f "$out/model/config.json" ] || $F distill --teacher mnist --nfe 4 --set real_cfg=1.15 \
        --set gan_gen_weight=3e-2 --set gan_index_max=0.1 --max-iters 600 --ema-decay 0.99 --eval-every 200 "$@" \
        --out "$out" --threads 2 --ckpt-every 100 --resume --no-progress; }
d $R/dmd2_nfe4 --method dmd2
$F bench --model $R/dmd2_nfe4 --name dmd2_nfe4_levers_mnist --no-bf16 --baseline $BASE --threads 2
d $R/sc_dmd --method sc_dmd
$F bench --model $R/sc_dmd --name sc_dmd_levers_mnist --no-bf16 --baseline $BASE --threads 2
d $R/asd --method asd
$F bench --model $R/asd --name asd_levers_mnist --no-bf16 --baseline $BASE --threads 2
.venv/bin/python benchmarks/make_tables.py
