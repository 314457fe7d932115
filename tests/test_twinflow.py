"""TwinFlow (methods/consistency/twinflow.py): the batch's quarters and their times, the RCGM residual,
jump weights and robust loss against hand computations, the EMA ramp through a resume, the flow-time
view of a denoiser, the enhanced target, and a toy2d model that learns one- and two-step sampling."""
import math

import pytest
import torch

from fewstep.methods.consistency.twinflow import TwinFlow, TwinFlowConfig, batch_parts, ema_ramp, jump_weight, rcgm_residual
from fewstep.methods.losses import charbonnier_rms
from fewstep.samplers.generate import SamplingSpec
from fewstep.samplers.ode import flow_native

from helpers import assert_learns, config, gaussian_fd, toy_denoiser, toy_fd, train_student


def method(num_classes=8, **fields):
    return TwinFlow(toy_denoiser(0), config(TwinFlowConfig, **fields), shape=(2,), num_classes=num_classes)


def test_quarters_and_their_times():
    parts = batch_parts(10)  # round(10 / 4) = 2 each, the last quarter takes the rest (as the official code)
    assert [int(m.sum()) for m in parts.values()] == [2, 2, 2, 4]
    assert torch.stack(list(parts.values())).sum(0).tolist() == [1] * 10  # disjoint, covering
    with pytest.raises(ValueError, match="at least 4"):
        batch_parts(3)
    m = method()
    parts = batch_parts(400)
    tau, tt = m.sample_times(parts, torch.Generator().manual_seed(0))
    assert (tau >= m.tau_min).all() and (tau <= m.tau_top).all() and (tt >= 0).all() and (tt <= tau).all()
    e2e, mul, anyt, adv = (parts[k] for k in ("e2e", "mul", "any", "adv"))
    assert (tau[e2e] == m.tau_top).all() and (tt[e2e] == 0).all()
    assert ((tau - tt)[mul] <= 0.05 * tau[mul] + 1e-7).all()
    assert (tau - tt)[anyt].max() > 0.5 * tau[anyt].max()  # 'any' spans whole intervals, 'mul' never does
    assert (tt[adv] == tau[adv]).all()


def test_rcgm_residual_weights_and_robust_loss_by_hand():
    F, v = torch.tensor([[2.0], [1.0], [0.75]]), torch.tensor([[0.5], [0.5], [0.5]])
    disp = torch.tensor([[0.3], [0.0], [0.0]])
    tau, tt = torch.tensor([0.8, 0.5, 0.4]), torch.tensor([0.2, 0.495, 0.0])
    r = rcgm_residual(F, v, disp, tau, tt, 0.01)
    # row 0: ((0.6 * 2 - 0.3) / 0.01) - 0.5; row 1: interval 0.005 < dt, flow matching F - v
    assert r[:2, 0].tolist() == pytest.approx([89.5, 0.5])
    # a jump that equals the data step plus the rollout has no residual
    consistent = (0.01 * 0.5 + 0.1) / 0.4
    r = rcgm_residual(torch.tensor([[consistent]]), v[:1], torch.tensor([[0.1]]), tau[2:], tt[2:], 0.01)
    assert r.abs().item() < 1e-6
    w = jump_weight(torch.tensor([1.0, 0.5, 0.3]), torch.tensor([0.0, 0.5, 0.3]))
    assert w.tolist() == pytest.approx([1.0, math.tan(0.4 * math.pi) + 1, math.tan(0.4 * math.pi) + 1])
    a = torch.tensor([[3.0, 4.0]], requires_grad=True)
    loss = charbonnier_rms(a, torch.zeros(1, 2), c=1e-3)
    mse = 12.5
    assert loss.item() == pytest.approx(mse / math.sqrt(mse + 1e-6))
    loss.sum().backward()  # Barron alpha = 1 with the weight detached: d mse / sqrt(mse + c^2)
    assert a.grad[0].tolist() == pytest.approx([3.0 / math.sqrt(mse + 1e-6), 4.0 / math.sqrt(mse + 1e-6)])


def test_target_ema_ramp_through_a_resume():
    assert ema_ramp(0.99, 0) == 0.0 and ema_ramp(0.99, 1) == pytest.approx(0.495)
    assert ema_ramp(0.99, 2) == pytest.approx(0.495 + 0.505 * 0.495 * 0.5)
    assert 0.98 < ema_ramp(0.99, 2000) <= 0.99
    m = method()

    def decay_used(m, it):  # target 0, student 1: after the update the target holds 1 - decay
        for p in m.target.net.parameters():
            p.data.zero_()
        for p in m.student.net.parameters():
            p.data.fill_(1.0)
        m.advance_target(it)
        return 1 - next(m.target.net.parameters()).flatten()[0].item()

    assert [decay_used(m, it) for it in range(3)] == pytest.approx([ema_ramp(0.99, k) for k in range(3)])
    resumed = method()
    assert decay_used(resumed, 7) == pytest.approx(ema_ramp(0.99, 7))  # recomputed, then advanced
    assert decay_used(resumed, 8) == pytest.approx(ema_ramp(0.99, 8))


def test_velocity_is_the_flow_view_of_the_denoiser_and_starts_as_the_teacher():
    den = toy_denoiser(0)
    m = TwinFlow(den, TwinFlowConfig(), shape=(2,), num_classes=8)
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g)
    tau = torch.tensor([0.1, 0.3, 0.7, 0.95])
    x_tau = (1 - tau)[:, None] * x0 + tau[:, None] * eps
    x, t = flow_native(den.process, x_tau, tau)
    a, s = den.process.alpha(t).float()[:, None], den.process.sigma(t).float()[:, None]
    assert torch.allclose(x, a * x0 + s * eps, atol=1e-5)  # the same x0 and eps at sigma_hat = tau / (1 - tau)
    labels = torch.tensor([0, 1, 2, -1])
    F, end = m.velocity(m.student, x_tau, tau, torch.zeros(4), labels)
    assert torch.allclose(end, x_tau - tau[:, None] * F, atol=1e-5)  # one jump to the clean end
    x0_t, eps_t = den.raw(x, t, labels)
    assert torch.allclose(F, eps_t - x0_t, atol=1e-5)  # the teacher's velocity: target time starts ignored
    twin, _ = m.velocity(m.student, x_tau, tau, -tau, labels)
    assert torch.allclose(twin, F, atol=1e-6)
    with torch.no_grad():  # once the target-time input has weights, the twin (negative) branch is its own
        m.student.net.embed.tt_mlp[-1].weight.normal_(generator=g)
    twin, _ = m.velocity(m.student, x_tau, tau, -tau, labels)
    real, _ = m.velocity(m.student, x_tau, tau, tau, labels)
    assert not torch.allclose(twin, real, atol=1e-3)


def test_enhanced_target_adds_the_emas_guidance_except_on_the_twin_rows():
    m = method()
    g = torch.Generator().manual_seed(2)
    v, x_tau = torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g)
    tau, labels = torch.tensor([0.2, 0.4, 0.6, 0.8]), torch.tensor([1, 2, 3, 4])
    rows = torch.tensor([True, True, False, True])
    out = m.enhanced(v, x_tau, tau, labels, rows)
    v_c, _ = m.velocity(m.target, x_tau, tau, tau, labels)
    v_u, _ = m.velocity(m.target, x_tau, tau, tau, torch.full_like(labels, -1))
    want = v + 0.5 * (v_c - v_u)
    assert torch.allclose(out[rows], want[rows], atol=1e-6) and torch.equal(out[2], v[2])
    assert (v_c - v_u).abs().max() > 1e-3  # the check can fail: guidance changes the target
    assert torch.equal(method(num_classes=0).enhanced(v, x_tau, tau, None, rows), v)  # unconditional: plain v


def test_config_is_validated_and_sampling_is_ddim_on_the_flow_grid():
    m = method(nfe=2, eval_nfes=(1, 2, 4))
    assert [(o.sampler, o.steps, o.grid) for o in m.sampling_options()] == [("euler", 2, "flow"), ("euler", 1, "flow"),
                                                                            ("euler", 4, "flow")]
    assert set(m.networks()) == {"student", "target"}
    for bad, match in [(dict(init="noise"), "init"), (dict(order=0), "order"), (dict(rcgm_dt=0.6), "rcgm_dt"),
                       (dict(enhance=-1.0), "enhance")]:
        with pytest.raises(ValueError, match=match):
            TwinFlowConfig(**bad)

    class Other(torch.nn.Module):  # e.g. a diffusers UNet: no target-time input can be added to it
        def config(self):
            return {"arch": "diffusers_unet"}

    with pytest.raises(ValueError, match="twinflow works on"):
        TwinFlow(toy_denoiser(0).like(Other()), TwinFlowConfig())


@pytest.fixture(scope="module")
def blob_fd():
    return gaussian_fd()


@pytest.mark.slow
def test_one_model_learns_one_and_two_step_sampling_on_toy2d(toy_teacher, blob_fd, tmp_path):
    """From the unconditional toy teacher (one Euler step gives the global mean): bar 0.5 x the blob's FD
    at 1 step (trained: ~3.4-3.5); the teacher at 1 step, the untrained model and the blob fail it. The same
    model at 2 steps (~5.5-6.2 here, where its intermediate states are the least trained) stays within 0.75 x
    the blob's FD."""
    m = TwinFlow(toy_teacher, config(TwinFlowConfig, lr=1e-3), shape=(2,), num_classes=0)
    one, two = SamplingSpec("euler", 1, "flow"), SamplingSpec("euler", 2, "flow")
    teacher_one, untrained = toy_fd(toy_teacher, one), toy_fd(m.generator(), one)
    student = train_student(m, tmp_path, 600, ema_decay=0.95)
    fd1, fd2 = toy_fd(student, one), toy_fd(student, two)
    assert_learns(fd1, 0.5 * blob_fd, teacher_one_step=teacher_one, untrained=untrained, gaussian=blob_fd)
    assert fd2 < 0.75 * blob_fd, f"2-step FD {fd2:.3f} (1-step {fd1:.3f})"
