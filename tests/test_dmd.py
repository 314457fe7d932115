"""DMD / DMD2: the gradient, the update schedule, where GAN gradients go, and that it learns."""
import pytest
import torch

from fewstep.methods.distribution_matching.base import DMDConfig, dm_gradient, dm_loss
from fewstep.methods.distribution_matching.dmd import DMD
from fewstep.methods.distribution_matching.dmd2 import DMD2, DMD2Config
from fewstep.samplers.ode import coeffs
from fewstep.train.guards import StepContext

from helpers import TOY_ARCH, assert_learns, config, gaussian_fd, state, toy_denoiser, train_student
from helpers import toy_fd as _toy_fd

ADAM0 = {"betas": (0.0, 0.999), "weight_decay": 0.0}  # the small-data DM optimiser (dmd.cpu_optim)


def _ctx(method, seed=0):
    return StepContext(method.optimizers(), torch.Generator().manual_seed(seed), 0.0, 0, False)


def _batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(n, 2, generator=g) * 0.5, "labels": torch.randint(0, 8, (n,), generator=g)}


def _perturb(den, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in den.net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def test_dm_gradient_is_normalised_fake_minus_real():
    """d L_DM / d x_hat equals (mu_fake - mu_real) / mean|x_hat - mu_real|, per sample."""
    teacher = toy_denoiser(0)
    m = DMD2(teacher, config(DMD2Config, lr=1e-3), shape=(2,), num_classes=8)
    _perturb(m.fake, 1)  # make fake != real
    x_hat = torch.randn(6, 2, requires_grad=True)
    cond = torch.arange(6) % 8
    rng = torch.Generator().manual_seed(5)
    loss, grad = m.dm_student_loss(x_hat, cond, rng)
    (g_auto,) = torch.autograd.grad(loss.sum(), x_hat)
    # redo by hand with the same random draws
    rng = torch.Generator().manual_seed(5)
    t = m.sample_levels(6, rng, *m.cfg.dm_index_range)
    x_t = m.process.add_noise(x_hat.detach(), torch.randn(x_hat.shape, generator=rng), t)
    with torch.no_grad():
        mu_f, mu_r = m.fake(x_t, t, cond), teacher(x_t, t, cond)
    norm = (x_hat.detach() - mu_r).abs().mean(dim=1, keepdim=True)
    expect = (mu_f - mu_r) / norm
    assert torch.allclose(grad, expect, atol=1e-5)
    assert torch.allclose(g_auto, expect / x_hat.shape[1], atol=1e-5)  # loss is a mean over the 2 elements
    assert grad.abs().sum() > 0


def test_batch_normaliser_option():
    x, f, r = torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 3)
    g = dm_gradient(x, f, r, "batch")
    assert torch.allclose(g, (f - r) / (x - r).abs().mean())
    assert torch.allclose(dm_loss(x.requires_grad_(), g), 0.5 * (g ** 2).mean(1))


class CountingOpt:
    def __init__(self, opt, log, name):
        self.opt, self.log, self.name = opt, log, name
        self.param_groups = opt.param_groups

    def step(self):
        self.log.append(self.name)
        self.opt.step()

    def zero_grad(self, set_to_none=True):
        self.opt.zero_grad(set_to_none=set_to_none)


@pytest.mark.parametrize("schedule,expect", [
    ("official", ["student", "critic", "critic", "critic", "critic", "critic", "student", "critic"]),
    ("exclusive", ["student", "critic", "critic", "critic", "critic", "student"]),
])
def test_update_schedule(schedule, expect):
    m = DMD2(toy_denoiser(0), config(DMD2Config, gen_every=5, schedule=schedule), shape=(2,), num_classes=8)
    log = []
    ctx = StepContext({k: CountingOpt(o, log, k) for k, o in m.optimizers().items()}, torch.Generator().manual_seed(0),
                      0.0, 0, False)
    for it in range(6):
        ctx.begin(it)
        m.step(_batch(seed=it), it, ctx)
    assert log == expect


def test_dmd_v1_updates_one_to_one(tmp_path):
    m = DMD(toy_denoiser(0), config(DMDConfig, regression_pairs=32, regression_steps=4, regression_batch=8), shape=(2,),
            num_classes=8)
    m.prepare(tmp_path)
    assert m.pairs["x0"].shape == (32, 2) and len(list(tmp_path.glob("pairs-*.safetensors"))) == 1
    first = {k: v.clone() for k, v in m.pairs.items()}
    m.prepare(tmp_path)  # cached: the same file is read back, not regenerated
    assert len(list(tmp_path.glob("pairs-*.safetensors"))) == 1
    assert all(torch.equal(first[k], m.pairs[k]) for k in first)
    log = []
    ctx = StepContext({k: CountingOpt(o, log, k) for k, o in m.optimizers().items()}, torch.Generator().manual_seed(0),
                      0.0, 0, False)
    for it in range(3):
        ctx.begin(it)
        out = m.step(_batch(seed=it), it, ctx)
    assert log == ["student", "critic"] * 3 and "loss_reg" in out


def test_gan_head_gets_gradients_only_from_its_terms():
    m = DMD2(toy_denoiser(0), config(DMD2Config, lr=1e-2), shape=(2,), num_classes=8)
    ctx = _ctx(m)
    b = _batch()
    head0, fake0, gen0 = state(m.head), state(m.fake.net), state(m.student.net)
    # generator update: G moves; the fake score and the head neither move nor keep gradients
    m.student_update(b["labels"], 16, ctx, {})
    assert all(torch.equal(head0[k], v) for k, v in state(m.head).items())
    assert all(torch.equal(fake0[k], v) for k, v in state(m.fake.net).items())
    assert any(not torch.equal(gen0[k], v) for k, v in state(m.student.net).items())
    assert all(p.grad is None for p in list(m.head.parameters()) + list(m.fake.net.parameters()))
    # the fake-score loss alone does not reach the head; the discriminator loss does
    x_fake = torch.randn(16, 2)
    m.fake_score_loss(x_fake, b["labels"], ctx.rng).mean().backward()
    assert all(p.grad is None for p in m.head.parameters())
    d = torch.nn.functional.softplus(m.gan_logits(x_fake, b["labels"], ctx.rng)).mean()
    d.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.head.parameters())
    # the generator's GAN term reaches x_hat through the frozen fake score
    x_hat = torch.randn(16, 2, requires_grad=True)
    m.fake.requires_grad_(False)
    torch.nn.functional.softplus(-m.gan_logits(x_hat, b["labels"], ctx.rng)).mean().backward()
    assert x_hat.grad.abs().sum() > 0


def test_backward_simulation_uses_student_levels():
    m = DMD2(toy_denoiser(0), config(DMD2Config, nfe=4), shape=(2,), num_classes=8)
    sig = m.student_sigmas
    assert len(sig) == 5 and sig[-1] == 0 and sig[-2] == pytest.approx(0.5) and (sig[:-1].diff() < 0).all()
    spec = m.default_sampling()
    assert spec.sampler == "multistep" and len(spec.sigmas) == 5
    out = m.student_sample(torch.arange(4), torch.Generator().manual_seed(0), 4, stage=3)
    out.sum().backward()  # gradient reaches G through the last call only
    assert any(p.grad is not None for p in m.student.net.parameters())


def test_per_sample_stages_roll_each_sample_out_to_its_own_level():
    """stage_draw="sample": sample i takes s_i student steps without gradient, then the call at sig[s_i];
    every stage appears in one batch (the critic fits the mixture)."""
    m = DMD2(toy_denoiser(0), config(DMD2Config, nfe=4, stage_draw="sample"), shape=(2,), num_classes=8)
    sig, calls, student = m.student_sigmas, [], m.student

    class Recorder:  # x0 = 0 everywhere: a moved sample's input is pure noise at its own level
        process, net = student.process, student.net

        def __call__(self, x, t, cond):
            calls.append((x.clone(), t.clone(), torch.is_grad_enabled(), None if cond is None else cond.clone()))
            return 0 * x + 0 * sum(p.sum() for p in student.net.parameters())

        def raw(self, x, t, cond):  # what the samplers call
            x0 = self(x, t, cond)
            return x0, x0

    m.student = Recorder()
    labels = torch.arange(400) % 8
    m.student_sample(labels, torch.Generator().manual_seed(0), 400)
    *rollout, (x_in, t_in, grad_on, cond_in) = calls
    assert grad_on and not any(g for _, _, g, _ in rollout) and torch.equal(cond_in, labels)
    level_of_t = {round(float(m.process.t_from_sigma_hat(torch.tensor(float(v), dtype=torch.float64))), 6): i
                  for i, v in enumerate(sig[:-1])}
    stages = torch.tensor([level_of_t[round(float(v), 6)] for v in t_in])
    assert set(stages.tolist()) == {0, 1, 2, 3} and len(rollout) == int(stages.max())
    for j, (x, t, _, cond) in enumerate(rollout):  # step j evaluates exactly the samples with s_i > j, at sig[j]
        assert len(x) == int((stages > j).sum()) and torch.equal(cond, labels[stages > j])
        assert torch.allclose(t, t.new_full(t.shape, float(list(level_of_t)[j])))
    for s in range(4):  # the last call's input: noise at the sample's own level
        _, _, sd = coeffs(m.process, float(sig[s]))
        assert x_in[stages == s].std().item() == pytest.approx(sd, rel=0.2)
    assert m.input_level is None and m.output_level is None


def test_curriculum_unlocks_one_backward_simulation_stage_per_share_of_the_run():
    """stage_draw="curriculum": in the j-th of nfe equal shares of the run a batch's stage is one of 0..j, so
    stage 0 trains alone first and the last stage joins for the last share; the draw comes from step's iteration."""
    m = DMD2(toy_denoiser(0), config(DMD2Config, nfe=4, stage_draw="curriculum"), shape=(2,), num_classes=8)
    m.plan(8)
    sig = [float(v) for v in m.student_sigmas]
    shared = torch.Generator().manual_seed(1)
    for it in range(8):
        m.it = it
        drawn = set()
        with torch.no_grad():
            for _ in range(40):
                _, level = m.student_sample_at(torch.arange(2), torch.Generator().manual_seed(0), 2, shared_rng=shared)
                drawn.add(sig.index(level))
        assert drawn == set(range(it * 4 // 8 + 1)), (it, drawn)
    m.it = 0
    m.step(_batch(), 7, _ctx(m))
    assert m.it == 7  # step records the iteration the draw reads
    plain = DMD2(toy_denoiser(0), config(DMD2Config, nfe=4), shape=(2,), num_classes=8)
    plain.plan(8)
    assert plain.stages_unlocked(4) == 4  # "batch" draws from every stage from the start


def test_level_following_members_refuse_per_sample_stages():
    from fewstep.methods.distribution_matching.decoupled_dmd import DecoupledDMDConfig
    from fewstep.methods.distribution_matching.flash_dmd import FlashDMDConfig

    for cls in (FlashDMDConfig, DecoupledDMDConfig):
        with pytest.raises(ValueError, match="stage_draw"):
            cls(nfe=4, stage_draw="sample")
    with pytest.raises(ValueError, match="stage_draw"):
        DMD2Config(stage_draw="per_batch")


def test_critic_per_stage_trains_only_the_drawn_stages_critic():
    """critic_per_stage: one fake score + GAN head per backward-simulation stage, all saved and frozen during
    student updates; an iteration draws one stage, samples from it, and moves that stage's critic only."""
    m = DMD2(toy_denoiser(0), config(DMD2Config, nfe=3, critic_per_stage=True, lr=1e-2, gen_every=2), shape=(2,),
             num_classes=8)
    nets = m.networks()
    assert set(nets) == {"student", "fake", "disc", "fake1", "disc1", "fake2", "disc2"}
    assert len({id(v) for v in nets.values()}) == len(nets)  # separate networks, not one shared
    n_critic = sum(p.numel() for k, v in nets.items() if k != "student" for p in v.parameters())
    assert sum(p.numel() for p in m.critic_parameters()) == n_critic  # the critic optimiser holds every stage
    assert len(m.critic_networks()) == 6
    ctx = StepContext(m.optimizers(), torch.Generator().manual_seed(0), shared_rng=torch.Generator().manual_seed(1))
    seen = set()
    for it in range(8):
        before = {k: state(v) for k, v in nets.items()}
        ctx.begin(it)
        logs = m.step(_batch(seed=it), it, ctx)
        s = int(logs["stage"])
        seen.add(s)
        moved = {k for k in nets if any(not torch.equal(before[k][p], v) for p, v in state(nets[k]).items())}
        names = ("fake", "disc") if s == 0 else (f"fake{s}", f"disc{s}")
        assert moved == set(names) | ({"student"} if it % 2 == 0 else set()), (it, s, moved)
        assert m.fake.net is nets[names[0]] and m.head is nets[names[1]]
        assert m.input_level == float(m.student_sigmas[s])  # the student sampled from the drawn stage
    assert len(seen) > 1
    for bad in ({"nfe": 1}, {"nfe": 4, "stage_draw": "sample"}):
        with pytest.raises(ValueError, match="critic_per_stage"):
            DMD2Config(critic_per_stage=True, **bad)
    from fewstep.methods.distribution_matching.phased_dmd import PhasedDMDConfig
    from fewstep.methods.distribution_matching.sc_dmd import SCDMDConfig

    for cls in (PhasedDMDConfig, SCDMDConfig):
        with pytest.raises(ValueError, match="critic_per_stage is not supported"):
            cls(critic_per_stage=True)


def test_flow_student_levels_are_uniform_in_flow_time():
    """student_grid="flow": 4 levels at rectified-flow times tau_max * (1, 3/4, 1/2, 1/4), then 0; a bad
    grid name is refused; SC-DMD's flow grids nest like its Karras ones."""
    from fewstep.methods.distribution_matching.sc_dmd import SCDMD, SCDMDConfig

    m = DMD2(toy_denoiser(0), config(DMD2Config, nfe=4, student_grid="flow"), shape=(2,), num_classes=8)
    top = float(m.student_sigmas[0])
    tau = torch.tensor([1, 0.75, 0.5, 0.25], dtype=torch.float64) * top / (1 + top)
    assert torch.allclose(m.student_sigmas[:-1], tau / (1 - tau)) and m.student_sigmas[-1] == 0
    assert m.default_sampling().sigmas == [float(s) for s in m.student_sigmas]
    with pytest.raises(ValueError, match="student_grid"):
        DMD2Config(student_grid="nested")
    sc = SCDMD(toy_denoiser(0), config(SCDMDConfig, student_grid="flow"), shape=(2,), num_classes=8)
    assert sc.default_sampling().grid == "flow" and torch.equal(sc.grid[4], sc.grid[8][::2])


@pytest.mark.slow
@pytest.mark.parametrize("cls,cfg", [
    (DMD2, config(DMD2Config, lr=1e-3, optim=ADAM0, critic_optim=ADAM0)),
    (DMD, config(DMDConfig, lr=1e-3, optim=ADAM0, critic_optim=ADAM0, regression_pairs=500,
                    regression_batch=128)),
], ids=["dmd2", "dmd"])
def test_one_step_student_beats_teacher_one_step_on_toy2d(toy_teacher, cls, cfg, tmp_path):
    """End to end: the 1-step student learns the 8 modes the teacher's single step cannot reach,
    and lands near the teacher's 40-step Heun quality."""
    from fewstep.data import load_dataset
    from fewstep.samplers import SamplingSpec
    from fewstep.train.loop import TrainConfig, Trainer

    m = cls(toy_teacher, cfg, shape=(2,), num_classes=0)
    untrained = _toy_fd(m.generator(), m.default_sampling())
    m.prepare(tmp_path / "cache")
    tr = Trainer(m, load_dataset("toy2d", "train"),
                 TrainConfig(out=str(tmp_path / "student"), max_iters=300, batch_size=256, ema_decay=0.95,
                             progress=False, grad_clip=0.0))
    tr.train()
    teacher_1 = _toy_fd(toy_teacher, SamplingSpec("euler", 1, "karras"))
    teacher_40 = _toy_fd(toy_teacher, SamplingSpec("heun", 40, "karras"))
    student_1 = _toy_fd(tr.eval_generator(), m.default_sampling())
    # bar: 0.1 x the teacher's own single step (~6.4) and 3 x its 40-step Heun (~8.3); the untrained
    # student (= the teacher's single step, ~64) and the data-matched Gaussian (~12.7) both fail it
    bar = min(0.1 * teacher_1, 3 * teacher_40)
    assert_learns(student_1, bar, untrained=untrained, gaussian=gaussian_fd())


def test_collapse_monitor_flags_a_constant_generator():
    from fewstep.data import load_dataset
    from fewstep.metrics.collapse import CollapseMonitor
    from fewstep.metrics.evaluate import collapse_signals

    te = load_dataset("digits", "test")
    mon = CollapseMonitor(te.x, te.labels)
    assert mon.check(collapse_signals(te.x, te.labels)) == []
    constant = te.x[:1].expand_as(te.x)
    warnings = mon.check(collapse_signals(constant, te.labels))
    assert any("collapsed" in w for w in warnings)
    solid = torch.full_like(te.x, -1.0)  # static / solid-colour output (docs/methods.md pitfalls)
    warnings = mon.check(collapse_signals(solid, te.labels))
    assert any("std" in w for w in warnings) and any("mean" in w for w in warnings)


def test_uniform_level_grid_on_a_vp_teacher_is_dmd2_sds_timesteps():
    """On a 1000-step VP teacher, level_grid='uniform' with dm_index_range (0.02, 0.98) draws the DM
    loss's timesteps uniformly from [20, 980] as DMD2's SD code does; 'karras' crowds them elsewhere."""
    from fewstep.model_io import build_denoiser

    vp = build_denoiser({"arch": {"arch": "mlp", "dim": 2, "hidden": 16, "depth": 1, "num_classes": 0},
                         "process": {"family": "vp", "schedule": "scaled_linear", "num_train_timesteps": 1000},
                         "param": "eps"})
    m = DMD2(vp, config(DMD2Config, level_grid="uniform"), shape=(2,), num_classes=0)
    t = m.sample_levels(20000, torch.Generator().manual_seed(0), *m.cfg.dm_index_range)
    assert 19 <= float(t.min()) <= 21 and 979 <= float(t.max()) <= 981
    assert abs(float(t.mean()) - 500) < 10  # uniform: mean at the middle
    k = DMD2(vp, config(DMD2Config, level_grid="karras"), shape=(2,), num_classes=0).sample_levels(
        20000, torch.Generator().manual_seed(0))
    assert abs(float(k.float().mean()) - 500) > 50


# -- Decoupled DMD --------------------------------------------------------------------------------
def test_decoupled_terms_sum_to_dmd2s_real_cfg_gradient_when_coupled():
    """One level and one noise for both terms: DM + CA = DMD2's gradient with the real score at alpha."""
    from fewstep.methods.distribution_matching.decoupled_dmd import DecoupledDMD, DecoupledDMDConfig

    teacher = toy_denoiser(0)
    d = DecoupledDMD(teacher, config(DecoupledDMDConfig, real_cfg=1.7, decouple=False), shape=(2,), num_classes=8)
    ref = DMD2(teacher, config(DMD2Config, real_cfg=1.7), shape=(2,), num_classes=8)
    _perturb(d.fake, 1)
    ref.fake.load_state_dict(d.fake.state_dict())
    x_hat, cond = torch.randn(6, 2), torch.arange(6) % 8
    _, g = d.dm_student_loss(x_hat, cond, torch.Generator().manual_seed(3))
    _, g_ref = ref.dm_student_loss(x_hat, cond, torch.Generator().manual_seed(3))
    assert torch.allclose(g, g_ref, atol=1e-5) and g.abs().sum() > 0


def test_decoupled_ca_term_is_by_hand_and_renoised_cleaner_than_the_input():
    from fewstep.methods.distribution_matching.decoupled_dmd import DecoupledDMD, DecoupledDMDConfig
    from fewstep.noise.guidance import both_branches

    teacher = toy_denoiser(0)
    d = DecoupledDMD(teacher, config(DecoupledDMDConfig, real_cfg=3.0, nfe=4), shape=(2,), num_classes=8)
    x, cond = torch.randn(5, 2), torch.arange(5) % 8
    t, eps = torch.full((5,), 0.7), torch.randn(5, 2)
    _, ca = d._terms(x, cond, t, eps)
    (mc, mu), _ = both_branches(teacher, x + 0.7 * eps, t, cond)
    cfg = mu + 3.0 * (mc - mu)
    expect = -2.0 * (mc - mu) / (x - cfg).abs().mean(1, keepdim=True)
    assert torch.allclose(ca, expect, atol=1e-5)
    sh_in = float(d.student_sigmas[2])  # a stage-2 input level
    levels = d.sample_levels(4000, torch.Generator().manual_seed(0), *d.cfg.dm_index_range, below=sh_in)
    assert float(levels.max()) < sh_in and float(levels.min()) > 0
    with pytest.raises(ValueError, match="real_cfg must be > 1"):
        config(DecoupledDMDConfig, real_cfg=1.0)
    with pytest.raises(ValueError, match="conditional"):
        DecoupledDMD(toy_denoiser(0), config(DecoupledDMDConfig), shape=(2,), num_classes=0)


@pytest.mark.slow
def test_decoupled_dmd_learns_one_step_conditional_generation(moons_teacher_cond, tmp_path):
    """Two moons, real-score CFG 1.25: the 1-step student must reach 0.2 x the teacher's own single
    step (FD ~30, which the untrained student is); measured ~2.6 after 300 it (DMD2 with the same
    real CFG: ~2.8); the data-matched Gaussian fails the bar too."""
    from fewstep.methods.distribution_matching.decoupled_dmd import DecoupledDMD, DecoupledDMDConfig
    from fewstep.samplers import SamplingSpec

    m = DecoupledDMD(moons_teacher_cond, config(DecoupledDMDConfig, lr=1e-3, optim=ADAM0, critic_optim=ADAM0,
                                                real_cfg=1.25), shape=(2,), num_classes=2)
    moons = {"labels": True, "data": "toy2d:moons"}
    untrained = _toy_fd(m.generator(), m.default_sampling(), **moons)
    student = train_student(m, tmp_path, 300, data="toy2d:moons")
    teacher_1 = _toy_fd(moons_teacher_cond, SamplingSpec("euler", 1, "karras"), **moons)
    assert_learns(_toy_fd(student, m.default_sampling(), **moons), 0.2 * teacher_1, untrained=untrained,
                  gaussian=gaussian_fd(data="toy2d:moons"))


# -- adversarial self-distillation ---------------------------------------------------------------
def test_asd_is_one_model_for_several_step_counts_and_compares_n_with_n_plus_1():
    from fewstep.methods.distribution_matching.asd import ASD, ASDConfig
    from fewstep.samplers import multistep
    from fewstep.samplers.ode import initial_noise

    m = ASD(toy_denoiser(0), config(ASDConfig, step_counts=(1, 2, 4), nfe=4), shape=(2,), num_classes=8)
    assert [s.steps for s in m.sampling_options()] == [4, 1, 2]
    assert all(len(s.sigmas) == s.steps + 1 for s in m.sampling_options())
    m.steps = 2
    cond = torch.arange(5) % 8
    x_n, x_next = m.n_and_n_plus_1(cond, torch.Generator().manual_seed(4), 5, grad=False)
    g = torch.Generator().manual_seed(4)  # the same draws by hand: one noise, 3 steps / 2 steps
    z = initial_noise(m.process, m.levels_for[2], (5, 2), generator=g)
    with torch.no_grad():
        assert torch.allclose(x_next, multistep(m.student, z, m.levels_for[3], cond=cond, generator=g))
        assert torch.allclose(x_n, multistep(m.student, z, m.levels_for[2], cond=cond, generator=g), atol=1e-6)
    with pytest.raises(ValueError, match="include nfe"):
        config(ASDConfig, step_counts=(1, 2), nfe=4)


def test_asd_updates_touch_the_right_networks():
    """A student update moves the student only; a critic update moves the fake score and both heads."""
    from fewstep.methods.distribution_matching.asd import ASD, ASDConfig

    m = ASD(toy_denoiser(0), config(ASDConfig, lr=1e-2, nfe=2, step_counts=(1, 2), gen_every=1), shape=(2,),
            num_classes=8)
    before = {k: state(v) for k, v in m.networks().items()}
    ctx = _ctx(m)
    ctx.begin(0)
    logs = {}
    m.student_update(_batch()["labels"], 16, ctx, logs)
    after = {k: state(v) for k, v in m.networks().items()}
    moved = {k for k in before if any(not torch.equal(before[k][p], after[k][p]) for p in before[k])}
    assert moved == {"student"} and "loss_gen_self" in logs
    b = _batch()
    m.critic_update(torch.randn(16, 2), b["x"], b["labels"], ctx, logs)
    final = {k: state(v) for k, v in m.networks().items()}
    moved = {k for k in after if any(not torch.equal(after[k][p], final[k][p]) for p in after[k])}
    assert moved == {"fake", "disc", "self_disc"} and "loss_self_disc" in logs


def test_asd_trained_target_pairs_each_count_with_the_next_trained_one():
    """self_target="trained": 1 -> 2 -> 4, and the largest count (4) gets no self term, so its updates
    leave the self head alone; with the paper's "next" every count has one (4 -> 5)."""
    from fewstep.methods.distribution_matching.asd import ASD, ASDConfig
    from fewstep.samplers import multistep
    from fewstep.samplers.ode import initial_noise

    paper = ASD(toy_denoiser(0), config(ASDConfig, step_counts=(1, 2, 4), nfe=4), shape=(2,), num_classes=8)
    assert [paper.more_steps(k) for k in (1, 2, 4)] == [2, 3, 5]
    m = ASD(toy_denoiser(0), config(ASDConfig, step_counts=(1, 2, 4), nfe=4, self_target="trained", lr=1e-2,
                                    gen_every=1), shape=(2,), num_classes=8)
    assert [m.more_steps(k) for k in (1, 2, 4)] == [2, 4, None] and sorted(m.levels_for) == [1, 2, 4]
    m.steps = 2
    cond = torch.arange(5) % 8
    _, x_more = m.n_and_n_plus_1(cond, torch.Generator().manual_seed(4), 5, grad=False)
    g = torch.Generator().manual_seed(4)
    z = initial_noise(m.process, m.levels_for[2], (5, 2), generator=g)
    with torch.no_grad():
        assert torch.allclose(x_more, multistep(m.student, z, m.levels_for[4], cond=cond, generator=g))
    m.steps = 4
    ctx = _ctx(m)
    ctx.begin(0)
    logs = {}
    m.student_update(_batch()["labels"], 16, ctx, logs)
    head = state(m.self_head)
    b = _batch()
    m.critic_update(torch.randn(16, 2), b["x"], b["labels"], ctx, logs)
    assert "loss_gen_self" not in logs and "loss_self_disc" not in logs
    assert all(torch.equal(head[k], v) for k, v in state(m.self_head).items())
    with pytest.raises(ValueError, match="self_target"):
        config(ASDConfig, self_target="n+1")


# -- SC-DMD ----------------------------------------------------------------------------------------
def test_sc_dmd_semigroup_defect_is_by_hand_and_trains_the_direct_step_only():
    from fewstep.methods.distribution_matching.sc_dmd import SCDMD, SCDMDConfig
    from fewstep.samplers.ode import ddim_to

    m = SCDMD(toy_denoiser(0), config(SCDMDConfig), shape=(2,), num_classes=8)
    assert [s.steps for s in m.sampling_options()] == [4, 2, 1]
    assert all(s.sampler == "euler" and s.grid == "nested" for s in m.sampling_options())
    assert torch.allclose(m.grid[2], m.grid[4][::2])  # nested: the 2-step levels are every other 4-step level
    x, cond = torch.randn(6, 2) * 3, torch.arange(6) % 8
    full = lambda v: torch.full((6,), float(v), dtype=torch.float64)
    a, b, c = m.grid[2][0], m.grid[4][1], m.grid[2][1]
    direct, _, _ = ddim_to(m.student, x, full(a), full(c), cond)
    mid, _, _ = ddim_to(m.student, x, full(a), full(b), cond)
    composed, _, _ = ddim_to(m.student, mid, full(b), full(c), cond)
    expect = ((direct - composed) ** 2).mean(1)
    got = m.semigroup_defect(x, 2, 0, cond)
    assert torch.allclose(got, expect, atol=1e-5) and got.sum() > 0
    got.sum().backward()
    g_got = [p.grad.clone() for p in m.student.net.parameters()]
    m.student.net.zero_grad()
    ((direct - composed.detach()) ** 2).mean(1).sum().backward()  # the target is stopped
    assert all(torch.allclose(u, v, atol=1e-6) for u, v in zip(g_got, [p.grad for p in m.student.net.parameters()]))


def test_sc_dmd_draws_step_counts_with_their_probabilities():
    from fewstep.methods.distribution_matching.sc_dmd import SCDMD, SCDMDConfig

    m = SCDMD(toy_denoiser(0), config(SCDMDConfig), shape=(2,), num_classes=8)
    g = torch.Generator().manual_seed(0)
    draws = [m.draw_step_count(g) for _ in range(3000)]
    assert abs(draws.count(4) / 3000 - 0.4) < 0.04 and abs(draws.count(1) / 3000 - 0.2) < 0.04
    with pytest.raises(ValueError, match="step_probs"):
        config(SCDMDConfig, step_probs=(1.0,))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["asd"])  # sc_dmd misses this bar at 2 and 4 steps on toy2d (docs/notes.md)
def test_one_model_for_several_step_counts_learns_each_and_does_not_degrade(name, toy_teacher, tmp_path):
    """ASD: one student for 1, 2 and 4 steps, each step count learnt. Bar for every step count:
    the DMD2 toy bar (0.1 x the teacher's own single step, ~6.4), which the untrained student at 1 and 2
    steps (~64, ~53) and at 4 steps (~14) and the Gaussian (~12.7) fail. Whether quality holds as steps
    rise (the papers' claim) is measured in the benchmarks, not asserted here: at 300 iterations on this
    toy it did not (ASD: 4.0 / 6.1 / 6.0 at 1 / 2 / 4 steps)."""
    from fewstep.methods.registry import get_method
    from fewstep.samplers import SamplingSpec

    cls = get_method(name)
    m = cls(toy_teacher, config(cls.Config, lr=1e-3, optim=ADAM0, critic_optim=ADAM0, nfe=4), shape=(2,), num_classes=0)
    specs = {s.steps: s for s in m.sampling_options()}
    untrained = {f"untrained_{k}": _toy_fd(m.generator(), s) for k, s in specs.items()}
    student = train_student(m, tmp_path, 600)  # three step counts share the updates: twice DMD2's budget
    bar = 0.1 * _toy_fd(toy_teacher, SamplingSpec("euler", 1, "karras"))
    for spec in specs.values():
        assert_learns(_toy_fd(student, spec), bar, gaussian=gaussian_fd(), **untrained)


def test_sc_dmd_regularises_only_towards_trained_step_counts():
    """The composed target of k steps runs on the 2k-step levels: only where 2k is itself trained (4 -> 8 is not)."""
    from fewstep.methods.distribution_matching.sc_dmd import SCDMD, SCDMDConfig

    m = SCDMD(toy_denoiser(0), config(SCDMDConfig), shape=(2,), num_classes=8)
    ctx = _ctx(m)
    for k, expect in ((4, False), (2, True), (1, True)):
        m.steps, logs = k, {}
        m.student_loss(torch.arange(8) % 8, 8, ctx, logs)
        assert ("loss_semigroup" in logs) == expect, k


def test_auto_level_grid_is_karras_on_edm_teachers_and_uniform_timesteps_on_vp_ones():
    """DMD2's official code: Karras levels for its EDM (ImageNet) teacher, timesteps uniform in [20, 980]
    of 1,000 for SD (VP) teachers (the test above); the default ``auto`` picks per teacher."""
    from fewstep.model_io import build_denoiser

    vp = build_denoiser({"arch": dict(TOY_ARCH), "param": "eps", "process": {
        "family": "vp", "schedule": "scaled_linear", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012}})
    for teacher, explicit in ((toy_denoiser(0), "karras"), (vp, "uniform")):
        auto = DMD2(teacher, config(DMD2Config), shape=(2,), num_classes=8)
        same = DMD2(teacher, config(DMD2Config, level_grid=explicit), shape=(2,), num_classes=8)
        assert torch.equal(auto.levels, same.levels)
    with pytest.raises(ValueError, match="level_grid"):
        DMD2Config(level_grid="cosine")
