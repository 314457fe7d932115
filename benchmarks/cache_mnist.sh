#!/usr/bin/env bash
# Feature caching on the shipped MNIST teacher, Euler on the Karras grid, 1,000 samples x 3 seeds, every row
# timed, with parameters and MACs per image from torch's FLOP counter:
# - cache_mnist.json: 16 NFE without a cache, with DeepCache (a full network call every 2nd call) and with
#   Faster Diffusion's encoder propagation (a key call every 2nd);
# - cache32_mnist.json: the same three at 32 NFE;
# - disca_mnist.json: DisCa (the DeepCache schedule with a learned predictor of the reused features; trained
#   1,000 iterations on 256 teacher trajectories at 16 and at 32 NFE, ~12 min on 2 CPU threads) at 16 and
#   32 NFE, beside both files' rows; disca_x0_mnist.json: the same with the loss on the denoised sample;
# - cache_student_mnist.json: the composition, DMD2's 4-step student (benchmarks/dmd2_runs.sh) with
#   DeepCache, and with a DisCa predictor trained on the student's own 4-step trajectories.
# - cache3_mnist.json, cache4_mnist.json, disca4_mnist.json: DeepCache every 3rd and 4th call, DisCa every 4th.
# Each command resumes; the whole script takes ~1.5 h on 2 CPU threads.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
$F bench --model mnist --name cache_mnist --samplers euler --nfe 16 --seeds 3 --seeds-max-nfe 16 \
  --cache none --cache deepcache:2 --cache faster:2 --threads 2
$F bench --model mnist --name cache32_mnist --samplers euler --nfe 32 --seeds 3 --seeds-max-nfe 32 \
  --cache none --cache deepcache:2 --cache faster:2 --threads 2
$F distill --teacher mnist --method disca --out runs/cache/disca --threads 2 --eval-every 500 --ckpt-every 100 \
  --resume --no-progress
$F bench --model runs/cache/disca --name disca_mnist \
  --baseline benchmarks/results/cache_mnist.json,benchmarks/results/cache32_mnist.json --threads 2
# the same predictor trained on the error in the denoised sample (out_space=x0: the raw output error times
# c_out^2, so noisy calls weigh more); disca_x0_mnist.json, beside disca_mnist.json's rows
$F distill --teacher mnist --method disca --out runs/cache/disca_x0 --set out_space=x0 --threads 2 --eval-every 500 \
  --ckpt-every 100 --resume --no-progress
$F bench --model runs/cache/disca_x0 --name disca_x0_mnist --baseline benchmarks/results/disca_mnist.json --threads 2
S=runs/bench/dmd2_nfe4  # DMD2's 4-step student, trained by benchmarks/dmd2_runs.sh
$F distill --teacher $S --method disca --out runs/cache/dmd2_disca --threads 2 --eval-every 300 --ckpt-every 100 \
  --resume --no-progress --max-iters 600 --set nfe=4 --set 'more_nfe=[]' --set sampler=multistep \
  --set "sigmas=$(.venv/bin/python -c "import json; print(json.load(open('$S/model/config.json'))['sampling']['sigmas'])")"
$F bench --model $S --name cache_student_mnist --cache none --cache deepcache:2 --cache disca:runs/cache/dmd2_disca \
  --threads 2
# a full call every 4th instead of every 2nd (more reuse, more room for a learned predictor): DeepCache's rows
# (cache4_mnist.json) and DisCa trained for that interval (disca4_mnist.json), beside the uncached teacher's rows
$F bench --model mnist --name cache4_mnist --samplers euler --nfe 16,32 --seeds 3 --seeds-max-nfe 32 \
  --cache deepcache:4 --threads 2
$F bench --model mnist --name cache3_mnist --samplers euler --nfe 16,32 --seeds 3 --seeds-max-nfe 32 \
  --cache none --cache deepcache:3 --threads 2  # every 3rd, timed beside the uncached rows of the same run
$F distill --teacher mnist --method disca --out runs/cache/disca4 --set interval=4 --threads 2 --eval-every 500 \
  --ckpt-every 100 --resume --no-progress
$F bench --model runs/cache/disca4 --name disca4_mnist \
  --baseline benchmarks/results/cache_mnist.json,benchmarks/results/cache32_mnist.json,benchmarks/results/cache4_mnist.json \
  --threads 2
.venv/bin/python benchmarks/make_tables.py
