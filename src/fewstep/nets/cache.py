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
* ``disca:PATH`` (DisCa, learnable feature caching): DeepCache's schedule, but a cached call does not
  reuse the deep features as they were: a small trained ``CachePredictor`` predicts them from the cached
  ones, the fresh and cached shallow skip feature and both calls' time embeddings. PATH is a model folder
  written by the ``disca`` method (methods/compress/disca.py); that folder is itself a cached model
  (architecture ``disca``: the network and the predictor) that loads and samples like any other.
A call is one network evaluation (a guided call evaluates both branches in one batch, so they share the
schedule). A new trajectory starts whenever the noise level rises or the batch changes: that call is a
full one, so caches never leak between batches. Interval 1 is bitwise the uncached network (tested).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

KINDS = ("deepcache", "faster", "disca")


@dataclass(frozen=True)
class CacheSpec:
    kind: str  # "deepcache" | "faster" | "disca"
    interval: int = 1  # a full (key) call every N calls
    keys: tuple[int, ...] | None = None  # faster: the key calls' indices instead of an interval
    depth: int = 1  # deepcache/disca: skip features computed fresh at cached calls (1 = the input conv's)
    path: str | None = None  # disca: the trained predictor's model folder (its interval and depth come from it)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"cache kind must be one of {KINDS}, got {self.kind!r}")
        if self.interval < 1 or self.depth < 1:
            raise ValueError("cache interval and depth must be >= 1")
        if self.keys is not None and (self.kind != "faster" or 0 not in self.keys):
            raise ValueError("key calls are for faster:KEYS and must include call 0")
        if self.path is not None and self.kind != "disca":
            raise ValueError("a predictor path is for disca:PATH only")

    def is_full(self, call: int) -> bool:
        return call in self.keys if self.keys is not None else call % self.interval == 0

    def label(self) -> str:
        if self.keys is not None:
            return f"faster:{','.join(map(str, self.keys))}"
        if self.path is not None:
            return f"disca:{self.path}"
        return f"{self.kind}:{self.interval}" + (f":{self.depth}" if self.kind == "deepcache" and self.depth != 1 else "")


def parse_cache(text: str | None) -> CacheSpec | None:
    """``deepcache:N[:D]`` | ``faster:N`` | ``faster:i,j,k`` | ``disca:PATH`` | None/"" (no cache)."""
    if not text:
        return None
    kind, _, rest = text.partition(":")
    if kind == "disca":
        if not rest:
            raise ValueError("disca needs the trained predictor's folder: disca:PATH")
        return CacheSpec("disca", path=rest)
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
    raise ValueError(f"bad cache {text!r}: expected deepcache:N[:D], faster:N, faster:i,j,k or disca:PATH")


class CachePredictor(nn.Module):
    """DisCa's learned cache (after Zou et al. 2025, DisCa): at a cached call, the deep features entering
    the shallow decoder are predicted as the cached ones plus a correction

        h_hat = h_c + P([h_c, s, s - s_c], FiLM(emb, emb_c))

    from the fresh skip feature ``s`` the shallow branch computed anyway, its value ``s_c`` at the full
    call, and both calls' time embeddings. The correction's last layer starts at zero, so an untrained
    predictor is DeepCache exactly. Kept to 1x1 / one 3x3 convolution at the shallow resolution, so a
    cached call stays a small fraction of a full one (its MACs are counted in every benchmark row)."""

    def __init__(self, feat_channels: int, skip_channels: int, emb_dim: int, hidden: int = 32):
        super().__init__()
        self.dims = {"feat_channels": feat_channels, "skip_channels": skip_channels, "emb_dim": emb_dim,
                     "hidden": hidden}
        self.inp = nn.Conv2d(feat_channels + 2 * skip_channels, hidden, 1)
        self.film = nn.Linear(2 * emb_dim, 2 * hidden)
        self.norm = nn.GroupNorm(min(8, hidden), hidden)
        self.mix = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.out = nn.Conv2d(hidden, feat_channels, 1)
        nn.init.zeros_(self.out.weight), nn.init.zeros_(self.out.bias)

    def forward(self, h_c, s_c, s, emb_c, emb):
        z = self.inp(torch.cat([h_c, s, s - s_c], dim=1))
        scale, shift = self.film(F.silu(torch.cat([emb, emb_c], dim=1))).chunk(2, dim=1)
        z = F.silu(self.norm(z) * (1 + scale[..., None, None]) + shift[..., None, None])
        return h_c + self.out(F.silu(self.mix(z)))

    def config(self) -> dict:
        return dict(self.dims)


class CachedUNet(nn.Module):
    """A fewstep UNet that reuses features between consecutive calls as ``spec`` says (with DisCa's
    ``predictor`` for ``disca``)."""

    def __init__(self, net: nn.Module, spec: CacheSpec, predictor: CachePredictor | None = None):
        super().__init__()
        if not all(hasattr(net, a) for a in ("encode", "middle", "decode", "shallow_branch")):
            raise ValueError(f"feature caching needs fewstep's UNet; {type(net).__name__} cannot be cached yet")
        if (spec.kind == "disca") != (predictor is not None):
            raise ValueError("a disca cache needs its predictor, and only disca takes one")
        self.net, self.spec, self.predictor = net, spec, predictor
        if spec.kind in ("deepcache", "disca"):
            self.start, self.skips = net.shallow_branch(spec.depth)  # checks the depth
            self.skip_index = net.up_skips[self.start]  # the skip the shallow decoder's first block takes
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

    def deep(self, x, emb):
        """(features entering the shallow decoder, every skip feature): a full call up to the shallow branch."""
        net = self.net
        h, hs = net.encode(x, emb)
        return net.decode(net.middle(h, emb), hs, emb, stop=self.start), hs

    def _full(self, x, emb):
        net = self.net
        if self.spec.kind == "faster":
            h, hs = net.encode(x, emb)
            h = net.middle(h, emb)
            self.cache = (h, list(hs))
            return net.decode(h, hs, emb)
        h, hs = self.deep(x, emb)
        self.cache = (h, hs[self.skip_index], emb)
        return net.decode(h, hs, emb, start=self.start)

    def _reuse(self, x, emb):
        net = self.net
        if self.spec.kind == "faster":
            mid, hs = self.cache
            return net.decode(mid, list(hs), emb)
        h_c, s_c, emb_c = self.cache
        _, hs = net.encode(x, emb, skips=self.skips)
        h = h_c if self.predictor is None else self.predictor(h_c, s_c, hs[self.skip_index], emb_c, emb)
        return net.decode(h, hs, emb, start=self.start)

    def config(self) -> dict:
        if self.predictor is None:
            return self.net.config()
        return {"arch": "disca", "net": self.net.config(), "interval": self.spec.interval, "depth": self.spec.depth,
                "predictor": self.predictor.config()}

    @classmethod
    def from_config(cls, cfg: dict, build) -> "CachedUNet":
        """A DisCa model (architecture ``disca``) from its stored config."""
        try:
            spec = CacheSpec("disca", interval=int(cfg["interval"]), depth=int(cfg["depth"]))
            return cls(build(dict(cfg["net"])), spec, CachePredictor(**cfg["predictor"]))
        except (KeyError, TypeError) as e:
            raise ValueError(f"bad disca config: {e}") from None


def disca_predictor(net: nn.Module, depth: int, hidden: int) -> CachePredictor:
    """A fresh (DeepCache-equivalent) predictor for ``net``'s shallow branch of depth ``depth``."""
    if not all(hasattr(net, a) for a in ("shallow_branch", "up_skips", "skip_channels")):
        raise ValueError(f"DisCa needs fewstep's UNet; {type(net).__name__} cannot be cached yet")
    start, _ = net.shallow_branch(depth)
    skip_ch = net.skip_channels[net.up_skips[start]]
    first = net.up[start][0]
    if not hasattr(first, "c1"):
        raise ValueError("the shallow decoder's first block was pruned; choose another depth")
    return CachePredictor(first.c1.in_channels - skip_ch, skip_ch, net.embed_dim, hidden)


def _json(obj):
    return json.loads(json.dumps(obj))


def load_disca(net: nn.Module, path: str) -> "CachedUNet":
    """``net`` cached by the DisCa predictor in the model folder ``path`` (trained for this network)."""
    from pathlib import Path

    from ..io import load_tensors, read_json

    d = Path(path)
    if (d / "model" / "config.json").is_file() and not (d / "config.json").is_file():
        d = d / "model"  # a training output folder: its final model
    if not (d / "config.json").is_file():
        raise ValueError(f"disca:{path}: no model folder there (train one with fewstep distill --method disca)")
    arch = read_json(d / "config.json").get("arch", {})
    if arch.get("arch") != "disca":
        raise ValueError(f"{path} is not a DisCa model (architecture {arch.get('arch')!r}); train one with "
                         "fewstep distill --method disca")
    if _json(arch["net"]) != _json(net.config()):
        raise ValueError(f"{path}'s predictor was trained for another network architecture than this model's")
    cached = CachedUNet.from_config(arch, lambda cfg: net)
    state = {k[len("predictor."):]: v for k, v in load_tensors(d / "model.safetensors").items()
             if k.startswith("predictor.")}
    cached.predictor.load_state_dict(state)
    return cached


def with_cache(den, spec: CacheSpec | None):
    """The denoiser with its network cached as ``spec`` says (itself for None)."""
    if spec is None:
        return den
    if isinstance(den.net, CachedUNet):
        raise ValueError("this model is already cached (a DisCa model); sample it without --cache")
    if spec.kind == "disca":
        return den.like(load_disca(den.net, spec.path).to(next(den.net.parameters()).device))
    return den.like(CachedUNet(den.net, spec))


def cache_counts(den) -> tuple[int, int]:
    """(full calls, cached calls) a cached denoiser made since it was built."""
    net = den.net
    return (net.full_calls, net.cached_calls) if isinstance(net, CachedUNet) else (0, 0)


def cache_label(den) -> str | None:
    """The cache mode a model carries itself (a DisCa model), for benchmark rows."""
    net = den.net
    return net.spec.label() if isinstance(net, CachedUNet) and net.predictor is not None else None
