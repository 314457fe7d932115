"""Reliability guarantees (docs/reliability.md), each proved here with real processes where it matters:
SIGKILL at random points and inside checkpoint writes, atomic checkpoints, hostile and corrupt files,
guarded steps for every network, the collapse monitor, and determinism."""
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fewstep.errors import FewstepError
from fewstep.io import load_tensors

from helpers import config, state, toy_trainer

CLI = [sys.executable, "-m", "fewstep"]
NEEDED = ("config.json", "optim.safetensors", "optim.json", "rng.safetensors", "trainer_state.json")


def _run(args, env_extra=None, timeout=300):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(CLI + args, capture_output=True, text=True, env=env, timeout=timeout)


def _assert_checkpoints_sound(out: Path):
    """Every checkpoint with a checkpoint's name is complete and loads; ``latest`` points at one."""
    ck = out / "checkpoints"
    names = sorted(p.name for p in ck.iterdir() if p.name.isdigit()) if ck.is_dir() else []
    for name in names:
        d = ck / name
        assert all((d / f).is_file() for f in NEEDED), f"incomplete checkpoint visible: {d}"
        for f in d.glob("*.safetensors"):
            load_tensors(f, check_finite=False)
    latest = out / "latest"
    if latest.is_symlink():
        assert latest.resolve().parent == ck.resolve() and latest.resolve().name in names
    return names


def _tensors(folder: Path) -> dict:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        for k, v in load_tensors(f, check_finite=False).items():
            out[f"{f.name}:{k}"] = v
    return out


def _assert_same_run(a: Path, b: Path):
    """Final model and final checkpoint (every network, EMA, optimizer moments, RNG) bitwise equal."""
    for sub in ("model", "latest"):
        ta, tb = _tensors(a / sub), _tensors(b / sub)
        assert ta.keys() == tb.keys() and ta, sub
        diff = [k for k in ta if not torch.equal(ta[k], tb[k])]
        assert not diff, f"{sub} differs in {diff[:5]}"


def _kill_and_resume(args, out: Path, ckpt_every: int, kill_in_ckpt: list[int], random_kills: int, seed=0):
    """Kill the run inside the given checkpoint writes and at random moments, resuming each time."""
    for it in kill_in_ckpt:
        before = _assert_checkpoints_sound(out)
        r = _run(args, {"FEWSTEP_TEST_KILL_IN_CHECKPOINT": str(it)})
        assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
        names = _assert_checkpoints_sound(out)
        assert f"{it:08d}" not in names  # the half-written checkpoint never became visible
        prev = f"{it - ckpt_every:08d}"
        assert prev in names  # and the one before it was not pruned for it
        assert set(before) <= set(names) | {n for n in before if n < prev}
    rnd = random.Random(seed)
    for _ in range(random_kills):
        p = subprocess.Popen(CLI + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rnd.uniform(2.5, 6.0))  # past start-up, somewhere in training or a checkpoint write
        p.send_signal(signal.SIGKILL)
        p.wait()
        _assert_checkpoints_sound(out)
    r = _run(args)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


@pytest.fixture(scope="module")
def cli_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_teacher")
    r = _run(["train-teacher", "--data", "toy2d", "--max-iters", "150", "--batch-size", "256", "--out", str(out), "--threads", "1",
              "--no-progress", "--eval-every", "0"])
    assert r.returncode == 0, r.stderr[-2000:]
    return out


# -- 1 + 2: kill and resume, atomic checkpoints ----------------------------------------------------
@pytest.mark.slow
def test_teacher_training_survives_sigkill_bitwise(tmp_path):
    args = ["train-teacher", "--data", "toy2d", "--max-iters", "300", "--batch-size", "128", "--ckpt-every", "30",
            "--keep", "2", "--threads", "1", "--no-progress", "--eval-every", "0", "--resume", "--out"]
    ref = _run(args + [str(tmp_path / "ref")])
    assert ref.returncode == 0, ref.stderr[-2000:]
    out = tmp_path / "killed"
    r = _kill_and_resume(args + [str(out)], out, 30, kill_in_ckpt=[90, 210], random_kills=3)
    assert "resumed from" in r.stderr
    _assert_same_run(tmp_path / "ref", out)


@pytest.mark.slow
def test_dmd2_distillation_survives_sigkill_bitwise(cli_teacher, tmp_path):
    """Generator, fake score, GAN head, both optimizers, EMA, RNG and data position all come back."""
    args = ["distill", "--teacher", str(cli_teacher), "--method", "dmd2", "--data", "toy2d", "--max-iters", "150",
            "--batch-size", "64", "--ckpt-every", "20", "--keep", "2", "--threads", "1", "--no-progress", "--eval-every", "0",
            "--resume", "--out"]
    ref = _run(args + [str(tmp_path / "ref")])
    assert ref.returncode == 0, ref.stderr[-2000:]
    out = tmp_path / "killed"
    _kill_and_resume(args + [str(out)], out, 20, kill_in_ckpt=[40, 100], random_kills=3, seed=1)
    files = {p.name for p in (out / "latest").iterdir()}
    assert {"student.safetensors", "fake.safetensors", "disc.safetensors", "ema.safetensors"} <= files
    _assert_same_run(tmp_path / "ref", out)


def test_partial_checkpoint_of_a_killed_run_is_removed_and_never_loaded(tmp_path):
    t = toy_trainer(tmp_path, 10, ckpt_every=5)
    t.train()
    partial = tmp_path / "checkpoints" / ".tmp-00000015-99999"
    partial.mkdir()
    (partial / "net.safetensors").write_bytes(b"\0" * 10)
    r = toy_trainer(tmp_path, 20, ckpt_every=5)
    assert r.resume() and r.it == 10
    assert not partial.exists()


def test_a_kill_inside_pruning_never_leaves_a_half_deleted_checkpoint_under_its_name(tmp_path, monkeypatch):
    """Pruning deletes files one by one; a kill in the middle must not leave a folder that still carries
    a checkpoint's name (it would look resumable), and the leftover goes at the next resume."""
    import shutil

    from fewstep.train import checkpoint

    real_rmtree = shutil.rmtree

    def killed_after_one_file(path, ignore_errors=False):
        next(p for p in Path(path).iterdir() if p.is_file()).unlink()
        raise KeyboardInterrupt  # stands in for SIGKILL: the rest of the deletion never happens

    t = toy_trainer(tmp_path, 10, ckpt_every=5, keep=1)
    monkeypatch.setattr(checkpoint.shutil, "rmtree", killed_after_one_file)
    with pytest.raises(KeyboardInterrupt):
        t.train()
    monkeypatch.setattr(checkpoint.shutil, "rmtree", real_rmtree)
    assert _assert_checkpoints_sound(tmp_path) == ["00000010"]
    assert list((tmp_path / "checkpoints").glob(".del-*"))
    r = toy_trainer(tmp_path, 10, ckpt_every=5)
    assert r.resume() and r.it == 10
    assert not list((tmp_path / "checkpoints").glob(".del-*"))


# -- 3: corrupt or hostile files -------------------------------------------------------------------
class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_hostile_checkpoint_is_refused_not_executed_and_resume_falls_back(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    t = toy_trainer(tmp_path / "run", 10, ckpt_every=5, keep=3)
    t.train()
    newest = tmp_path / "run" / "checkpoints" / "00000010" / "net.safetensors"
    newest.write_bytes(pickle.dumps(_Payload()))
    r = toy_trainer(tmp_path / "run", 10, ckpt_every=5)
    assert r.resume() and r.it == 5
    err = capsys.readouterr().err
    assert "00000010 is unusable" in err and "net.safetensors" in err and "resumed from" in err
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("damage", ["missing", "wrong_shape", "extra"])
def test_checkpoint_with_wrong_tensors_is_refused_by_name(tmp_path, damage, capsys):
    from fewstep.io import save_tensors

    t = toy_trainer(tmp_path, 10, ckpt_every=5, keep=3)
    t.train()
    f = tmp_path / "checkpoints" / "00000010" / "net.safetensors"
    sd = load_tensors(f)
    k = sorted(sd)[0]
    if damage == "missing":
        sd.pop(k)
    elif damage == "wrong_shape":
        sd[k] = torch.zeros(*sd[k].shape, 2)
    else:
        sd["surprise"] = torch.zeros(1)
    save_tensors(sd, f)
    r = toy_trainer(tmp_path, 10, ckpt_every=5)
    assert r.resume() and r.it == 5
    line = next(l for l in capsys.readouterr().err.splitlines() if "unusable" in l)
    assert str(f) in line and {"missing": "missing", "wrong_shape": "shape", "extra": "unexpected"}[damage] in line


def test_cli_refuses_a_model_whose_weights_hold_infinities(tmp_path, capsys):
    from fewstep.cli import main
    from fewstep.model_io import save_denoiser

    from helpers import toy_denoiser

    den = toy_denoiser()
    save_denoiser(den, tmp_path / "m")
    sd = load_tensors(tmp_path / "m" / "model.safetensors")
    k = sorted(sd)[0]
    sd[k] = sd[k].clone().fill_(float("inf"))
    from fewstep.io import save_tensors

    save_tensors(sd, tmp_path / "m" / "model.safetensors")
    assert main(["sample", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "s.png")]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("fewstep: error:") and "\n" not in err and "model.safetensors" in err


# -- 4: guarded steps for every network ------------------------------------------------------------
def _dmd2_trainer(tmp_path, iters, **kw):
    from fewstep.data import load_dataset
    from fewstep.methods.distribution_matching.dmd2 import DMD2, DMD2Config
    from fewstep.train.loop import TrainConfig, Trainer

    from helpers import toy_denoiser

    m = DMD2(toy_denoiser(0), config(DMD2Config, lr=1e-3, gen_every=5), shape=(2,), num_classes=8)
    return Trainer(m, load_dataset("toy2d", "train"),
                   TrainConfig(out=str(tmp_path), max_iters=iters, batch_size=64, ema_decay=0.9, progress=False, **kw))


def _snapshot(tr):
    nets = {n: state(net) for n, net in tr.method.networks().items()}
    opts = {n: {i: {k: v.clone() for k, v in s.items() if torch.is_tensor(v)} for i, s in o.state_dict()["state"].items()}
            for n, o in tr.method.optimizers().items()}
    return nets, opts


def _equal(a, b):
    return all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


def test_nonfinite_generator_iteration_skips_every_network(tmp_path):
    tr = _dmd2_trainer(tmp_path, 11)
    tr.ctx.inject_nonfinite_at = {10}  # a generator iteration (10 % 5 == 0): generator and critic both step
    orig = tr.method.step
    seen = {}

    def step(batch, it, ctx):
        if it == 10:
            seen["before"] = _snapshot(tr)
        out = orig(batch, it, ctx)
        if it == 10:
            seen["after"] = _snapshot(tr)
        return out

    tr.method.step = step
    tr.train()
    (nb, ob), (na, oa) = seen["before"], seen["after"]
    assert set(nb) == {"student", "fake", "disc"} and set(ob) == {"student", "critic"}
    for n in nb:
        assert _equal(nb[n], na[n]), n
    for n in ob:
        assert ob[n] and all(_equal(ob[n][i], oa[n][i]) for i in ob[n]), n
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    skip = next(r for r in rows if r["kind"] == "skip")
    assert skip["it"] == 10 and any("student" in s for s in skip["reasons"]) and any("critic" in s for s in skip["reasons"])


def test_consecutive_nonfinite_steps_save_and_stop(tmp_path):
    tr = _dmd2_trainer(tmp_path, 50, max_skips=4, ckpt_every=0)
    tr.ctx.inject_nonfinite_at = set(range(7, 50))
    with pytest.raises(FewstepError, match="4 consecutive iterations had non-finite"):
        tr.train()
    assert (tmp_path / "latest").resolve().name == f"{11:08d}"  # saved where it stopped (7 + 4)
    assert _assert_checkpoints_sound(tmp_path)


# -- 5: collapse monitor ---------------------------------------------------------------------------
def test_collapsed_generator_is_flagged_and_signals_are_logged(tmp_path):
    from fewstep.data import load_dataset
    from fewstep.metrics.collapse import CollapseMonitor, with_collapse_monitor
    from fewstep.metrics.evaluate import collapse_signals

    tr = _dmd2_trainer(tmp_path, 20, eval_every=10)
    test = load_dataset("toy2d", "test")
    labels = test.labels[:400]

    def evaluator(den, it):  # a collapsed generator: every sample is the same point
        samples = torch.zeros(400, 2) + 0.3
        return collapse_signals(samples, labels)

    tr.evaluator = with_collapse_monitor(evaluator, CollapseMonitor(test.x, test.labels))
    tr.train()
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert evals[0]["warnings"] and any("collapsed" in w for w in evals[0]["warnings"])
    assert {"sample_mean", "sample_std", "min_class_spread"} <= evals[0].keys()
    train = [r for r in rows if r["kind"] == "train"]
    assert all("grad_norm/critic" in r for r in train) and any("grad_norm/student" in r for r in train)


# -- 7: determinism --------------------------------------------------------------------------------
def test_same_seed_same_config_same_weights_and_samples(tmp_path):
    from fewstep.samplers import SamplingSpec, generate

    a, b = toy_trainer(tmp_path / "a", 15, bf16=True), toy_trainer(tmp_path / "b", 15, bf16=True)
    a.train()
    b.train()
    assert _equal(state(a.method.den.net), state(b.method.den.net))
    spec = SamplingSpec("heun", 6, "karras")
    sa = generate(a.eval_generator(), 64, spec, (2,), torch.arange(64) % 8, seed=3)
    sb = generate(b.eval_generator(), 64, spec, (2,), torch.arange(64) % 8, seed=3)
    assert torch.equal(sa, sb)
    c = toy_trainer(tmp_path / "c", 15, seed=1, bf16=True)
    c.train()
    assert not _equal(state(a.method.den.net), state(c.method.den.net))  # the seed matters


def test_deterministic_mode_switches_torch_to_deterministic_kernels(tmp_path):
    try:
        t = toy_trainer(tmp_path, 3, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        t.train()
    finally:
        torch.use_deterministic_algorithms(False)
