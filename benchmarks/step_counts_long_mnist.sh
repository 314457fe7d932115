#!/usr/bin/env bash
# SC-DMD and ASD (one model for 4 / 2 / 1 steps each) trained as long as the 1-step DMD2 recipe: 1,200 it = 240
# student updates, otherwise the settings of their best runs so far (real-score CFG 1.15, generator GAN weight 3e-3,
# the GAN on the cleaner 40% of levels, EMA 0.99 per student update; at 600 it: SC-DMD 15.73 / 17.75 / 11.80 at
# 4 / 2 / 1 steps, ASD 28.45 / 18.41 / 12.37, sc_dmd_cfg115_gan40_mnist.json, asd_cfg115_gan40_mnist.json). Each model
# trains its 1-step count on only a share of its updates (SC-DMD 20%, ASD a third), so at 600 it its 1-step path has
# seen 24-40 updates where the 1-step DMD2 sees 240.
#   -> sc_dmd_cfg115_gan40_1200_mnist.json, asd_cfg115_gan40_1200_mnist.json
# Resumes if interrupted; a run whose results exist is skipped. ~1.3 (SC-DMD) / ~1.7 (ASD) s/it with bf16 autocast on
# 2 CPU threads; each benchmark ~4 min.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
R=${R:-runs/step_counts_long}
source benchmarks/dm_4step.sh
for m in sc_dmd asd; do
  name=${m}_cfg115_gan40_1200_mnist
  [ -f "benchmarks/results/$name.json" ] && continue
  dm_4step "$R/$m" --method "$m" --set gan_gen_weight=3e-3 --set gan_index_max=0.4 --max-iters 1200 --eval-every 300
  dm_bench "$R/$m" "$name"
done
