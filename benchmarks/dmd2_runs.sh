# The DMD2 students both dmd2_mnist.sh and dmd_family_mnist.sh measure (sourced by them; each run resumes).
# 1 step: the MNIST recipe as first measured (real-score CFG 1.25 where the preset is now 1.15, dmd2_seeds_mnist.sh;
# the GAN on the cleaner 40% of levels, student EMA 0.99 per student update, 1,200 it = 240 student updates).
# 4 steps, 600 it each, the GAN on the cleanest 10% of
# levels, with real-score CFG 1.25 and without it (with CFG, or with the GAN on 40% of levels, the 4-step
# student lost quality as it trained; docs/notes.md). On 2 CPU threads (fp32) an iteration takes ~2-2.5 s.
$F distill --teacher mnist --method dmd2 --nfe 1 --out $R/dmd2_A --set real_cfg=1.25 --set gan_index_max=0.4 \
  --max-iters 1200 --ema-decay 0.99 --threads 2 --eval-every 200 --ckpt-every 100 --resume
$F distill --teacher mnist --method dmd2 --nfe 4 --out $R/dmd2_nfe4 --set real_cfg=1.25 --set gan_index_max=0.1 \
  --max-iters 600 --ema-decay 0.99 --threads 2 --eval-every 200 --ckpt-every 100 --resume
$F distill --teacher mnist --method dmd2 --nfe 4 --out $R/dmd2_nfe4_nocfg --set real_cfg=1.0 --set gan_index_max=0.1 \
  --max-iters 600 --ema-decay 0.99 --threads 2 --eval-every 100 --ckpt-every 100 --resume
