#!/usr/bin/env bash
# The multi-step DMD students at real-score CFG 1.15 with the generator's GAN weight left at 3e-3 (the lever that took
# the 4-step DMD2 from 13.56 to 11.21, dmd2_nfe4_cfg115_mnist.json), each otherwise with the 4-step flags it was first
# measured with (the GAN on the cleanest 10% of levels, EMA 0.99 per student update, 600 it = 120 student updates):
# - phased_dmd, one expert per step (10.74 +- 0.48 at CFG 1.25 on the same kind of machine, dmd2_levers_mnist.json)
#   -> phased_cfg115_mnist.json
# - dmd2 at 4 steps with the GAN on the cleaner 40% of levels (the 1-step recipe's range, where the head stays balanced;
#   at the cleanest 10% it wins from ~300 it) -> dmd2_nfe4_cfg115_gan40_mnist.json
# - the same with the generator's GAN weight at 1e-2 (the head being balanced, a stronger adversarial term can follow it)
#   -> dmd2_nfe4_cfg115_gan40_g1e2_mnist.json
# - the same as the 40% run for 1,200 it (240 student updates; at 600 it the in-training FD was still falling)
#   -> dmd2_nfe4_cfg115_gan40_1200_mnist.json
# - the GAN on the cleaner 70% of levels (the wider range did better than 10%) -> dmd2_nfe4_cfg115_gan70_mnist.json
# - the 40% head with the generator's GAN weight at 1e-3 (1e-2 made the student worse as it trained while the head stayed
#   balanced) -> dmd2_nfe4_cfg115_gan40_g1e3_mnist.json
# - the 40% run (600 it) on training seeds 1 and 2 (at 1,200 it it read worse than at 600: is 600 a lucky point?)
#   -> dmd2_nfe4_cfg115_gan40_seed1_mnist.json, dmd2_nfe4_cfg115_gan40_seed2_mnist.json
# - the 40% run with the student's learning rate at 1e-4 (3e-4; the critic keeps 3e-4): across seeds the 600-it run
#   swings (9.03 / 17.52 / 15.85 on seeds 0 / 1 / 2) and its in-training evals rise and fall
#   -> dmd2_nfe4_cfg115_gan40_lr1e4_seed0_mnist.json
# - phased_dmd as the first run, training seeds 1 and 2 (the first run's 9.59 met the variant bar on one seed)
#   -> phased_cfg115_seed1_mnist.json, phased_cfg115_seed2_mnist.json
# - sc_dmd and asd (one model for 4 / 2 / 1 steps each) with the GAN on the cleaner 40% of levels
#   (12.41 and 14.40 at their best before, sc_dmd_cfg115_mnist.json, dmd_variants_mnist.json)
#   -> sc_dmd_cfg115_gan40_mnist.json, asd_cfg115_gan40_mnist.json
# Every run resumes if interrupted; a run whose results exist is skipped, and a benchmark whose model exists is not retrained;
# ~1 s/it with bf16 autocast on 2 CPU threads; each benchmark ~2-4 min.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
R=${R:-runs/cfg115_4step}
source benchmarks/dm_4step.sh
# r NAME DIR FLAGS...: train DIR and benchmark it as NAME, unless NAME's results already exist
r() { local name=$1 out=$2; shift 2; [ -f "benchmarks/results/$name.json" ] && return 0
      dm_4step "$out" --set gan_gen_weight=3e-3 "$@"; dm_bench "$out" "$name"; }
r phased_cfg115_mnist $R/phased --method phased_dmd --eval-every 150 --ckpt-every 75
r dmd2_nfe4_cfg115_gan40_mnist $R/dmd2_gan40 --method dmd2 --set gan_index_max=0.4
r dmd2_nfe4_cfg115_gan40_g1e2_mnist $R/dmd2_gan40_g1e2 --method dmd2 --set gan_index_max=0.4 --set gan_gen_weight=1e-2
r dmd2_nfe4_cfg115_gan40_1200_mnist $R/dmd2_gan40_1200 --method dmd2 --set gan_index_max=0.4 --max-iters 1200 --eval-every 300
r dmd2_nfe4_cfg115_gan70_mnist $R/dmd2_gan70 --method dmd2 --set gan_index_max=0.7
r dmd2_nfe4_cfg115_gan40_g1e3_mnist $R/dmd2_gan40_g1e3 --method dmd2 --set gan_index_max=0.4 --set gan_gen_weight=1e-3
for s in 1 2; do
  r dmd2_nfe4_cfg115_gan40_seed${s}_mnist $R/dmd2_gan40_seed$s --method dmd2 --set gan_index_max=0.4 --seed $s
done
r dmd2_nfe4_cfg115_gan40_lr1e4_seed0_mnist $R/dmd2_gan40_lr1e4_seed0 --method dmd2 --set gan_index_max=0.4 --set optim.lr=1e-4
for s in 1 2; do
  r phased_cfg115_seed${s}_mnist $R/phased_seed$s --method phased_dmd --seed $s --eval-every 150 --ckpt-every 75
done
r sc_dmd_cfg115_gan40_mnist $R/sc_dmd_gan40 --method sc_dmd --set gan_index_max=0.4
r asd_cfg115_gan40_mnist $R/asd_gan40 --method asd --set gan_index_max=0.4
.venv/bin/python benchmarks/make_tables.py
