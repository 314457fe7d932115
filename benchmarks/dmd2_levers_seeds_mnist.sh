#!/usr/bin/env bash
# DMD2's 1-NFE bar asks for FD <= the teacher's best row (8.76) with class accuracy >= 0.97 at once. DMD2's two 1-step
# levers are real-score CFG 1.15 and generator GAN weight 3e-2 (docs/notes.md). This trains that recipe at real-score
# CFG $CFG on more training seeds, each run benchmarked in fp32 (1,000 samples x 3 sampling seeds); read the runs
# together with benchmarks/seed_means.py.
# - CFG=1.15 (default), SEEDS "3 4" -> dmd2_levers_seed{3,4}_ref_mnist.json. Seeds 0-2 of this recipe are
#   dmd2_levers_seed{0,1,2}_ref_mnist.json (flash_reward_weight_mnist.sh, DMD2's arm there): 7.46 / 9.62 / 8.26 at
#   class accuracy 0.969 / 0.974 / 0.963, 0.001 short of the bar's accuracy in the mean, a gap far inside the
#   training-seed spread. Seeds 3 and 4 were trained in fp32 on a CPU without native bf16, seeds 0-2 with bf16 autocast.
# - CFG=1.2 SEEDS="0 1 2" -> dmd2_levers_cfg12_seed{0,1,2}_mnist.json: does the higher scale buy the missing accuracy
#   for less FD than the bar leaves?
# Each run resumes if interrupted and is skipped once its results exist; ~0.45 s/it with bf16 autocast on 2 CPU
# threads, ~1.7 s/it in fp32 (1,200 it); benchmarks ~3-4 min each.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
CFG=${CFG:-1.15}
source benchmarks/dm_1step.sh
for s in ${SEEDS:-3 4}; do
  if [ "$CFG" = 1.15 ]; then name=dmd2_levers_seed${s}_ref_mnist out=runs/dmd2_levers/seed$s
  else name=dmd2_levers_cfg${CFG/./}_seed${s}_mnist out=runs/dmd2_cfg${CFG/./}/seed$s; fi
  [ -f "benchmarks/results/$name.json" ] && continue
  dm_1step "$out" --method dmd2 --set real_cfg="$CFG" --set gan_gen_weight=3e-2 --seed "$s"
  $F bench --model "$out" --name "$name" --no-bf16 \
    --baseline benchmarks/results/teacher_mnist.json,benchmarks/results/teacher_mnist_flow.json --threads 2
done
.venv/bin/python benchmarks/make_tables.py
