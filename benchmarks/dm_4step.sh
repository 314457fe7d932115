# Sourced by the multi-step distribution-matching scripts (needs $F). dm_4step OUT ARGS... trains a 4-step MNIST student
# with the 4-step flags at real-score CFG 1.15 (the GAN on the cleanest 10% of levels, student EMA 0.99 per student
# update, 600 it = 120 student updates, evals every 200 it, checkpoints every 100) with ARGS added: --method, and
# overrides (a later --set or flag wins). Resumes if interrupted; skipped once OUT holds a model.
# dm_bench MODEL NAME benchmarks MODEL in fp32 against the teacher's rows on both grids, unless NAME's results exist.
dm_4step() { local out=$1; shift; [ -f "$out/model/config.json" ] || $F distill --teacher mnist --nfe 4 --set real_cfg=1.15 \
        --set gan_index_max=0.1 --max-iters 600 --ema-decay 0.99 --eval-every 200 --ckpt-every 100 "$@" \
        --out "$out" --threads 2 --resume --no-progress; }
dm_bench() { [ -f "benchmarks/results/$2.json" ] || $F bench --model "$1" --name "$2" --no-bf16 \
        --baseline benchmarks/results/teacher_mnist.json,benchmarks/results/teacher_mnist_flow.json --threads 2; }
# dm_seeds PREFIX DIR ARGS... trains dm_4step DIR/seedS ARGS --seed S for each S in $SEEDS and benchmarks it as
# PREFIX_seedS_mnist, skipping a seed whose results exist.
dm_seeds() { local prefix=$1 dir=$2 s; shift 2; for s in $SEEDS; do
        [ -f "benchmarks/results/${prefix}_seed${s}_mnist.json" ] && continue
        dm_4step "$dir/seed$s" "$@" --seed "$s"; dm_bench "$dir/seed$s" "${prefix}_seed${s}_mnist"; done; }
