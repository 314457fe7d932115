#!/usr/bin/env bash
# Training-free feature caching on the shipped MNIST teacher (benchmarks/results/cache_mnist.json): Euler at
# 16 NFE without a cache, with DeepCache (a full network call every 2nd call) and with Faster Diffusion's
# encoder propagation (a key call every 2nd), 1,000 samples x 3 seeds, every row timed, with parameters and
# MACs per image from torch's FLOP counter.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/fewstep bench --model mnist --name cache_mnist --samplers euler --nfe 16 --seeds 3 --seeds-max-nfe 16 \
  --cache none --cache deepcache:2 --cache faster:2 --threads 2
.venv/bin/python benchmarks/make_tables.py
