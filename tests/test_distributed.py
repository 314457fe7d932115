"""torch.distributed: 2 CPU processes (gloo, launched by torchrun) train as one process with twice the batch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fewstep.io import load_tensors

from helpers import toy_denoiser

HERE = Path(__file__).parent


def _torchrun(nproc, *args, launcher="torchrun"):
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    if launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    else:  # accelerate's CPU multi-process path (its --cpu flag starts a single process)
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(nproc),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += [str(HERE / "support" / "ddp_worker.py"), *map(str, args)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    if r.returncode != 0 and "terminate called without an active exception" in r.stderr:
        # a known, unexplained abort of one gloo rank on 2-core CPUs (about one full-suite run in three, never
        # alone): one fresh launch; the same abort twice, or any other failure, still fails the test
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.slow
def test_two_processes_of_batch_b_equal_one_process_of_batch_2b(tmp_path):
    _torchrun(2, "regress", tmp_path / "two", 16, 5)
    _torchrun(1, "regress", tmp_path / "one", 32, 5)
    a = load_tensors(tmp_path / "two" / "model" / "model.safetensors")
    b = load_tensors(tmp_path / "one" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and not any(k.startswith("module.") for k in a)  # saved unwrapped
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5), k
    init = toy_denoiser(0).net.state_dict()
    assert any(not torch.allclose(b[k], init[k]) for k in b)  # training moved the weights
    _torchrun(1, "regress", tmp_path / "half", 16, 5)  # control: one process of batch B alone differs
    c = load_tensors(tmp_path / "half" / "model" / "model.safetensors")
    assert any(not torch.allclose(a[k], c[k], atol=1e-6, rtol=1e-5) for k in a)
    # only rank 0 wrote: each logged iteration appears once (two writers would log it twice), one
    # set of complete checkpoints, no partial folders of another writer
    rows = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["it"] for r in rows if r["kind"] == "train"] == [5]
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == ["00000004", "00000005"]  # keep 2


@pytest.mark.slow
def test_dmd2_trains_under_ddp_with_two_processes(tmp_path):
    _torchrun(2, "dmd2", tmp_path / "dmd2", 16, 4)
    files = {p.name for p in (tmp_path / "dmd2" / "latest").iterdir()}
    assert {"student.safetensors", "fake.safetensors", "disc.safetensors"} <= files
    w = load_tensors(tmp_path / "dmd2" / "latest" / "student.safetensors")
    assert not any(k.startswith("module.") for k in w)


@pytest.mark.slow
def test_accelerate_launch_runs_the_same_training(tmp_path):
    pytest.importorskip("accelerate")
    _torchrun(2, "regress", tmp_path / "acc", 16, 3, launcher="accelerate")
    _torchrun(2, "regress", tmp_path / "tr", 16, 3)
    a = load_tensors(tmp_path / "acc" / "model" / "model.safetensors")
    b = load_tensors(tmp_path / "tr" / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def _same(a_dir, b_dir, names):
    for name in names:
        a, b = (load_tensors(d / "latest" / f"{name}.safetensors") for d in (a_dir, b_dir))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.slow
def test_fsdp_shards_each_network_and_trains_exactly_as_ddp_and_resumes(tmp_path):
    """FSDP2 over 2 gloo processes: each trained network is split (each process holds about half, checked in
    the worker), and DMD2 (student, fake score, GAN head, EMA, both optimizers' state) ends bitwise where DDP
    ends. Checkpoints hold full tensors: a run stopped at 2 iterations and resumed to 4 equals DDP resumed
    the same way, and for the draw-free loss equals the uninterrupted run and one process with the whole
    batch."""
    nets = ["student", "fake", "disc", "ema", "optim"]
    _torchrun(2, "dmd2", tmp_path / "fsdp", 16, 4, "fsdp")
    _torchrun(2, "dmd2", tmp_path / "ddp", 16, 4, "ema")
    _same(tmp_path / "fsdp", tmp_path / "ddp", nets)
    for shard in ("fsdp", "ema"):
        _torchrun(2, "dmd2", tmp_path / f"r_{shard}", 16, 2, shard)
        _torchrun(2, "dmd2", tmp_path / f"r_{shard}", 16, 4, shard, "resume")
    _same(tmp_path / "r_fsdp", tmp_path / "r_ema", nets)
    _torchrun(2, "regress", tmp_path / "straight", 16, 5, "fsdp")
    _torchrun(2, "regress", tmp_path / "resumed", 16, 2, "fsdp")
    _torchrun(2, "regress", tmp_path / "resumed", 16, 5, "fsdp", "resume")
    _same(tmp_path / "straight", tmp_path / "resumed", ["student", "ema", "optim"])
    _torchrun(1, "regress", tmp_path / "one", 32, 5, "ema")  # one process with the whole batch
    a, b = (load_tensors(tmp_path / d / "model" / "model.safetensors") for d in ("straight", "one"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5) for k in a)
    init = toy_denoiser(0).net.state_dict()
    w = load_tensors(tmp_path / "straight" / "model" / "model.safetensors")
    assert w.keys() == init.keys() and any(not torch.allclose(w[k], init[k]) for k in w)  # saved unsharded, trained


def test_fsdp_without_processes_or_without_an_ema_is_refused_in_one_line(tmp_path, capsys):
    from fewstep.cli import main

    args = ["distill", "--teacher", "mnist", "--method", "dmd2", "--out", str(tmp_path / "o"), "--max-iters", "1",
            "--no-progress", "--fsdp"]
    assert main(args) != 0
    assert "torchrun" in capsys.readouterr().err
    assert main(args + ["--ema-decay", "0"]) != 0
    assert "EMA" in capsys.readouterr().err

