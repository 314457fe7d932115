"""The method contract, for every registered method (and a method added the way the README says):
it builds on toy2d, takes steps, saves, reloads, and resumes to exactly the weights of an unbroken run."""
import json

import pytest
import torch

from fewstep.cli import main
from fewstep.config import DistillConfig, build_config
from fewstep.data import load_dataset
from fewstep.io import load_tensors
from fewstep.methods.base import Method
from fewstep.methods.registry import get_method, method_names, register_method, unregister_method
from fewstep.model_io import load_denoiser, save_denoiser
from fewstep.samplers import generate
from fewstep.train.loop import TrainConfig, Trainer

from helpers import toy_denoiser

TOY = "mean_match"  # tests/support/toy_method.py, the README walkthrough's method
# small but real settings, so one step of every method takes well under a second
FAST = {"reflow": {"pairs": 64}, "instaflow": {"pairs": 64}, "dmd": {"regression_pairs": 64},
        "cd": {"num_scales": 10}, "lcm": {"num_scales": 10}, "disca": {"trajectories": 8, "more_nfe": []}}


@pytest.fixture
def toy_registered():
    register_method(TOY, "toy_method:MeanMatch", "example", "moment matching (the README walkthrough)")
    yield
    unregister_method(TOY)


# methods that rebuild a UNet (architecture distillation) run on a tiny UNet over 16x16 digits instead
TINY_UNET = {"arch": "unet", "in_channels": 1, "image_size": 16, "channels": 8, "ch_mult": [1, 2],
             "num_res_blocks": 2, "attn_levels": [1], "num_classes": 10, "time_scale": 1000.0}


def _setting(cls):
    """(teacher, one sample's shape, classes, data) the contract runs the method on."""
    if cls.architectures is None or "mlp" in cls.architectures:
        return toy_denoiser(0), (2,), 8, "toy2d"
    return toy_denoiser(0, TINY_UNET), (1, 16, 16), 10, "digits"


def _train(name, out, iters, resume=False, planned=None):
    """Train ``iters`` iterations of a run planned for ``planned`` (an interrupted run: its LR schedule
    is the planned run's)."""
    cls = get_method(name)
    torch.manual_seed(0)
    teacher, shape, classes, data = _setting(cls)
    method = cls(teacher, build_config(cls.Config, FAST.get(name, {})), shape=shape, num_classes=classes)
    method.prepare(out.parent / "cache")
    cfg = TrainConfig(out=str(out), max_iters=iters, batch_size=32, ckpt_every=1, ema_decay=0.9, progress=False,
                      grad_clip=0.0)
    tr = Trainer(method, load_dataset(data, "train"), cfg, {"method": name})
    method.plan(planned or iters)
    tr.train(resume=resume)
    return tr


@pytest.mark.parametrize("name", method_names() + [TOY])
def test_method_honours_the_contract(name, tmp_path, toy_registered):
    cls = get_method(name)
    assert issubclass(cls, Method) and cls.name == name
    assert all(isinstance(p, DistillConfig) and isinstance(p.method, cls.Config) for p in cls.presets.values())
    whole = _train(name, tmp_path / "whole", 3)
    nets = whole.method.networks()
    assert set(whole.method.optimizers()) and whole.method.ema_network() in nets
    # stopped after 2 iterations, then resumed to 3: the same weights as 3 in one go
    _train(name, tmp_path / "split", 2, planned=3)
    split = _train(name, tmp_path / "split", 3, resume=True)
    for net in nets:
        a = load_tensors(tmp_path / "whole" / "latest" / f"{net}.safetensors")
        b = load_tensors(tmp_path / "split" / "latest" / f"{net}.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{name}: {net} differs after resume"
    # the saved model reloads and samples the way the method says it should be sampled
    den, cfg = load_denoiser(str(tmp_path / "split" / "model"))
    spec = split.method.default_sampling()
    _, shape, classes, _ = _setting(cls)
    x = generate(den, 16, spec, shape, torch.arange(16) % classes, seed=0)
    assert x.shape == (16, *shape) and torch.isfinite(x).all()
    assert json.loads((tmp_path / "split" / "latest" / "config.json").read_text())["method"]["method"] == name


def test_a_method_added_in_one_file_reaches_the_cli(tmp_path, toy_registered, capsys):
    """README, "Adding a method": the toy method's file plus one register line, and the CLI trains it
    with its preset, lists it in the help, and takes --set and --lr for its fields."""
    teacher = tmp_path / "teacher"
    save_denoiser(toy_denoiser(0), teacher, {"data": {"name": "toy2d", "shape": [2], "num_classes": 8}})
    with pytest.raises(SystemExit):
        main(["distill", "--help"])
    assert TOY in capsys.readouterr().out
    out = tmp_path / "student"
    assert main(["distill", "--teacher", str(teacher), "--method", TOY, "--out", str(out), "--set", "teacher_steps=4",
                 "--lr", "0.01", "--no-progress", "--threads", "1"]) == 0
    cfg = json.loads((out / "latest" / "config.json").read_text())
    assert cfg["run"]["distill"]["train"]["max_iters"] == 20  # the preset beside the method
    assert cfg["method"]["teacher_steps"] == 4 and cfg["method"]["optim"]["lr"] == 0.01
    assert main(["distill", "--teacher", str(teacher), "--method", TOY, "--out", str(tmp_path / "bad"),
                 "--set", "nfe=2"]) == 1
    assert "mean_match is a one-step method" in capsys.readouterr().err
