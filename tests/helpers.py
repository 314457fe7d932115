"""Small builders shared by tests."""
import torch

from fewstep.data import load_dataset
from fewstep.methods.teacher import DenoisingTeacher, TeacherMethodConfig
from fewstep.model_io import build_denoiser
from fewstep.noise import TimeSampler
from fewstep.train.loop import Trainer, TrainConfig

TOY_ARCH = {"arch": "mlp", "dim": 2, "hidden": 64, "depth": 2, "num_classes": 8, "time_scale": 1000.0}


def toy_denoiser(seed=0, arch=TOY_ARCH):
    torch.manual_seed(seed)
    return build_denoiser({"arch": dict(arch), "process": {"family": "edm"}, "param": "edm"})


def toy_trainer(out, max_iters, seed=0, ckpt_every=0, batch_size=256, lr=2e-3, **kw):
    den = toy_denoiser(seed)
    method = DenoisingTeacher(den, TeacherMethodConfig(lr=lr, time_sampler=TimeSampler("lognormal", -0.5, 1.5)))
    cfg = TrainConfig(out=str(out), max_iters=max_iters, batch_size=batch_size, seed=seed, ckpt_every=ckpt_every,
                      ema_decay=0.99, warmup=10, progress=False, **kw)
    return Trainer(method, load_dataset("toy2d", "train"), cfg)


def state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}
