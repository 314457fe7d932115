"""The one generic training loop (docs/design.md): data -> Method.step -> EMA -> log/eval/checkpoint.

It knows nothing about any particular method. Resume restores every network, its EMA, every
optimizer, the RNG states and the data position (= the iteration, see data.BatchSampler), so an
interrupted and resumed run ends with the same weights as an uninterrupted one on CPU.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..config import LR_DECAYS
from ..data.base import ArrayDataset, BatchSampler
from ..errors import CheckpointError, FewstepError
from ..io import hold_folder
from ..methods.base import Method
from ..nets.ema import EMA
from .checkpoint import KILL_HOOK, Checkpoints
from .device import move_method, resolve_device, to_device
from .distributed import Gathered, barrier, rank_world, shard_fsdp, wrap_ddp
from .guards import StepContext


@dataclass
class TrainConfig:
    out: str  # output folder: checkpoints/, latest, model/, metrics.jsonl
    max_iters: int = 1000
    batch_size: int = 128
    seed: int = 0
    ckpt_every: int = 0  # save a resumable checkpoint every N iterations (0 = only at the end)
    keep: int = 2  # complete checkpoints kept (older ones pruned after a new one is complete)
    eval_every: int = 0  # run the evaluator every N iterations (0 = only at the end)
    log_every: int = 10
    ema_decay: float = 0.999  # 0 disables the EMA
    grad_clip: float = 1.0  # max global grad norm per optimizer (0 = no clipping)
    warmup: int = 0  # linear LR warm-up iterations
    lr_decay: str = "constant"  # "constant" | "cosine": half a cosine from the LR to 0 over the run (train/guards.py)
    bf16: bool = False  # bf16 autocast for forward passes (weights and optimizer stay fp32)
    max_skips: int = 20  # consecutive non-finite iterations before the run saves and stops
    progress: bool = True
    threads: int = 0  # torch CPU threads (0 = leave torch's default)
    deterministic: bool = False  # deterministic kernels (GPU: cuDNN/cuBLAS; errors on ops that have none)
    device: str = "cpu"  # "cpu", "cuda", "cuda:N" or "auto" (cuda when available); weights stay fp32
    fsdp: bool = False  # several processes: shard trained networks with FSDP2 instead of replicating them (DDP)

    def __post_init__(self):
        for name in ("max_iters", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("ckpt_every", "eval_every", "warmup", "threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.keep < 1:
            raise ValueError(f"keep must be >= 1, got {self.keep}")
        if self.lr_decay not in LR_DECAYS:
            raise ValueError(f"lr_decay must be one of {LR_DECAYS}, got {self.lr_decay!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.log_every < 1 or self.max_skips < 1:
            raise ValueError("log_every and max_skips must be >= 1")
        if self.fsdp and self.ema_decay == 0:
            raise ValueError("fsdp needs the EMA (ema_decay > 0): evaluation and the final model use its full copy "
                             "on rank 0, while the trained networks are sharded")


def enable_determinism() -> None:
    """Same seed and config -> same weights, on GPU too (CPU training already is, at a fixed thread count)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


class Trainer:
    def __init__(self, method: Method, data: ArrayDataset, cfg: TrainConfig, run_config: dict | None = None,
                 evaluator=None, final_model_extra: dict | None = None, on_log=None):
        self.method, self.data, self.cfg = method, data, cfg
        self.run_config = run_config or {}
        self.evaluator, self.final_model_extra, self.on_log = evaluator, final_model_extra or {}, on_log
        self.out = Path(cfg.out)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.deterministic:
            enable_determinism()
        self.rank, self.world = rank_world()
        torch.manual_seed(cfg.seed + self.rank)
        self.rng = torch.Generator().manual_seed(cfg.seed + self.rank)  # per-sample noise: per rank
        self.shared_rng = torch.Generator().manual_seed(cfg.seed)  # choices every rank must make alike
        self.sampler = BatchSampler(len(data), cfg.batch_size, cfg.seed, self.rank, self.world)
        self.device = resolve_device(cfg.device)
        move_method(method, self.device)
        self.nets = dict(method.networks())  # unwrapped: what checkpoints, the EMA and the final model use
        ema_name = method.ema_network()
        self.ema = EMA(self.nets[ema_name], cfg.ema_decay) if (ema_name and cfg.ema_decay > 0) else None
        self.ctx = StepContext(method.optimizers(), self.rng, cfg.grad_clip, cfg.warmup, cfg.bf16, self.device,
                               self.shared_rng, cfg.lr_decay, cfg.max_iters)
        self.checkpoints = Checkpoints(self.out, cfg.keep)
        if cfg.fsdp:
            if self.world < 2:
                raise ValueError("fsdp shards networks across processes: launch with torchrun --nproc_per_node N (N >= 2)")
            shard_fsdp(method, self.nets, self.device)
        elif self.world > 1:
            wrap_ddp(method, self.nets)
        method.plan(cfg.max_iters)
        self.it, self.consecutive_skips, self.train_s = 0, 0, 0.0
        self.last_grad_norms: dict[str, float] = {}

    # -- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        path = self.checkpoints.dir / f"{self.it:08d}"
        nets, optimizers = self.nets, self.method.optimizers()
        if self.cfg.fsdp:  # every rank gathers its shards; rank 0 writes the usual full-tensor checkpoint
            nets = {k: Gathered(v) for k, v in nets.items()}
            optimizers = {k: Gathered(v) for k, v in optimizers.items()}
        if self.rank == 0:
            config = {"format": "fewstep-checkpoint-v1", "run": self.run_config, "method": self.method.config(),
                      "train": asdict(self.cfg)}
            state = {"iteration": self.it, "data_position": self.it, "train_s": self.train_s,
                     "ema_updates": self.ema.num_updates if self.ema else 0,
                     "consecutive_skips": self.consecutive_skips}
            rngs = {"torch": torch.get_rng_state(), "method": self.rng, "shared": self.shared_rng}
            path = self.checkpoints.save(self.it, config, nets, self.ema.net if self.ema else None, optimizers, rngs, state)
        barrier()  # no rank runs ahead of a checkpoint it may have to resume from
        return path

    def load_checkpoint(self, path: Path) -> None:
        state, rng = self.checkpoints.load(path, self.nets, self.ema.net if self.ema else None,
                                           self.method.optimizers())
        torch.set_rng_state(rng["torch"])
        self.rng.set_state(rng["method"])
        if "shared" in rng:
            self.shared_rng.set_state(rng["shared"])
        self.it, self.train_s = int(state["iteration"]), float(state.get("train_s", 0.0))
        if self.rank > 0:  # the checkpoint holds rank 0's streams; other ranks derive theirs from it
            torch.manual_seed(self.cfg.seed + 1_000_003 * self.rank + self.it)
            self.rng.manual_seed(self.cfg.seed + 1_000_003 * self.rank + self.it)
        self.consecutive_skips = int(state.get("consecutive_skips", 0))
        if self.ema is not None:
            self.ema.num_updates = int(state.get("ema_updates", 0))

    def resume(self) -> bool:
        """Load the newest good checkpoint; fall back past corrupt ones, saying so. False if none."""
        for name in self.checkpoints.remove_partial():
            self.log_line(f"removed the partial checkpoint {name} of an interrupted run")
        for path in self.checkpoints.candidates():
            try:
                self.load_checkpoint(path)
            except CheckpointError as e:
                self.log_line(f"warning: checkpoint {path.name} is unusable ({e}); trying an older one")
                continue
            self.log_line(f"resumed from {path} at iteration {self.it}")
            self._truncate_metrics()
            return True
        return False

    def _truncate_metrics(self) -> None:
        """Drop log rows written after the checkpoint we resumed from (they will be recomputed)."""
        log = self.out / "metrics.jsonl"
        if not log.exists():
            return
        keep = []
        for line in log.read_text().splitlines():
            try:
                if json.loads(line).get("it", 0) <= self.it:
                    keep.append(line)
            except json.JSONDecodeError:
                continue
        log.write_text("".join(l + "\n" for l in keep))

    # -- logging ----------------------------------------------------------------------------------
    def log_line(self, msg: str) -> None:
        if self.rank == 0:
            print(msg, file=sys.stderr, flush=True)

    def log_metrics(self, row: dict) -> None:
        if self.rank != 0:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.on_log is not None:
            self.on_log(row)

    # -- the loop ---------------------------------------------------------------------------------
    def _ema_due(self) -> bool:
        """The EMA advances when its network was updated: on iterations where the optimizer of the same
        name stepped (a DMD2 student updated every 5th iteration gets 1 EMA update per 5 iterations, so
        a decay of 0.99 averages ~100 student updates, as the paper means it), and every iteration for
        a network without an optimizer of its name. Its warm-up counts these updates too (nets/ema.py)."""
        name = self.method.ema_network()
        return name not in self.method.optimizers() or name in self.ctx.stepped

    def eval_generator(self):
        if self.ema is not None:
            return self.method.generator(self.ema.net)
        name = self.method.ema_network()
        return self.method.generator(self.nets[name] if name else None)

    def run_eval(self) -> dict:
        if self.evaluator is None or self.rank != 0:
            return {}
        with torch.no_grad():
            res = self.evaluator(self.eval_generator(), self.it)
        self.log_metrics({"it": self.it, "kind": "eval", **res})
        for w in res.get("warnings", []):
            self.log_line(f"warning @ {self.it}: {w}")
        return res

    def train(self, resume: bool = False) -> dict:
        """Run to ``max_iters`` (from the newest good checkpoint with ``resume``), holding the output
        folder: a second run on a folder a live run holds is refused (io.hold_folder)."""
        with hold_folder(self.out) if self.rank == 0 else contextlib.nullcontext():
            return self._train(resume)

    def _train(self, resume: bool) -> dict:
        cfg = self.cfg
        barrier()
        if os.environ.get(KILL_HOOK):
            self.log_line(f"WARNING: fault injection is on ({KILL_HOOK}={os.environ[KILL_HOOK]}): this process "
                          "kills itself while writing that checkpoint; unset it for real runs")
        if resume and not self.resume():
            self.log_line("no checkpoint to resume from; starting fresh")
        bar = None
        if cfg.progress and self.rank == 0:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.max_iters, initial=self.it, desc=f"train {self.method.name}", dynamic_ncols=True,
                       file=sys.stderr)
        last = {}
        while self.it < cfg.max_iters:
            t0 = time.perf_counter()
            batch = to_device(self.data.batch(self.sampler.indices(self.it)), self.device)
            self.ctx.begin(self.it)
            for net in self.nets.values():
                net.train()
            logs = self.method.step(batch, self.it, self.ctx)
            self.last_grad_norms.update(self.ctx.grad_norms)  # a network updated less often keeps its last norm
            if self.ctx.skipped:
                self.consecutive_skips += 1
                self.log_metrics({"it": self.it, "kind": "skip", "reasons": self.ctx.skipped})
                self.log_line(f"iteration {self.it}: skipped update ({'; '.join(self.ctx.skipped)})")
            else:
                self.consecutive_skips = 0
            if self.ema is not None and self._ema_due():
                self.ema.update(self.nets[self.method.ema_network()])
            self.it += 1
            self.train_s += time.perf_counter() - t0
            if self.consecutive_skips >= cfg.max_skips:
                path = self.save_checkpoint()
                raise FewstepError(f"{cfg.max_skips} consecutive iterations had non-finite losses or gradients; "
                                   f"saved {path} and stopped (lower the LR or check the data)")
            if self.it % cfg.log_every == 0 or self.it == cfg.max_iters:
                last = {k: float(v.detach() if torch.is_tensor(v) else v) for k, v in logs.items()}
                self.log_metrics({"it": self.it, "kind": "train", "train_s": round(self.train_s, 2), **last,
                                  **{f"grad_norm/{k}": v for k, v in self.last_grad_norms.items()}})
            if bar is not None:
                bar.update(1)
                if self.it % cfg.log_every == 0:
                    bar.set_postfix({k: f"{v:.4g}" for k, v in last.items()})
            if cfg.eval_every and self.it % cfg.eval_every == 0 and self.it < cfg.max_iters:
                res = self.run_eval()
                if bar is not None and res.get("warnings"):
                    bar.set_description(f"train {self.method.name} [COLLAPSE?]")
                if bar is not None and res:
                    bar.write(f"eval @ {self.it}: " + ", ".join(f"{k} {v:.4g}" for k, v in res.items()
                                                              if isinstance(v, (int, float))))
            if cfg.ckpt_every and self.it % cfg.ckpt_every == 0 and self.it < cfg.max_iters:
                self.save_checkpoint()
        if bar is not None:
            bar.close()
        self.save_checkpoint()
        final = self.run_eval()
        if self.rank == 0:
            self.save_final_model()
        barrier()
        return {"iterations": self.it, "train_s": self.train_s, **final}

    def save_final_model(self) -> Path:
        from ..model_io import save_denoiser

        info = {"training": {"iterations": self.it, "train_s": round(self.train_s, 1), **self.run_config},
                **self.final_model_extra}
        return save_denoiser(self.eval_generator(), self.out / "model", info)
