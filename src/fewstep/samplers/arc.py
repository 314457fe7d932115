"""ArcFlow's closed-form sampler (Yang et al. 2026; Hansheng Chen's pi-Flow code,
``ArcFlowPolicy`` and ``momentum_integration``).

At a step's start (flow time tau_src; x_tau = (1 - tau) x0 + tau eps, velocity eps - x0) the network
predicts K velocities u_k, mixture weights w_k = softmax(logits) and momenta g_k (g_1 = 0). Within the
step the policy's velocity follows an arc,

    v(tau) = sum_k w_k u_k exp(g_k (tau_src - tau)),

whose integral from tau_a down to tau_b has the closed form

    x(tau_a) - x(tau_b) = sum_k w_k u_k exp(g_k (tau_src - tau_a)) (tau_a - tau_b) phi(g_k (tau_a - tau_b)),
    phi(y) = (e^y - 1) / y (phi(0) = 1),

so one network evaluation moves along a curved path instead of a straight Euler line. The policy
(``ArcPolicy``, nets/arc.py) is what ``Denoiser.policy`` returns for an ArcFlow network.
"""
from __future__ import annotations

import torch

from .ode import flow_native, grid_steps


def policy_of(denoiser, x, t, cond):
    if not hasattr(denoiser, "policy"):
        raise ValueError("the arc sampler needs an ArcFlow policy model sampled without CFG (cfg 1)")
    return denoiser.policy(x, t, cond)


def arc_flow_step(denoiser, y, tau0, tau1, cond=None) -> torch.Tensor:
    """One arc in flow coordinates: the policy predicted at the flow point y (per-sample time tau0),
    integrated in closed form down to tau1. Training-time rollouts and diagnostics take their steps here."""
    pol = policy_of(denoiser, *flow_native(denoiser.process, y, tau0), cond)
    return y - pol.displacement(tau0, tau1).to(y.dtype)


def to_flow(x, a, tau):
    """Native x at a level (alpha a, flow time tau) -> x_tau = (1 - tau) x / a (``flow_native`` inverts it)."""
    return x * ((1 - tau) / a)


def arc(denoiser, x, sigmas, cond=None, callback=None):
    """ArcFlow's sampler: at each grid level the policy, integrated in closed form to the next level.
    One NFE per step; the grid is any sigma_hat grid (tau = sh / (1 + sh))."""
    def full(v):
        return torch.full((x.shape[0],), float(v), device=x.device)

    for i, sh0, sh1, (t0, a0, _), _ in grid_steps(denoiser.process, sigmas):
        tau0, tau1 = sh0 / (1 + sh0), sh1 / (1 + sh1)
        pol = policy_of(denoiser, x, full(t0), cond)
        y = to_flow(x.float(), a0, tau0)
        x_next = flow_native(denoiser.process, y - pol.displacement(full(tau0), full(tau1)), full(tau1))[0].to(x.dtype)
        if callback is not None:
            callback(i, x_next, (y - pol.displacement(full(tau0), full(0.0))).to(x.dtype))
        x = x_next
    return x
