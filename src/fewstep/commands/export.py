"""``fewstep export``: a student of a diffusers teacher, as diffusers loads it (export.py)."""
from __future__ import annotations

import json

from .common import need_out


def run(a):
    from ..export import export_diffusers

    path = export_diffusers(a.model, need_out(a))
    print(json.dumps({"export": str(path)}))
