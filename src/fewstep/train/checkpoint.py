"""Training checkpoints: every network, its EMA, the optimizers, the RNG states and the trainer's position.

Layout of one checkpoint folder (written with ``io.atomic_dir``, so it is complete or absent)::

    config.json          what was trained (architecture, noise process, method, run config)
    <net>.safetensors    one file per network; ema.safetensors for the evaluated network's EMA
    optim.safetensors    optimizer moments, flattened (+ optim.json for the scalar parts)
    rng.safetensors      random generator states
    trainer_state.json   iteration, data position, counters needed to resume

``latest`` is a symlink swapped in with an atomic rename and only ever points at a complete folder.
"""
from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..io import atomic_dir, in_layout_of, load_state_strict, load_tensors, point_latest, read_json, save_tensors, write_json
from .distributed import is_dtensor

KILL_HOOK = "FEWSTEP_TEST_KILL_IN_CHECKPOINT"  # fault injection for the kill-and-resume tests


def optimizer_to_tensors(name: str, opt: torch.optim.Optimizer):
    sd = opt.state_dict()
    tensors, scalars = {}, {"param_groups": sd["param_groups"], "state": {}}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{name}.{idx}.{k}"] = v
            else:
                scalars["state"].setdefault(str(idx), {})[k] = v
    return tensors, scalars


def optimizer_from_tensors(name: str, opt: torch.optim.Optimizer, tensors: dict, scalars: dict, path) -> None:
    state: dict = {}
    prefix = f"{name}."
    for key, v in tensors.items():
        if key.startswith(prefix):
            idx, k = key[len(prefix):].split(".", 1)
            state.setdefault(int(idx), {})[k] = v
    for idx, st in scalars.get("state", {}).items():
        state.setdefault(int(idx), {}).update(st)
    params = [p for g in opt.param_groups for p in g["params"]]
    for idx, st in state.items():  # FSDP2: per-parameter state (Adam's moments) split as its parameter is
        p = params[idx] if idx < len(params) else None
        if p is not None and is_dtensor(p):
            st.update({k: in_layout_of(v, p) for k, v in st.items() if torch.is_tensor(v) and v.shape == p.shape})
    try:
        opt.load_state_dict({"state": state, "param_groups": scalars["param_groups"]})
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: optimizer {name!r} state does not match ({e})") from None


class Checkpoints:
    """The checkpoint folders of one run under ``out/checkpoints``: save (atomic, then ``latest``,
    then prune to ``keep``), list the resumable ones best first, load one strictly."""

    def __init__(self, out: Path | str, keep: int = 2):
        self.out, self.keep = Path(out), keep
        self.dir = self.out / "checkpoints"

    def save(self, it: int, config: dict, nets: dict, ema_net, optimizers: dict, rngs: dict, state: dict) -> Path:
        def write(tmp: Path) -> None:
            write_json(config, tmp / "config.json")
            for name, net in nets.items():
                save_tensors(net.state_dict(), tmp / f"{name}.safetensors")
            if os.environ.get(KILL_HOOK) == str(it):  # fault injection (tests): die mid-write
                os.kill(os.getpid(), signal.SIGKILL)
            if ema_net is not None:
                save_tensors(ema_net.state_dict(), tmp / "ema.safetensors")
            tensors, scalars = {}, {}
            for name, opt in optimizers.items():
                t, s = optimizer_to_tensors(name, opt)
                tensors.update(t)
                scalars[name] = s
            save_tensors(tensors, tmp / "optim.safetensors")
            write_json(scalars, tmp / "optim.json")
            save_tensors({k: g.get_state() if isinstance(g, torch.Generator) else g for k, g in rngs.items()},
                         tmp / "rng.safetensors")
            write_json(state, tmp / "trainer_state.json")

        path = atomic_dir(self.dir / f"{it:08d}", write)
        point_latest(self.out, path)
        self.prune()
        return path

    def prune(self) -> None:
        """Delete all but the newest ``keep`` checkpoints. A folder first loses its checkpoint's name (one
        atomic rename to ``.del-*``), then its files: a kill inside the deletion leaves a hidden folder that
        ``remove_partial`` clears, never a half-deleted folder that still looks like a checkpoint."""
        for old in self.complete()[:-self.keep]:
            doomed = old.parent / f".del-{old.name}-{os.getpid()}"
            os.rename(old, doomed)
            shutil.rmtree(doomed, ignore_errors=True)

    def complete(self) -> list[Path]:
        """Complete checkpoint folders, oldest first (partial ones never carry a checkpoint's name)."""
        return sorted(p for p in self.dir.iterdir() if p.is_dir() and p.name.isdigit()) if self.dir.is_dir() else []

    def candidates(self) -> list[Path]:
        """Checkpoints to resume from, best first: ``latest``, then the others newest first."""
        found = self.complete()[::-1]
        latest = self.out / "latest"
        if latest.is_symlink() and latest.resolve() in [p.resolve() for p in found]:
            first = latest.resolve()
            found = [first] + [p for p in found if p.resolve() != first]
        return found

    def remove_partial(self) -> list[str]:
        """Delete folders a killed run left half-written or half-deleted; returns their names."""
        removed = []
        leftovers = [p for pat in (".tmp-*", ".del-*") for p in self.dir.glob(pat)] if self.dir.is_dir() else []
        for p in leftovers:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
        return removed

    @staticmethod
    def load(path: Path, nets: dict, ema_net, optimizers: dict) -> tuple[dict, dict]:
        """Restore networks, EMA and optimizers from ``path``; returns (trainer state, RNG state tensors).
        Anything that does not match raises ``CheckpointError`` naming the file."""
        for name, net in nets.items():
            f = path / f"{name}.safetensors"
            load_state_strict(net, load_tensors(f), f)
        if ema_net is not None:
            load_state_strict(ema_net, load_tensors(path / "ema.safetensors"), path / "ema.safetensors")
        tensors = load_tensors(path / "optim.safetensors")
        scalars = read_json(path / "optim.json")
        for name, opt in optimizers.items():
            optimizer_from_tensors(name, opt, tensors, scalars.get(name, {}), path / "optim.safetensors")
        rng = load_tensors(path / "rng.safetensors", check_finite=False)
        return read_json(path / "trainer_state.json"), rng
