"""Validated input, property-based: random and malformed command lines and method configs end in a
one-line error (or reach the work they ask for), never in a traceback."""
import dataclasses
import os
import typing
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fewstep.cli import main
from fewstep.methods.registry import METHOD_TABLE, get_method, method_names

from helpers import toy_denoiser


class Reached(Exception):
    """Raised in place of the real work once every argument has been accepted."""


def _reached(*a, **k):
    raise Reached


HEAVY = ["fewstep.train.loop.Trainer.train", "fewstep.commands.bench.run", "fewstep.samplers.generate.generate",
         "fewstep.commands.demo.run", "fewstep.metrics.features.train_feature_net",
         "fewstep.methods.distribution_matching.base.DistributionMatchingBase.prepare",
         "fewstep.methods.trajectory.reflow.CouplingMethod.prepare"]

COMMANDS = ["train-teacher", "train-features", "distill", "sample", "eval", "bench", "demo"]
FLAGS = ["--data", "--out", "--model", "--teacher", "--method", "--nfe", "--steps", "--sampler", "--grid", "--cfg",
         "--n", "--seed", "--threads", "--max-iters", "--batch-size", "--lr", "--ckpt-every", "--keep",
         "--eval-every", "--set", "--samplers", "--seeds", "--name", "--preset", "--ema-decay", "--resume",
         "--bf16", "--no-bf16", "--iters", "--baseline", "--features", "--deterministic", "--results-dir"]
VALUES = ["mnist", "toy2d", "digits", "folder:/no/such/dir", "cifar", "dmd2", "dmd", "cd", "lcm", "progressive",
          "reflow", "instaflow", "guidance_distill", "magic", "euler", "heun", "multistep", "nested", "flow", "1",
          "2", "4", "0", "-1", "1e9", "nan", "inf", "-inf", "1,2", "1,,2", "0.5", "", "=", "nfe=3", "lr=-1",
          "lr=abc", "optim.lr=-1", "optim.lr=abc", "optim=3", "w_range=[2,1]", "optim.betas=[\"a\",\"b\"]",
          "guidance=[1,2]", "student_sigmas=[1,2]",
          "num_scales=1", "loss=lpips", "schedule=exclusive", "pairs=0", "no_such_field=1", "skip=100",
          "w_dim=true", "eval_nfes=[1,2]", "out", "runs/x", "/dev/null", "mnist/../.."]

tokens = st.one_of(st.sampled_from(FLAGS), st.sampled_from(VALUES), st.text(max_size=8),
                   st.integers(-10, 10 ** 6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(str))
argvs = st.tuples(st.sampled_from(COMMANDS), st.lists(tokens, max_size=12)).map(lambda t: [t[0], *t[1]])


@pytest.fixture
def quiet_heavy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    patches = [mock.patch(p, _reached) for p in HEAVY]
    for p in patches:
        p.start()
    yield
    for p in patches:
        p.stop()


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=argvs)
def test_random_command_lines_never_trace_back(quiet_heavy, capsys, argv):
    try:
        code = main(argv)
    except Reached:
        return  # everything was accepted and the real work would start here
    err = capsys.readouterr().err.strip()
    if code != 0:
        last = err.splitlines()[-1] if err else ""
        assert last.startswith("fewstep: error:") or last.startswith("usage:"), err
        assert "Traceback" not in err


JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10, 100),
                              st.floats(-1e6, 1e6), st.sampled_from([float("nan"), float("inf")]), st.text(max_size=6)),
                    lambda inner: st.lists(inner, max_size=3), max_leaves=4)


def _config_values(cls):
    """Random overrides for a config dataclass: top-level fields, and nested groups (optim.lr=...)."""
    hints = typing.get_type_hints(cls)
    nested = {f.name: hints[f.name] for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])}
    top = st.dictionaries(st.sampled_from([f.name for f in dataclasses.fields(cls)]), JSON, max_size=3)
    groups = {name: st.dictionaries(st.sampled_from([f.name for f in dataclasses.fields(t)]), JSON, max_size=2)
              for name, t in nested.items()}
    return st.tuples(top, st.fixed_dictionaries({}, optional=groups)).map(lambda t: {**t[0], **t[1]})


def _raised_by_fewstep(e: BaseException) -> bool:
    tb = e.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{os.sep}fewstep{os.sep}" in tb.tb_frame.f_code.co_filename


@pytest.mark.parametrize("name", method_names())
@settings(max_examples=40, deadline=None, derandomize=True)
@given(data=st.data())
def test_random_method_configs_are_refused_clearly_or_train(name, data, tmp_path_factory):
    """Whatever the field values, a config is refused by our own validation with a one-line ValueError,
    or it builds a method that takes a training step with finite losses."""
    from fewstep.config import build_config
    from fewstep.train.guards import StepContext

    cls = get_method(name)
    values = data.draw(_config_values(cls.Config))
    try:
        cfg = build_config(cls.Config, values)
        method = cls(toy_denoiser(0), cfg, shape=(2,), num_classes=8)
    except ValueError as e:
        assert str(e) and "\n" not in str(e)
        assert _raised_by_fewstep(e), f"a ValueError from outside fewstep's validation: {e!r}"
        return
    method.prepare(tmp_path_factory.mktemp("cache"))
    ctx = StepContext(method.optimizers(), torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    batch = {"x": torch.randn(8, 2, generator=g) * 0.5, "labels": torch.randint(0, 8, (8,), generator=g)}
    ctx.begin(0)
    logs = method.step(batch, 0, ctx)
    assert logs and all(torch.isfinite(torch.as_tensor(v)).all() for v in logs.values()) or ctx.skipped


def test_every_registered_method_is_covered():
    assert set(method_names()) == set(METHOD_TABLE)
    assert {"dmd", "dmd2", "progressive", "cd", "lcm", "reflow", "instaflow", "guidance_distill"} <= set(method_names())


@pytest.mark.parametrize("sets,msg", [
    (["nfe=\"two\""], "nfe must be int"),
    (["optim.lr=[1]"], "CDConfig.optim.lr must be float"),
    (["optim.lr=-1"], "lr must be > 0"),
    (["lr=1e-4"], "has no field 'lr'"),
    (["no_such_field=1"], "has no field 'no_such_field'"),
    (["num_scales=1"], "num_scales >= 2"),
    (["loss=lpips"], "loss must be"),
])
def test_distill_set_errors_name_the_field(sets, msg, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["distill", "--teacher", "mnist", "--method", "cd", "--out", "o"] + [a for s in sets for a in ("--set", s)]
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("fewstep: error:") and msg in err and "\n" not in err
