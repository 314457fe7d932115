"""Samplers by name, and what a sampler's step count costs in network evaluations."""
from __future__ import annotations

from .arc import arc
from .few_step import multistep, tcd
from .ode import dpmpp_2m, euler, heun
from .stochastic import ancestral

SAMPLERS = {"euler": euler, "heun": heun, "dpmpp2m": dpmpp_2m, "ancestral": ancestral, "multistep": multistep,
            "tcd": tcd, "arc": arc}
STOCHASTIC = {"ancestral", "multistep", "tcd"}
POLICY = {"arc"}  # samplers of a model family's own output (ArcFlow's velocity mixture), not of any denoiser


def steps_for_nfe(sampler: str, nfe: int) -> int | None:
    """Grid steps that spend at most ``nfe`` evaluations (None if the sampler cannot)."""
    if sampler == "heun":  # n steps cost 2 n - 1 (last step is Euler)
        n = (nfe + 1) // 2
        return n if n >= 2 else None
    return nfe if nfe >= 1 else None


def nfe_of(sampler: str, steps: int) -> int:
    return 2 * steps - 1 if sampler == "heun" else steps


def sample(denoiser, x, sigmas, sampler: str = "euler", cond=None, generator=None, callback=None):
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {sorted(SAMPLERS)}")
    fn = SAMPLERS[sampler]
    if sampler in STOCHASTIC:
        return fn(denoiser, x, sigmas, cond=cond, generator=generator, callback=callback)
    return fn(denoiser, x, sigmas, cond=cond, callback=callback)
