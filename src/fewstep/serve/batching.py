"""Dynamic batching over a bounded queue.

Requests wait in a queue of at most ``max_queue`` entries; a full queue refuses a new request at once
(the server answers 429) instead of growing memory. One worker takes the oldest request, gathers the
requests that arrive within ``window_s`` (up to ``max_batch`` images), groups those that can share a
network call (same model, sampling and image shape) and runs each group as one batch on a single
executor thread, so the event loop keeps answering /healthz while a batch runs. A request whose client
went away is cancelled and skipped before its batch is formed.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field


class QueueFull(Exception):
    """The bounded queue has no room: answer 429 and let the client retry."""


@dataclass
class Job:
    key: Hashable  # jobs with equal keys may run in one batch
    n: int  # images it asks for
    payload: object  # what the runner needs
    future: asyncio.Future = field(default=None)  # type: ignore[assignment]
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    batches: int = 0
    jobs: int = 0
    images: int = 0
    cancelled: int = 0
    refused: int = 0

    def as_dict(self) -> dict:
        return dict(vars(self), mean_batch_images=round(self.images / self.batches, 2) if self.batches else 0.0)


class Batcher:
    """``run(jobs) -> results`` (one result per job, in order) is called on the worker thread."""

    def __init__(self, run: Callable[[list[Job]], list], max_queue: int = 64, max_batch: int = 16,
                 window_s: float = 0.01, enabled: bool = True):
        if max_queue < 1 or max_batch < 1 or window_s < 0:
            raise ValueError("max_queue and max_batch must be >= 1, window_s >= 0")
        self.run, self.max_batch, self.window_s, self.enabled = run, max_batch, window_s, enabled
        self.queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=max_queue)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fewstep-generate")
        self.stats = BatchStats()
        self.busy = False
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        while not self.queue.empty():  # nobody will run these: tell their callers
            job = self.queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(RuntimeError("server is shutting down"))
        self.executor.shutdown(wait=True, cancel_futures=True)

    def submit(self, job: Job) -> asyncio.Future:
        """Queue a job (QueueFull at once when there is no room); await the returned future."""
        job.future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            self.stats.refused += 1
            raise QueueFull(f"queue full ({self.queue.maxsize} requests waiting)") from None
        return job.future

    async def _gather(self, first: Job) -> list[Job]:
        jobs, images = [first], first.n
        if not self.enabled:
            return jobs
        deadline = time.perf_counter() + self.window_s
        while images < self.max_batch:
            left = deadline - time.perf_counter()
            try:
                job = self.queue.get_nowait() if left <= 0 else await asyncio.wait_for(self.queue.get(), left)
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
            jobs.append(job)
            images += job.n
        return jobs

    def _groups(self, jobs: list[Job]) -> list[list[Job]]:
        """Live jobs grouped by key (first-come order), each group at most max_batch images (a larger
        single job still runs, alone)."""
        groups: dict = {}
        out: list[list[Job]] = []
        for job in jobs:
            if job.future.done():  # cancelled by a client that left
                self.stats.cancelled += 1
                continue
            g = groups.get(job.key)
            if g is None or sum(j.n for j in g) + job.n > self.max_batch:
                g = groups[job.key] = []
                out.append(g)
            g.append(job)
        return out

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self.queue.get()
            for group in self._groups(await self._gather(first)):
                self.busy = True
                try:
                    results = await loop.run_in_executor(self.executor, self.run, group)
                except Exception as e:  # the batch failed: every caller hears why; the worker goes on
                    for job in group:
                        if not job.future.done():
                            job.future.set_exception(e)
                    continue
                finally:
                    self.busy = False
                self.stats.batches += 1
                self.stats.jobs += len(group)
                self.stats.images += sum(j.n for j in group)
                for job, res in zip(group, results):
                    if not job.future.done():
                        job.future.set_result(res)
