# Sourced by the 1-step distribution-matching scripts (needs $F). dm_1step OUT ARGS... trains the 1-step DMD2 MNIST
# recipe as first measured (real-score CFG 1.25, the GAN on the cleaner 40% of levels, student EMA 0.99 per student
# update, 1,200 it; the dmd2 preset is now CFG 1.15) with ARGS added: --method, and --set overrides (a later --set
# wins). Resumes if interrupted; skipped once OUT holds a model.
dm_1step() { local out=$1; shift; [ -f "$out/model/config.json" ] || $F distill --teacher mnist --nfe 1 \
        --set real_cfg=1.25 --set gan_index_max=0.4 --max-iters 1200 --ema-decay 0.99 --eval-every 200 "$@" \
        --out "$out" --threads 2 --ckpt-every 100 --resume --no-progress; }
