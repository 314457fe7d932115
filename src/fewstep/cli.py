"""The ``fewstep`` command line: it parses and validates, and each verb's work is ``commands.<verb>.run``.
Bad arguments and bad files end in one line on stderr and a non-zero exit, never a traceback (set
FEWSTEP_DEBUG=1 to see tracebacks)."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from .config import LR_DECAYS
from .errors import ArgError, FewstepError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's default prints usage too)
        raise ArgError(message)


# -- argument types ------------------------------------------------------------------------------
def _int_at_least(lo):
    def parse(s):
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {s!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {v}")
        return v

    return parse


def _float_range(lo=None, hi=None, lo_open=False):
    def parse(s):
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
        if v != v or v in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"must be finite, got {s!r}")
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise argparse.ArgumentTypeError(f"must be {'>' if lo_open else '>='} {lo}, got {v}")
        if hi is not None and v > hi:
            raise argparse.ArgumentTypeError(f"must be <= {hi}, got {v}")
        return v

    return parse


def _int_list(s):
    try:
        vals = [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {s!r}")
    return vals


def _float_list(s):
    try:
        vals = [float(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {s!r}") from None
    if not vals or any(v != v or v < 0 for v in vals):
        raise argparse.ArgumentTypeError(f"expected non-negative numbers, got {s!r}")
    return vals


def _str_list(choices):
    def parse(s):
        vals = [v.strip() for v in s.split(",") if v.strip()]
        bad = [v for v in vals if v not in choices]
        if not vals or bad:
            raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {sorted(choices)}, got {s!r}")
        return vals

    return parse


# -- shared flags --------------------------------------------------------------------------------
def _add_common(p, data=True, out=True):
    if data:
        p.add_argument("--data", help="dataset: mnist | digits | toy2d[:8gaussians|moons] | folder:PATH")
    if out:
        p.add_argument("--out", help="output folder (or file, where noted)")
    p.add_argument("--seed", type=_int_at_least(0), default=0, help="random seed (default 0)")
    p.add_argument("--threads", type=_int_at_least(0), default=0, help="torch CPU threads (0 = torch default)")


def _add_format(p):
    p.add_argument("--resolution", type=_int_at_least(4), help="folder data: resize images to this side (default: the folder's own)")
    p.add_argument("--channels", type=int, choices=(1, 3), help="folder data: 1 grey, 3 RGB (default: the folder's own)")


def _add_train(p):
    p.add_argument("--max-iters", type=_int_at_least(1), help="training iterations")
    p.add_argument("--batch-size", type=_int_at_least(1), help="batch size")
    p.add_argument("--lr", type=_float_range(0, lo_open=True), help="learning rate")
    p.add_argument("--ckpt-every", type=_int_at_least(0), help="checkpoint every N iterations (0 = at the end)")
    p.add_argument("--keep", type=_int_at_least(1), default=2, help="checkpoints kept (default 2)")
    p.add_argument("--eval-every", type=_int_at_least(0), help="evaluate every N iterations (0 = at the end)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/latest (falls back to older good ones)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--deterministic", action="store_true", help="deterministic kernels (for GPU runs; slower)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default cpu)")
    p.add_argument("--fsdp", action="store_true",
                   help="under torchrun with N >= 2 processes: shard the trained networks with FSDP2 instead of DDP")


def _cache(text: str) -> str:
    from .nets.cache import parse_cache

    if text == "none":
        return text
    try:
        parse_cache(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _add_sampling(p):
    from .samplers import GRIDS, SAMPLERS

    p.add_argument("--model", required=True, help="model folder, training output folder, or shipped teacher name")
    p.add_argument("--steps", type=_int_at_least(1), help="network evaluations (NFE) to spend per sample")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), help="sampler (default: the model's own)")
    p.add_argument("--grid", choices=GRIDS, help="time grid (default: the model's own)")
    p.add_argument("--cfg", type=_float_range(0), help="classifier-free guidance scale (1 = none)")
    p.add_argument("--n", type=_int_at_least(1), help="number of samples")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=False, help="bf16 autocast sampling")
    p.add_argument("--cache", type=_cache,
                   help="reuse features between steps: deepcache:N[:D] | faster:N | faster:i,j,k | disca:PATH (a DisCa run)")


def build_parser() -> argparse.ArgumentParser:
    from .methods.registry import method_help

    p = _Parser(prog="fewstep", description="Distil diffusion models into 1-4 step generators.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train-teacher", help="train a diffusion teacher")
    t.add_argument("--preset", default=None, help="teacher preset (mnist | digits | toy2d | folder; default: --data's)")
    _add_common(t)
    _add_format(t)
    _add_train(t)

    f = sub.add_parser("train-features", help="train the feature classifier behind FD / class accuracy")
    _add_common(f)
    _add_format(f)
    f.add_argument("--iters", type=_int_at_least(1), default=1500)

    s2 = sub.add_parser("train-text2img", help="train the miniature text-to-image Stable Diffusion on captioned MNIST "
                        "(a diffusers pipeline folder: OUT/pipeline)")
    _add_common(s2, data=False)
    s2.add_argument("--vae-iters", type=_int_at_least(1), default=1500, help="autoencoder iterations (default 1500)")
    s2.add_argument("--text-iters", type=_int_at_least(1), default=1500, help="text encoder iterations (default 1500)")
    s2.add_argument("--unet-iters", type=_int_at_least(1), default=4000, help="UNet iterations (default 4000)")
    s2.add_argument("--batch-size", type=_int_at_least(1), default=128, help="UNet batch size (default 128)")
    s2.add_argument("--lr", type=_float_range(0, lo_open=True), default=5e-4, help="UNet learning rate (default 5e-4)")
    s2.add_argument("--caption-copies", type=_int_at_least(1), default=12,
                    help="captions drawn per training digit for the UNet stage (default 12; each copy is 12 KB of text "
                         "embedding per digit in memory)")
    s2.add_argument("--eval-every", type=_int_at_least(0), default=1000, help="UNet evaluation every N iterations (0 = none)")
    s2.add_argument("--eval-n", type=_int_at_least(0), default=500, help="prompts per evaluation (0 = no final evaluation)")
    s2.add_argument("--no-progress", action="store_true", help="no progress bars")
    s2.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default cpu)")

    d = sub.add_parser("distill", help="distil a teacher into a few-step student")
    d.add_argument("--teacher", required=True, help="teacher model folder or shipped teacher name (e.g. mnist)")
    d.add_argument("--method", required=True, help=f"distillation method: {method_help()}")
    d.add_argument("--nfe", type=_int_at_least(1), default=None,
                   help="student steps (1, 2, 4, ...; default: the method's, 1 for step distillation)")
    d.add_argument("--ema-decay", type=_float_range(0, 0.9999), help="generator EMA decay (0 = off)")
    d.add_argument("--lr-decay", choices=LR_DECAYS, default=None,
                   help="learning-rate schedule after warm-up: constant, or cosine to 0 at --max-iters (default: the preset's)")
    d.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="override a method config field; GROUP.FIELD=VALUE for a nested one (optim.lr=1e-4)")
    d.add_argument("--lora-rank", type=_int_at_least(1), help="train LoRA adapters of this rank (peft) instead of all weights")
    d.add_argument("--lora-alpha", type=_float_range(0, lo_open=True), help="LoRA alpha (default: the rank)")
    d.add_argument("--resolution", type=_int_at_least(8), default=None,
                   help="image resolution for a diffusers teacher's data (default: the pipeline's own, e.g. 512 for SD 1.5)")
    _add_common(d)
    _add_train(d)

    m = sub.add_parser("demo", help="the main job: shipped MNIST teacher -> 1-step DMD2 student -> report.html")
    m.add_argument("--teacher", default="mnist", help="teacher (default: the shipped MNIST teacher)")
    m.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    m.add_argument("--data", help="folder:PATH: your own images in class sub-folders (trains a feature net and a teacher first)")
    m.add_argument("--budget-min", type=_float_range(0, lo_open=True), default=30.0,
                   help="with --data: minutes to split across feature net, teacher and student (default 30)")
    m.add_argument("--method", default="dmd2", help="the distillation method (default dmd2)")
    m.add_argument("--nfe", type=_int_at_least(1), help="student steps (default: the method's)")
    m.add_argument("--max-iters", type=_int_at_least(1),
                   help="distillation iterations (default 600, or the budget's plan with --data)")
    m.add_argument("--eval-every", type=_int_at_least(0), default=200)
    m.add_argument("--n", type=_int_at_least(100), default=1000, help="held-out images for FD (default 1000)")
    m.add_argument("--seeds", type=_int_at_least(1), default=3)
    m.add_argument("--no-progress", action="store_true")
    m.add_argument("--seed", type=_int_at_least(0), default=0)
    m.add_argument("--threads", type=_int_at_least(0), default=0)

    s = sub.add_parser("sample", help="write a PNG grid of samples")
    _add_sampling(s)
    s.add_argument("--width", type=_int_at_least(1), help="canvas width, at least the model's own: larger is sampled in tiles")
    s.add_argument("--height", type=_int_at_least(1), help="canvas height, at least the model's own")
    s.add_argument("--enlarge", type=_int_at_least(0), metavar="K",
                   help="with --width/--height: compose at the model's own size, enlarge, then re-run the last K steps "
                        "of its grid on the canvas in tiles (Any-Size-Diffusion; 0 = enlarge only). Without it the "
                        "canvas is sampled from noise in tiles")
    s.add_argument("--images", action="store_true",
                   help="also write each sample as its own PNG (sample_0000.png, ...) beside the grid, e.g. for fewstep detect")
    _add_common(s, data=False)

    e = sub.add_parser("eval", help="measure FD, class accuracy, precision/recall, speed (JSON)")
    _add_sampling(e)
    _add_common(e)
    e.add_argument("--seeds", type=_int_at_least(1), default=1, help="generation seeds to average")
    e.add_argument("--features", help="feature-net folder (default: the shipped one for --data)")

    b = sub.add_parser("bench", help="run a benchmark sweep into benchmarks/results/<name>.json")
    from .samplers import GRIDS
    from .samplers import SAMPLERS as _S
    from .samplers import STOCHASTIC as _STOCHASTIC
    from .samplers.registry import POLICY as _POLICY

    b.add_argument("--model", required=True, help="model folder(s) or shipped teacher name, comma-separated; "
                   "a teacher gets the sampler sweep, a distilled student one row at its own sampling")
    b.add_argument("--name", required=True, help="results file name (benchmarks/results/<name>.json)")
    b.add_argument("--samplers", type=_str_list(set(_S) - _STOCHASTIC - _POLICY), default=["euler", "heun", "dpmpp2m"])
    b.add_argument("--nfe", type=_int_list, default=[1, 2, 4, 8, 16, 32, 64])
    b.add_argument("--cfg", type=_float_list, default=[1.0])
    b.add_argument("--grid", choices=GRIDS, default="karras", help="time grid of the teacher rows")
    b.add_argument("--seeds", type=_int_at_least(1), default=3, help="seeds for rows up to --seeds-max-nfe")
    b.add_argument("--seeds-max-nfe", type=_int_at_least(1), default=8, help="above this NFE, 1 seed")
    b.add_argument("--n", type=_int_at_least(10), default=1000)
    b.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    b.add_argument("--results-dir", default="benchmarks/results")
    b.add_argument("--cache", type=_cache, action="append",
                   help="feature caching: deepcache:N[:D] | faster:N | faster:i,j,k | disca:PATH | none; "
                        "repeat for one set of rows per mode")
    b.add_argument("--retime", action="store_true",
                   help="re-measure images/s of the timed rows of an existing results file (FD kept): run it on a quiet machine")
    b.add_argument("--baseline", help="results file(s), comma-separated, whose floor and teacher rows are reused (not recomputed)")
    _add_common(b, data=True, out=False)

    v = sub.add_parser("serve", help="serve models over HTTP: JSON API, playground page, leaderboard")
    v.add_argument("--models", required=True,
                   help="NAME=PATH[,NAME=PATH...]: model folders, training outputs or shipped names (LoRA students share their base)")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    v.add_argument("--port", type=_int_at_least(1), default=8000)
    v.add_argument("--max-steps", type=_int_at_least(1), default=64, help="most NFE a request may ask for")
    v.add_argument("--max-n", type=_int_at_least(1), default=16, help="most images per request")
    v.add_argument("--max-queue", type=_int_at_least(1), default=64, help="requests waiting; beyond it: 429")
    v.add_argument("--max-batch", type=_int_at_least(1), default=16, help="images per network batch")
    v.add_argument("--batch-window-ms", type=_float_range(0), default=10.0, help="wait this long for requests to batch with")
    v.add_argument("--no-batching", action="store_true", help="run every request alone")
    v.add_argument("--results-dir", default="benchmarks/results", help="results files the leaderboard shows")
    v.add_argument("--threads", type=_int_at_least(0), default=0, help="torch CPU threads (0 = torch default)")

    w = sub.add_parser("detect", help="read a watermark run's key from images: bit accuracy and p-value (JSON)")
    w.add_argument("--decoder", required=True, help="the watermark run's output folder")
    w.add_argument("images", nargs="+", help="PNG images at the model's resolution")
    w.add_argument("--threshold", type=_float_range(0, 1), default=1e-6,
                   help="p-value below which an image counts as watermarked (default 1e-6)")

    x = sub.add_parser("export", help="write a student as something diffusers loads (LoRA weights or a full UNet)")
    x.add_argument("--model", required=True, help="a student of a diffusers teacher (training output or model folder)")
    x.add_argument("--format", choices=["diffusers"], default="diffusers")
    x.add_argument("--out", required=True, help="export folder (load with pipeline.load_lora_weights(OUT))")
    return p


# -- dispatch: verb -> module under commands/ -----------------------------------------------------
COMMANDS = {"train-teacher": "train_teacher", "train-features": "train_features", "train-text2img": "train_text2img",
            "distill": "distill",
            "demo": "demo", "sample": "sample", "eval": "evaluate", "bench": "bench", "export": "export",
            "serve": "serve", "detect": "detect"}


def run_command(args) -> int | None:
    return importlib.import_module(f"fewstep.commands.{COMMANDS[args.command]}").run(args)


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "threads", 0):
            import torch

            torch.set_num_threads(args.threads)
        run_command(args)
        return 0
    except KeyboardInterrupt:
        print("fewstep: interrupted", file=sys.stderr)
        return 130
    except (FewstepError, ValueError, OSError) as e:
        if os.environ.get("FEWSTEP_DEBUG"):
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"fewstep: error: {msg}", file=sys.stderr)
        return 2 if isinstance(e, ArgError) else 1


if __name__ == "__main__":
    sys.exit(main())
