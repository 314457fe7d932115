"""Training-free feature caching across sampling steps (docs/methods.md section 12), for fewstep's UNet.

Consecutive steps of a sampler see nearly the same input, so parts of the network can be reused:
* ``deepcache:N[:D]`` (DeepCache, Ma et al. 2023): every N-th call runs the whole network and keeps the
  features entering the shallowest decoder blocks; the calls between run only the input conv and the
  first D-1 down blocks (the skips those decoder blocks need) and the decoder blocks from that point,
  on the cached deep features. D = 1 (default) is DeepCache's shallowest branch. (Precisely: the last D
  residual decoder blocks and the encoder up to the skips they take, which on a block-removed UNet,
  nets/surgery.py, can be more than D.)
* ``faster:N`` or ``faster:i,j,k`` (Faster Diffusion's encoder propagation, Li et al. 2023): key calls
  (every N-th, or the listed call indices) run the whole network and keep the encoder's skips and
  bottleneck; the other calls run only the decoder, on those features and the new time embedding.
A call is one network evaluation (a guided call evaluates both branches in one batch, so they share the
schedule). A new trajectory starts whenever the noise level rises or the batch changes: that call is a
full one, so caches never leak between batches. Interval 1 is bitwise the uncached network (tested).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

KINDS = ("deepcache", "faster")


@dataclass(frozen=True)
class CacheSpec:
    kind: str  # "deepcache" | "faster"
    interval: int = 1  # a full (key) call every N calls
    keys: tuple[int, ...] | None = None  # faster: the key calls' indices instead of an interval
    depth: int = 1  # deepcache: skip features computed fresh at cached calls (1 = the input conv's)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"cache kind must be one of {KINDS}, got {self.kind!r}")
        if self.interval < 1 or self.depth < 1:
            raise ValueError("cache interval and depth must be >= 1")
        if self.keys is not None and (self.kind != "faster" or 0 not in self.keys):
            raise ValueError("key calls are for faster:KEYS and must include call 0")

    def is_full(self, call: int) -> bool:
        return call in self.keys if self.keys is not None else call % self.interval == 0

    def label(self) -> str:
        if self.keys is not None:
            return f"faster:{','.join(map(str, self.keys))}"
        return f"{self.kind}:{self.interval}" + (f":{self.depth}" if self.kind == "deepcache" and self.depth != 1 else "")


def parse_cache(text: str | None) -> CacheSpec | None:
    """``deepcache:N[:D]`` | ``faster:N`` | ``faster:i,j,k`` | None/"" (no cache)."""
    if not text:
        return None
    kind, _, rest = text.partition(":")
    try:
        if kind == "faster" and "," in rest:
            return CacheSpec(kind, keys=tuple(sorted({int(k) for k in rest.split(",")})))
        parts = [int(p) for p in rest.split(":")] if rest else [1]
        if kind == "deepcache" and len(parts) in (1, 2):
            return CacheSpec(kind, interval=parts[0], depth=parts[1] if len(parts) == 2 else 1)
        if kind == "faster" and len(parts) == 1:
            return CacheSpec(kind, interval=parts[0])
    except ValueError as e:
        raise ValueError(f"bad cache {text!r}: {e}") from None
    raise ValueError(f"bad cache {text!r}: expected deepcache:N[:D], faster:N or faster:i,j,k")


class CachedUNet(nn.Module):
    """A fewstep UNet that reuses features between consecutive calls as ``spec`` says."""

    def __init__(self, net: nn.Module, spec: CacheSpec):
        super().__init__()
        if not all(hasattr(net, a) for a in ("encode", "middle", "decode", "shallow_branch")):
            raise ValueError(f"feature caching needs fewstep's UNet; {type(net).__name__} cannot be cached yet")
        self.net, self.spec = net, spec
        if spec.kind == "deepcache":
            self.start, self.skips = net.shallow_branch(spec.depth)  # checks the depth
        self.cfg = net.cfg
        self.reset()

    def reset(self) -> None:
        self.call, self.last_level, self.shape, self.cache = 0, None, None, None
        self.full_calls = self.cached_calls = 0

    def _new_trajectory(self, x, c_noise) -> bool:
        level = float(c_noise.reshape(-1)[0])
        new = self.shape != tuple(x.shape) or self.last_level is None or level > self.last_level
        self.last_level, self.shape = level, tuple(x.shape)
        return new

    def forward(self, x, c_noise, cond=None, return_bottleneck: bool | str = False):
        if return_bottleneck:  # feature heads always see the whole network
            return self.net(x, c_noise, cond, return_bottleneck)
        if self._new_trajectory(x, c_noise):
            self.call = 0
        full = self.cache is None or self.spec.is_full(self.call)
        self.call += 1
        emb = self.net.embed(c_noise, cond)
        out = self._full(x, emb) if full else self._reuse(x, emb)
        if full:
            self.full_calls += 1
        else:
            self.cached_calls += 1
        return out

    def _full(self, x, emb):
        net = self.net
        h, hs = net.encode(x, emb)
        h = net.middle(h, emb)
        if self.spec.kind == "faster":
            self.cache = (h, list(hs))
            return net.decode(h, hs, emb)
        h = net.decode(h, hs, emb, stop=self.start)
        self.cache = h
        return net.decode(h, hs, emb, start=self.start)

    def _reuse(self, x, emb):
        net = self.net
        if self.spec.kind == "faster":
            mid, hs = self.cache
            return net.decode(mid, list(hs), emb)
        _, hs = net.encode(x, emb, skips=self.skips)
        return net.decode(self.cache, hs, emb, start=self.start)

    def config(self) -> dict:
        return self.net.config()


def with_cache(den, spec: CacheSpec | None):
    """The denoiser with its network cached as ``spec`` says (itself for None)."""
    return den if spec is None else den.like(CachedUNet(den.net, spec))


def cache_counts(den) -> tuple[int, int]:
    """(full calls, cached calls) a cached denoiser made since it was built."""
    net = den.net
    return (net.full_calls, net.cached_calls) if isinstance(net, CachedUNet) else (0, 0)

