"""SiD: its generator loss by hand, where its gradients go, which networks each step moves, that it
never reads an image, and that it learns on toy2d."""
import pytest
import torch

from fewstep.methods.distribution_matching.sid import SiD, SiDConfig, sid_generator_loss
from fewstep.methods.distribution_matching.sida import SiDA, SiDAConfig
from fewstep.methods.losses import edm_weight
from fewstep.train.guards import StepContext

from helpers import assert_learns, config, gaussian_fd, state, toy_denoiser, train_student
from helpers import toy_fd as _toy_fd

ADAM0 = {"betas": (0.0, 0.999), "weight_decay": 0.0}


def test_sid_generator_loss_by_hand():
    x = torch.tensor([[1.0, -1.0]])
    f_r = torch.tensor([[0.5, 0.0]])
    f_f = torch.tensor([[0.0, 1.0]])
    w = (abs(1.0 - 0.5) + abs(-1.0 - 0.0)) / 2  # mean|x_g - f_real| = 0.75
    # per element: (f_r - f_f) * ((f_r - x) - 1.2 (f_r - f_f)) / w
    e1 = 0.5 * ((0.5 - 1.0) - 1.2 * 0.5) / w
    e2 = -1.0 * ((0.0 + 1.0) - 1.2 * -1.0) / w
    got = sid_generator_loss(x, f_r, f_f, 1.2)
    assert torch.allclose(got, torch.tensor([(e1 + e2) / 2]))


def test_sid_gradient_reaches_x_g_through_both_denoisers_inputs():
    m = SiD(toy_denoiser(0), config(SiDConfig), shape=(2,), num_classes=8)
    with torch.no_grad():
        for p in m.fake.net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    x = torch.randn(6, 2, requires_grad=True)
    cond = torch.arange(6) % 8
    m.generator_loss(x, cond, torch.Generator().manual_seed(2)).sum().backward()
    g_full = x.grad.clone()
    # the same loss with both denoisers' outputs held fixed: only the explicit x_g term remains
    rng = torch.Generator().manual_seed(2)
    t = m.sample_levels(6, rng, 0.0, m.cfg.gen_level_max)
    x_t = m.process.add_noise(x.detach(), torch.randn(x.shape, generator=rng), t)
    with torch.no_grad():
        f_r, f_f = m.teacher(x_t, t, cond), m.fake(x_t, t, cond)
    x2 = x.detach().clone().requires_grad_(True)
    sid_generator_loss(x2, f_r, f_f, 1.2).sum().backward()
    assert not torch.allclose(g_full, x2.grad, atol=1e-4)  # the denoisers' input paths contribute
    assert float(t.max()) <= 24.5  # levels from the lower 80% of the Karras grid (sigma <= ~24.4)


def test_sid_step_moves_generator_and_fake_and_never_reads_images():
    def run(x):
        torch.manual_seed(0)
        m = SiD(toy_denoiser(0), config(SiDConfig, lr=1e-2), shape=(2,), num_classes=8)
        ctx = StepContext(m.optimizers(), torch.Generator().manual_seed(0), 0.0, 0, False)
        before = {k: state(v) for k, v in m.networks().items()}
        ctx.begin(0)
        m.step({"x": x, "labels": torch.arange(16) % 8}, 0, ctx)
        after = {k: state(v) for k, v in m.networks().items()}
        moved = {k for k in before if any(not torch.equal(before[k][p], after[k][p]) for p in before[k])}
        return moved, after, state(m.teacher.net)

    moved, a, teacher = run(torch.randn(16, 2))
    assert moved == {"student", "fake"}
    assert all(torch.equal(teacher[k], v) for k, v in toy_denoiser(0).net.state_dict().items())
    _, b, _ = run(torch.full((16, 2), float("nan")))  # image-free: what the batch's images hold changes nothing
    assert all(torch.equal(a[n][k], b[n][k]) for n in a for k in a[n])


def test_sid_with_a_lora_fake_score_trains_only_the_adapters_and_keeps_the_teacher():
    """fake_lora.rank > 0: the fake score is adapters on the teacher's own module (no second copy); a step
    moves the generator and the adapters, and the teacher (adapters off) computes what it did."""
    torch.manual_seed(0)
    ref = toy_denoiser(0)
    m = SiD(toy_denoiser(0), config(SiDConfig, lr=1e-2, fake_lora={"rank": 4, "alpha": 4.0}), shape=(2,), num_classes=8)
    assert m.fake.net is m.teacher.net
    adapters = {id(p) for p in m.critic_parameters()}
    assert adapters and adapters == {id(p) for n, p in m.fake.net.named_parameters() if "lora_" in n}
    ctx = StepContext(m.optimizers(), torch.Generator().manual_seed(0), 0.0, 0, False)
    student_before = state(m.student.net)
    for it in range(3):
        ctx.begin(it)
        m.step({"x": torch.randn(16, 2), "labels": torch.arange(16) % 8}, it, ctx)
    assert any(not torch.equal(student_before[k], v) for k, v in state(m.student.net).items())
    x, t, y = torch.randn(8, 2), torch.full((8,), 0.7), torch.arange(8)
    with torch.no_grad():
        assert torch.equal(m.teacher(x, t, y), ref(x, t, y))
        assert not torch.allclose(m.fake(x, t, y), ref(x, t, y))


def test_sid_config_and_generator_level():
    m = SiD(toy_denoiser(0), config(SiDConfig), shape=(2,), num_classes=8)
    assert [round(float(s), 6) for s in m.student_sigmas] == [2.5, 0.0]  # one step from 2.5 z
    with pytest.raises(ValueError, match="one-step"):
        config(SiDConfig, nfe=2)


@pytest.mark.slow
def test_sid_learns_one_step_on_toy2d(toy_teacher, tmp_path):
    """Bar: 0.1 x the teacher's single step from the top (~64) and 3 x its 40-step Heun (~6.4): the DMD2 toy
    bar. The untrained generator (the teacher's one step from sigma_init 2.5) and the data-matched Gaussian
    (~12.3) fail it."""

    _assert_learns_one_step(SiD(toy_teacher, config(SiDConfig, lr=1e-3, optim=ADAM0, critic_optim=ADAM0),
                                shape=(2,), num_classes=0), toy_teacher, tmp_path)


def _assert_learns_one_step(m, toy_teacher, tmp_path):
    """The DMD2 toy bar after 400 it, with the untrained generator and the data-matched Gaussian failing it."""
    from fewstep.samplers import SamplingSpec

    untrained = _toy_fd(m.generator(), m.default_sampling())
    student = _toy_fd(train_student(m, tmp_path, 400), m.default_sampling())
    bar = min(0.1 * _toy_fd(toy_teacher, SamplingSpec("euler", 1, "karras")),
              3 * _toy_fd(toy_teacher, SamplingSpec("heun", 40, "karras")))
    assert_learns(student, bar, untrained=untrained, gaussian=gaussian_fd())


def test_sida_reads_real_images_only_in_the_critic_and_each_step_moves_its_own_networks():
    def run(x, disc_weight=1.0):
        torch.manual_seed(0)
        m = SiDA(toy_denoiser(0), config(SiDAConfig, lr=1e-2, gan_disc_weight=disc_weight), shape=(2,), num_classes=8)
        ctx = StepContext(m.optimizers(), torch.Generator().manual_seed(0), 0.0, 0, False)
        before = {k: state(v) for k, v in m.networks().items()}
        ctx.begin(0)
        logs = m.step({"x": x, "labels": torch.arange(16) % 8}, 0, ctx)
        after = {k: state(v) for k, v in m.networks().items()}
        moved = {k for k in before if any(not torch.equal(before[k][p], after[k][p]) for p in before[k])}
        return moved, after, logs

    x = torch.randn(16, 2)
    moved, a, logs = run(x)
    assert moved == {"student", "fake", "disc"} and {"loss_disc", "loss_gen_gan", "loss_sid"} <= set(logs)
    _, b, _ = run(x + 1.0)  # other real images: another discriminator, another critic step
    assert not torch.equal(a["disc"]["body.0.weight"], b["disc"]["body.0.weight"])
    _, c, _ = run(x + 1.0, disc_weight=0.0)  # without the discriminator term the real images are unused
    _, d, _ = run(x, disc_weight=0.0)
    assert all(torch.equal(c["fake"][k], d["fake"][k]) for k in c["fake"])


def test_sida_generator_gan_term_by_hand_and_its_gradient_reaches_only_x_g():
    torch.manual_seed(0)
    m = SiDA(toy_denoiser(0), config(SiDAConfig), shape=(2,), num_classes=8)
    assert m.cfg.gan_gen_weight == 1e-4
    x = torch.randn(6, 2, requires_grad=True)
    cond = torch.arange(6) % 8
    logs = {}
    for net in m.critic_networks():
        net.requires_grad_(False)
    loss = m.generator_loss(x, cond, torch.Generator().manual_seed(2), logs)
    # by hand from the same draws: SiD + 1e-4 softplus(-clamp(D(x_t))) / mean|x_g - f_phi|
    t, x_t, f_r, f_f = m.generator_terms(x.detach(), cond, torch.Generator().manual_seed(2))
    w = (x.detach() - f_r).abs().mean(1)
    gan = torch.nn.functional.softplus(-m.logits(x_t, t, cond).clamp(-10, 10)) / w
    expected = sid_generator_loss(x.detach(), f_r, f_f, 1.2) + 1e-4 * gan
    assert torch.allclose(loss.detach(), expected, atol=1e-5)
    loss.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in list(m.fake.net.parameters()) + list(m.head.parameters()))
    assert torch.allclose(edm_weight(torch.tensor([0.5]), 0.5), torch.tensor([8.0]))  # (0.25 + 0.25) / 0.0625


def test_sida_is_not_image_free_and_sid_is():
    assert SiDA.uses_images and not SiD.uses_images


@pytest.mark.slow
def test_sida_learns_one_step_on_toy2d(toy_teacher, tmp_path):
    """The SiD bar (0.1 x the teacher's single step, 3 x its 40-step Heun), with the same controls. The
    discriminator weight 1e-3 gives the D term about its weight on CIFAR-10 (1/numel there, 2 elements here):
    at the per-element default it swamps the shared fake network on 2-D points (FD ~9 after 400 it)."""

    _assert_learns_one_step(SiDA(toy_teacher, config(SiDAConfig, lr=1e-3, optim=ADAM0, critic_optim=ADAM0,
                                                     gan_disc_weight=1e-3), shape=(2,), num_classes=0),
                            toy_teacher, tmp_path)


def test_sid_lsg_guidance_scales_reach_the_fake_score_in_both_losses():
    """kappa1 trains the fake score through its guided output; kappa2 guides it in the generator loss."""
    from fewstep.methods.losses import denoising_loss
    from fewstep.noise.guidance import both_branches

    torch.manual_seed(0)
    m = SiD(toy_denoiser(0), config(SiDConfig, fake_train_cfg=3.0, fake_cfg=2.0), shape=(2,), num_classes=8)
    with torch.no_grad():  # a fake score whose conditional and unconditional branches differ
        for p in m.fake.net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    x, cond = torch.randn(6, 2), torch.arange(6) % 8
    _, x_t, _, f_fake = m.generator_terms(x, cond, torch.Generator().manual_seed(0))
    t = m.sample_levels(6, torch.Generator().manual_seed(0), 0.0, m.cfg.gen_level_max)
    (c, u), _ = both_branches(m.fake, x_t, t, cond)
    assert torch.allclose(f_fake, u + 2.0 * (c - u), atol=1e-5)
    plain = SiD(toy_denoiser(0), config(SiDConfig), shape=(2,), num_classes=8)
    plain.fake = m.fake
    rng = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    guided_loss, plain_loss = m.fake_score_loss(x, cond, rng()), plain.fake_score_loss(x, cond, rng())
    assert not torch.allclose(guided_loss, plain_loss)
    r = rng()
    tt = m.cfg.fake_times.sample(m.process, 6, r)
    n = torch.randn(x.shape, generator=r)
    from fewstep.noise.guidance import Guided
    assert torch.allclose(guided_loss, denoising_loss(Guided(m.fake, 3.0), x, tt, n, cond), atol=1e-6)
    with pytest.raises(ValueError, match="fake_train_cfg"):
        config(SiDConfig, fake_cfg=-1.0)
