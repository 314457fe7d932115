"""Helpers several verbs share: the command line that ran, output folders, sampling specs from flags."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import torch

from ..errors import FewstepError
from ..samplers.generate import SamplingSpec, respec


def command_line() -> str:
    return "fewstep " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def need_out(a) -> Path:
    if not getattr(a, "out", None):
        raise FewstepError("--out is required")
    return Path(a.out)


def _trainer_state(run_dir: Path) -> dict:
    p = Path(run_dir) / "latest" / "trainer_state.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def iterations_done(run_dir: Path) -> int:
    """Iterations a training output folder has finished (0 when it has no checkpoint yet)."""
    return _trainer_state(run_dir).get("iteration", 0)


def train_seconds(run_dir: Path) -> float | None:
    """Seconds a training output folder spent in training steps (evals and checkpoints excluded), or None."""
    return _trainer_state(run_dir).get("train_s")


def data_format(mcfg: dict) -> tuple[int | None, int | None]:
    """(resolution, channels) the model was trained at, so folder data loads as it did then (None, None
    when the model does not record an image shape: the folder's own)."""
    shape = (mcfg.get("data") or {}).get("shape") or []
    return (int(shape[-1]), int(shape[0])) if len(shape) == 3 else (None, None)


def maybe_evaluator(data, test, spec: SamplingSpec, n: int, seed: int):
    """The periodic evaluator for a run, or None (with a note) where the data has no feature net."""
    from ..metrics.evaluate import make_evaluator
    from ..metrics.features import load_features

    try:
        feats = load_features(data, shape=test.shape)
    except FewstepError as e:
        print(f"note: periodic eval disabled ({e})", file=sys.stderr)
        return None
    return make_evaluator(test, feats, spec, n=n, seed=seed)


def spec_from(a, model_cfg: dict) -> SamplingSpec:
    """The model's own sampling, with --sampler/--grid/--steps/--cfg applied."""
    try:
        return respec(SamplingSpec(**model_cfg.get("sampling", {})), a.sampler, a.grid, a.steps, a.cfg)
    except ValueError as e:
        raise FewstepError(str(e)) from None


def labels_for(model_cfg: dict, n: int):
    """Class labels 0, 1, ..., k-1, 0, ... for a conditional model; None otherwise."""
    k = model_cfg.get("data", {}).get("num_classes", 0) or model_cfg.get("arch", {}).get("num_classes", 0)
    return (torch.arange(n) % k) if k else None


def cached(den, cache: str | None):
    """The denoiser with ``--cache`` feature caching (nets/cache.py), or itself; a clear error for a
    network that cannot be cached."""
    from ..nets.cache import parse_cache, with_cache

    try:
        return with_cache(den, parse_cache(cache))
    except ValueError as e:
        raise FewstepError(f"--cache: {e}") from None
