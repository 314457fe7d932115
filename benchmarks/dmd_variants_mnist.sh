#!/usr/bin/env bash
# Decoupled DMD and adversarial self-distillation (SC-DMD and DisBack: their commands are below, not yet run) on the shipped MNIST teacher
# (benchmarks/results/dmd_variants_mnist.json), each beside DMD2 on the same budget and flags:
# - decoupled_dmd, sc_dmd and asd at 4 steps with dmd_family_mnist.sh's 4-step flags (real-score CFG 1.25,
#   the GAN on the cleanest 10% of levels, EMA 0.99, 600 it = 120 student updates), against its dmd2_nfe4
#   (13.56 +- 0.69); sc_dmd and asd are one model for 1, 2 and 4 steps and are measured at each;
# - disback at 1 step with DMD2's 1-step preset flags (real-score CFG 1.25, the GAN on the cleaner 40%),
#   against a DMD2 run of the same length (DisBack's claim is faster convergence: compare the in-training
#   evals at 200/400/600 it in both runs' metrics.jsonl, then the benchmark rows).
# Every run resumes if interrupted and is skipped once its model exists. On 2 CPU threads (fp32) an
# iteration takes ~2 s (decoupled_dmd) to ~4 s (asd: it also samples n and n + 1 steps); the benchmark ~5 min.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
R=runs/variants
d() { local out=$1; shift; [ -f "$out/model/config.json" ] || $F distill --teacher mnist "$@" --out "$out" \
        --max-iters 600 --ema-decay 0.99 --threads 2 --eval-every 200 --ckpt-every 100 --resume --no-progress; }
FOUR=(--nfe 4 --set real_cfg=1.25 --set gan_index_max=0.1)
ONE=(--nfe 1 --set real_cfg=1.25 --set gan_index_max=0.4)
d $R/decoupled_nfe4 --method decoupled_dmd "${FOUR[@]}"
d $R/asd_nfe4 --method asd "${FOUR[@]}"
MODELS=$R/decoupled_nfe4,$R/asd_nfe4
# not measured yet (each adds its model to MODELS; ASD took ~4 s/it here, so ~40 min):
#   d $R/sc_dmd_nfe4 --method sc_dmd "${FOUR[@]}"
#   d $R/dmd2_nfe1_600 --method dmd2 "${ONE[@]}"
#   d $R/disback_nfe1 --method disback "${ONE[@]}"
$F bench --model "$MODELS" --name dmd_variants_mnist \
  --baseline benchmarks/results/teacher_mnist.json,benchmarks/results/teacher_mnist_flow.json --threads 2
.venv/bin/python benchmarks/make_tables.py
