import json
import math

import pytest
import torch

from helpers import state, toy_trainer


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path):
    full = toy_trainer(tmp_path / "full", 30)
    full.train()
    part = toy_trainer(tmp_path / "part", 13, ckpt_every=5)  # stops at 13 (a checkpoint at 13)
    part.train()
    resumed = toy_trainer(tmp_path / "part", 30, ckpt_every=5)  # a fresh process-equivalent object
    resumed.train(resume=True)
    for a, b in ((full.method.den.net, resumed.method.den.net), (full.ema.net, resumed.ema.net)):
        sa, sb = state(a), state(b)
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    oa, ob = full.method.opt.state_dict()["state"], resumed.method.opt.state_dict()["state"]
    assert all(torch.equal(oa[i]["exp_avg_sq"], ob[i]["exp_avg_sq"]) for i in oa)


def test_resume_falls_back_past_a_corrupt_checkpoint(tmp_path):
    t = toy_trainer(tmp_path, 10, ckpt_every=5, keep=3)
    t.train()
    newest = tmp_path / "checkpoints" / "00000010"
    (newest / "net.safetensors").write_bytes(b"\0" * 100)
    r = toy_trainer(tmp_path, 10, ckpt_every=5)
    assert r.resume()
    assert r.it == 5


def test_checkpoint_layout_and_latest(tmp_path):
    t = toy_trainer(tmp_path, 12, ckpt_every=4, keep=2)
    t.train()
    ck = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert ck == ["00000008", "00000012"]  # pruned to keep=2
    assert (tmp_path / "latest").resolve().name == "00000012"
    files = {p.name for p in (tmp_path / "latest").iterdir()}
    assert {"config.json", "net.safetensors", "ema.safetensors", "optim.safetensors", "rng.safetensors",
            "trainer_state.json"} <= files
    assert not any(f.suffix in (".pt", ".pth", ".pkl", ".bin") for f in (tmp_path / "latest").iterdir())
    assert (tmp_path / "model" / "model.safetensors").is_file()
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["it"] == 12 and "loss" in rows[-1]


def test_nonfinite_step_is_skipped_and_logged(tmp_path):
    t = toy_trainer(tmp_path, 6)
    t.ctx.inject_nonfinite_at = {3}
    before = {}

    orig_step = t.method.step

    def step(batch, it, ctx):
        if it == 3:
            before["w"] = state(t.method.den.net)
            before["opt"] = {i: {k: v.clone() for k, v in s.items()} for i, s in t.method.opt.state_dict()["state"].items()}
        out = orig_step(batch, it, ctx)
        if it == 3:
            after = state(t.method.den.net)
            assert all(torch.equal(before["w"][k], after[k]) for k in after)
            st = t.method.opt.state_dict()["state"]
            assert all(torch.equal(before["opt"][i]["exp_avg"], st[i]["exp_avg"]) for i in st)
        return out

    t.method.step = step
    t.train()
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "skip" and r["it"] == 3 for r in rows)
    assert "w" in before


def test_teacher_learns_toy2d(tmp_path):
    """A short toy2d run lowers FD (data space) by a wide margin versus the untrained net."""
    from fewstep.data import load_dataset
    from fewstep.metrics.fid import fd
    from fewstep.samplers import SamplingSpec, generate

    test = load_dataset("toy2d", "test")
    spec = SamplingSpec("heun", 10, "karras")
    t = toy_trainer(tmp_path, 300)
    labels = test.labels
    from fewstep.metrics.features import PointFeatures

    f = PointFeatures().features
    before = fd(f(generate(t.method.generator(), len(test), spec, (2,), labels, seed=0)), f(test.x))
    t.train()
    after = fd(f(generate(t.eval_generator(), len(test), spec, (2,), labels, seed=0)), f(test.x))
    assert after < 0.1 * before, (before, after)


def test_a_non_finite_gradient_skips_the_update():
    """A finite loss whose gradient is infinite (d sqrt(u)/du at u = 0) leaves weights and Adam moments
    untouched and is recorded as a skip naming the optimizer and the gradient."""
    from fewstep.train.guards import StepContext

    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([w], lr=0.1)
    ctx = StepContext({"net": opt}, torch.Generator().manual_seed(0))
    ctx.begin(0)
    assert ctx.update((w ** 2).sum(), "net")  # a normal step first, so Adam has moments to protect
    before_w, before_m = w.detach().clone(), opt.state[w]["exp_avg"].clone()
    ctx.begin(1)
    loss = torch.sqrt(w - w.detach()).sum()  # value 0, gradient +inf
    assert torch.isfinite(loss)
    assert ctx.update(loss, "net") is False
    assert ctx.skipped == ["net: non-finite gradient"]
    assert torch.equal(w.detach(), before_w) and torch.equal(opt.state[w]["exp_avg"], before_m) and w.grad is None


def test_fault_injection_announces_itself(tmp_path, monkeypatch, capsys):
    """The kill-in-checkpoint test hook, left exported by mistake, is said loudly at the start of a run."""
    monkeypatch.setenv("FEWSTEP_TEST_KILL_IN_CHECKPOINT", "999999")
    toy_trainer(tmp_path, 2).train()
    assert "WARNING: fault injection is on" in capsys.readouterr().err


def test_ema_advances_once_per_update_of_its_network(tmp_path):
    """A network updated every 3rd iteration gets one EMA update per update (9 iterations -> 3), and
    the EMA's weights only move on those iterations."""
    from fewstep.data import load_dataset
    from fewstep.methods.base import OptimConfig, StudentMethod, cond_of, trainable_copy
    from fewstep.train.loop import TrainConfig, Trainer

    from helpers import toy_denoiser

    class EveryThird(StudentMethod):
        name = "every_third"

        def __init__(self):
            self.student = trainable_copy(toy_denoiser(0))
            self.opt = OptimConfig(lr=1e-2).build(self.student.net.parameters())

        def config(self):
            return {"method": self.name}

        def step(self, batch, it, ctx):
            if it % 3:
                return {}
            x = batch["x"]
            loss = ((self.student(x, torch.ones(x.shape[0]), cond_of(batch)) - x) ** 2).mean(1)
            ctx.update(loss, "student")
            return {"loss": loss.mean()}

    tr = Trainer(EveryThird(), load_dataset("toy2d", "train"),
                 TrainConfig(out=str(tmp_path), max_iters=9, batch_size=32, ema_decay=0.9, progress=False))
    seen = []
    orig = tr.ema.update

    def update(net):
        seen.append(tr.ctx.it)
        orig(net)

    tr.ema.update = update
    tr.train()
    assert seen == [0, 3, 6] and tr.ema.num_updates == 3


def test_cosine_lr_decay_reaches_zero_and_survives_a_resume(tmp_path):
    """--lr-decay cosine: the LR each update used follows half a cosine from the LR to 0 at max_iters (after the
    warm-up), and a resumed run steps with the same LRs as an uninterrupted one."""
    full = toy_trainer(tmp_path / "full", 20, lr_decay="cosine", warmup=4)
    used = []
    orig = full.ctx.update

    def spy(loss, opt_name, **kw):
        ok = orig(loss, opt_name, **kw)
        used.append(full.method.opt.param_groups[0]["lr"])
        return ok

    full.ctx.update = spy
    full.train()
    lr = 2e-3
    assert used[0] == pytest.approx(lr / 4) and used[3] == pytest.approx(lr)  # linear warm-up over 4 iterations
    assert used[12] == pytest.approx(lr * 0.5)  # halfway through the 16 decaying iterations
    assert used[-1] == pytest.approx(lr * 0.5 * (1 + math.cos(math.pi * 15 / 16)))  # the last update, near 0
    assert all(a >= b for a, b in zip(used[3:], used[4:]))
    part = toy_trainer(tmp_path / "part", 20, ckpt_every=5, lr_decay="cosine", warmup=4)
    step = part.method.step

    def dies_at_12(batch, it, ctx):  # a run of 20 cut after its checkpoint at 10
        if it == 12:
            raise InterruptedError("cut")
        return step(batch, it, ctx)

    part.method.step = dies_at_12
    with pytest.raises(InterruptedError):
        part.train()
    resumed = toy_trainer(tmp_path / "part", 20, lr_decay="cosine", warmup=4)
    resumed.train(resume=True)
    sa, sb = state(full.method.den.net), state(resumed.method.den.net)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    const = toy_trainer(tmp_path / "const", 20, warmup=4)
    const.train()
    sc = state(const.method.den.net)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)  # the schedule changed the weights
    with pytest.raises(ValueError, match="lr_decay"):
        toy_trainer(tmp_path / "bad", 5, lr_decay="step")
