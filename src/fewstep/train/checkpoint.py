"""Checkpoints: safetensors + JSON folders, written atomically, loaded strictly.

Layout of one checkpoint folder::

    config.json          what was trained (architecture, noise process, method, run config)
    <net>.safetensors    one file per network (model weights; EMA as ema_<net>)
    optim.safetensors    optimizer moments, flattened (+ optim.json for the scalar parts)
    rng.safetensors      random generator states
    trainer_state.json   iteration, data position, metrics needed to resume

A folder becomes visible under its final name only when every file in it is written and synced
(write to ``.tmp-*``, fsync, rename). ``latest`` is a symlink swapped in with an atomic rename.
Pickles are refused: nothing in a checkpoint can execute code.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError

PICKLE_MAGIC = tuple(b"\x80" + bytes([p]) for p in range(2, 6)) + (b"PK\x03\x04",)  # pickle >= 2; torch.save zip


def _looks_like_safetensors(path: Path) -> bool:
    """An 8-byte little-endian header length that fits the file, followed by a JSON object."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 8 + n <= size and head[8:9] == b"{"


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


def load_tensors(path: Path | str, check_finite: bool = True) -> dict[str, torch.Tensor]:
    """Load a safetensors file, refusing anything else with a one-line reason naming the file."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    with open(path, "rb") as f:
        head = f.read(8)
    if not _looks_like_safetensors(path) and any(head.startswith(m) for m in PICKLE_MAGIC):
        raise CheckpointError(f"{path}: looks like a pickle / torch.save file; refusing to load it "
                              "(pickles can execute code) - only safetensors are accepted")
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for corrupt headers/data
        raise CheckpointError(f"{path}: not a valid safetensors file ({str(e).splitlines()[0][:120]})") from None
    if check_finite:
        for k, v in tensors.items():
            if v.is_floating_point() and not torch.isfinite(v).all():
                raise CheckpointError(f"{path}: tensor {k!r} holds NaN or Inf values; refusing to load it")
    return tensors


def load_state_strict(module: nn.Module, tensors: dict[str, torch.Tensor], path) -> None:
    """load_state_dict with missing/unexpected keys and wrong shapes reported as CheckpointError."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        parts = ([f"missing {len(missing)} tensors (e.g. {missing[0]!r})"] if missing else []) + \
                ([f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})"] if unexpected else [])
        raise CheckpointError(f"{path}: does not match the model: {'; '.join(parts)}")
    for k, v in own.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{path}: tensor {k!r} has shape {tuple(tensors[k].shape)}, model expects {tuple(v.shape)}")
    module.load_state_dict({k: tensors[k].to(v.dtype) for k, v in own.items()}, strict=True)


def write_json(obj, path: Path) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def read_json(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # some filesystems do not support fsync on directories
        pass


def atomic_dir(final: Path, write) -> Path:
    """Run ``write(tmp_dir)`` and publish ``tmp_dir`` as ``final`` only once it is complete."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        write(tmp)
        for f in sorted(tmp.rglob("*"), reverse=True):  # files, then their folders, deepest first
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            elif f.is_dir():
                _fsync_dir(f)
        _fsync_dir(tmp)
        if final.exists():  # replace a previous complete folder: move it aside first
            old = final.parent / f".old-{final.name}-{os.getpid()}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old)
        else:
            os.rename(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def point_latest(out: Path, target: Path) -> None:
    """Atomically make ``out/latest`` a relative symlink to ``target``."""
    link = Path(out) / "latest"
    tmp = Path(out) / f".latest-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(os.path.relpath(target, out), tmp)
    os.replace(tmp, link)
    _fsync_dir(Path(out))


# -- optimizer state <-> tensors -----------------------------------------------------------------
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
    try:
        opt.load_state_dict({"state": state, "param_groups": scalars["param_groups"]})
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: optimizer {name!r} state does not match ({e})") from None
