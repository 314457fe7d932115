"""Hyper-SD / TSCD (methods/consistency/hyper_sd.py): segment boundaries as PCM places them, the loss
against a hand computation with the step's random draws replayed, and a toy2d stage that learns."""
import numpy as np
import pytest
import torch

from fewstep.methods.consistency.hyper_sd import HyperSD, HyperSDConfig, segment_of, segment_starts
from fewstep.samplers.ode import level_coeffs
from fewstep.train.guards import StepContext

from helpers import TOY_ARCH, assert_learns, config, gaussian_fd, state, toy_denoiser, toy_fd, train_student


def test_segments_start_where_pcm_puts_them_and_the_sampler_visits_their_ends():
    for n, m in [(50, 4), (50, 8), (50, 1), (40, 3), (7, 7)]:
        pcm = np.floor(np.linspace(0, n, num=m, endpoint=False)).astype(np.int64)  # PCM's inference_indices
        assert segment_starts(n, m).tolist() == pcm.tolist()
    starts = segment_starts(50, 4)  # 0, 12, 25, 37
    i = torch.tensor([0, 11, 12, 24, 25, 36, 37, 49])
    assert segment_of(i, starts).tolist() == [0, 0, 12, 12, 25, 25, 37, 37]
    m = HyperSD(toy_denoiser(0), config(HyperSDConfig, nfe=4, num_scales=50), shape=(2,), num_classes=8)
    lv = m.levels  # ascending fine grid, 0 .. top
    assert m.boundary_levels() == [float(lv[50]), float(lv[37]), float(lv[25]), float(lv[12]), 0.0]
    spec = m.default_sampling()
    assert spec.sampler == "euler" and spec.steps == 4 and spec.sigmas == m.boundary_levels()
    opts = m.sampling_options()  # DDIM and TCD at 4 steps, DDIM on the 2- and 1-step subsets of the boundaries
    assert [(o.sampler, o.steps) for o in opts] == [("euler", 4), ("tcd", 4), ("euler", 2), ("euler", 1)]
    assert set(opts[2].sigmas) <= set(spec.sigmas) and opts[3].sigmas == [float(lv[50]), 0.0]
    with pytest.raises(ValueError, match="nfe <= num_scales"):
        HyperSDConfig(nfe=8, num_scales=4)
    with pytest.raises(ValueError, match="target"):
        HyperSDConfig(target="teacher")


def _perturbed(seed):
    den = toy_denoiser(0)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in den.net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return den


def test_a_stage_can_start_from_another_model_and_keep_the_original_teachers_ode(tmp_path):
    """init=MODEL: the student starts from that model's weights; the ODE teacher stays the teacher. A model of
    another architecture is refused in one line."""
    from fewstep.model_io import save_denoiser

    teacher, previous = _perturbed(1), _perturbed(2)
    save_denoiser(previous, tmp_path / "prev")
    m = HyperSD(teacher, config(HyperSDConfig, nfe=2, num_scales=6, init=str(tmp_path / "prev")), shape=(2,), num_classes=8)
    for a, b in zip(m.student.net.parameters(), previous.net.parameters()):
        assert torch.equal(a, b)
    assert any(not torch.equal(t, p) for t, p in zip(m.teacher.net.parameters(), previous.net.parameters()))
    assert all(torch.equal(t, p) for t, p in zip(m.teacher.net.parameters(), teacher.net.parameters()))
    save_denoiser(toy_denoiser(0, arch=dict(TOY_ARCH, hidden=16)), tmp_path / "other")
    with pytest.raises(ValueError, match="differ from the teacher"):
        HyperSD(teacher, config(HyperSDConfig, nfe=2, num_scales=6, init=str(tmp_path / "other")), shape=(2,), num_classes=8)


@pytest.mark.parametrize("target", ["online", "ema"])
def test_tscd_loss_by_hand(target):
    """pred = the student's DDIM jump from s_{i+1} to its segment's start; target = the teacher's DDIM
    step to s_i, jumped there by the target network (or kept when s_i is the start); l2 loss. On EDM
    (alpha = 1) a DDIM jump to level s is x0 + s eps."""
    teacher = _perturbed(1)
    m = HyperSD(teacher, config(HyperSDConfig, lr=1e-3, nfe=2, num_scales=6, loss="l2", target=target, target_ema=0.9),
                shape=(2,), num_classes=8)
    with torch.no_grad():
        for p in m.student.net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    g = torch.Generator().manual_seed(0)
    x, labels = torch.randn(64, 2, generator=g) * 0.5, torch.randint(0, 8, (64,), generator=g)
    seed = 3
    r = torch.Generator().manual_seed(seed)  # the step's draws, replayed
    i = torch.randint(0, 6, (64,), generator=r)
    eps = torch.randn(64, 2, generator=r)
    b = torch.where(i >= 3, 3, 0)  # segments start at fine indices 0 and 3
    lv = m.levels.float()
    s_start, s_end, s_b = lv[i + 1], lv[i], lv[b]
    x_start = x + s_start[:, None] * eps
    net = m.target if target == "ema" else m.student

    def jump(den, xs, s_from, s_to):
        t, _, _ = level_coeffs(m.process, s_from.double())
        x0, e = den.raw(xs, t, labels)
        return x0 + s_to[:, None] * e

    with torch.no_grad():
        x_end = jump(teacher, x_start, s_start, s_end)
        expected_target = torch.where((i == b)[:, None], x_end, jump(net, x_end, s_end.clamp(min=1e-3), s_b))
        pred = jump(m.student, x_start, s_start, s_b)
    expected = ((pred - expected_target) ** 2).mean(1).mean()
    assert (i == b).any() and (i != b).any()  # both kinds of sample are in the batch
    before = state(m.student.net)
    logs = m.step({"x": x, "labels": labels}, 0, StepContext(m.optimizers(), torch.Generator().manual_seed(seed), 0.0, 0, False))
    assert float(logs["loss"].detach()) == pytest.approx(float(expected), rel=1e-4)
    assert any(not torch.equal(before[k], v) for k, v in m.student.net.state_dict().items())
    assert set(m.networks()) == ({"student", "target"} if target == "ema" else {"student"})


@pytest.fixture(scope="module")
def blob_fd():
    return gaussian_fd()


@pytest.mark.slow
def test_two_segment_student_learns_on_toy2d(toy_teacher, blob_fd, tmp_path):
    """One TSCD stage with 2 segments from the toy teacher: bar 0.5 x the data-matched blob (~6.3); the
    untrained student (the teacher's 2 DDIM steps on the boundary levels) and the blob both fail it."""
    m = HyperSD(toy_teacher, config(HyperSDConfig, nfe=2, lr=1e-3, loss="l2"), shape=(2,), num_classes=0)
    untrained = toy_fd(m.generator(), m.default_sampling())
    student = train_student(m, tmp_path, 600, ema_decay=0.95)
    assert_learns(toy_fd(student, m.default_sampling()), 0.5 * blob_fd, untrained=untrained, gaussian=blob_fd)


def test_the_score_distillation_stage_starts_from_the_tscd_model_and_matches_the_teachers_scores(tmp_path):
    """Hyper-SD's last stage is distribution matching from its 1-segment model (``init`` on the DMD family):
    the student starts from that model, the real score stays the teacher and the fake score starts from it."""
    from fewstep.methods.distribution_matching.dmd import DMD, DMDConfig
    from fewstep.model_io import save_denoiser

    teacher, tscd = _perturbed(1), _perturbed(2)
    save_denoiser(tscd, tmp_path / "hyper_sd1")
    m = DMD(teacher, config(DMDConfig, init=str(tmp_path / "hyper_sd1"), regression_weight=0.0), shape=(2,), num_classes=8)
    assert all(torch.equal(a, b) for a, b in zip(m.student.net.parameters(), tscd.net.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(m.fake.net.parameters(), teacher.net.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(m.teacher.net.parameters(), teacher.net.parameters()))
    save_denoiser(toy_denoiser(0, arch=dict(TOY_ARCH, hidden=16)), tmp_path / "other")
    with pytest.raises(ValueError, match="differ from the teacher"):
        DMD(teacher, config(DMDConfig, init=str(tmp_path / "other")), shape=(2,), num_classes=8)
