"""Run under torchrun by tests/test_distributed.py: a short training on toy2d with batch B per process.

Modes: ``regress`` (a deterministic loss, so 2 processes x B and 1 process x 2B must give the same
update) and ``dmd2`` (the multi-network method under DDP end to end). A fifth argument ``fsdp`` shards
with FSDP2 instead (``ema``: DDP with the same EMA, to compare against), a sixth ``resume`` resumes."""
import sys

import torch

from fewstep.data import load_dataset
from fewstep.methods.base import StudentMethod, cond_of
from fewstep.train.loop import TrainConfig, Trainer

from helpers import config, toy_denoiser


class Regress(StudentMethod):
    """Loss ||D(x, t=1) - x||^2 per sample: no random draws, so only batching and averaging matter."""

    name = "regress"

    def __init__(self):
        self.student = toy_denoiser(0).train()
        self.opt = torch.optim.Adam(self.student.net.parameters(), lr=1e-2)

    def config(self):  # noqa: F811 (the method contract's config(), not the helper)
        return {"method": self.name}

    def step(self, batch, it, ctx):
        x = batch["x"]
        loss = ((self.student(x, torch.ones(x.shape[0]), cond_of(batch)) - x) ** 2).mean(1)
        ctx.update(loss, "student")
        return {"loss": loss.mean()}


def main(mode, out, batch, iters, shard="ddp", resume=False):
    torch.set_num_threads(1)
    if mode == "regress":
        method = Regress()
    else:
        from fewstep.methods.distribution_matching.dmd2 import DMD2, DMD2Config

        method = DMD2(toy_denoiser(0), config(DMD2Config, lr=1e-3, gen_every=2, nfe=2), shape=(2,),
                      num_classes=8)
    fsdp = shard == "fsdp"
    cfg = TrainConfig(out=out, max_iters=iters, batch_size=batch, ema_decay=0.5 if fsdp or shard == "ema" else 0.0,
                      progress=False, ckpt_every=2, grad_clip=0.0, fsdp=fsdp)
    tr = Trainer(method, load_dataset("toy2d", "train"), cfg)
    if fsdp:  # each process holds about half of every trained network
        for net in (n for n in tr.nets.values() if any(p.requires_grad for p in n.parameters())):
            local = sum(p.to_local().numel() for p in net.parameters())
            total = sum(p.numel() for p in net.parameters())
            assert all(type(p).__name__ == "DTensor" for p in net.parameters()) and local <= total // 2 + 64, (local, total)
    tr.train(resume=resume)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), *(sys.argv[5:6] or ["ddp"]),
         resume=len(sys.argv) > 6 and sys.argv[6] == "resume")
