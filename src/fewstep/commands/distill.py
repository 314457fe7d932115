"""``fewstep distill``: a teacher in, a few-step student out (resumable, evaluated as it trains)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from ..config import DistillConfig, build_config, parse_sets
from ..errors import ArgError, FewstepError
from ..io import hold_folder, read_json
from .common import command_line, data_format, maybe_evaluator


@dataclass
class DistillRequest:
    """What a distillation run is asked to do (the CLI's flags; the demo builds one directly)."""

    teacher: str  # model folder, shipped teacher name, or diffusers:PATH
    method: str  # registry name
    out: str  # output folder (held for the run: see io.hold_folder)
    nfe: int | None = None  # the student's steps (None: the method's preset or default)
    data: str | None = None  # default: the teacher's dataset
    seed: int = 0
    threads: int = 0
    sets: list[str] = field(default_factory=list)  # --set FIELD=VALUE overrides of the method config
    lr: float | None = None  # one LR for every optimiser of the method
    lora_rank: int | None = None
    lora_alpha: float | None = None
    max_iters: int | None = None  # None: the preset's
    batch_size: int | None = None
    ckpt_every: int | None = None
    eval_every: int | None = None
    bf16: bool | None = None
    ema_decay: float | None = None
    lr_decay: str | None = None  # None: the preset's ("constant" unless it says)
    keep: int = 2
    resume: bool = False
    progress: bool = True
    deterministic: bool = False
    device: str = "cpu"
    fsdp: bool = False  # shard trained networks with FSDP2 (under torchrun, N >= 2 processes)
    resolution: int | None = None  # diffusers teachers' image resolution (None: the pipeline's own)


def request_from_args(a) -> DistillRequest:
    return DistillRequest(teacher=a.teacher, method=a.method, out=a.out, nfe=a.nfe, data=a.data, seed=a.seed,
                          threads=a.threads, sets=a.set or [], lr=a.lr, lora_rank=a.lora_rank,
                          lora_alpha=a.lora_alpha, max_iters=a.max_iters, batch_size=a.batch_size,
                          ckpt_every=a.ckpt_every, eval_every=a.eval_every, bf16=a.bf16, ema_decay=a.ema_decay,
                          lr_decay=a.lr_decay, keep=a.keep, resume=a.resume, progress=not a.no_progress, deterministic=a.deterministic,
                          device=a.device, fsdp=a.fsdp, resolution=a.resolution)


def method_overrides(cls, r: DistillRequest) -> dict:
    """The method-config layer from the request: ``--lr`` for every optimiser, ``--lora-*``, ``--set``."""
    over: dict = {} if r.nfe is None else {"nfe": r.nfe}
    if r.lr is not None:
        over.update({f: {"lr": r.lr} for f in cls.optim_fields()})
    if r.lora_rank:
        if not cls.supports_lora():
            from ..methods.registry import get_method, method_names

            lora = [m for m in method_names() if get_method(m).supports_lora()]
            raise FewstepError(f"method {cls.name} has no LoRA student (LoRA: {', '.join(lora)})")
        over["lora"] = {"rank": r.lora_rank, **({"alpha": r.lora_alpha} if r.lora_alpha else {})}
    sets = parse_sets(r.sets)
    for k, v in sets.items():  # --set wins, merging into groups the flags above started
        over[k] = {**over[k], **v} if isinstance(v, dict) and isinstance(over.get(k), dict) else v
    return over


def distill_config(cls, r: DistillRequest, data: str) -> DistillConfig:
    """Layers: the method's defaults, its preset for ``data``, then the request's flags."""
    preset = cls.preset(data)
    train = preset.train
    for name in ("max_iters", "batch_size", "ckpt_every", "eval_every", "bf16", "ema_decay", "lr_decay"):
        if getattr(r, name) is not None:
            train = replace(train, **{name: getattr(r, name)})
    try:
        method_cfg = build_config(cls.Config, method_overrides(cls, r), base=preset.method)
    except (TypeError, ValueError) as e:
        raise FewstepError(f"bad --set for method {cls.name}: {e}") from None
    return DistillConfig(method_cfg, train)


def build_distillation(r: DistillRequest):
    """(method, train set, test set, DistillConfig, teacher dir, teacher info) for a request."""
    from ..data import load_dataset
    from ..methods.registry import get_method
    from ..model_io import load_denoiser, model_ref, pipeline_spec

    info = None
    cls = get_method(r.method)
    r = replace(r, teacher=pipeline_spec(r.teacher))  # a shipped pipeline's name: the diffusers route
    if r.teacher.startswith("diffusers:"):
        teacher, train, test, info = _diffusers_teacher(r)
        data, teacher_dir = r.data, r.teacher
    else:
        teacher, tcfg = load_denoiser(r.teacher)
        data = r.data or tcfg.get("data", {}).get("name")
        if not data:
            raise FewstepError("--data is required (the teacher does not record its dataset)")
        test = load_dataset(data, "test", *data_format(tcfg))
        train = load_dataset(data, "train", *data_format(tcfg)) if cls.uses_images else image_free_source(data, tcfg, test)
        teacher_dir = model_ref(r.teacher)  # a shipped teacher by name: its folder moves with the package
    if cls.uses_images and train.meta.get("image_free"):
        raise FewstepError(f"method {cls.name} trains on images, and {data} holds none (prompts only): "
                           "give --data folder:DIR with images and captions")
    dcfg = distill_config(cls, r, data)
    torch.manual_seed(r.seed)  # auxiliary networks (e.g. DMD2's GAN head) start from seeded weights
    try:
        method = cls(teacher, dcfg.method, shape=train.shape, num_classes=train.num_classes)
    except (TypeError, ValueError) as e:
        raise FewstepError(f"{cls.name}: {e}") from None
    return method, train, test, dcfg, teacher_dir, info


def image_free_source(data: str, tcfg: dict, test):
    """Conditions without images for an image-free method: the teacher's recorded sample shape and
    classes (else the evaluation split's); the training split is never loaded."""
    from ..data import conditions_only

    recorded = tcfg.get("data", {})
    shape = tuple(recorded.get("shape") or test.shape)
    return conditions_only(data, shape, int(recorded.get("num_classes", test.num_classes)))


def _diffusers_teacher(r: DistillRequest):
    """(teacher, train, test, info) for ``--teacher diffusers:PATH``: latents and prompt embeddings cached."""
    from ..data.encoded import encoded_dataset
    from ..nets.adapters.diffusers import (
        load_pipeline_teacher,
        native_resolution,
        quiet_hf,
        resolve_pipeline,
        vae_config,
        vae_downsample,
    )

    if not r.data:
        raise FewstepError("a diffusers teacher needs --data folder:DIR (metadata.jsonl), prompts:FILE or mnist-captions")
    quiet_hf()
    root = resolve_pipeline(r.teacher.split(":", 1)[1])
    resolution = r.resolution or native_resolution(root)
    teacher, info = load_pipeline_teacher(root, resolution)
    pipe = Path(info["pipeline"])
    train = encoded_dataset(pipe, r.data, resolution, Path(r.out) / "cache",
                            latent_channels=vae_config(pipe).get("latent_channels", 4), downsample=vae_downsample(pipe))
    return teacher, train, train, info


def _evaluator(train, test, spec, n: int, seed: int, info: dict | None):
    """The periodic evaluator: the data's feature net, or for the mini SD's captioned digits (``mnist-captions``)
    FD and prompt adherence of the decoded samples (pipelines/mini_sd.py)."""
    if train.name == "mnist-captions" and info and info.get("pipeline"):
        from ..pipelines.mini_sd import TextEvaluator

        return TextEvaluator(Path(info["pipeline"]), n=n, spec=spec, seed=seed)
    return maybe_evaluator(train.name, test, spec, n, seed)


def _refuse_other_run(out: Path, method: str, nfe: int) -> None:
    if (out / "latest").exists():
        prev = read_json(out / "latest" / "config.json").get("run", {})
        if prev.get("method") not in (None, method) or prev.get("nfe") not in (None, nfe):
            raise FewstepError(f"{out} holds a {prev.get('method')} run with nfe {prev.get('nfe')}; "
                               f"refusing to resume it as {method} with nfe {nfe}")


def distill(r: DistillRequest) -> dict:
    from ..metrics.collapse import CollapseMonitor, with_collapse_monitor
    from ..train.loop import TrainConfig, Trainer

    out = Path(r.out)
    with hold_folder(out):  # held from the first file written (the pair cache) to the final model
        method, train, test, dcfg, teacher_dir, info = build_distillation(r)
        nfe = getattr(method.cfg, "nfe", r.nfe)
        if r.resume:
            _refuse_other_run(out, method.name, nfe)
        method.prepare(out / "cache")
        ts = dcfg.train
        evaluator = _evaluator(train, test, method.default_sampling(), ts.eval_n, r.seed, info)
        if evaluator is not None:  # an evaluator that measures decoded images names its own reference images
            ref_x, ref_labels = getattr(evaluator, "reference", (test.x, test.labels))
            evaluator = with_collapse_monitor(evaluator, CollapseMonitor(ref_x, ref_labels))
        tcfg = TrainConfig(out=str(out), max_iters=ts.max_iters, batch_size=ts.batch_size, seed=r.seed,
                           ckpt_every=ts.ckpt_every, keep=r.keep, eval_every=ts.eval_every, ema_decay=ts.ema_decay,
                           warmup=ts.warmup, lr_decay=ts.lr_decay, bf16=ts.bf16, progress=r.progress,
                           threads=r.threads, deterministic=r.deterministic, device=r.device, grad_clip=0.0,
                           fsdp=r.fsdp)
        run = {"command": command_line(), "method": method.name, "nfe": nfe, "teacher": str(teacher_dir),
               "distill": dcfg.to_dict()}
        real_images = 0 if train.meta.get("image_free") else len(train)  # what the run could read
        extra = {"data": {"name": train.name, "shape": list(train.shape), "num_classes": train.num_classes,
                          "real_images": real_images},
                 "sampling": asdict(method.default_sampling()), "teacher": str(teacher_dir), "method": method.config(),
                 **({"diffusers": info} if info else {}),
                 "sampling_options": [asdict(s) for s in method.sampling_options()]}
        res = Trainer(method, train, tcfg, run, evaluator, extra).train(resume=r.resume)
    print(json.dumps({"model": str(out / "model"), **{k: v for k, v in res.items() if isinstance(v, (int, float))}}))
    return res


def run(a):
    from ..methods.registry import method_names

    if a.method not in method_names():
        raise ArgError(f"argument --method: unknown method {a.method!r} (choose from {', '.join(method_names())})")
    if not a.out:
        raise FewstepError("--out is required")
    return distill(request_from_args(a))
