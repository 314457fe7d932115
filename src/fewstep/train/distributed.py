"""Multi-process training through torch.distributed (torchrun / accelerate launch set the env vars).

Each process trains on its own shard of every batch (data/base.py BatchSampler), every trained
network is wrapped in DistributedDataParallel so gradients are averaged across processes in backward,
and only rank 0 writes checkpoints, logs and the final model. gloo on CPU, nccl on GPU.
"""
from __future__ import annotations

import atexit
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
        atexit.register(_destroy_process_group)
    return dist.get_rank(), dist.get_world_size()


def _destroy_process_group() -> None:
    """Tear the group down before the interpreter exits, as torch.distributed asks of every process (a group
    left to interpreter teardown may leak its backend's threads and resources)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


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


# -- FSDP2: sharded parameters, gradients and optimizer state ---------------------------------------
def is_dtensor(t) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def full(t):
    """A sharded (DTensor) tensor gathered to its full value on every rank (a collective); others as they are."""
    return t.full_tensor() if is_dtensor(t) else t


def shard_fsdp(method, nets: dict, device: torch.device) -> dict:
    """Shard every network with trainable weights with FSDP2 (``fully_shard``: each child module with
    parameters one unit (``_units``), then the root), so parameters, gradients and optimizer state are split across
    the processes. The method's optimizers are re-pointed at the sharded parameters in place; networks
    stay where the method holds them (FSDP2 shards modules in place)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    _, world = rank_world()
    mesh = init_device_mesh(device.type, (world,))
    remap = {}
    for net in nets.values():
        if not any(p.requires_grad for p in net.parameters()):
            continue
        before = {name: p for name, p in net.named_parameters()}
        for unit in _units(net):
            fully_shard(unit, mesh=mesh)
        fully_shard(net, mesh=mesh)
        after = dict(net.named_parameters())
        remap.update({id(p): after[name] for name, p in before.items()})
    for opt in method.optimizers().values():
        for group in opt.param_groups:
            group["params"] = [remap.get(id(p), p) for p in group["params"]]
    return remap


def _units(net: nn.Module) -> list:
    """The modules sharded as units below the root: its children with parameters, looking inside
    ModuleList / ModuleDict containers (never called themselves, so they cannot gather their parameters)."""
    out = []
    for child in net.children():
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            out += _units(child)
        elif any(True for _ in child.parameters()):
            out.append(child)
    return out


class Gathered:
    """A network's or optimizer's state with every sharded tensor gathered, for rank 0 to write in the usual
    checkpoint format (safetensors of full tensors). Built on every rank: gathering is a collective."""

    def __init__(self, obj):
        sd = obj.state_dict()
        if "state" in sd and "param_groups" in sd:  # an optimizer
            self.sd = {"state": {i: {k: full(v) for k, v in st.items()} for i, st in sd["state"].items()},
                       "param_groups": sd["param_groups"]}
        else:
            self.sd = {k: full(v) for k, v in sd.items()}

    def state_dict(self) -> dict:
        return self.sd
