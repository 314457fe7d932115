"""Copies of a network that share its frozen weights instead of duplicating them.

A LoRA student is the teacher plus small adapters: its base weights never change, so a copy of the
teacher for the student, another for its EMA and another for a consistency target network would hold
the same frozen tensors three more times (4 x 3.4 GB for an SD1.5 UNet in fp32). Here the copies get
their own modules (so adapters, train/eval mode and hooks stay per copy) around the *same* frozen
parameter tensors; only what trains is duplicated. The teacher's own modules never carry the student's
adapters, so the teacher's output is unchanged bit for bit (tests/test_sharing.py).
"""
from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn


def copy_sharing(net: nn.Module, shared: Iterable[nn.Parameter]) -> nn.Module:
    """A deep copy of ``net`` whose parameters in ``shared`` are the very same tensors as ``net``'s."""
    memo = {id(p): p for p in shared}
    return copy.deepcopy(net, memo)


def copy_sharing_frozen(net: nn.Module) -> nn.Module:
    """A deep copy of ``net`` sharing every parameter that does not train (``requires_grad`` False): an
    EMA or target network of a LoRA student holds its own adapters over the student's base weights."""
    return copy_sharing(net, (p for p in net.parameters() if not p.requires_grad))


def shares_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when ``a`` and ``b`` are the same memory (one weight held by two networks)."""
    return a.numel() > 0 and a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()


def unique_bytes(*modules: nn.Module) -> int:
    """Bytes of the distinct parameter and buffer storages held by ``modules`` together (what sharing saves)."""
    seen, total = set(), 0
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            s = t.untyped_storage()
            if s.data_ptr() not in seen:
                seen.add(s.data_ptr())
                total += s.nbytes()
    return total
