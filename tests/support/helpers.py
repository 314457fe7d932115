"""Small builders shared by tests."""
import importlib.util
from pathlib import Path

import torch

from fewstep.config import build_config, fields_of_type
from fewstep.data import load_dataset
from fewstep.methods.base import OptimConfig
from fewstep.methods.teacher import DenoisingTeacher, TeacherMethodConfig
from fewstep.model_io import build_denoiser
from fewstep.noise import TimeSampler
from fewstep.train.loop import TrainConfig, Trainer

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def benchmark_script(name: str):
    """benchmarks/NAME.py imported as a module (the benchmark helpers are scripts, not package modules)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TOY_TIMES = TimeSampler("lognormal", -0.5, 1.5)  # the toy2d teacher preset's sigma sampling
TOY_ARCH = {"arch": "mlp", "dim": 2, "hidden": 64, "depth": 2, "num_classes": 8, "time_scale": 1000.0}


def toy_denoiser(seed=0, arch=TOY_ARCH):
    torch.manual_seed(seed)
    return build_denoiser({"arch": dict(arch), "process": {"family": "edm"}, "param": "edm"})


def toy_trainer(out, max_iters, seed=0, ckpt_every=0, batch_size=256, lr=2e-3, warmup=10, **kw):
    den = toy_denoiser(seed)
    method = DenoisingTeacher(den, TeacherMethodConfig(OptimConfig(lr=lr, grad_clip=1.0), TOY_TIMES))
    cfg = TrainConfig(out=str(out), max_iters=max_iters, batch_size=batch_size, seed=seed, ckpt_every=ckpt_every,
                      ema_decay=0.99, warmup=warmup, progress=False, **kw)
    return Trainer(method, load_dataset("toy2d", "train"), cfg)


def state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def train_toy_teacher(out, num_classes=0, iters=500, data="toy2d"):
    """A toy2d EDM teacher (8 Gaussians; ``data="toy2d:moons"`` for two moons). Unconditional, one Euler
    step can only return the global mean; class-conditional, the class mean."""
    torch.manual_seed(0)
    den = build_denoiser({"arch": {"arch": "mlp", "dim": 2, "hidden": 128, "depth": 3, "num_classes": num_classes,
                                   "time_scale": 1000.0}, "process": {"family": "edm"}, "param": "edm"})
    method = DenoisingTeacher(den, TeacherMethodConfig(OptimConfig(lr=2e-3, grad_clip=1.0), TOY_TIMES))
    tr = Trainer(method, load_dataset(data, "train"),
                 TrainConfig(out=str(out), max_iters=iters, batch_size=512, ema_decay=0.99, warmup=10, progress=False))
    tr.train()
    return tr.eval_generator().eval().requires_grad_(False)


def toy_fd(den, spec, labels=False, data="toy2d"):
    """FD on the toy2d test set (random-Fourier point features)."""
    from fewstep.metrics.features import PointFeatures
    from fewstep.metrics.fid import fd
    from fewstep.samplers import generate

    test = load_dataset(data, "test")
    f = PointFeatures().features
    return fd(f(generate(den, len(test), spec, (2,), test.labels if labels else None, seed=1)), f(test.x))


def train_student(method, out, iters, batch_size=256, ema_decay=0.95, data="toy2d"):
    """Prepare and train a distillation method on toy2d; returns the evaluated (EMA) generator."""
    method.prepare(f"{out}/cache")
    tr = Trainer(method, load_dataset(data, "train"),
                 TrainConfig(out=str(out), max_iters=iters, batch_size=batch_size, ema_decay=ema_decay,
                             progress=False, grad_clip=0.0))
    tr.train()
    return tr.eval_generator()


def config(cls, lr=None, **fields):
    """A method config: the class's defaults with ``fields`` set and, given ``lr``, that LR for every
    optimiser it configures (the layered build the CLI uses)."""
    over = dict(fields)
    if lr is not None:
        for f in fields_of_type(cls, OptimConfig):
            over[f] = {**over.get(f, {}), "lr": lr}
    return build_config(cls, over)


def gaussian_fd(seed: int = 1, data: str = "toy2d") -> float:
    """FD of the negative control every learning test must fail: a Gaussian with the training data's
    mean and covariance (one blob where the data has eight modes; toy2d FD ~12.7)."""
    from fewstep.metrics.features import PointFeatures
    from fewstep.metrics.fid import fd

    train, test = load_dataset(data, "train"), load_dataset(data, "test")
    g = torch.Generator().manual_seed(seed)
    chol = torch.linalg.cholesky(torch.cov(train.x.T))
    blob = train.x.mean(0) + torch.randn(len(test), 2, generator=g) @ chol.T
    f = PointFeatures().features
    return fd(f(blob), f(test.x))


def assert_learns(trained: float, bar: float, **controls: float) -> None:
    """The trained student passes ``bar`` and every negative control (the untrained student, the
    mean-matched Gaussian, ...) fails it: a test that an untrained or broken method cannot pass."""
    assert trained < bar, f"trained student FD {trained:.3f} >= bar {bar:.3f} (controls: {controls})"
    for name, value in controls.items():
        assert value >= bar, f"negative control {name} (FD {value:.3f}) passes the bar {bar:.3f}: the test cannot fail"


def bar_folder(root, per_class: int = 40, size: int = 8) -> str:
    """An image folder of two easy classes of grey squares (a bar on the left vs on the right, jittered),
    in class sub-folders; returns its ``folder:`` data spec."""
    import numpy as np
    from PIL import Image

    g = np.random.default_rng(0)
    for c in ("left", "right"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            img = np.zeros((size, size), dtype=np.uint8)
            col = int(g.integers(0, 2)) + (0 if c == "left" else size - 3)
            img[:, col:col + 2] = 255
            Image.fromarray(img, mode="L").save(root / c / f"{i}.png")
    return f"folder:{root}"
