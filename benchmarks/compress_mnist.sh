#!/usr/bin/env bash
# Smaller networks on the shipped MNIST teacher (benchmarks/results/compress_mnist.json): BK-SDM-Small
# (blocks removed, 0.55x parameters), LAPTOP-Diff (layers pruned one-shot to <= 0.6x) and LinFusion
# (linear attention), each trained 1,500 / 1,500 / 400 iterations at batch 64 with output + feature KD,
# then benchmarked at the teacher's sampler and NFE (Euler, 16 NFE, Karras grid, 1,000 samples x 3 seeds),
# with and without DeepCache (a composition: a cached compressed student). The teacher's rows (plain,
# DeepCache, Faster Diffusion) come from cache_mnist.json, measured by the same protocol.
# KOALA (koala_mnist.json) is benchmarked the same way beside those rows.
# On 2 CPU threads (fp32) each training takes ~15-25 min and the bench ~20 min. Each run resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
R=runs/compress
d() { $F distill --teacher mnist --threads 2 --eval-every 500 --ckpt-every 100 --resume --no-progress "$@"; }
d --method bk_sdm --out $R/bk_sdm_small --set variant=small
d --method laptop --out $R/laptop
d --method linfusion --out $R/linfusion --max-iters 400
$F bench --model $R/bk_sdm_small,$R/laptop,$R/linfusion --name compress_mnist --cache none --cache deepcache:2 \
  --baseline benchmarks/results/cache_mnist.json --threads 2
.venv/bin/python benchmarks/laptop_selection.py --threads 2
# KOALA (deep stages cut, 0.58x parameters, self-attention KD), beside the rows above
d --method koala --out $R/koala
$F bench --model $R/koala --name koala_mnist --cache none --baseline benchmarks/results/compress_mnist.json --threads 2
.venv/bin/python benchmarks/make_tables.py
