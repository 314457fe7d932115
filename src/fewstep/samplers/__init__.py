"""Samplers: plain functions ``sampler(denoiser, x, sigmas, cond=..., ...) -> x`` over a sigma_hat grid."""
from __future__ import annotations

from .few_step import multistep
from .generate import CountNFE, SamplingSpec, generate, sigmas_for
from .grids import GRIDS, make_grid
from .ode import dpmpp_2m, euler, heun, initial_noise
from .registry import SAMPLERS, STOCHASTIC, nfe_of, sample, steps_for_nfe
from .stochastic import ancestral

__all__ = ["SAMPLERS", "STOCHASTIC", "GRIDS", "make_grid", "euler", "heun", "dpmpp_2m", "ancestral", "multistep",
           "sample", "initial_noise", "steps_for_nfe", "nfe_of", "SamplingSpec", "generate", "sigmas_for", "CountNFE"]
