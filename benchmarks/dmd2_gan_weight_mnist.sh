#!/usr/bin/env bash
# The generator's GAN weight on the 1-step DMD2 MNIST recipe, scaled for the image size
# (benchmarks/results/dmd2_gan_weight_mnist.json). DMD2's 3e-3 (gen_cls_loss_weight) was tuned on ImageNet 64x64x3,
# and its DM loss is a mean over the image's elements (dm_loss): the DM gradient's norm falls as 1/sqrt(numel)
# while the GAN term's does not, so at the same weight the GAN pulls sqrt(12288 / 784) ~ 4x harder relative to DM
# on ImageNet than on 28x28 digits (16x per element). On training seed 0 at real-score CFG 1.15, 1e-2 read 9.14
# against 3e-3's 9.72 (dmd2_levers_mnist.json); this trains 3e-2 with training seeds 0, 1 and 2, to read against
# the three CFG-1.15 runs at 3e-3 (dmd2_levers_mnist.json, dmd2_seeds_mnist.json: 9.72 / 9.63 / 9.22). bf16
# autocast, as those runs were. Every run resumes if interrupted and is skipped once its model exists; 15-33 min
# per run on 2 CPU threads, depending on the CPU.
# Measured (1,000 samples x 3 sampling seeds, sampled in fp32): 8.78 +- 0.51 / 9.22 +- 0.67 / 8.36 +- 0.63 (mean 8.79
# against 9.52), class accuracy 0.972 / 0.964 / 0.966 (mean 0.967 against 0.971): lower FD on every seed, two of three
# runs under the 0.97 class accuracy the bar keeps, so the preset stays at 3e-3 (docs/notes.md). Then 3e-2 at real-score
# CFG 1.2, seed 0, to buy the accuracy back (dmd2_gan_weight_cfg12_mnist.json): 8.91 +- 1.49, class accuracy 0.969.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
R=${R:-runs/ganw}
source benchmarks/dm_1step.sh
dm_1step $R/cfg115_gen3e2 --method dmd2 --set real_cfg=1.15 --set gan_gen_weight=3e-2
for s in 1 2; do
  dm_1step $R/cfg115_gen3e2_s$s --method dmd2 --set real_cfg=1.15 --set gan_gen_weight=3e-2 --seed $s
done
$F bench --model $R/cfg115_gen3e2,$R/cfg115_gen3e2_s1,$R/cfg115_gen3e2_s2 --name dmd2_gan_weight_mnist --no-bf16 \
  --baseline benchmarks/results/teacher_mnist.json,benchmarks/results/teacher_mnist_flow.json --threads 2
dm_1step $R/cfg12_gen3e2 --method dmd2 --set real_cfg=1.2 --set gan_gen_weight=3e-2
$F bench --model $R/cfg12_gen3e2 --name dmd2_gan_weight_cfg12_mnist --no-bf16 \
  --baseline benchmarks/results/teacher_mnist.json,benchmarks/results/teacher_mnist_flow.json --threads 2
.venv/bin/python benchmarks/make_tables.py
