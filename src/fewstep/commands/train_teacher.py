"""``fewstep train-teacher``: a diffusion teacher from a preset (methods/teacher.py) and the data."""
from __future__ import annotations

import json
from dataclasses import asdict, replace

import torch

from ..errors import FewstepError
from ..io import hold_folder
from .common import command_line, maybe_evaluator, need_out


def run(a):
    from ..data import load_dataset
    from ..methods.teacher import TEACHER_PRESETS, DenoisingTeacher, teacher_preset, unet_for
    from ..model_io import build_denoiser
    from ..samplers.generate import SamplingSpec
    from ..train.loop import TrainConfig, Trainer

    out = need_out(a)
    preset = a.preset or (a.data or "mnist").split(":")[0]
    if preset not in TEACHER_PRESETS:
        raise FewstepError(f"no teacher preset for data {a.data!r}; pass --preset ({', '.join(sorted(TEACHER_PRESETS))})")
    cfg = teacher_preset(preset)
    if a.data:
        cfg.data = a.data
    for name in ("max_iters", "batch_size", "ckpt_every", "eval_every", "bf16"):
        if getattr(a, name) is not None:
            cfg.train = replace(cfg.train, **{name: getattr(a, name)})
    if a.lr is not None:
        cfg.method = replace(cfg.method, optim=replace(cfg.method.optim, lr=a.lr))
    cfg.resolution = a.resolution or cfg.resolution
    cfg.channels = a.channels or cfg.channels
    with hold_folder(out):
        train = load_dataset(cfg.data, "train", cfg.resolution, cfg.channels)
        test = load_dataset(cfg.data, "test", cfg.resolution, cfg.channels)
        arch = unet_for(train.shape) if cfg.sized_from_data else dict(cfg.arch)
        if arch.get("arch") == "unet":
            arch.update(in_channels=train.shape[0], image_size=train.shape[-1], num_classes=train.num_classes)
        torch.manual_seed(a.seed)  # the initial weights are part of the run: same seed, same run
        den = build_denoiser({"arch": arch, "process": cfg.process, "param": cfg.param})
        method = DenoisingTeacher(den, cfg.method)
        ts = cfg.train
        evaluator = maybe_evaluator(cfg.data, test, SamplingSpec("dpmpp2m", 10, "karras"), ts.eval_n, a.seed)
        tcfg = TrainConfig(out=str(out), max_iters=ts.max_iters, batch_size=ts.batch_size, seed=a.seed,
                           ckpt_every=ts.ckpt_every, keep=a.keep, eval_every=ts.eval_every, ema_decay=ts.ema_decay,
                           grad_clip=cfg.method.optim.grad_clip, warmup=ts.warmup, bf16=ts.bf16,
                           progress=not a.no_progress, threads=a.threads, deterministic=a.deterministic,
                           device=a.device, fsdp=a.fsdp)
        run_cfg = {"command": command_line(), "preset": preset, "teacher": cfg.to_dict()}
        extra = {"data": {"name": cfg.data, "shape": list(train.shape), "num_classes": train.num_classes},
                 "sampling": asdict(method.default_sampling())}
        res = Trainer(method, train, tcfg, run_cfg, evaluator, extra).train(resume=a.resume)
    print(json.dumps({"model": str(out / "model"), **{k: v for k, v in res.items() if isinstance(v, (int, float))}}))
