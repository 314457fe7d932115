"""Time grids for sampling, as *normalised noise levels* sigma_hat = sigma(t)/alpha(t), descending.

Samplers consume sigma_hat grids so that one sampler serves every noise process; the process maps
each level back to its native time for the network (noise/base.py). A grid ends at 0 (the clean
sample) unless ``final_zero=False``. ``n`` is the number of steps (grid has n + 1 points).
"""
from __future__ import annotations

import math

import torch

from ..noise import NoiseProcess

GRIDS = ("karras", "uniform", "trailing", "nested", "flow")


def _range(process: NoiseProcess, sh_min, sh_max):
    lo = float(process.sigma_hat(torch.tensor(process.t_min))) if sh_min is None else sh_min
    hi = float(process.sigma_hat(torch.tensor(process.t_max))) if sh_max is None else sh_max
    if not math.isfinite(hi):  # flow at t = 1: cap the top for grids that need a finite value
        hi = float(process.sigma_hat(torch.tensor(process.t_max - 1e-3)))
    return max(lo, 1e-6), hi


def _finish(sh: torch.Tensor, final_zero: bool) -> torch.Tensor:
    sh = sh.to(torch.float64)
    return torch.cat([sh, sh.new_zeros(1)]) if final_zero else sh


def karras(process: NoiseProcess, n: int, rho: float = 7.0, sh_min=None, sh_max=None, final_zero=True):
    """EDM Eq. 5: sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho."""
    lo, hi = _range(process, sh_min, sh_max)
    if n == 1:
        return _finish(torch.tensor([hi]), final_zero)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    sh = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    return _finish(sh, final_zero)


def uniform(process: NoiseProcess, n: int, final_zero=True):
    """Native times evenly spaced from t_max down to t_min (n points), then the clean end."""
    t = torch.linspace(process.t_max, process.t_min, n, dtype=torch.float64) if n > 1 \
        else torch.tensor([process.t_max], dtype=torch.float64)
    return _finish(process.sigma_hat(t), final_zero)


def trailing(process: NoiseProcess, n: int, final_zero=True):
    """'trailing' spacing (Lin et al. 2024, Table 2; diffusers timestep_spacing='trailing'):
    native times t_max, t_max - L/n, ..., L/n with L = t_max - t_min (+ 1 for discrete VP), so the
    first step always starts at the noisiest time. For 1000-step VP: n=4 -> 999, 749, 499, 249."""
    from ..noise import VPDiscrete

    if isinstance(process, VPDiscrete):
        T = process.num_train_timesteps
        t = torch.round(torch.arange(T, 0, -T / n, dtype=torch.float64)[:n]) - 1
    else:
        span = process.t_max - process.t_min
        t = process.t_max - torch.arange(n, dtype=torch.float64) * span / n
    return _finish(process.sigma_hat(t), final_zero)


def nested(process: NoiseProcess, n: int, rho: float = 7.0, final_zero=True):
    """Halving-friendly Karras ramp: sigma(u) at u = i/n, i = 0..n-1, then the clean end, with
    sigma(u) = (smax^(1/rho) + u (smin^(1/rho) - smax^(1/rho)))^rho. nested(n) is every other point of
    nested(2n), so a student step spans exactly two teacher steps (progressive distillation)."""
    lo, hi = _range(process, None, None)
    u = torch.arange(n, dtype=torch.float64) / n
    return _finish((hi ** (1 / rho) + u * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho, final_zero)


def flow_range(process: NoiseProcess) -> tuple[float, float]:
    """(tau_min, tau_top): the rectified-flow times tau = sh / (1 + sh) of the process's lowest and top
    levels; the ``flow`` grid starts at tau_top."""
    lo, hi = _range(process, None, None)
    return lo / (1 + lo), hi / (1 + hi)


def flow(process: NoiseProcess, n: int, final_zero=True):
    """Uniform steps in rectified-flow time tau = sh / (1 + sh) from the process's top level to 0:
    Euler in tau on x_tau = (1 - tau) x0 + tau eps (InstaFlow / SD3 sampling) is DDIM on these levels.
    A flow process with a timestep shift s (SD3's 3.0; FLUX.1-dev's at its resolution) moves them to
    s tau / (1 + (s - 1) tau), as diffusers' FlowMatchEulerDiscreteScheduler does."""
    tau = flow_range(process)[1] * (1 - torch.arange(n, dtype=torch.float64) / n)
    s = float(getattr(process, "shift", 1.0))
    if s != 1.0:
        tau = s * tau / (1 + (s - 1) * tau)
    return _finish(tau / (1 - tau), final_zero)


STUDENT_GRIDS = ("karras", "flow", "trailing")  # what student_levels spaces a few-step student's levels on


def student_levels(process: NoiseProcess, nfe: int, sh_min: float, explicit=None, grid: str = "karras") -> torch.Tensor:
    """Levels of a few-step student that re-noises between steps (consistency multistep sampling,
    DMD2 backward simulation), then 0: the process's top level alone for one step, else ``nfe``
    levels from the top: Karras-spaced down to ``sh_min`` (``grid="karras"``) or uniform in
    rectified-flow time (``grid="flow"``: 80, 2.86, 0.98, 0.33 for 4 steps from EDM's top, close to DMD2
    SDXL's timesteps 999/749/499/249, which are uniform in VP time), or those VP times themselves
    (``grid="trailing"``: for 2 steps 999/499, LCMScheduler's timesteps); ``explicit`` overrides."""
    if explicit is not None:
        sh = torch.tensor([float(v) for v in explicit], dtype=torch.float64)
        if len(sh) != nfe or (sh <= 0).any() or (sh[1:] >= sh[:-1]).any():
            raise ValueError(f"student levels must be {nfe} positive descending values, got {list(explicit)}")
        return _finish(sh, True)
    if grid in ("flow", "trailing"):
        return make_grid(grid, process, nfe)
    if grid not in STUDENT_GRIDS:
        raise ValueError(f"student levels come from one of the grids {STUDENT_GRIDS}, got {grid!r}")
    _, top = _range(process, None, None)
    return karras(process, nfe, sh_min=sh_min, sh_max=top)


def make_grid(kind: str, process: NoiseProcess, n: int, **kw) -> torch.Tensor:
    if n < 1:
        raise ValueError(f"number of steps must be >= 1, got {n}")
    fns = {"karras": karras, "uniform": uniform, "trailing": trailing, "nested": nested, "flow": flow}
    if kind not in fns:
        raise ValueError(f"unknown grid {kind!r}; expected one of {GRIDS}")
    return fns[kind](process, n, **kw)
