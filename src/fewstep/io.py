"""The ground floor: tensors, JSON and folders on disk, written atomically, loaded strictly.

Every module that writes a file goes through here (data caches, metrics, model folders, exports,
checkpoints). A folder becomes visible under its final name only when every file in it is written and
synced (write to ``.tmp-*``, fsync, rename); a file is written to a temporary name and renamed. Pickles
are refused: nothing this package loads can execute code. ``hold_folder`` gives a run exclusive use
of its output folder.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError, FewstepError

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
    module.load_state_dict({k: in_layout_of(tensors[k], v) for k, v in own.items()}, strict=True)


def in_layout_of(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` in ``like``'s dtype, and split as ``like`` is when that is a sharded (FSDP2 DTensor) tensor:
    each rank keeps its own shard of the full tensor every rank read (no communication)."""
    if type(like).__name__ == "DTensor":
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(t.to(like.dtype), like.device_mesh, like.placements, src_data_rank=None)
    return t.to(like.dtype)


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


def write_text_atomic(path: Path | str, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place: a reader sees the
    old file or the new one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    tmp.write_text(text)
    tmp.replace(path)
    return path


def write_json_atomic(obj, path: Path | str) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def save_tensors_atomic(tensors: dict[str, torch.Tensor], path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    save_tensors(tensors, tmp)
    tmp.replace(path)
    return path


LOCK_NAME = ".fewstep.lock"
_HELD: set[str] = set()  # folders this process holds (holding is re-entrant within a process)


@contextlib.contextmanager
def hold_folder(folder: Path | str):
    """Hold ``folder`` for one run: a second run on a folder that a live run holds is refused with a
    one-line error. The lock is an ``flock`` on ``folder/.fewstep.lock``: the kernel releases it when
    the holder exits, however it dies (``kill -9`` included), so ``--resume`` takes such a folder over."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    if key in _HELD:
        yield folder
        return
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise FewstepError(f"{folder} is in use by a running fewstep process (pid {holder}); "
                               "wait for it to finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        _HELD.add(key)
        try:
            yield folder
        finally:
            _HELD.discard(key)
    finally:
        os.close(fd)  # closing the descriptor releases the lock
