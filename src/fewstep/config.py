"""Layered run configuration: typed dataclasses, their validation, and ``--set`` overrides.

A distillation run is ``DistillConfig(method=<the method's Config>, train=TrainSettings(...))``. Named
presets sit beside their method (``Method.presets``, keyed by dataset) and the teacher's beside the
teacher method (methods/teacher.py). A run is built in layers: the method's paper defaults, then the
preset for the data, then CLI flags and ``--set FIELD=VALUE`` (``--set optim.lr=1e-4`` reaches into a
nested config). Every value is type-checked against its field before any work starts, and every error
is one line that names the field.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from .errors import FewstepError

LR_DECAYS = ("constant", "cosine")  # learning-rate schedules after the warm-up (train/guards.py StepContext.lr_factor)


@dataclass
class TrainSettings:
    """What the generic trainer needs from a preset (train/loop.py TrainConfig adds the run's paths)."""

    max_iters: int = 600  # training iterations
    batch_size: int = 64
    warmup: int = 0  # linear LR warm-up iterations
    lr_decay: str = "constant"  # "constant" | "cosine": half a cosine from the LR to 0 over the run (train/guards.py)
    ema_decay: float = 0.99  # EMA of the evaluated network (0 = off); evaluate the EMA (docs/notes.md)
    bf16: bool = True  # bf16 autocast where the hardware has bf16 (fewstep.hardware): same FD, faster
    eval_every: int = 200  # periodic evaluation every N iterations (0 = at the end)
    eval_n: int = 500  # samples per periodic evaluation
    ckpt_every: int = 100  # resumable checkpoint every N iterations (0 = at the end)

    def __post_init__(self):
        if self.max_iters < 1 or self.batch_size < 1 or self.eval_n < 1:
            raise ValueError("max_iters, batch_size and eval_n must be >= 1")
        if min(self.warmup, self.eval_every, self.ckpt_every) < 0:
            raise ValueError("warmup, eval_every and ckpt_every must be >= 0")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.lr_decay not in LR_DECAYS:
            raise ValueError(f"lr_decay must be one of {LR_DECAYS}, got {self.lr_decay!r}")


@dataclass
class DistillConfig:
    """One distillation run: the method's typed config and the trainer's settings."""

    method: Any  # an instance of the method's Config dataclass
    train: TrainSettings = field(default_factory=TrainSettings)

    def to_dict(self) -> dict:
        return {"method": dataclasses.asdict(self.method), "train": dataclasses.asdict(self.train)}


# -- --set parsing ---------------------------------------------------------------------------------
def parse_sets(items: list[str] | None) -> dict:
    """``["a=1", "optim.lr=1e-4", "schedule=exclusive"]`` -> ``{"a": 1, "optim": {"lr": 1e-4}, ...}``.
    Values are JSON (numbers, booleans, lists) with a plain-string fallback."""
    out: dict = {}
    for kv in items or []:
        key, sep, raw = kv.partition("=")
        if not sep or not key or any(not p for p in key.split(".")):
            raise FewstepError(f"--set expects FIELD=VALUE (or GROUP.FIELD=VALUE), got {kv!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        *groups, name = key.split(".")
        node = out
        for g in groups:
            node = node.setdefault(g, {})
            if not isinstance(node, dict):
                raise FewstepError(f"--set {kv!r}: {g!r} is set both as a value and as a group")
        node[name] = value
    return out


# -- validation ------------------------------------------------------------------------------------
_SCALARS = {int: "int", float: "float", bool: "bool", str: "str"}


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _options(tp) -> list:
    """The alternatives of a type annotation (``X | None`` -> [X, NoneType])."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return list(typing.get_args(tp))
    return [tp]


def _finite_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _accepts(tp, value) -> bool:
    base = typing.get_origin(tp) or tp
    if tp is type(None):
        return value is None
    if tp is Any:
        return True
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return _finite_number(value)
    if tp is str:
        return isinstance(value, str)
    if base in (tuple, list):  # items typed by the annotation (tuple[float, float], list[str]); bare: numbers
        item = next((a for a in typing.get_args(tp) if a is not Ellipsis), float)
        return isinstance(value, (list, tuple)) and all(_accepts(item, v) for v in value)
    if base is dict:
        return isinstance(value, dict)
    if dataclasses.is_dataclass(tp):
        return isinstance(value, (dict, tp))
    return True  # anything else: the field's own constructor validates it


def _type_name(tp) -> str:
    return " | ".join(_SCALARS.get(o, "None" if o is type(None) else getattr(o, "__name__", str(o))) for o in _options(tp))


def check_field_types(cls, values: dict, prefix: str = "") -> None:
    """Refuse unknown field names and values whose type does not match the dataclass field (JSON from
    ``--set`` or a file), recursing into nested config dataclasses; one-line ValueErrors naming the field."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = _hints(cls)
    where = prefix or cls.__name__
    for name, value in values.items():
        if name not in fields:
            raise ValueError(f"{where} has no field {name!r}; fields: {', '.join(sorted(fields))}")
        tp = hints[name]
        nested = [o for o in _options(tp) if dataclasses.is_dataclass(o)]
        if nested and isinstance(value, dict):
            check_field_types(nested[0], value, f"{where}.{name}")
            continue
        if not any(_accepts(o, value) for o in _options(tp)):
            raise ValueError(f"{where}.{name} must be {_type_name(tp)}, got {value!r}")
        default = fields[name].default
        variable = any(Ellipsis in typing.get_args(o) for o in _options(tp))  # tuple[int, ...]
        if isinstance(default, tuple) and not variable and isinstance(value, (list, tuple)) and len(value) != len(default):
            raise ValueError(f"{where}.{name} needs {len(default)} values, got {value!r}")


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def from_dict(cls, values: dict):
    """Build a (possibly nested) config dataclass from plain values."""
    hints = _hints(cls)
    kwargs = {}
    for name, value in values.items():
        nested = [o for o in _options(hints[name]) if dataclasses.is_dataclass(o)]
        kwargs[name] = from_dict(nested[0], value) if nested and isinstance(value, dict) else value
    return cls(**kwargs)


def build_config(cls, overrides: dict | None = None, base=None):
    """The layered build: ``base`` (an instance; default ``cls()``, the paper defaults) with
    ``overrides`` merged in field by field (nested configs merge too), validated."""
    overrides = overrides or {}
    check_field_types(cls, overrides)
    merged = _merge(dataclasses.asdict(base if base is not None else cls()), overrides)
    return from_dict(cls, merged)


def fields_of_type(cls, tp) -> list[str]:
    """Names of ``cls``'s fields annotated with the dataclass ``tp`` (e.g. every OptimConfig)."""
    hints = _hints(cls)
    return [f.name for f in dataclasses.fields(cls) if tp in _options(hints[f.name])]
