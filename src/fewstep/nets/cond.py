"""The condition object passed as ``cond`` to every denoiser.

A plain ``LongTensor`` of class labels is accepted everywhere; ``Cond`` carries what larger teachers
need (text token embeddings, pooled embeddings, extra tensors such as SDXL's time ids).
The null condition for CFG: label ``-1`` (every class-conditional net maps negative labels to its
learned null embedding); for text, ``null_text`` / ``null_pooled`` (the empty prompt's embeddings),
which ``null_like`` broadcasts to the batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

NULL_LABEL = -1


@dataclass
class Cond:
    labels: torch.Tensor | None = None  # (B,) long; -1 = null
    text: torch.Tensor | None = None  # (B, L, D) token embeddings for cross-attention
    pooled: torch.Tensor | None = None  # (B, D) pooled text embedding (SDXL, SD3, Flux)
    extra: dict = field(default_factory=dict)  # (B, ...) tensors, e.g. SDXL "time_ids"
    null_text: torch.Tensor | None = None  # (1, L, D) the empty prompt's embeddings
    null_pooled: torch.Tensor | None = None  # (1, D)

    def _batched(self):
        return {"labels": self.labels, "text": self.text, "pooled": self.pooled}

    def to(self, device) -> "Cond":
        f = lambda v: None if v is None else v.to(device)  # noqa: E731
        return replace(self, labels=f(self.labels), text=f(self.text), pooled=f(self.pooled), null_text=f(self.null_text),
                       null_pooled=f(self.null_pooled), extra={k: v.to(device) for k, v in self.extra.items()})


def _cat(a, b):
    return None if a is None else torch.cat([a, b])


def cat_cond(a, b):
    """Concatenate two conditions along the batch (for a batched CFG call)."""
    if torch.is_tensor(a):
        return torch.cat([a, b])
    return replace(a, labels=_cat(a.labels, b.labels), text=_cat(a.text, b.text),
                   pooled=_cat(a.pooled, b.pooled), extra={k: torch.cat([v, b.extra[k]]) for k, v in a.extra.items()})


def null_like(c):
    """The unconditional counterpart of a condition, same batch size."""
    if torch.is_tensor(c):
        return torch.full_like(c, NULL_LABEL)
    n = next(v.shape[0] for v in c._batched().values() if v is not None)
    text = None if c.text is None else _need(c.null_text, "null_text").expand(n, *c.text.shape[1:])
    pooled = None if c.pooled is None else _need(c.null_pooled, "null_pooled").expand(n, *c.pooled.shape[1:])
    labels = None if c.labels is None else torch.full_like(c.labels, NULL_LABEL)
    return replace(c, labels=labels, text=text, pooled=pooled)


def index_cond(c, idx):
    """Select a subset of the batch."""
    if c is None:
        return None
    if torch.is_tensor(c):
        return c[idx]
    sel = lambda v: None if v is None else v[idx]
    return replace(c, labels=sel(c.labels), text=sel(c.text), pooled=sel(c.pooled),
                   extra={k: v[idx] for k, v in c.extra.items()})


def drop_cond(c, p: float, generator: torch.Generator | None = None):
    """Replace each sample's condition by the null one with probability p (CFG training)."""
    if c is None or p <= 0:
        return c
    first = c if torch.is_tensor(c) else next(v for v in c._batched().values() if v is not None)
    # drawn on the generator's device (trainer generators live on the CPU so runs reproduce across devices),
    # then moved to the condition's
    gen_device = generator.device if generator is not None else "cpu"
    drop = (torch.rand(first.shape[0], generator=generator, device=gen_device) < p).to(first.device)
    if torch.is_tensor(c):
        return torch.where(drop, torch.full_like(c, NULL_LABEL), c)
    nul = null_like(c)
    pick = lambda a, b: None if a is None else torch.where(drop.view(-1, *([1] * (a.ndim - 1))), b, a)
    return replace(c, labels=pick(c.labels, nul.labels), text=pick(c.text, nul.text), pooled=pick(c.pooled, nul.pooled))


def with_extra(cond, key: str, value, n: int, device=None):
    """``cond`` with the scalar input ``extra[key]`` set (a float or (B,) tensor): the guidance scale ``w``
    of LCM / guidance distillation, TwinFlow's target time ``tt``. Labels stay labels; a missing
    condition becomes ``Cond()``."""
    v = torch.as_tensor(value, dtype=torch.float32, device=device)
    v = v.expand(n) if v.ndim == 0 else v
    if cond is None or torch.is_tensor(cond):
        return Cond(labels=cond, extra={key: v})
    return replace(cond, extra={**cond.extra, key: v})


def labels_of(c):
    return c if torch.is_tensor(c) or c is None else c.labels


def _need(v, name):
    if v is None:
        raise ValueError(f"classifier-free guidance on text needs Cond.{name} (the empty prompt's embedding)")
    return v


def stack_conds(conds: list[Cond]) -> Cond:
    """Several conditions as one batch, each keeping its own unconditional branch (per-sample null_text;
    ``null_like`` then selects each sample's own)."""
    cat = lambda vs: None if vs[0] is None else torch.cat(vs)  # noqa: E731
    return Cond(text=cat([c.text for c in conds]), pooled=cat([c.pooled for c in conds]),
                extra={k: torch.cat([c.extra[k] for c in conds]) for k in conds[0].extra},
                null_text=cat([c.null_text for c in conds]), null_pooled=cat([c.null_pooled for c in conds]))
