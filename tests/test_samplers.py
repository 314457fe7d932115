"""Samplers against the exact PF-ODE solution for Gaussian data (the ideal denoiser is analytic)."""
import math

import pytest
import torch

from fewstep.noise import EDM, RectifiedFlow, VPContinuous, VPDiscrete
from fewstep.samplers import ancestral, dpmpp_2m, euler, heun, make_grid, multistep
from fewstep.samplers.few_step import tcd
from fewstep.samplers.ode import coeffs

from gaussian import GaussianDenoiser, exact_ode

MU = torch.tensor([0.5, -1.0, 0.0], dtype=torch.float64)
VAR = torch.tensor([0.3, 2.0, 0.05], dtype=torch.float64)
ORDERS = {"euler": (euler, 1), "heun": (heun, 2), "dpmpp2m": (dpmpp_2m, 2)}


def _error(fn, proc, n):
    sh = make_grid("karras", proc, n, sh_min=0.05, sh_max=10.0, final_zero=False)
    _, a0, _ = coeffs(proc, float(sh[0]))
    _, a1, _ = coeffs(proc, float(sh[-1]))
    y0 = 4 * torch.randn(200, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = fn(GaussianDenoiser(proc, MU, VAR), a0 * y0, sh)
    return (x / a1 - exact_ode(MU, VAR, y0, sh[0], sh[-1])).abs().max().item()


@pytest.mark.parametrize("proc", [EDM(), VPDiscrete(), VPContinuous(), RectifiedFlow()], ids=lambda p: type(p).__name__)
@pytest.mark.parametrize("name", list(ORDERS))
def test_sampler_converges_at_its_order(proc, name):
    fn, order = ORDERS[name]
    errs = [_error(fn, proc, n) for n in (16, 32, 64)]
    rates = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
    assert errs[-1] < 0.05 * 2 ** (2 - order) * (0.5 if order == 2 else 1)
    assert all(abs(r - order) < 0.35 for r in rates), (errs, rates)


def test_second_order_beats_first_order_at_equal_nfe():
    proc = EDM()
    assert _error(dpmpp_2m, proc, 16) < _error(euler, proc, 16) / 3


def test_final_step_to_zero_returns_denoised():
    proc = EDM()
    den = GaussianDenoiser(proc, MU, VAR)
    sh = make_grid("karras", proc, 1)  # [80, 0]
    x = 80 * torch.randn(10, 3, dtype=torch.float64)
    out = euler(den, x, sh)
    assert torch.allclose(out, den.raw(x, torch.full((10,), 80.0, dtype=torch.float64))[0])


def test_stochastic_samplers_same_seed_same_samples():
    proc = EDM()
    den = GaussianDenoiser(proc, MU, VAR)
    sh = make_grid("karras", proc, 6)
    for fn in (ancestral, multistep, tcd):
        outs = [fn(den, 80 * torch.randn(8, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64), sh,
                   generator=torch.Generator().manual_seed(7)) for _ in range(2)]
        assert torch.equal(outs[0], outs[1])
        other = fn(den, 80 * torch.randn(8, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64), sh,
                   generator=torch.Generator().manual_seed(8))
        assert not torch.equal(outs[0], other)


@pytest.mark.parametrize("proc", [EDM(), VPDiscrete(), RectifiedFlow()], ids=lambda p: type(p).__name__)
def test_tcd_spans_ddim_to_multistep(proc):
    """TCD at gamma 0 is DDIM (Euler), at gamma 1 the consistency multistep sampler (same noise draws),
    in between neither; it ends on the last x0 prediction."""
    den = GaussianDenoiser(proc, MU, VAR)
    sh = make_grid("flow", proc, 4)
    _, a0, _ = coeffs(proc, float(sh[0]))
    x = a0 * float(sh[0]) * torch.randn(8, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    run = lambda fn, **kw: fn(den, x, sh, generator=torch.Generator().manual_seed(7), **kw)
    assert torch.allclose(run(tcd, gamma=0.0), euler(den, x, sh), atol=1e-10)
    assert torch.allclose(run(tcd, gamma=1.0), run(multistep), atol=1e-10)
    mid = run(tcd, gamma=0.3)
    assert not torch.allclose(mid, euler(den, x, sh), atol=1e-3) and not torch.allclose(mid, run(multistep), atol=1e-3)


def test_ancestral_samples_the_gaussian():
    """The stochastic sampler reaches the data distribution (mean and variance) from noise."""
    proc = VPDiscrete()
    den = GaussianDenoiser(proc, MU, VAR)
    sh = make_grid("trailing", proc, 1000, final_zero=False)  # ancestral is exact only as steps -> 0
    x = torch.randn(20000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    _, a_last, _ = coeffs(proc, float(sh[-1]))
    y = ancestral(den, x, sh, generator=torch.Generator().manual_seed(1)) / a_last
    # x / alpha at the last level is distributed as N(mu, var + sigma_hat^2)
    assert torch.allclose(y.mean(0), MU, atol=0.05)
    assert torch.allclose(y.var(0), VAR + sh[-1] ** 2, rtol=0.06)


def test_samplers_are_differentiable():
    """No no_grad inside: gradients flow from the sample back to the denoiser's parameters."""
    proc = EDM()
    mu = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    den = GaussianDenoiser(proc, mu, VAR)
    den.mu = mu
    sh = make_grid("karras", proc, 3)
    for fn in (euler, heun, dpmpp_2m):
        x = fn(den, 80 * torch.randn(4, 3, dtype=torch.float64), sh)
        (g,) = torch.autograd.grad(x.sum(), mu)
        assert torch.isfinite(g).all() and g.abs().sum() > 0
