"""Multi-process training through torch.distributed (torchrun / accelerate launch set the env vars).

Each process trains on its own shard of every batch (data/base.py BatchSampler), every trained
network is wrapped in DistributedDataParallel so gradients are averaged across processes in backward,
and only rank 0 writes checkpoints, logs and the final model. gloo on CPU, nccl on GPU.
"""
from __future__ import annotations

import os

import torch
from torch import nn


def rank_world() -> tuple[int, int]:
    """(rank, world size); initialises the default process group on first use under a launcher."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def unwrap(net: nn.Module) -> nn.Module:
    return getattr(net, "module", net)


def wrap_ddp(method, nets: dict) -> dict:
    """Wrap every network with trainable weights in DDP where the method holds it: as one of its
    attributes, or as the ``net`` of one of its denoisers. The method's optimizers keep working (DDP
    shares the parameters); checkpoints keep using the unwrapped networks in ``nets``."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    wrapped = {}
    for net in nets.values():
        if any(p.requires_grad for p in net.parameters()):
            # find_unused_parameters: a method may use part of a network in an update (e.g. a
            # bottleneck-only forward for a GAN head)
            wrapped[id(net)] = DDP(net, find_unused_parameters=True)
    for attr, value in list(vars(method).items()):
        if id(value) in wrapped:
            setattr(method, attr, wrapped[id(value)])
        elif isinstance(value, nn.Module) and id(getattr(value, "net", None)) in wrapped:
            value.net = wrapped[id(value.net)]
    return wrapped
