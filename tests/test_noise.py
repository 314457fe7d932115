import pytest
import torch

from fewstep.noise import (
    EDM,
    PREDICTION_KINDS,
    RectifiedFlow,
    TimeSampler,
    VPContinuous,
    VPDiscrete,
    convert,
    to_x0_eps,
)
from fewstep.samplers import make_grid

PROCESSES = [EDM(), VPDiscrete(), VPDiscrete(schedule="linear", beta_start=1e-4, beta_end=0.02),
             VPDiscrete(schedule="cosine"), VPContinuous(), RectifiedFlow()]


def _times(proc, n=7):
    return torch.linspace(proc.t_min + 0.05 * (proc.t_max - proc.t_min), proc.t_max * 0.95, n, dtype=torch.float64)


@pytest.mark.parametrize("proc", PROCESSES, ids=lambda p: type(p).__name__ + p.config().get("schedule", ""))
def test_prediction_kinds_round_trip(proc):
    g = torch.Generator().manual_seed(0)
    t = _times(proc)
    x0 = torch.randn(len(t), 5, generator=g, dtype=torch.float64)
    eps = torch.randn(len(t), 5, generator=g, dtype=torch.float64)
    x = proc.add_noise(x0, eps, t)
    a, s = proc.alpha(t), proc.sigma(t)
    for src in PREDICTION_KINDS:
        pred = convert(x0, "x0", src, x, a, s) if src != "eps" else eps
        rx0, reps = to_x0_eps(src, pred, x, a, s)
        assert torch.allclose(rx0, x0, atol=1e-8), src
        assert torch.allclose(reps, eps, atol=1e-8), src
        for dst in PREDICTION_KINDS:
            back = convert(convert(pred, src, dst, x, a, s), dst, src, x, a, s)
            assert torch.allclose(back, pred, atol=1e-8), (src, dst)


@pytest.mark.parametrize("proc", PROCESSES, ids=lambda p: type(p).__name__)
def test_sigma_hat_inverts(proc):
    t = _times(proc)
    back = proc.t_from_sigma_hat(proc.sigma_hat(t))
    assert torch.allclose(back.double(), t, atol=1e-6)


def test_vp_is_variance_preserving_and_monotone():
    for proc in (VPDiscrete(), VPContinuous()):
        t = _times(proc, 50)
        a, s = proc.alpha(t), proc.sigma(t)
        assert torch.allclose(a ** 2 + s ** 2, torch.ones_like(a), atol=1e-10)
        assert (proc.sigma_hat(t).diff() > 0).all()


def test_flow_velocity_is_path_derivative():
    proc = RectifiedFlow()
    x0, eps = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    t = torch.full((4,), 0.3, dtype=torch.float64)
    h = 1e-6
    deriv = (proc.add_noise(x0, eps, t + h) - proc.add_noise(x0, eps, t - h)) / (2 * h)
    assert torch.allclose(deriv, eps - x0, atol=1e-6)


def test_trailing_grid_matches_diffusers_convention():
    proc = VPDiscrete()
    sh = make_grid("trailing", proc, 4)
    t = proc.t_from_sigma_hat(sh[:-1])
    assert t.round().tolist() == [999, 749, 499, 249]
    assert torch.allclose(t, t.round(), atol=1e-6)
    assert sh[-1] == 0


def test_karras_grid_endpoints():
    sh = make_grid("karras", EDM(), 10)
    assert sh[0] == pytest.approx(80.0) and sh[-2] == pytest.approx(0.002) and sh[-1] == 0
    assert (sh.diff() < 0).all()


def test_time_samplers_stay_in_range():
    g = torch.Generator().manual_seed(0)
    for proc in PROCESSES:
        for ts in (TimeSampler("uniform"), TimeSampler("lognormal"), TimeSampler("logit_normal", 0.0, 1.0, 3.0)):
            t = ts.sample(proc, 1000, g)
            assert t.min() >= proc.t_min - 1e-6 and t.max() <= proc.t_max + 1e-6


def test_edm_lognormal_matches_its_distribution():
    t = TimeSampler("lognormal", -1.2, 1.2).sample(EDM(sigma_max=1e9, sigma_min=1e-9), 20000, torch.Generator().manual_seed(0))
    ln = torch.log(t.double())
    assert abs(ln.mean() + 1.2) < 0.05 and abs(ln.std() - 1.2) < 0.05


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        VPDiscrete(schedule="nope")
    with pytest.raises(ValueError):
        TimeSampler("bogus")
    with pytest.raises(ValueError):
        convert(torch.zeros(1, 1), "x0", "score", torch.zeros(1, 1), 1.0, 1.0)
