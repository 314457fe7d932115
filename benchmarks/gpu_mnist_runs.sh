#!/usr/bin/env bash
# MNIST distillations on one GPU, many at once: each student is small, so one process leaves most of an
# H100/H200 idle, and eight side by side cost little more wall time than one. These are the runs of
# flow_family_mnist.sh (same recipes; bf16 autocast on the GPU, as the presets ask, where a CPU without native
# bf16 falls back to fp32) and DMD2 / Phased DMD trained 2.5-5x longer than dmd_family_mnist.sh affords on a CPU.
# The benchmarks then measure the run folders on any machine (`fewstep bench --model R/NAME,...`).
#
#   benchmarks/gpu_mnist_runs.sh [OUT=runs/gpu] [DEADLINE_S=0]
#
# DEADLINE_S > 0 bounds the wall time: a run still going then is stopped and finished at its newest
# checkpoint (`--resume --max-iters <that iteration>`, so its model folder and its recorded command say how far
# it went). Runs whose schedule depends on --max-iters (phased_dmd's phases, hyper_sd's chain) are given fixed
# counts and are left out of the model list (`models.txt`) when they do not finish.
# Environment: F (the fewstep command, default .venv/bin/fewstep), DEVICE (default cuda).
set -uo pipefail
cd "$(dirname "$0")/.."
F=${F:-.venv/bin/fewstep}
DEVICE=${DEVICE:-cuda}
R=${1:-runs/gpu}
DEADLINE=${2:-0}
START=$(date +%s)
mkdir -p "$R"
: > "$R/models.txt"

left() { [ "$DEADLINE" -gt 0 ] && echo $((DEADLINE - ($(date +%s) - START))) || echo 86400; }

last_ckpt() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['iteration'])" "$R/$1/latest/trainer_state.json" 2>/dev/null; }

# train NAME FIXED ARGS...: one distillation into R/NAME (its log in R/NAME.log). FIXED=1: its schedule
# depends on --max-iters, so a run cut by the deadline is not finished early and not listed.
train() {
  local name=$1 fixed=$2 t rc it
  shift 2
  t=$(left)
  if [ "$t" -le 10 ]; then echo "$name: no time left, not started" >> "$R/summary.txt"; return 1; fi
  timeout --signal=TERM --kill-after=20 "$t" $F distill "$@" --out "$R/$name" --device "$DEVICE" --threads 1 \
    --no-progress --resume > "$R/$name.log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then echo "$name: done" >> "$R/summary.txt"; echo "$R/$name" >> "$R/models.txt"; return 0; fi
  it=$(last_ckpt "$name")
  if [ $rc -ne 124 ] && [ $rc -ne 137 ]; then echo "$name: failed (exit $rc)" >> "$R/summary.txt"; return 1; fi
  if [ "$fixed" = 1 ] || [ -z "$it" ]; then echo "$name: cut at the deadline (checkpoint ${it:-none}); not listed" >> "$R/summary.txt"; return 1; fi
  # finish at the newest checkpoint: writes the model folder and runs the final evaluation
  if $F distill "$@" --out "$R/$name" --device "$DEVICE" --threads 1 --no-progress --resume --max-iters "$it" \
       >> "$R/$name.log" 2>&1; then
    echo "$name: stopped at the deadline, finished at iteration $it" >> "$R/summary.txt"; echo "$R/$name" >> "$R/models.txt"
  else
    echo "$name: finishing at $it failed" >> "$R/summary.txt"; return 1
  fi
}

T="--teacher mnist"
# Segmented consistency and one-model flows (flow_family_mnist.sh): Hyper-SD 8 -> 4 -> 2 -> 1, one chain
(
  prev=mnist
  for M in 8 4 2 1; do
    train hyper_sd$M 1 --teacher $prev --method hyper_sd --nfe $M --max-iters 600 --eval-every 300 --ckpt-every 100 || exit
    prev=$R/hyper_sd$M
  done
) &
train lcm 0 $T --method lcm --nfe 2 --ckpt-every 100 &
train twinflow 0 $T --method twinflow --nfe 1 --set enhance=0.25 --set rectify=0.5 --set optim.lr=1e-4 --max-iters 600 --eval-every 200 --ckpt-every 100 &
train arcflow 0 $T --method arcflow --nfe 2 --max-iters 600 --eval-every 200 --ckpt-every 100 &
# The distribution-matching family (dmd_family_mnist.sh), and DMD2 trained 2.5-5x longer than on a CPU
train dmd2_A_long 0 $T --method dmd2 --nfe 1 --set real_cfg=1.25 --set gan_index_max=0.4 --max-iters 6000 \
  --ema-decay 0.99 --eval-every 1000 --ckpt-every 200 &
train dmd2_nfe4_long 0 $T --method dmd2 --nfe 4 --set real_cfg=1.25 --set gan_index_max=0.1 --max-iters 3000 \
  --ema-decay 0.99 --eval-every 500 --ckpt-every 100 &
train dmd2_nfe4_nocfg_long 0 $T --method dmd2 --nfe 4 --set real_cfg=1.0 --set gan_index_max=0.1 --max-iters 3000 \
  --ema-decay 0.99 --eval-every 500 --ckpt-every 100 &
train phased_nfe4_long 1 $T --method phased_dmd --nfe 4 --set real_cfg=1.25 --set gan_index_max=0.1 --max-iters 1800 \
  --ema-decay 0.99 --eval-every 450 --ckpt-every 150 &
wait
echo "wall $(( $(date +%s) - START )) s" >> "$R/summary.txt"
cat "$R/summary.txt"
