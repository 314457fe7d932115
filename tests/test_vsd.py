"""VSD (SwiftBrush) and SNOOPI: the VSD gradient by hand, the adapter switch that makes one module both
teacher and fake score, where each loss's gradients go, that no image is read, and that they learn."""
import pytest
import torch

from fewstep.methods.base import frozen_copy
from fewstep.methods.distribution_matching.snoopi import SNOOPI, SNOOPIConfig
from fewstep.methods.distribution_matching.vsd import VSD, VSDConfig, vsd_gradient
from fewstep.noise import VPContinuous
from fewstep.train.guards import StepContext

from helpers import assert_learns, config, gaussian_fd, state, toy_denoiser, train_student
from helpers import toy_fd as _toy_fd

LORA = {"rank": 4, "alpha": 4.0}
ADAM0 = {"betas": (0.0, 0.999), "weight_decay": 0.0}


def test_vsd_gradient_is_swiftbrush_eps_form_on_a_vp_process():
    """g = s_t^2 (eps_teacher - eps_lora) (SwiftBrush), computed from x0 predictions at the same x_t."""
    proc = VPContinuous()
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([0.1, 0.5, 0.9])
    a, s = proc.alpha(t).view(-1, 1), proc.sigma(t).view(-1, 1)
    x_t = torch.randn(3, 4, generator=g)
    x0_teacher, x0_lora = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    eps = lambda x0: (x_t - a * x0) / s  # noqa: E731
    expected = s ** 2 * (eps(x0_teacher) - eps(x0_lora))
    got = vsd_gradient(x0_lora, x0_teacher, (s / a).view(-1))
    assert torch.allclose(got, expected, atol=1e-5)


def _vsd(cls=VSD, cfg_cls=VSDConfig, lr=1e-2, **fields):
    return cls(toy_denoiser(0), config(cfg_cls, lr=lr, fake_lora=LORA, **fields), shape=(2,), num_classes=8)


def _step(m, x, it=0, seed=0):
    ctx = StepContext(m.optimizers(), torch.Generator().manual_seed(seed), 0.0, it, False)
    ctx.begin(it)
    return m.step({"x": x, "labels": torch.arange(x.shape[0]) % 8}, it, ctx)


def test_one_module_is_teacher_with_adapters_off_and_fake_score_with_them_on():
    torch.manual_seed(0)
    m = _vsd()
    ref = toy_denoiser(0)
    x, t, y = torch.randn(8, 2), torch.full((8,), 0.7), torch.arange(8)
    assert m.fake.net is m.teacher.net  # no second copy of the teacher's weights
    for it in range(3):
        _step(m, torch.randn(16, 2), it, seed=it)
    with torch.no_grad():
        assert torch.equal(m.teacher(x, t, y), ref(x, t, y))  # the teacher is unchanged by training the LoRA
        assert not torch.allclose(m.fake(x, t, y), ref(x, t, y))  # the adapters did train (the switch works)
    trained = {k for k, p in m.fake.net.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in k for k in trained)
    assert {id(p) for p in m.critic_parameters()} == {id(p) for p in m.fake.net.parameters() if p.requires_grad}


def test_each_loss_reaches_only_its_own_network():
    torch.manual_seed(0)
    m = _vsd()
    with torch.no_grad():  # adapters away from zero, so the fake score differs from the teacher
        for p in m.critic_parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    y = torch.arange(6) % 8
    x_hat = m.student_sample(y, torch.Generator().manual_seed(1), 6)
    l_vsd, grad = m.vsd_student_loss(x_hat, y, torch.Generator().manual_seed(2), 1.5)
    l_vsd.sum().backward()
    assert all(p.grad is None for p in m.fake.net.parameters())  # the student's loss never trains the LoRA
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.student.net.parameters())
    m.student.net.zero_grad(set_to_none=True)
    m.fake_score_loss(x_hat, y, torch.Generator().manual_seed(3)).sum().backward()
    assert all(p.grad is None for p in m.student.net.parameters())  # the LoRA's loss never moves the student
    assert any(p.grad is not None for p in m.critic_parameters())


def test_vsd_student_loss_gradient_is_g_over_numel():
    torch.manual_seed(0)
    m = _vsd()
    with torch.no_grad():
        for p in m.critic_parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    y = torch.arange(4) % 8
    x_hat = torch.randn(4, 2, requires_grad=True)
    loss, grad = m.vsd_student_loss(x_hat, y, torch.Generator().manual_seed(0), 2.0)
    loss.sum().backward()
    assert grad.abs().sum() > 0
    assert torch.allclose(x_hat.grad, grad / 2, atol=1e-6)  # 0.5 ||x - sg(x - g)||^2, mean over 2 elements


def test_vsd_step_is_image_free_and_moves_student_and_adapters():
    def run(x):
        torch.manual_seed(0)
        m = _vsd()
        before = {k: state(v) for k, v in m.networks().items()}
        _step(m, x)
        after = {k: state(v) for k, v in m.networks().items()}
        moved = {k for k in before if any(not torch.equal(before[k][p], after[k][p]) for p in before[k])}
        return moved, after

    moved, a = run(torch.randn(16, 2))
    assert moved == {"student", "fake"}
    _, b = run(torch.full((16, 2), float("nan")))  # what the batch's images hold changes nothing
    assert all(torch.equal(a[n][k], b[n][k]) for n in a for k in a[n])


def test_guidance_scale_fixed_for_vsd_and_drawn_per_iteration_for_snoopi():
    torch.manual_seed(0)
    vsd = _vsd(guidance_range=(2.0, 2.0))
    scales = {_step(vsd, torch.randn(8, 2), it, seed=it)["guidance"] for it in range(3)}
    assert scales == {2.0}
    torch.manual_seed(0)
    sn = _vsd(SNOOPI, SNOOPIConfig, guidance_range=(1.0, 3.0))
    scales = [_step(sn, torch.randn(8, 2), it, seed=it)["guidance"] for it in range(6)]
    assert len(set(scales)) == 6 and all(1.0 <= s <= 3.0 for s in scales)


def test_config_errors_and_a_teacher_that_already_carries_adapters():
    with pytest.raises(ValueError, match="guidance_range"):
        config(VSDConfig, guidance_range=(3.0, 1.0))
    with pytest.raises(ValueError, match="rank"):
        config(VSDConfig, fake_lora={"rank": 0})
    with pytest.raises(ValueError, match="a fixed scale is vsd"):
        config(SNOOPIConfig, guidance_range=(2.0, 2.0))
    with pytest.raises(ValueError, match="real_cfg"):
        config(VSDConfig, real_cfg=2.0)
    teacher = toy_denoiser(0)
    VSD(teacher, config(VSDConfig, fake_lora=LORA), shape=(2,), num_classes=8)
    with pytest.raises(ValueError, match="already carries adapters"):
        VSD(teacher, config(VSDConfig, fake_lora=LORA), shape=(2,), num_classes=8)


@pytest.mark.slow
def test_vsd_learns_one_step_on_toy2d(toy_teacher, tmp_path):
    """Bar: 0.1 x the unconditional teacher's one step from the top (the global mean, ~64) and 3 x its
    40-step Heun (~8.3): the DMD2 toy bar. The untrained student (= that one step) and the data-matched
    Gaussian (~12.3) fail it. The LoRA learns 10x faster than the student, as SwiftBrush's LRs (1e-3 vs
    1e-6): at equal LRs the adapters lag the student and VSD stalls (FD ~57 after 400 it)."""
    from fewstep.samplers import SamplingSpec

    m = VSD(frozen_copy(toy_teacher), config(VSDConfig, optim=dict(ADAM0, lr=3e-4), critic_optim=dict(ADAM0, lr=3e-3),
                                             guidance_range=(1.0, 1.0), fake_lora={"rank": 16, "alpha": 16.0}),
            shape=(2,), num_classes=0)  # vsd adds its adapters to the teacher it is given: a copy
    untrained = _toy_fd(m.generator(), m.default_sampling())
    student = _toy_fd(train_student(m, tmp_path, 400), m.default_sampling())
    bar = min(0.1 * _toy_fd(toy_teacher, SamplingSpec("euler", 1, "karras")),
              3 * _toy_fd(toy_teacher, SamplingSpec("heun", 40, "karras")))
    assert_learns(student, bar, untrained=untrained, gaussian=gaussian_fd())


@pytest.mark.slow
def test_snoopi_learns_one_step_on_class_conditional_toy2d(toy_teacher_cond, tmp_path):
    """PG-SB with the scale drawn from U[0.75, 1.25] per iteration, on the class-conditional teacher (its one
    step is already each class's mean, FD ~1.6; 40 Heun steps ~0.19). Bar: half the untrained student's FD;
    the untrained student and the data-matched Gaussian fail it (trained: ~0.4 after 400 it)."""
    m = SNOOPI(frozen_copy(toy_teacher_cond), config(SNOOPIConfig, optim=dict(ADAM0, lr=3e-4),
                                                     critic_optim=dict(ADAM0, lr=3e-3), guidance_range=(0.75, 1.25),
                                                     fake_lora={"rank": 16, "alpha": 16.0}),
               shape=(2,), num_classes=8)
    fd = lambda den: _toy_fd(den, m.default_sampling(), labels=True)  # noqa: E731
    untrained = fd(m.generator())
    student = fd(train_student(m, tmp_path, 400))
    assert_learns(student, 0.5 * untrained, untrained=untrained, gaussian=gaussian_fd())
