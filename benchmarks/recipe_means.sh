#!/usr/bin/env bash
# The MNIST recipes measured on more than one training run, each read as the mean over its runs (benchmarks/seed_means.py):
# the numbers behind "Each recipe over its training runs" in README.md. A recipe's training-seed spread on this teacher
# (1-2 FD for the 1-step students, up to ~8 for the one 4-step DMD2 network) is several times a single run's sampling
# spread, so these means, not any one run, are what ranks the recipes. Bars: DMD2's (FD <= the teacher's best row, 8.76,
# with class accuracy >= 0.97), the flow family's (1 NFE <= 13.14, <= 2 NFE <= 11.82). Reads results files only.
set -euo pipefail
cd "$(dirname "$0")/.."
R=benchmarks/results
m() { echo; echo "## $1"; shift; .venv/bin/python benchmarks/seed_means.py "$@"; }
DMD2_BAR=(--fd-bar 8.76 --acc-bar 0.97)
m "DMD2 1-step, the levers (real-score CFG 1.15, generator GAN weight 3e-2)" "${DMD2_BAR[@]}" \
  $R/dmd2_gan_weight_mnist.json $R/dmd2_levers_seed*_ref_mnist.json
m "DMD2 1-step, the levers at real-score CFG 1.2" "${DMD2_BAR[@]}" $R/dmd2_levers_cfg12_seed*_mnist.json
m "DMD2 1-step, the MNIST preset (real-score CFG 1.15, generator GAN weight 3e-3)" "${DMD2_BAR[@]}" \
  --run '*/cfg115' --run '*/cfg115_s?' $R/dmd2_levers_mnist.json $R/dmd2_seeds_mnist.json
m "Decoupled DMD 1-step, the levers" "${DMD2_BAR[@]}" --method decoupled_dmd \
  $R/dmd_variants_levers_mnist.json $R/dmd_variants_levers_seeds_mnist.json
m "Flash-DMD 1-step, the levers, reward weight 3e-3 (its MNIST preset)" "${DMD2_BAR[@]}" $R/flash_rw003_levers*_mnist.json
m "VSD 1-step, its MNIST preset (no guidance, LoRA fake score on the block convolutions; bar 13.14)" --fd-bar 13.14 \
  $R/vsd_blocklora_seed*_mnist.json
for n in 1 2 4; do  # the flow family's bars are at 1 and 2 NFE; 4 NFE has none
  bar=(); [ $n = 1 ] && bar=(--fd-bar 13.14); [ $n = 2 ] && bar=(--fd-bar 11.82)
  m "TwinFlow, its MNIST preset, $n NFE" --nfe $n "${bar[@]}" $R/twinflow_long_mnist.json $R/twinflow_long_seed?_mnist.json
  m "TwinFlow without the rectification (RCGM alone), $n NFE" --nfe $n "${bar[@]}" $R/twinflow_long_norect*_mnist.json
done
m "Phased DMD 4-step, its MNIST preset" --nfe 4 --fd-bar 8.76 $R/phased_cfg115*_mnist.json
m "Phased DMD 4-step, the GAN on the cleaner 40% of levels" --nfe 4 --fd-bar 8.76 $R/phased_gan40_seed*_mnist.json
m "Phased DMD 4-step, one rank-8 LoRA expert per phase" --nfe 4 --fd-bar 8.76 $R/phased_lora_r8_seed*_mnist.json
m "DMD2 4-step, real-score CFG 1.15, the GAN on the cleaner 40% of levels" --nfe 4 --fd-bar 8.76 \
  $R/dmd2_nfe4_cfg115_gan40_mnist.json $R/dmd2_nfe4_cfg115_gan40_seed?_mnist.json
m "DMD2 4-step as one rank-8 LoRA (600 it)" --nfe 4 --fd-bar 8.76 $R/dmd2_nfe4_lora_r8_seed?_mnist.json
