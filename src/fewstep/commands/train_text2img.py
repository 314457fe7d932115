"""``fewstep train-text2img``: the miniature Stable Diffusion of pipelines/mini_sd.py, trained on the embedded
MNIST digits with captions, written as a diffusers ``StableDiffusionPipeline`` folder (``OUT/pipeline``).

Stages run in order and each is kept once finished (``OUT/vae``, ``OUT/text``, ``OUT/unet_run``); the
UNet's training is fewstep's resumable trainer, so ``--resume`` continues it. ``OUT/pipeline`` is complete
at every point: before the UNet stage ends it holds the untrained UNet, and ``fewstep_training.json`` in it
says which stages are done, with their measurements and commands.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..io import atomic_dir, hold_folder, read_json, write_json_atomic
from .common import command_line, need_out


def _stage_done(folder: Path) -> bool:
    return (folder / "done.json").is_file()


def _save_stage(folder: Path, write, record: dict) -> None:
    def all_of(tmp: Path):
        write(tmp)
        write_json_atomic(record, tmp / "done.json")

    atomic_dir(folder, all_of)


def _vae_stage(out: Path, a, train_x, test_x, test_labels, classifier) -> dict:
    from ..pipelines import mini_sd

    folder = out / "vae"
    if not _stage_done(folder):
        vae, log = mini_sd.train_vae(train_x, iters=a.vae_iters, seed=a.seed, progress=not a.no_progress)
        report = mini_sd.vae_report(vae, test_x, test_labels, classifier)
        _save_stage(folder, lambda tmp: vae.save_pretrained(tmp / "vae", safe_serialization=True),
                    {"iterations": a.vae_iters, "report": report, "log": log, "command": command_line()})
    return read_json(folder / "done.json")


def _text_stage(out: Path, a, train, test, classifier) -> dict:
    from ..data.captions import HELD_OUT_PHRASINGS, TRAIN_PHRASINGS, ink_bins, ink_tertiles
    from ..pipelines import mini_sd

    folder = out / "text"
    if not _stage_done(folder):
        tertiles = ink_tertiles(train.x)
        tok = mini_sd.build_tokenizer()
        with torch.no_grad():
            f_train, f_test = classifier.features(train.x), classifier.features(test.x)
        enc, heads, log = mini_sd.train_text_encoder(tok, f_train, train.labels, ink_bins(train.x, tertiles),
                                                     iters=a.text_iters, seed=a.seed, progress=not a.no_progress)
        report = {"zero_shot_acc_train_phrasings": mini_sd.zero_shot_accuracy(tok, enc, heads, f_test, test.labels, TRAIN_PHRASINGS),
                  "zero_shot_acc_held_out_phrasings": mini_sd.zero_shot_accuracy(tok, enc, heads, f_test, test.labels,
                                                                                 HELD_OUT_PHRASINGS)}

        def write(tmp: Path):
            tok.save_pretrained(tmp / "tokenizer")
            enc.save_pretrained(tmp / "text_encoder", safe_serialization=True)

        _save_stage(folder, write, {"iterations": a.text_iters, "ink_tertiles": tertiles.tolist(), "report": report,
                                    "log": log, "command": command_line()})
    return read_json(folder / "done.json")


def _components(out: Path, unet):
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    vae = AutoencoderKL.from_pretrained(out / "vae" / "vae", local_files_only=True)
    tok = CLIPTokenizer.from_pretrained(out / "text" / "tokenizer", local_files_only=True)
    enc = CLIPTextModel.from_pretrained(out / "text" / "text_encoder", local_files_only=True)
    return vae, tok, enc, unet


def _unet_dataset(pipeline: Path, copies: int, seed: int):
    """The training digits' latents through the pipeline's VAE, each ``copies`` times with a fresh caption,
    prompts encoded by the pipeline's own text encoder as the pipeline encodes them."""
    from ..data.captions import mnist_captions
    from ..data.encoded import EncodedDataset, encode_images, encode_prompts

    src = mnist_captions(copies=copies, seed=seed)
    return EncodedDataset("mnist-captions", encode_images(pipeline, src.x), encode_prompts(pipeline, src.captions), src.captions)


def _unet_stage(out: Path, a) -> dict:
    from ..methods.base import OptimConfig
    from ..methods.teacher import DenoisingTeacher, TeacherMethodConfig
    from ..nets.adapters.diffusers import load_pipeline_teacher
    from ..noise import TimeSampler
    from ..pipelines import mini_sd
    from ..samplers.generate import SamplingSpec
    from ..train.loop import TrainConfig, Trainer

    pipeline = out / "pipeline"
    run = out / "unet_run"
    den, _ = load_pipeline_teacher(pipeline)
    den.train().requires_grad_(True)
    data = _unet_dataset(pipeline, a.caption_copies, a.seed)
    # SD's recipe: uniform timesteps, epsilon loss, 10% empty prompts for CFG; AdamW as the mnist teacher.
    method = DenoisingTeacher(den, TeacherMethodConfig(optim=OptimConfig(lr=a.lr, betas=(0.9, 0.999), grad_clip=1.0),
                                                       time_sampler=TimeSampler("uniform"), label_dropout=0.1))
    spec = SamplingSpec("dpmpp2m", 20, "karras", cfg=2.0)
    evaluator = mini_sd.TextEvaluator(pipeline, n=a.eval_n, spec=spec, seed=a.seed) if a.eval_every else None
    tcfg = TrainConfig(out=str(run), max_iters=a.unet_iters, batch_size=a.batch_size, seed=a.seed, ckpt_every=500,
                       eval_every=a.eval_every, ema_decay=0.999, grad_clip=1.0, warmup=200, bf16=False,
                       progress=not a.no_progress, threads=a.threads, device=a.device)
    res = Trainer(method, data, tcfg, {"command": command_line(), "stage": "unet"}, evaluator,
                  {"sampling": {"sampler": spec.sampler, "steps": spec.steps, "grid": spec.grid, "cfg": spec.cfg}}
                  ).train(resume=True)
    return {"iterations": res["iterations"], "train_s": res.get("train_s"), "caption_copies": a.caption_copies,
            "lr": a.lr, "batch_size": a.batch_size}


def _trained_unet(run: Path):
    """The EMA UNet the trainer saved (``run/model``), as a diffusers UNet2DConditionModel."""
    from ..model_io import load_denoiser

    den, _ = load_denoiser(str(run / "model"))
    return den.net.unet


def run(a):
    from ..data.captions import to_pipeline_images
    from ..data.embedded import mnist
    from ..metrics.features import load_features
    from ..nets.adapters.diffusers import load_pipeline_teacher, quiet_hf
    from ..pipelines import mini_sd
    from ..samplers.generate import SamplingSpec
    from .common import iterations_done

    out = need_out(a)
    quiet_hf()
    with hold_folder(out):
        train, test = mnist("train"), mnist("test")
        classifier = load_features("mnist")
        info = {"command": command_line(), "data": "mnist (embedded), captions from fewstep/data/captions.py"}
        info["vae"] = _vae_stage(out, a, to_pipeline_images(train.x), to_pipeline_images(test.x),
                                 test.labels, classifier)
        info["text"] = _text_stage(out, a, train, test, classifier)
        pipeline, run_dir = out / "pipeline", out / "unet_run"
        if not (pipeline / "model_index.json").is_file():
            torch.manual_seed(a.seed)  # the UNet's initial weights are part of the run
            mini_sd.save_pipeline(pipeline, *_components(out, mini_sd.build_unet()), {**info, "unet": "untrained"})
        if iterations_done(run_dir) < a.unet_iters or not (run_dir / "model" / "config.json").is_file():
            info["unet"] = _unet_stage(out, a)
        else:
            info["unet"] = {**mini_sd.read_info(pipeline).get("unet", {}), "iterations": iterations_done(run_dir)}
        unet = _trained_unet(run_dir)
        mini_sd.save_pipeline(pipeline, *_components(out, unet), info)
        if a.eval_n:  # the finished teacher, held-out phrasings, DPM-Solver++ 20 steps, without and with CFG
            den, _ = load_pipeline_teacher(pipeline)
            ev = mini_sd.TextEvaluator(pipeline, n=a.eval_n, seed=a.seed)
            info["eval"] = {f"cfg {c:g}": ev.measure(den, SamplingSpec("dpmpp2m", 20, "karras", cfg=c)) for c in (1.0, 2.0)}
            mini_sd.save_pipeline(pipeline, *_components(out, unet), info)
    print(json.dumps({"pipeline": str(pipeline), "vae": info["vae"]["report"], "text": info["text"]["report"],
                      "eval": info.get("eval")}))
