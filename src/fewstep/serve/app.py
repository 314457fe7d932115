"""``fewstep serve``: an ASGI app (Starlette) over a model pool and a dynamic batcher.

Routes: ``GET /healthz``, ``GET /v1/models``, ``POST /v1/generate``, ``GET /`` (the playground page),
``GET /leaderboard`` (every benchmark results file). Every bad request is answered with a 4xx JSON body
``{"error": {"field": ..., "message": ...}}`` before it reaches a model; a full queue answers 429 at
once; an error inside a batch is a 500 for its requests and the server goes on.
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .batching import Batcher, Job, QueueFull
from .pool import ModelPool, ServedModel


@dataclass
class ServeConfig:
    max_steps: int = 64  # most network evaluations a request may ask for
    max_n: int = 16  # most images per request
    max_side_factor: int = 4  # width/height at most this many times the model's training resolution
    max_prompt: int = 1000  # longest prompt / negative prompt, in characters
    max_cfg: float = 20.0  # largest guidance scale
    max_body: int = 16_384  # request body bytes
    max_queue: int = 64  # requests waiting for a batch; beyond it: 429
    max_batch: int = 16  # images per network batch
    batch_window_ms: float = 10.0  # how long the worker waits for more requests to batch with
    batching: bool = True  # off: every request runs alone (for measuring what batching buys)
    results_dir: str = "benchmarks/results"  # what /leaderboard reads


class GenerateRequest(BaseModel):
    """``POST /v1/generate``; strict types (a string is not a number), no unknown fields."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    model: str
    prompt: str | None = None
    class_: int | None = Field(default=None, alias="class")
    negative: str | None = None
    steps: int | None = None
    cfg: float | None = None
    seed: int | None = None
    n: int = 1
    width: int | None = None
    height: int | None = None
    enlarge: int | None = None  # a larger canvas composed at native size, enlarged, its last K steps re-run in tiles


class BadRequest(Exception):
    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(message)
        self.field, self.message, self.status = field, message, status


def error(status: int, field: str | None, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"field": field, "message": message}}, status_code=status, headers=headers)


def check_limits(req: GenerateRequest, model: ServedModel, cfg: ServeConfig) -> None:
    """Every limit and every mismatch between the request and the model, as BadRequest naming the field."""
    if not 1 <= req.n <= cfg.max_n:
        raise BadRequest("n", f"n must be between 1 and {cfg.max_n}")
    if req.steps is not None and not 1 <= req.steps <= cfg.max_steps:
        raise BadRequest("steps", f"steps must be between 1 and {cfg.max_steps}")
    if req.enlarge is not None and req.enlarge < 0:
        raise BadRequest("enlarge", "enlarge (refine steps) must be 0 or more")
    if req.seed is not None and not 0 <= req.seed < 2**63:
        raise BadRequest("seed", "seed must be between 0 and 2**63 - 1")
    for name in ("prompt", "negative"):
        text = getattr(req, name)
        if text is not None and len(text) > cfg.max_prompt:
            raise BadRequest(name, f"{name} is longer than {cfg.max_prompt} characters")
    if req.cfg is not None and not (math.isfinite(req.cfg) and 0 <= req.cfg <= cfg.max_cfg):
        raise BadRequest("cfg", f"cfg must be a finite number between 0 and {cfg.max_cfg}")
    if model.text is not None:
        check_text_limits(req, model)
        return
    if req.prompt is not None or req.negative is not None:
        field = "prompt" if req.prompt is not None else "negative"
        raise BadRequest(field, f"model {model.name!r} is not text-conditioned (it takes "
                                f"{'class' if model.num_classes else 'no conditioning'})")
    if req.class_ is not None:
        if not model.num_classes:
            raise BadRequest("class", f"model {model.name!r} is unconditional: it takes no class")
        if not 0 <= req.class_ < model.num_classes:
            raise BadRequest("class", f"class must be between 0 and {model.num_classes - 1}")
    if req.cfg is not None and req.cfg != 1.0 and not model.num_classes:
        raise BadRequest("cfg", f"model {model.name!r} is unconditional: guidance needs a conditional model")
    if len(model.shape) == 3:
        native_h, native_w = model.shape[1:]
        for name, native in (("width", native_w), ("height", native_h)):
            side = getattr(req, name)
            if side is not None and not native <= side <= cfg.max_side_factor * native:
                raise BadRequest(name, f"{name} must be between the model's own {native} and {cfg.max_side_factor * native} "
                                       "(larger canvases are sampled in overlapping tiles)")
        if req.enlarge is not None and (req.width or native_w) == native_w and (req.height or native_h) == native_h:
            raise BadRequest("enlarge", f"enlarge needs a width or height larger than the model's own {native_w}x{native_h}")
    elif req.width is not None or req.height is not None:
        raise BadRequest("width" if req.width is not None else "height", f"model {model.name!r} makes points, not images")
    elif req.enlarge is not None:
        raise BadRequest("enlarge", f"model {model.name!r} makes points, not images")


def check_text_limits(req: GenerateRequest, model: ServedModel) -> None:
    """A text-to-image model takes a prompt (and a negative prompt), no class, and its own image size."""
    if req.class_ is not None:
        raise BadRequest("class", f"model {model.name!r} is text-conditioned: send a prompt, not a class")
    _, h, w = model.image_shape
    for name, native in (("width", w), ("height", h)):
        side = getattr(req, name)
        if side is not None and side != native:
            raise BadRequest(name, f"{name} must be the model's own {native} (tiled canvases are for pixel-space models)")
    if req.enlarge is not None:
        raise BadRequest("enlarge", "enlarged canvases are for pixel-space models")


def to_png_b64(x) -> str:
    """One sample in [-1, 1], (C, H, W), as a base64 PNG (grey for one channel)."""
    import numpy as np
    import torch
    from PIL import Image

    arr = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    img = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else np.ascontiguousarray(arr))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def create_app(pool: ModelPool, cfg: ServeConfig | None = None) -> Starlette:
    cfg = cfg or ServeConfig()

    def run_batch(jobs: list[Job]) -> list:
        """On the worker thread: switch to the batch's model and sample every job of the batch at once."""
        from ..samplers.generate import generate_requests
        from ..samplers.tiled import Tiled, enlarge_requests

        model, spec, shape, refine = (jobs[0].payload[k] for k in ("model", "spec", "shape", "enlarge"))
        den = pool.activate(model)
        requests = [(j.n, j.payload["labels"], j.payload["seed"]) for j in jobs]
        t0 = time.perf_counter()
        if refine is not None:  # any-size, Any-Size-Diffusion's way: compose natively, enlarge, refine in tiles
            outs = enlarge_requests(den, spec, model.shape, shape[1:], requests, refine)
        else:  # any-size from noise: the canvas in overlapping native tiles
            den = Tiled(den, tuple(model.shape[1:])) if tuple(shape) != tuple(model.shape) else den
            outs = generate_requests(den, spec, shape, requests)
        if model.text is not None:  # latents -> images through the pipeline's VAE
            outs = [model.text.decode(o) for o in outs]
        dt = time.perf_counter() - t0
        return [(o, dt, len(jobs)) for o in outs]

    batcher = Batcher(run_batch, max_queue=cfg.max_queue, max_batch=cfg.max_batch, window_s=cfg.batch_window_ms / 1000,
                      enabled=cfg.batching)

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "queued": batcher.queue.qsize(), "busy": batcher.busy})

    async def models(request: Request) -> Response:
        return JSONResponse({"models": pool.describe(), "limits": {"steps": cfg.max_steps, "n": cfg.max_n,
                                                                   "prompt": cfg.max_prompt, "cfg": cfg.max_cfg}})

    async def stats(request: Request) -> Response:
        return JSONResponse({"batching": batcher.stats.as_dict(), "queue": {"size": batcher.queue.qsize(),
                                                                            "max": batcher.queue.maxsize},
                             "param_bytes": pool.param_bytes()})

    async def parse(request: Request) -> tuple[GenerateRequest, ServedModel, object]:
        body = await request.body()
        if len(body) > cfg.max_body:
            raise BadRequest("body", f"request body over {cfg.max_body} bytes", 413)
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BadRequest("body", f"malformed JSON: {e}", 400) from None
        if not isinstance(data, dict):
            raise BadRequest("body", "the body must be a JSON object", 400)
        try:
            req = GenerateRequest.model_validate(data)
        except ValidationError as e:
            first = e.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "body"
            raise BadRequest(field, f"{field}: {first['msg']}") from None
        model = pool.models.get(req.model)
        if model is None:
            raise BadRequest("model", f"unknown model {req.model!r}; loaded: {', '.join(pool.models)}")
        check_limits(req, model, cfg)
        try:
            spec = model.spec_for(req.steps, req.cfg)
        except ValueError as e:
            raise BadRequest("steps", str(e)) from None
        if req.enlarge:
            from ..samplers.tiled import tail_spec

            try:
                tail_spec(model.den, spec, req.enlarge)  # the grid only: no adapter switch here
            except ValueError as e:
                raise BadRequest("enlarge", str(e)) from None
        return req, model, spec

    async def generate(request: Request) -> Response:
        import torch

        t0 = time.perf_counter()
        try:
            req, model, spec = await parse(request)
        except BadRequest as e:
            return error(e.status, e.field, e.message)
        labels = None
        if model.text is not None:  # the prompt's condition (encoded on this thread: small next to sampling)
            labels = model.text.cond(req.prompt or "", req.negative, req.n)
        elif model.num_classes:
            labels = (torch.full((req.n,), req.class_) if req.class_ is not None
                      else torch.arange(req.n) % model.num_classes)
        seed = req.seed if req.seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
        from ..samplers import STOCHASTIC, nfe_of

        # a stochastic sampler's noise between steps would depend on its batch-mates: such requests run
        # alone (one step draws none: it ends at level 0)
        alone = spec.sampler in STOCHASTIC and spec.steps > 1
        shape = model.shape
        if len(shape) == 3 and model.text is None:
            shape = (shape[0], req.height or shape[1], req.width or shape[2])
        key = (model.name, spec.sampler, spec.grid, spec.steps, spec.cfg, tuple(spec.sigmas or ()), shape, req.enlarge,
               id(request) if alone else None)
        try:
            fut = batcher.submit(Job(key, req.n, {"model": model, "spec": spec, "labels": labels, "seed": seed, "shape": shape,
                                                  "enlarge": req.enlarge}))
        except QueueFull as e:
            return error(429, None, str(e), headers={"Retry-After": "1"})
        while not fut.done():  # a client that leaves takes its queued work with it
            await asyncio.wait({fut}, timeout=0.05)
            if not fut.done() and await request.is_disconnected():
                fut.cancel()
                return Response(status_code=499)
        try:
            outs, batch_s, batch_jobs = fut.result()
        except Exception as e:  # the batch failed; this request hears why, the server stays up
            return error(500, None, f"generation failed: {type(e).__name__}: {e}")
        images = [to_png_b64(x) for x in outs] if outs.ndim == 4 else None
        steps = nfe_of(spec.sampler, spec.steps)
        calls = steps
        if req.enlarge:  # the refinement's calls, one per native-size tile of the canvas
            from ..samplers.tiled import Tiled

            calls += nfe_of(spec.sampler, req.enlarge) * Tiled(model.den, tuple(model.shape[1:])).tiles(*shape[1:])
        body = {"model": model.name, "steps": steps, "nfe": calls * (1 if spec.cfg == 1.0 else 2),
                "seed": seed, "latency_ms": round(1000 * (time.perf_counter() - t0), 2),
                "batch_ms": round(1000 * batch_s, 2), "batched_with": batch_jobs - 1, "images": images}
        if images is None:
            body["points"] = outs.tolist()
        return JSONResponse(body)

    async def index(request: Request) -> Response:
        from .pages import index_html

        return HTMLResponse(index_html())

    async def leaderboard(request: Request) -> Response:
        from .pages import leaderboard_html

        return HTMLResponse(leaderboard_html(Path(cfg.results_dir)))

    async def not_found(request: Request, exc) -> Response:
        status = getattr(exc, "status_code", 404)
        return error(status, None, getattr(exc, "detail", "not found"))

    async def server_error(request: Request, exc) -> Response:
        return error(500, None, f"internal error: {type(exc).__name__}")

    routes = [Route("/healthz", healthz), Route("/v1/models", models), Route("/v1/stats", stats),
              Route("/v1/generate", generate, methods=["POST"]), Route("/", index), Route("/leaderboard", leaderboard)]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: not_found,
                                                                          500: server_error})
    app.state.pool, app.state.batcher, app.state.config = pool, batcher, cfg
    return app
