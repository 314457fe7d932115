"""DMD2 training step on an SD1.5-sized UNet (random weights) on one GPU in bf16 autocast with fp32
master weights: step time, peak memory and model FLOP utilisation (MFU), into
benchmarks/results/gpu_dmd2_sd15.json. A few minutes on one H100/H200; CI never needs a GPU
(`--tiny --device cpu` runs the same code on a tiny UNet as a smoke test).

    python benchmarks/gpu_dmd2_sd15.py                      # SD1.5 UNet, batch 4 at 512 px (64x64 latents)
    python benchmarks/gpu_dmd2_sd15.py --tiny --device cpu  # smoke test

Two kinds of iteration are timed separately, because DMD2 updates the generator only every
`gen_every` iterations (10 for SD1.5 in the official code): a critic-only iteration (fake score +
GAN head) and a generator iteration (generator, then critic). FLOPs are counted with
torch.utils.flop_counter on one iteration of each kind.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time
from pathlib import Path

import torch

SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
TINY_UNET = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
                 cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
                 down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))


def build(args, device):
    from diffusers import UNet2DConditionModel

    from fewstep.methods.base import LoRAConfig, OptimConfig
    from fewstep.methods.distribution_matching.dmd2 import DMD2, DMD2Config
    from fewstep.nets.adapters.diffusers import DiffusersUNet
    from fewstep.noise import VPDiscrete
    from fewstep.noise.precond import Denoiser
    from fewstep.train.device import move_method

    torch.manual_seed(0)
    cfg = TINY_UNET if args.tiny else SD15_UNET
    unet = UNet2DConditionModel(**cfg)
    teacher = Denoiser(DiffusersUNet(unet), VPDiscrete("scaled_linear", 1000, 0.00085, 0.012), "eps")
    lat = args.resolution // 8
    # DMD2 SD1.5: AdamW LR 5e-7 for both networks (docs/methods.md)
    optim = OptimConfig(lr=5e-7, weight_decay=0.01, grad_clip=10.0)
    method = DMD2(teacher, DMD2Config(optim=optim, critic_optim=optim, gen_every=args.gen_every, real_cfg=args.real_cfg,
                                      lora=LoRAConfig(rank=args.lora_rank)), shape=(4, lat, lat), num_classes=0)
    move_method(method, device)
    from fewstep.nets import Cond

    d = cfg["cross_attention_dim"]
    g = torch.Generator().manual_seed(1)
    batch = {"x": torch.randn(args.batch, 4, lat, lat, generator=g).to(device),
             "cond": Cond(text=torch.randn(args.batch, 77, d, generator=g).to(device),
                          null_text=torch.randn(1, 77, d, generator=g).to(device))}
    params = sum(p.numel() for p in unet.parameters())
    return method, batch, params


def timed(fn, device, n):
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync()
    return (time.perf_counter() - t0) / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny UNet (smoke test)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--steps", type=int, default=6, help="timed iterations of each kind")
    ap.add_argument("--gen-every", type=int, default=10)
    ap.add_argument("--real-cfg", type=float, default=1.75, help="CFG on the real score (DMD2 SD1.5: 1.75)")
    ap.add_argument("--lora-rank", type=int, default=0, help="LoRA generator instead of a full one")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU (H100/H200 SXM: 989)")
    ap.add_argument("--out", default="benchmarks/results/gpu_dmd2_sd15.json")
    args = ap.parse_args()
    if args.tiny:
        args.resolution = min(args.resolution, 64)

    from torch.utils.flop_counter import FlopCounterMode

    from fewstep.train.guards import StepContext

    device = torch.device(args.device)
    method, batch, params = build(args, device)
    ctx = StepContext(method.optimizers(), torch.Generator().manual_seed(0), 0.0, 0, True, device,
                      torch.Generator().manual_seed(0))
    it = {"gen": 0, "critic": 1}  # it % gen_every == 0 -> generator iteration

    def run(kind):
        ctx.begin(it[kind])
        method.step(batch, it[kind], ctx)

    for kind in ("gen", "critic"):
        run(kind)  # warm-up (allocations, autotuning)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step_s = {k: timed(lambda k=k: run(k), device, args.steps) for k in ("gen", "critic")}
    peak_mem = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else None
    flops = {}
    for kind in ("gen", "critic"):
        with FlopCounterMode(display=False) as fc:
            run(kind)
        flops[kind] = fc.get_total_flops()
    k = args.gen_every
    mean_s = (step_s["gen"] + (k - 1) * step_s["critic"]) / k
    mean_flops = (flops["gen"] + (k - 1) * flops["critic"]) / k
    peak = args.peak_tflops * 1e12
    from fewstep.metrics.benchmark import machine, provenance
    from fewstep.report import table_for

    out = Path(args.out)
    tflops = lambda f, s: f / s / 1e12
    mfu = lambda f, s: (f / s / peak) if device.type == "cuda" else None
    rows = [{"kind": "generator iteration", "step_s": step_s["gen"], "tflops_per_s": tflops(flops["gen"], step_s["gen"]),
             "mfu": mfu(flops["gen"], step_s["gen"]), "images_per_s": args.batch / step_s["gen"]},
            {"kind": "critic iteration", "step_s": step_s["critic"], "tflops_per_s": tflops(flops["critic"], step_s["critic"]),
             "mfu": mfu(flops["critic"], step_s["critic"]), "images_per_s": args.batch / step_s["critic"]},
            {"kind": f"mean of {k} (1 generator + {k - 1} critic)", "step_s": mean_s, "tflops_per_s": tflops(mean_flops, mean_s),
             "mfu": mfu(mean_flops, mean_s), "images_per_s": args.batch / mean_s}]
    command = "python benchmarks/gpu_dmd2_sd15.py " + " ".join(
        f"--{a.replace('_', '-')} {v}" if not isinstance(v, bool) else (f"--{a}" if v else "")
        for a, v in vars(args).items() if a != "out").replace("  ", " ").strip()
    rows = [dict(r, method="dmd2", command=command) for r in rows]
    res = {
        "benchmark": "gpu_dmd2_sd15" + ("_tiny" if args.tiny else ""),
        "command": command,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine() if device.type == "cuda" else f"{platform.node()} (cpu)", **provenance(out),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "unet_params": params, "batch": args.batch, "resolution": args.resolution,
        "dtype": "bf16 autocast, fp32 weights", "gen_every": k, "real_cfg": args.real_cfg, "lora_rank": args.lora_rank,
        "peak_tflops": args.peak_tflops, "step_s": step_s, "mean_iteration_s": mean_s, "images_per_s": args.batch / mean_s,
        "flops": flops, "tflops_per_s": mean_flops / mean_s / 1e12, "mfu": mfu(mean_flops, mean_s),
        "peak_memory_gib": peak_mem, "rows": rows, "complete": True,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    out.with_suffix(".md").write_text(table_for(res))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
