"""Name -> method class. The trainer and CLI look methods up here and never branch on names."""
from __future__ import annotations

METHODS: dict[str, type] = {}


def register(name: str):
    def deco(cls):
        cls.name = name
        METHODS[name] = cls
        return cls

    return deco


def get_method(name: str) -> type:
    from . import teacher  # noqa: F401  (registers)

    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {sorted(METHODS)}")
    return METHODS[name]
