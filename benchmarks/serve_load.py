"""Serving under load (benchmarks/results/serve.json and .md): `fewstep serve` in its own process on
localhost, driven by concurrent HTTP clients from this one; every loop is bounded in count and time.

1. Throughput and latency: R requests of one image each at 1, 4 and 16 concurrent clients, with
   dynamic batching on and off, against a 1-step LoRA DMD2 student of the shipped MNIST teacher.
2. Overload: 10x the queue limit of concurrent requests at once; counts of 200 / 429 / 503 answers,
   /healthz latency while it lasts, and the server's resident memory before, at peak and after.
3. LoRA sharing: the teacher and K LoRA students in one pool against each loaded alone (parameter
   bytes), and the cost of switching the active student against reloading it from disk.

The LoRA students are short real `fewstep distill --lora-rank` runs (built on first use into
runs/serve/); their quality does not enter any number here (latency, memory and switch cost depend on
the network and adapter shapes, not on the adapter values).
    .venv/bin/python benchmarks/serve_load.py
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shlex
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from fewstep.io import write_text_atomic
from fewstep.metrics.benchmark import machine, provenance, write_results
from fewstep.report import serve_table

HERE = Path(__file__).parent
ROOT = HERE.parent
FEWSTEP = str(Path(sys.executable).parent / "fewstep")


def lora_students(k: int, iters: int, runs: Path) -> list[Path]:
    out = []
    for i in range(k):
        run = runs / f"lora{i}"
        if not (run / "model" / "config.json").is_file():
            subprocess.run([FEWSTEP, "distill", "--teacher", "mnist", "--method", "dmd2", "--nfe", "1", "--lora-rank", "8",
                            "--max-iters", str(iters), "--eval-every", str(iters), "--seed", str(i), "--threads", "2",
                            "--no-progress", "--out", str(run)], check=True)
        out.append(run)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`fewstep serve` as a child process on a free localhost port."""

    def __init__(self, models: str, threads: int, *flags: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([FEWSTEP, "serve", "--models", models, "--port", str(self.port),
                                      "--threads", str(threads), *flags], stderr=subprocess.DEVNULL)
        import httpx

        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("server did not come up")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


async def load(url: str, model: str, clients: int, requests: int, n: int = 1) -> dict:
    import httpx

    latencies, statuses = [], {}
    per_client = requests // clients

    async def client(c: int, http):
        for i in range(per_client):
            t0 = time.perf_counter()
            r = await http.post("/v1/generate", json={"model": model, "n": n, "seed": c * 1000 + i, "class": i % 10})
            latencies.append(1000 * (time.perf_counter() - t0))
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=clients)) as http:
        for i in range(4):  # warm-up: first calls allocate
            await http.post("/v1/generate", json={"model": model, "n": n, "seed": i})
        before = (await http.get("/v1/stats")).json()["batching"]
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c, http) for c in range(clients)))
        wall = time.perf_counter() - t0
        after = (await http.get("/v1/stats")).json()["batching"]
    ok = statuses.get(200, 0)
    batches = max(1, after["batches"] - before["batches"])
    return {"requests": per_client * clients, "wall_s": round(wall, 3), "images_per_s": round(ok * n / wall, 1),
            "p50_ms": round(pct(latencies, 0.5), 1), "p95_ms": round(pct(latencies, 0.95), 1),
            "status": {str(k): v for k, v in sorted(statuses.items())},
            "mean_batch_images": round((after["images"] - before["images"]) / batches, 2)}


async def overload(server: Server, model: str, concurrent: int, n: int) -> dict:
    import httpx

    rss = {"before": server.rss_mb(), "peak": 0.0}
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            rss["peak"] = max(rss["peak"], server.rss_mb())
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    statuses: dict = {}
    health_ms: list = []
    async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=httpx.Limits(max_connections=concurrent + 4)) as http:
        async def one(i):
            r = await http.post("/v1/generate", json={"model": model, "n": n, "seed": i})
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            return time.perf_counter()

        async def health(done: asyncio.Event):
            while not done.is_set():
                t0 = time.perf_counter()
                r = await http.get("/healthz")
                assert r.status_code == 200
                health_ms.append(1000 * (time.perf_counter() - t0))
                await asyncio.sleep(0.02)

        done = asyncio.Event()
        h = asyncio.create_task(health(done))
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(concurrent)))
        wall = time.perf_counter() - t0
        done.set()
        await h
    stop.set()
    watcher.join()
    time.sleep(0.5)
    return {"concurrent": concurrent, "n": n, "wall_s": round(wall, 3), "status": {str(k): v for k, v in sorted(statuses.items())},
            "healthz_checks": len(health_ms), "healthz_p95_ms": round(pct(health_ms, 0.95), 1) if health_ms else None,
            "rss_mb_before": round(rss["before"], 1), "rss_mb_peak": round(rss["peak"], 1), "rss_mb_after": round(server.rss_mb(), 1)}


def lora_sharing(students: list[Path], switches: int = 200, reloads: int = 5) -> dict:
    from fewstep.model_io import load_denoiser
    from fewstep.serve.pool import ModelPool

    def nbytes(net):
        return sum(t.numel() * t.element_size() for t in net.state_dict().values())

    pool = ModelPool()
    pool.load("teacher", "mnist")
    for i, s in enumerate(students):
        pool.load(f"lora{i}", str(s))
    base = nbytes(load_denoiser("mnist")[0].net)
    separate = base + sum(nbytes(load_denoiser(str(s))[0].net) for s in students)
    names = [f"lora{i}" for i in range(len(students))] + ["teacher"]
    times = []
    for i in range(switches):
        m = pool.models[names[i % len(names)]]
        t0 = time.perf_counter()
        pool.activate(m)
        times.append(time.perf_counter() - t0)
    reload = []
    for i in range(reloads):
        t0 = time.perf_counter()
        load_denoiser(str(students[i % len(students)]))
        reload.append(time.perf_counter() - t0)
    mb = lambda b: round(b / 2**20, 2)
    return {"models": len(names), "lora_students": len(students), "shared_param_mb": mb(pool.param_bytes()),
            "separate_param_mb": mb(separate), "one_base_param_mb": mb(base),
            "switch_ms_median": round(1000 * statistics.median(times), 3),
            "reload_ms_median": round(1000 * statistics.median(reload), 1)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=96, help="requests per load row")
    p.add_argument("--students", type=int, default=3, help="LoRA students for the sharing rows")
    p.add_argument("--student-iters", type=int, default=10, help="distillation iterations of each LoRA student")
    p.add_argument("--server-threads", type=int, default=1, help="torch threads of the server (the clients use the rest)")
    p.add_argument("--max-queue", type=int, default=8)
    p.add_argument("--out", default=str(HERE / "results" / "serve.json"))
    a = p.parse_args(argv)
    out = Path(a.out)
    torch.set_num_threads(1)
    students = lora_students(a.students, a.student_iters, ROOT / "runs" / "serve")
    results = {"benchmark": "serve", "command": "python benchmarks/serve_load.py " + shlex.join(sys.argv[1:]),
               "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
               **provenance(exclude=out), "threads": a.server_threads, "torch": torch.__version__,
               "students": [str(s) for s in students], "rows": []}
    command = f"fewstep distill --teacher mnist --method dmd2 --nfe 1 --lora-rank 8 --max-iters {a.student_iters}"
    models = ",".join(f"lora{i}={s}" for i, s in enumerate(students))
    for batching in (True, False):
        server = Server(models, a.server_threads, *([] if batching else ["--no-batching"]))
        try:
            for clients in (1, 4, 16):
                row = {"method": "serve", "scenario": "load", "model": "lora0 (1-step LoRA DMD2)", "batching": batching,
                       "clients": clients, "command": command, **asyncio.run(load(server.url, "lora0", clients, a.requests))}
                print(row, flush=True)
                results["rows"].append(row)
                write_results(out, results)
        finally:
            server.stop()
    server = Server(models, a.server_threads, "--max-queue", str(a.max_queue))
    try:
        row = {"method": "serve", "scenario": "overload", "model": "lora0 (1-step LoRA DMD2)", "batching": True,
               "max_queue": a.max_queue, "command": command, **asyncio.run(overload(server, "lora0", 10 * a.max_queue, 16))}
        print(row, flush=True)
        results["rows"].append(row)
    finally:
        server.stop()
    row = {"method": "serve", "scenario": "lora_sharing", "command": command, **lora_sharing(students)}
    print(row, flush=True)
    results["rows"].append(row)
    results["complete"] = True
    write_results(out, results)
    write_text_atomic(out.with_suffix(".md"), serve_table(results))
    print(serve_table(results))


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    main()
