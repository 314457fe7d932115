#!/usr/bin/env bash
# DMD2's two levers for 28x28 images (real-score CFG 1.15, the generator's GAN weight 3e-2; they took the 1-step
# DMD2, Decoupled DMD and DisBack students to 8.4-9.2, dmd2_gan_weight_mnist.sh, dmd_variants_levers_mnist.sh) on the
# multi-step members of the family, each otherwise with the 4-step flags it was first measured with (the GAN on the
# cleanest 10% of levels, EMA 0.99 per student update, 600 it = 120 student updates):
# - dmd2 at 4 steps (13.56 +- 0.69 with CFG 1.25, dmd_family_mnist.json)  -> dmd2_nfe4_levers_mnist.json
# - sc_dmd, one model for 4 / 2 / 1 steps (13.11 at 1 step, sc_dmd_mnist.json) -> sc_dmd_levers_mnist.json
# - asd, one model for 1 / 2 / 4 steps (14.40 at 1 step, dmd_variants_mnist.json) -> asd_levers_mnist.json
# Then the levers apart: real-score CFG 1.15 alone (GAN weight 3e-3) on dmd2 and sc_dmd -> *_cfg115_mnist.json.
# Every run resumes if interrupted and is skipped once its model exists, every benchmark once its results exist;
# ~1-2 s/it with bf16 autocast on 2 CPU threads (2-5 s/it where training falls back to fp32); each benchmark ~2-5 min.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
R=${R:-runs/levers4}
source benchmarks/dm_4step.sh
d() { dm_4step "$1" --set gan_gen_weight=3e-2 "${@:2}"; }
b() { dm_bench "$@"; }
d $R/dmd2_nfe4 --method dmd2
b $R/dmd2_nfe4 dmd2_nfe4_levers_mnist
d $R/sc_dmd --method sc_dmd
b $R/sc_dmd sc_dmd_levers_mnist
d $R/asd --method asd
b $R/asd asd_levers_mnist
d $R/dmd2_nfe4_cfg115 --method dmd2 --set gan_gen_weight=3e-3
b $R/dmd2_nfe4_cfg115 dmd2_nfe4_cfg115_mnist
d $R/sc_dmd_cfg115 --method sc_dmd --set gan_gen_weight=3e-3
b $R/sc_dmd_cfg115 sc_dmd_cfg115_mnist
.venv/bin/python benchmarks/make_tables.py
