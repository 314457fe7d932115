#!/usr/bin/env bash
# Decoupled DMD and adversarial self-distillation at 4 steps on the shipped MNIST teacher (SC-DMD: sc_dmd_mnist.sh;
# DisBack and the 1-step Decoupled DMD and Flash-DMD: dmd_variants_1step_mnist.sh)
# (benchmarks/results/dmd_variants_mnist.json), each beside DMD2 on the same budget and flags:
# - decoupled_dmd and asd at 4 steps with dmd_family_mnist.sh's 4-step flags (real-score CFG 1.25,
#   the GAN on the cleanest 10% of levels, EMA 0.99, 600 it = 120 student updates), against its dmd2_nfe4
#   (13.56 +- 0.69); asd is one model for 1, 2 and 4 steps and is measured at each.
# Every run resumes if interrupted and is skipped once its model exists. On 2 CPU threads (fp32) an
# iteration takes ~2 s (decoupled_dmd) to ~4 s (asd: it also samples n and n + 1 steps); the benchmark ~5 min.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
R=runs/variants
d() { local out=$1; shift; [ -f "$out/model/config.json" ] || $F distill --teacher mnist "$@" --out "$out" \
        --max-iters 600 --ema-decay 0.99 --threads 2 --eval-every 200 --ckpt-every 100 --resume --no-progress; }
FOUR=(--nfe 4 --set real_cfg=1.25 --set gan_index_max=0.1)
d $R/decoupled_nfe4 --method decoupled_dmd "${FOUR[@]}"
d $R/asd_nfe4 --method asd "${FOUR[@]}"
MODELS=$R/decoupled_nfe4,$R/asd_nfe4
$F bench --model "$MODELS" --name dmd_variants_mnist \
  --baseline benchmarks/results/teacher_mnist.json,benchmarks/results/teacher_mnist_flow.json --threads 2
.venv/bin/python benchmarks/make_tables.py
