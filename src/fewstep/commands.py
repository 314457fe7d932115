"""Implementations behind the CLI sub-commands (cli.py parses and validates; this does the work)."""
from __future__ import annotations

import json
import shlex
import sys
from dataclasses import asdict, replace
from pathlib import Path

import torch

from .errors import FewstepError


def command_line() -> str:
    return "fewstep " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _need_out(a):
    if not a.out:
        raise FewstepError("--out is required")
    return Path(a.out)


# -- train-teacher -------------------------------------------------------------------------------
def train_teacher(a):
    from .config import TEACHER_PRESETS, teacher_preset
    from .data import load_dataset
    from .methods.base import SamplingSpec
    from .methods.teacher import DenoisingTeacher
    from .model_io import build_denoiser
    from .train.loop import Trainer, TrainConfig

    out = _need_out(a)
    preset = a.preset or (a.data or "mnist").split(":")[0]
    if preset not in TEACHER_PRESETS:
        raise FewstepError(f"no teacher preset for data {a.data!r}; pass --preset ({', '.join(sorted(TEACHER_PRESETS))})")
    cfg = teacher_preset(preset)
    if a.data:
        cfg.data = a.data
    for field, flag in (("max_iters", a.max_iters), ("batch_size", a.batch_size), ("ckpt_every", a.ckpt_every),
                        ("eval_every", a.eval_every), ("bf16", a.bf16)):
        if flag is not None:
            setattr(cfg, field, flag)
    if a.lr is not None:
        cfg.method = replace(cfg.method, lr=a.lr)
    train = load_dataset(cfg.data, "train", cfg.resolution, cfg.channels)
    test = load_dataset(cfg.data, "test", cfg.resolution, cfg.channels)
    arch = dict(cfg.arch)
    if arch.get("arch") == "unet":
        arch.update(in_channels=train.shape[0], image_size=train.shape[-1], num_classes=train.num_classes)
    torch.manual_seed(a.seed)  # the initial weights are part of the run: same seed, same run
    den = build_denoiser({"arch": arch, "process": cfg.process, "param": cfg.param})
    method = DenoisingTeacher(den, cfg.method)
    evaluator = _maybe_evaluator(cfg.data, test, SamplingSpec("dpmpp2m", 10, "karras"), cfg.eval_n, a.seed)
    tcfg = TrainConfig(out=str(out), max_iters=cfg.max_iters, batch_size=cfg.batch_size, seed=a.seed,
                       ckpt_every=cfg.ckpt_every, keep=a.keep, eval_every=cfg.eval_every, ema_decay=cfg.ema_decay,
                       grad_clip=cfg.grad_clip, warmup=cfg.warmup, bf16=cfg.bf16, progress=not a.no_progress,
                       threads=a.threads, deterministic=a.deterministic, device=a.device)
    run = {"command": command_line(), "preset": preset, "teacher": cfg.to_dict()}
    extra = {"data": {"name": cfg.data, "shape": list(train.shape), "num_classes": train.num_classes},
             "sampling": asdict(method.default_sampling())}
    trainer = Trainer(method, train, tcfg, run, evaluator, extra)
    res = trainer.train(resume=a.resume)
    print(json.dumps({"model": str(out / "model"), **{k: v for k, v in res.items() if isinstance(v, (int, float))}}))


def _maybe_evaluator(data, test, spec, n, seed):
    from .metrics.evaluate import make_evaluator
    from .metrics.features import load_features

    try:
        feats = load_features(data)
    except FewstepError as e:
        print(f"note: periodic eval disabled ({e})", file=sys.stderr)
        return None
    return make_evaluator(test, feats, spec, n=n, seed=seed)


# -- train-features ------------------------------------------------------------------------------
def train_features(a):
    from .metrics.features import FEATURES_DIR, save_feature_net, train_feature_net

    data = a.data or "mnist"
    out = Path(a.out) if a.out else FEATURES_DIR / data
    net, info = train_feature_net(data, iters=a.iters, seed=a.seed)
    save_feature_net(net, {**info, "command": command_line(), "data": data}, out)
    print(json.dumps({"features": str(out), **info}))


# -- sampling helpers ------------------------------------------------------------------------------
def _spec_from(a, model_cfg):
    from .methods.base import SamplingSpec
    from .samplers import steps_for_nfe

    spec = SamplingSpec(**model_cfg.get("sampling", {}))
    if a.sampler:
        spec.sampler = a.sampler
        if a.sampler != "multistep":  # an explicit student grid only fits the student's own sampler
            spec.sigmas = None
    if a.grid:
        spec.grid, spec.sigmas = a.grid, None
    if a.steps:
        steps = steps_for_nfe(spec.sampler, a.steps)
        if steps is None:
            raise FewstepError(f"sampler {spec.sampler!r} cannot run with {a.steps} NFE")
        spec.steps, spec.sigmas = steps, (None if spec.sigmas is None or len(spec.sigmas) - 1 != steps else spec.sigmas)
    if a.cfg is not None:
        spec.cfg = a.cfg
    return spec


def _labels(model_cfg, n):
    k = model_cfg.get("data", {}).get("num_classes", 0) or model_cfg.get("arch", {}).get("num_classes", 0)
    return (torch.arange(n) % k) if k else None


def save_grid(samples: torch.Tensor, path: Path, nrow: int = 10) -> Path:
    """Save images in [-1, 1] as a PNG grid (or a scatter plot for 2-D points)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if samples.ndim == 2:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4, 4))
        ax.scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.5)
        ax.set_aspect("equal")
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        return path
    from PIL import Image

    x = ((samples.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    n, c, h, w = x.shape
    ncol = min(nrow, n)
    nrows = -(-n // ncol)
    grid = torch.zeros(c, nrows * (h + 2) + 2, ncol * (w + 2) + 2, dtype=torch.uint8)
    for i in range(n):
        r, q = divmod(i, ncol)
        grid[:, 2 + r * (h + 2):2 + r * (h + 2) + h, 2 + q * (w + 2):2 + q * (w + 2) + w] = x[i]
    arr = grid[0].numpy() if c == 1 else grid.permute(1, 2, 0).numpy()
    img = Image.fromarray(arr)
    img = img.resize((img.width * 2, img.height * 2), Image.NEAREST) if h <= 32 else img
    tmp = path.with_suffix(".tmp.png")
    img.save(tmp)
    tmp.replace(path)
    return path


def sample_grid(a):
    from .metrics.evaluate import generate
    from .model_io import load_denoiser

    den, mcfg = load_denoiser(a.model)
    spec = _spec_from(a, mcfg)
    n = a.n or 100
    shape = tuple(mcfg.get("data", {}).get("shape") or _shape_from_arch(mcfg))
    labels = _labels(mcfg, n)
    samples, nfe = generate(den, n, spec, shape, labels, seed=a.seed, bf16=a.bf16, return_nfe=True)
    out = Path(a.out or "samples.png")
    if out.suffix.lower() != ".png":
        out = out / "samples.png"
    save_grid(samples, out)
    print(json.dumps({"grid": str(out), "n": n, "nfe": nfe, "sampling": asdict(spec)}))


def _shape_from_arch(mcfg):
    arch = mcfg["arch"]
    if arch["arch"] == "mlp":
        return [arch["dim"]]
    return [arch["in_channels"], arch["image_size"], arch["image_size"]]


# -- eval ------------------------------------------------------------------------------------------
def evaluate(a):
    from .data import load_dataset
    from .metrics.evaluate import generate, mean_std, measure
    from .metrics.features import load_features
    from .metrics.speed import images_per_second
    from .model_io import load_denoiser

    den, mcfg = load_denoiser(a.model)
    spec = _spec_from(a, mcfg)
    data = a.data or mcfg.get("data", {}).get("name")
    if not data:
        raise FewstepError("--data is required (the model does not record its dataset)")
    test = load_dataset(data, "test")
    feats = load_features(data, a.features)
    n = a.n or len(test)
    test = test.subset(n)
    labels = test.class_balanced_labels(n)
    ref_feats = feats.features(test.x)
    rows, nfe = [], None
    for s in range(a.seeds):
        samples, nfe = generate(den, n, spec, test.shape, labels, seed=a.seed + s, bf16=a.bf16, return_nfe=True)
        rows.append(measure(samples, labels, test.x, feats, ref_feats))
    res = {"model": a.model, "data": data, "n": n, "seeds": a.seeds, "nfe": nfe, "sampling": asdict(spec),
           **mean_std(rows)}
    res["images_per_s"] = images_per_second(
        lambda b: generate(den, b, spec, test.shape, test.class_balanced_labels(b), seed=0, batch=b, bf16=a.bf16))
    text = json.dumps(res, indent=2)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text + "\n")
    print(text)


def bench(a):
    from .bench import run_bench

    return run_bench(a, command_line())


# -- distill ----------------------------------------------------------------------------------------
def build_distillation(a):
    """(method, train set, test set, DistillConfig, teacher dir) from CLI args."""
    from .config import check_field_types, distill_preset
    from .data import load_dataset
    from .methods.registry import get_method
    from .model_io import load_denoiser, resolve_model_dir

    if a.teacher.startswith("diffusers:"):
        teacher, train, test, info = _diffusers_teacher(a)
        data, teacher_dir = a.data, a.teacher
    else:
        teacher, tcfg = load_denoiser(a.teacher)
        data, info = a.data or tcfg.get("data", {}).get("name"), None
        if not data:
            raise FewstepError("--data is required (the teacher does not record its dataset)")
        train, test = load_dataset(data, "train"), load_dataset(data, "test")
        teacher_dir = resolve_model_dir(a.teacher)
    dcfg = distill_preset(a.method, data)
    for field, flag in (("max_iters", a.max_iters), ("batch_size", a.batch_size), ("ckpt_every", a.ckpt_every),
                        ("eval_every", a.eval_every), ("bf16", a.bf16), ("ema_decay", a.ema_decay)):
        if flag is not None:
            setattr(dcfg, field, flag)
    mcfg = dict(dcfg.method_cfg, nfe=a.nfe)
    cls = get_method(dcfg.method)
    if getattr(a, "lora_rank", None):
        if "lora_rank" not in cls.Config.__dataclass_fields__:
            raise FewstepError(f"method {dcfg.method} has no LoRA student (LoRA: {', '.join(_lora_methods())})")
        mcfg.update(lora_rank=a.lora_rank, **({"lora_alpha": a.lora_alpha} if a.lora_alpha else {}))
    if a.lr is not None:  # one LR for every network the method trains
        lr_fields = [f for f in ("gen_lr", "critic_lr", "lr") if f in cls.Config.__dataclass_fields__]
        mcfg.update({f: a.lr for f in lr_fields})
    for kv in a.set or []:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            raise FewstepError(f"--set expects FIELD=VALUE, got {kv!r}")
        try:
            mcfg[k] = json.loads(v)  # numbers, booleans, lists
        except json.JSONDecodeError:
            mcfg[k] = v  # plain strings such as schedule=exclusive
    try:
        check_field_types(cls.Config, mcfg)
        method_cfg = cls.Config(**mcfg)
    except (TypeError, ValueError) as e:
        raise FewstepError(f"bad --set for method {dcfg.method}: {e}") from None
    torch.manual_seed(a.seed)  # auxiliary networks (e.g. DMD2's GAN head) start from seeded weights
    try:
        method = cls(teacher, method_cfg, shape=train.shape, num_classes=train.num_classes)
    except (TypeError, ValueError) as e:
        raise FewstepError(f"{dcfg.method}: {e}") from None
    method.teacher_info = info
    return method, train, test, dcfg, teacher_dir


def _lora_methods() -> list[str]:
    from .methods.registry import METHODS, method_names

    return [m for m in method_names() if "lora_rank" in getattr(METHODS[m], "Config").__dataclass_fields__]


def _diffusers_teacher(a):
    """(teacher, train, test, info) for ``--teacher diffusers:PATH``: latents and prompt embeddings cached."""
    from .data.encoded import encoded_dataset
    from .nets.adapters.diffusers import load_pipeline_teacher

    if not a.data:
        raise FewstepError("a diffusers teacher needs --data folder:DIR (metadata.jsonl) or prompts:FILE")
    teacher, info = load_pipeline_teacher(a.teacher.split(":", 1)[1])
    train = encoded_dataset(info["pipeline"], a.data, a.resolution, _need_out(a) / "cache",
                            downsample=2 ** (len(_vae_blocks(info["pipeline"])) - 1))
    return teacher, train, train, info


def _vae_blocks(pipeline: str) -> list:
    cfg = json.loads((Path(pipeline) / "vae" / "config.json").read_text())
    return cfg.get("block_out_channels", [0, 0, 0, 0])


def distill(a):
    from .metrics.collapse import CollapseMonitor, with_collapse_monitor
    from .train.checkpoint import read_json
    from .train.loop import Trainer, TrainConfig

    out = _need_out(a)
    method, train, test, dcfg, teacher_dir = build_distillation(a)
    if a.resume and (out / "latest").exists():
        prev = read_json(out / "latest" / "config.json").get("run", {})
        if prev.get("method") not in (None, method.name) or prev.get("nfe") not in (None, a.nfe):
            raise FewstepError(f"{out} holds a {prev.get('method')} run with nfe {prev.get('nfe')}; "
                               f"refusing to resume it as {method.name} with nfe {a.nfe}")
    method.prepare(out / "cache")
    evaluator = _maybe_evaluator(train.name, test, method.default_sampling(), dcfg.eval_n, a.seed)
    if evaluator is not None:
        evaluator = with_collapse_monitor(evaluator, CollapseMonitor(test.x, test.labels))
    tcfg = TrainConfig(out=str(out), max_iters=dcfg.max_iters, batch_size=dcfg.batch_size, seed=a.seed,
                       ckpt_every=dcfg.ckpt_every, keep=a.keep, eval_every=dcfg.eval_every,
                       ema_decay=dcfg.ema_decay, warmup=dcfg.warmup, bf16=dcfg.bf16, progress=not a.no_progress,
                       threads=a.threads, deterministic=a.deterministic, device=a.device, grad_clip=0.0)
    run = {"command": command_line(), "method": method.name, "nfe": a.nfe, "teacher": str(teacher_dir),
           "distill": asdict(dcfg)}
    extra = {"data": {"name": train.name, "shape": list(train.shape), "num_classes": train.num_classes},
             "sampling": asdict(method.default_sampling()), "teacher": str(teacher_dir), "method": method.config(),
             **({"diffusers": method.teacher_info} if method.teacher_info else {}),
             "sampling_options": [asdict(s) for s in method.sampling_options()]}
    res = Trainer(method, train, tcfg, run, evaluator, extra).train(resume=a.resume)
    print(json.dumps({"model": str(out / "model"), **{k: v for k, v in res.items() if isinstance(v, (int, float))}}))
    return res


# -- export -----------------------------------------------------------------------------------------
def export(a):
    from .export import export_diffusers

    path = export_diffusers(a.model, _need_out(a))
    print(json.dumps({"export": str(path)}))
