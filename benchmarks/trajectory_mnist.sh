#!/usr/bin/env bash
# Trajectory and consistency family from the shipped MNIST teacher (benchmarks/results/trajectory_mnist.json):
# progressive distillation 16 -> 8 -> 4 -> 2 -> 1 steps, consistency distillation (CD), LCM-style
# consistency distillation with a guidance-scale embedding, reflow (2-rectified flow) and its one-step
# InstaFlow distillation, and guidance distillation. Each distill command resumes where it stopped.
# Usage: benchmarks/trajectory_mnist.sh [train|bench|all] (default all); THREADS=N (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/fewstep
T=${THREADS:-2}
R=runs/trajectory
what=${1:-all}
d() { $F distill --teacher "$1" --method "$2" --nfe "$3" --out "$4" --threads "$T" --resume --no-progress "${@:5}"; }

if [[ $what == train || $what == all ]]; then
  d mnist reflow 1 $R/reflow                       # 1,000 it on 4,000 teacher couplings (DPM-Solver++ 16)
  d $R/reflow instaflow 1 $R/instaflow             # 600 it on 4,000 couplings of the reflowed model (Euler 16)
  d mnist guidance_distill 8 $R/guidance_distill   # 500 it, w ~ U[1, 2], evaluated at CFG 1.25
  prev=mnist
  for n in 16 8 4 2 1; do                          # 200 it per halving stage, LR annealed to 0 per stage
    d $prev progressive $n $R/progressive_$n
    prev=$R/progressive_$n
  done
  prev=$R/guidance_distill                        # Meng et al. stage 2: progressive on the w-student
  for n in 8 4; do
    d $prev progressive $n $R/guided_progressive_$n --set 'guidance=[1,2]' --set eval_cfg=1.25
    prev=$R/guided_progressive_$n
  done
  d mnist cd 2 $R/cd                               # 600 it, Heun teacher solver on 40 Karras levels
  d mnist lcm 2 $R/lcm                            # 600 it, DDIM skip solver on 50 levels, w ~ U[1, 2]
fi

if [[ $what == bench || $what == all ]]; then
  # Teacher rows on the grids the students use (nested: progressive; flow: reflow), then every student,
  # compared with the teacher's best row over every sampler and grid (teacher_mnist_flow.json: DPM-Solver++
  # on the flow grid).
  $F bench --model mnist --name trajectory_mnist_nested --samplers euler --nfe 1,2,4,8,16 --grid nested \
    --baseline benchmarks/results/teacher_mnist.json --threads "$T"
  $F bench --model mnist --name trajectory_mnist_flow --samplers euler --nfe 1,2,4,8 --grid flow \
    --baseline benchmarks/results/trajectory_mnist_nested.json --threads "$T"
  students=$(ls -d $R/progressive_{16,8,4,2,1} $R/cd $R/lcm $R/reflow $R/instaflow $R/guidance_distill | paste -sd,)
  base=benchmarks/results/trajectory_mnist_flow.json,benchmarks/results/teacher_mnist_flow.json
  $F bench --model "$students" --name trajectory_mnist --baseline "$base" --threads "$T"
  $F bench --model $R/guided_progressive_8,$R/guided_progressive_4 --name trajectory_mnist_guided --baseline "$base" --threads "$T"
  .venv/bin/python benchmarks/make_tables.py
fi
