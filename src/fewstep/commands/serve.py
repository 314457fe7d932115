"""``fewstep serve``: load the named models once (LoRA students of one base share it) and serve the HTTP
API, the playground page and the leaderboard (serve/app.py)."""
from __future__ import annotations

import sys

from ..errors import FewstepError


def parse_models(text: str) -> list[tuple[str, str]]:
    """NAME=PATH[,NAME=PATH...]; a bare PATH (or shipped name) is served under its last path part."""
    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        name, _, path = item.partition("=") if "=" in item else (item.rstrip("/").split("/")[-1], "", item)
        if not name or not path:
            raise FewstepError(f"--models: {item!r} is not NAME=PATH")
        out.append((name, path))
    if not out:
        raise FewstepError("--models: give at least one NAME=PATH")
    return out


def build_pool(models: list[tuple[str, str]]):
    from ..serve.pool import ModelPool

    pool = ModelPool()
    for name, path in models:
        m = pool.load(name, path)
        print(f"loaded {name} ({m.kind}) from {path} in {m.load_s:.2f} s", file=sys.stderr)
    return pool


def run(a):
    try:
        import uvicorn

        from ..serve.app import ServeConfig, create_app
    except ImportError:
        raise FewstepError("serving needs starlette, pydantic and uvicorn: pip install 'fewstep[serve]'") from None
    pool = build_pool(parse_models(a.models))
    cfg = ServeConfig(max_steps=a.max_steps, max_n=a.max_n, max_queue=a.max_queue, max_batch=a.max_batch,
                      batch_window_ms=a.batch_window_ms, batching=not a.no_batching, results_dir=a.results_dir)
    uvicorn.run(create_app(pool, cfg), host=a.host, port=a.port, log_level="warning")
