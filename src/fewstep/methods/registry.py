"""Name -> method class. The trainer and CLI look methods up here and never branch on names."""
from __future__ import annotations

METHODS: dict[str, type] = {}


def register(name: str):
    def deco(cls):
        cls.name = name
        METHODS[name] = cls
        return cls

    return deco


def _load_all() -> None:
    from . import teacher  # noqa: F401  (each import registers its methods)
    from .distribution_matching import dmd, dmd2  # noqa: F401
    from .trajectory import consistency, guidance_distill, progressive, reflow  # noqa: F401


def get_method(name: str) -> type:
    _load_all()
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {sorted(METHODS)}")
    return METHODS[name]


def method_names() -> list[str]:
    _load_all()
    return sorted(n for n in METHODS if n != "teacher")
