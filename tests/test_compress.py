"""Architecture distillation (methods/compress, nets/surgery.py): block removal keeps the teacher's
weights, the stages line up, the KD losses equal hand computations, and a BK-SDM student learns its
teacher (the KD error on held-out inputs falls, which a student that is not trained cannot do)."""
import pytest
import torch

from fewstep.config import build_config
from fewstep.data import load_dataset
from fewstep.methods.compress.bk_sdm import BKSDM
from fewstep.methods.losses import denoising_loss, feature_kd, prediction_mse
from fewstep.model_io import build_denoiser, load_denoiser
from fewstep.nets import UNet, UNetConfig
from fewstep.nets.surgery import bk_sdm_config, kept_blocks, koala_config, rebuild, remove_blocks, teacher_names
from fewstep.train.loop import TrainConfig, Trainer

from helpers import state, toy_denoiser

SD_LIKE = dict(in_channels=1, image_size=16, channels=8, ch_mult=(1, 2, 2), num_res_blocks=2, attn_levels=(1, 2),
               num_classes=10)  # two encoder blocks per stage, as SD-v1's outer stages


def _params(net):
    return sum(p.numel() for p in net.parameters())


def _inputs(n=3, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, size, size, generator=g), torch.rand(n, generator=g), torch.arange(n) % 10


@pytest.mark.parametrize("variant", ["base", "small", "tiny"])
def test_block_removal_starts_every_kept_block_from_the_teachers_weights(variant):
    torch.manual_seed(0)
    teacher = UNet(UNetConfig(**SD_LIKE))
    student = remove_blocks(teacher, variant)
    src = teacher.state_dict()
    for s_name, t_name in teacher_names(student, teacher).items():
        assert torch.equal(student.state_dict()[s_name], src[t_name]), s_name
    downs, ups = student.cfg.level_blocks()
    levels = 2 if variant == "tiny" else 3
    assert downs == (1,) * levels and ups == (2,) * levels  # one pair fewer per stage (SD: 2 -> 1, 3 -> 2)
    assert student.cfg.mid_block == (variant == "base")
    assert _params(student) < _params(teacher)
    x, c, y = _inputs()
    assert torch.isfinite(student(x, c, y)).all()


def test_the_removed_pairs_are_the_papers():
    """Encoder stages keep their first block, decoder stages their first and last (BK-SDM: the middle
    decoder pair consumed the removed encoder block's skip)."""
    assert kept_blocks("down", 2, 1) == [0]
    assert kept_blocks("up", 3, 2) == [0, 2]
    assert kept_blocks("up", 2, 1) == [0]
    with pytest.raises(ValueError, match="cannot come from"):
        kept_blocks("up", 2, 3)


def test_removal_sizes_on_the_shipped_teacher():
    """The shipped MNIST teacher has one encoder block per stage: those stay, each decoder stage loses
    one; small also drops the middle block and is the first variant under 0.6x the parameters."""
    teacher = load_denoiser("mnist")[0].net
    sizes = {v: _params(remove_blocks(teacher, v)) / _params(teacher) for v in ("base", "small", "tiny")}
    assert 0.6 < sizes["base"] < 1 and sizes["tiny"] < sizes["small"] <= 0.6
    assert bk_sdm_config(teacher.cfg, "base").level_blocks() == ((1, 1, 1), (1, 1, 1))


def test_removal_that_would_change_a_stage_width_is_refused():
    """Tiny on a UNet whose innermost stage is wider: the decoder block that now follows the encoder
    directly would see other channels than the teacher's, so nothing is copied."""
    teacher = UNet(UNetConfig(**{**SD_LIKE, "ch_mult": (1, 2, 4)}))
    with pytest.raises(ValueError, match="changes a stage's width"):
        remove_blocks(teacher, "tiny")
    with pytest.raises(ValueError, match="fewstep's UNet"):
        remove_blocks(toy_denoiser(0).net, "small")


def test_a_standard_unet_pairs_its_skips_last_in_first_out():
    net = UNet(UNetConfig(**SD_LIKE))
    taken = [s for s in net.up_skips if s is not None]
    assert taken == list(reversed(range(net.num_skips())))


def test_student_stages_line_up_with_the_teachers():
    torch.manual_seed(0)
    teacher = UNet(UNetConfig(**SD_LIKE))
    x, c, y = _inputs()
    out_t, f_t = teacher(x, c, y, return_features=True)
    assert torch.equal(out_t, teacher(x, c, y))  # asking for features changes nothing
    assert set(f_t) == {"down0", "down1", "down2", "mid", "up0", "up1", "up2", "up1.attn", "up2.attn"}
    for variant, missing in [("base", set()), ("small", {"mid"}), ("tiny", {"mid", "down2", "up2", "up2.attn"})]:
        _, f_s = remove_blocks(teacher, variant)(x, c, y, return_features=True)
        assert set(f_t) - set(f_s) == missing
        assert all(f_s[k].shape == f_t[k].shape for k in f_s)


def test_feature_kd_by_hand():
    s = {"a": torch.tensor([[1.0, 2.0], [0.0, 0.0]]), "b": torch.tensor([[3.0], [1.0]])}
    t = {"a": torch.tensor([[0.0, 0.0], [2.0, 2.0]]), "b": torch.tensor([[1.0], [1.0]]), "extra": torch.ones(2, 5)}
    # sample 0: mean(1, 4) + 4 = 6.5; sample 1: mean(4, 4) + 0 = 4
    assert torch.allclose(feature_kd(s, t), torch.tensor([6.5, 4.0]))
    # normalised: each stage over mean(F_t^2): sample 0: 2.5 / 1e-8-clamped 0 -> huge, so use sample 1
    norm = feature_kd(s, t, normalise=True)
    assert torch.isclose(norm[1], torch.tensor(4.0 / 4.0 + 0.0))
    with pytest.raises(ValueError, match="stage 'b'"):
        feature_kd(s, {"a": t["a"]})
    with pytest.raises(ValueError, match="at least one stage"):
        feature_kd({}, t)


@pytest.mark.parametrize("param", ["edm", "eps", "v"])
def test_prediction_mse_to_the_clean_image_is_the_denoising_loss(param):
    torch.manual_seed(0)
    process = {"family": "edm"} if param == "edm" else {"family": "vp"}
    den = build_denoiser({"arch": {"arch": "mlp", "dim": 2, "hidden": 32, "depth": 2, "num_classes": 0},
                          "process": process, "param": param})
    x0, eps = torch.randn(64, 2), torch.randn(64, 2)
    t = torch.rand(64) * 0.8 + 0.1 if param != "edm" else den.process.t_from_sigma_hat(torch.rand(64) * 3 + 0.1).float()
    x_t = den.process.add_noise(x0, eps, t)
    mine = prediction_mse(den, den.raw(x_t, t)[0], x0, x_t, t)
    assert torch.allclose(mine, denoising_loss(den, x0, t, eps, None), rtol=1e-4, atol=1e-6)


def _kd_error(method, x0, y, t, eps):
    with torch.no_grad():
        _, out_kd, feat_kd = method.losses(x0, y, t, eps)
    return float((out_kd + feat_kd).mean())


def test_bk_sdm_learns_its_teacher(tmp_path):
    """A block-removed student of the shipped teacher, 20 steps: the output+feature KD error on a held-out
    batch falls below half of the untrained student's (the untrained student is the control that fails;
    measured: 12.6 untrained, 2.9 after 30 steps), the teacher does not move, and the saved model is the
    smaller architecture. FD against the teacher is benchmarks/results/compress_mnist.json's job."""
    teacher = load_denoiser("mnist")[0]
    torch.manual_seed(0)
    method = BKSDM(teacher, build_config(BKSDM.Config, {"variant": "small", "optim": {"lr": 1e-3}}),
                   shape=(1, 28, 28), num_classes=10)
    test = load_dataset("mnist", "test")
    g = torch.Generator().manual_seed(1)
    x0, y = test.x[:32], test.labels[:32]
    t = method.cfg.time_sampler.sample(method.process, 32, g)
    eps = torch.randn(x0.shape, generator=g)
    before, teacher_before = _kd_error(method, x0, y, t, eps), state(method.teacher.net)
    tr = Trainer(method, load_dataset("mnist", "train"),
                 TrainConfig(out=str(tmp_path), max_iters=20, batch_size=16, ema_decay=0.0, progress=False,
                             grad_clip=0.0, eval_every=0, ckpt_every=0))
    tr.train()
    after = _kd_error(method, x0, y, t, eps)
    assert after < 0.5 * before, (before, after)
    assert all(torch.equal(v, method.teacher.net.state_dict()[k]) for k, v in teacher_before.items())
    # the saved model is the smaller architecture and reloads as one
    den, _ = load_denoiser(str(tmp_path / "model"))
    assert not den.net.cfg.mid_block and _params(den.net) == _params(method.student.net)


# -- KOALA -------------------------------------------------------------------------------------------
def test_koala_cuts_only_the_deep_stages_from_the_teachers_weights():
    torch.manual_seed(0)
    teacher = UNet(UNetConfig(**SD_LIKE))
    student = rebuild(teacher, koala_config(teacher.cfg, keep_levels=1))
    src = teacher.state_dict()
    for s_name, t_name in teacher_names(student, teacher).items():
        assert torch.equal(student.state_dict()[s_name], src[t_name]), s_name
    assert student.cfg.level_blocks() == ((2, 1, 1), (3, 2, 2)) and not student.cfg.mid_block
    shipped = load_denoiser("mnist")[0].net
    size = _params(rebuild(shipped, koala_config(shipped.cfg))) / _params(shipped)
    assert _params(remove_blocks(shipped, "small")) / _params(shipped) < size <= 0.6  # the full-resolution stage kept
    with pytest.raises(ValueError, match="keep_levels"):
        koala_config(teacher.cfg, keep_levels=3)


def test_koala_distils_the_decoder_self_attention_branch():
    """``up{l}.attn`` is the residual branch of the level's last decoder self-attention (its output minus
    its input, read here by a hook), and KOALA's feature KD compares exactly those; BK-SDM's the stages."""
    from fewstep.methods.compress.koala import KOALA

    torch.manual_seed(0)
    den = build_denoiser({"arch": {"arch": "unet", **SD_LIKE}, "process": {"family": "edm"}, "param": "edm"})
    with torch.no_grad():  # attention output layers start at zero; give them weights
        for m in den.net.modules():
            if type(m).__name__ == "Attention":
                m.out.weight.normal_(0, 0.2)
    last = max(i for i, pos in enumerate(den.net.up_pos) if pos[:2] == ("res", 2))
    seen = {}
    den.net.up[last][1].register_forward_hook(lambda mod, inp, out: seen.update(branch=out - inp[0]))
    x, c, y = _inputs()
    _, feats = den.net(x, c, y, return_features=True)
    assert torch.equal(feats["up2.attn"], seen["branch"]) and feats["up2.attn"].abs().sum() > 0
    method = KOALA(den, shape=(1, 16, 16), num_classes=10)
    _, f_s = method.student.net(x, c, y, return_features=True)
    assert sorted(method.kd_features(f_s, feats)) == ["up1.attn", "up2.attn"]
    assert BKSDM(den, shape=(1, 16, 16), num_classes=10).kd_features(f_s, feats) == ["down0", "down1", "down2", "up2", "up1", "up0"]
    x0, t, eps = torch.randn(3, 1, 16, 16), torch.full((3,), 1.0), torch.randn(3, 1, 16, 16)
    _, _, kd = method.losses(x0, y, t, eps)
    x_t = method.process.add_noise(x0, eps, t)
    _, fs = method.student.features(x_t, t, y)
    _, ft = method.teacher.features(x_t, t, y)
    assert torch.allclose(kd, feature_kd({k: fs[k] for k in ("up1.attn", "up2.attn")}, ft))


# -- LinFusion -------------------------------------------------------------------------------------
def test_linear_attention_by_hand():
    """out_i = phi(q_i) (sum_j phi(k_j)^T v_j / L) / (phi(q_i) . mean_j phi(k_j) + 1e-4), phi = elu + 1,
    computed token by token."""
    from fewstep.nets.unet import linear_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, 3, 2, generator=g) for _ in range(3))
    phi = lambda z: torch.where(z > 0, z + 1, torch.exp(z))  # noqa: E731  elu(z) + 1
    L = 3
    out = torch.zeros(3, 2)
    for i in range(L):
        qi = phi(q[0, 0, i])
        num = sum((qi @ phi(k[0, 0, j])) * v[0, 0, j] for j in range(L)) / L
        den = qi @ (sum(phi(k[0, 0, j]) for j in range(L)) / L) + 1e-4
        out[i] = num / den
    assert torch.allclose(linear_attention(q, k, v)[0, 0], out, atol=1e-6)


def test_linear_attention_starts_from_the_teachers_projections():
    """With the new projections at zero, LinearAttention is linear attention over exactly the softmax
    module's q, k, v, followed by the same output projection and residual."""
    from fewstep.nets.unet import Attention, LinearAttention, linear_attention

    torch.manual_seed(0)
    soft = Attention(8, heads=2)
    torch.nn.init.normal_(soft.out.weight)
    lin = LinearAttention(8, heads=2)
    lin.load_state_dict(soft.state_dict(), strict=False)
    x = torch.randn(2, 8, 3, 3)
    q, k, v = soft.qkv(soft.norm(x)).reshape(2, 3, 2, 4, 9).unbind(1)
    want = x + soft.out(linear_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
                        .transpose(-1, -2).reshape(2, 8, 3, 3))
    assert torch.allclose(lin(x), want, atol=1e-6)
    assert not torch.allclose(lin(x), soft(x), atol=1e-3)  # and it is not softmax attention


def test_linfusion_trains_only_the_new_projections_and_learns(tmp_path):
    """15 steps move the new projections alone (every teacher weight bitwise kept) and cut the KD error
    on a held-out batch, which a student that is not trained cannot do."""
    from fewstep.methods.compress.linfusion import LinFusion

    teacher = load_denoiser("mnist")[0]
    torch.manual_seed(0)
    method = LinFusion(teacher, build_config(LinFusion.Config, {"optim": {"lr": 1e-3}}), shape=(1, 28, 28),
                       num_classes=10)
    names = method.trainable_names()
    assert names and all(".to_q_." in n or ".to_k_." in n or n.startswith(("mid_attn.to_q_", "mid_attn.to_k_"))
                         for n in names)
    test = load_dataset("mnist", "test")
    g = torch.Generator().manual_seed(1)
    x0, y = test.x[:32], test.labels[:32]
    t = method.cfg.time_sampler.sample(method.process, 32, g)
    eps = torch.randn(x0.shape, generator=g)
    before, frozen = _kd_error(method, x0, y, t, eps), {k: v for k, v in state(method.student.net).items()
                                                         if k not in names}
    Trainer(method, load_dataset("mnist", "train"),
            TrainConfig(out=str(tmp_path), max_iters=15, batch_size=16, ema_decay=0.0, progress=False,
                        grad_clip=0.0, eval_every=0, ckpt_every=0)).train()
    after = _kd_error(method, x0, y, t, eps)
    assert all(torch.equal(v, method.student.net.state_dict()[k]) for k, v in frozen.items())
    assert after < 0.85 * before, (before, after)  # measured: 0.354 -> 0.260; untrained stays at 1x
    den, _ = load_denoiser(str(tmp_path / "model"))
    assert den.net.cfg.attention == "linear"


# -- LAPTOP-Diff -------------------------------------------------------------------------------------
def _zero_branch(net, name):
    """The same network with layer ``name``'s residual branch zeroed: an independent way to remove it."""
    import copy

    out = copy.deepcopy(net)
    blk = out.get_submodule(name)
    with torch.no_grad():
        for conv in ([blk[0].c2, getattr(blk[1], "out", None)] if isinstance(blk, torch.nn.ModuleList) else [blk.out]):
            if conv is not None:
                conv.weight.zero_(), conv.bias.zero_()
    return out


def test_a_pruned_layer_is_the_layer_without_its_residual_branch():
    from fewstep.methods.compress.laptop import pruned_unet

    torch.manual_seed(0)
    teacher = UNet(UNetConfig(**SD_LIKE))
    for p in teacher.parameters():  # zero-initialised output convs would hide a wrong pruning
        torch.nn.init.normal_(p, std=0.05)
    x, c, y = _inputs()
    for layer, module in [("down.0", "down.0"), ("mid_attn", "mid_attn"), ("down.4.attn", "down.4")]:
        cut = pruned_unet(teacher, [layer])
        assert layer in teacher.prunable_layers() and _params(cut) < _params(teacher)
        ref = _zero_branch(teacher, module) if not layer.endswith(".attn") else None
        if ref is None:  # only the attention's output projection
            import copy

            ref = copy.deepcopy(teacher)
            with torch.no_grad():
                ref.get_submodule(module)[1].out.weight.zero_(), ref.get_submodule(module)[1].out.bias.zero_()
        assert torch.allclose(cut(x, c, y), ref(x, c, y), atol=1e-5), layer
    # a decoder block goes with its skip; a width-changing block is not prunable
    assert "up.1" in teacher.prunable_layers() and "down.2" not in teacher.prunable_layers()
    assert torch.isfinite(pruned_unet(teacher, ["up.1"])(x, c, y)).all()
    with pytest.raises(ValueError, match="not a prunable layer"):
        pruned_unet(teacher, ["down.2"])


def test_laptop_scores_are_the_measured_distortion_and_the_choice_meets_the_budget():
    from fewstep.methods.compress.laptop import Laptop, layer_scores, one_shot, pruned_unet

    torch.manual_seed(0)
    teacher = build_denoiser({"arch": {"arch": "unet", **SD_LIKE, "time_scale": 1000.0},
                              "process": {"family": "edm"}, "param": "edm"}).eval()
    for p in teacher.net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x, _, y = _inputs(4)
    t = torch.full((4,), 1.0)
    scores = layer_scores(teacher, x, t, y)
    assert set(scores) == set(teacher.net.prunable_layers())
    with torch.no_grad():  # down.0 removed by zeroing its branch, measured with the teacher's own weighting
        ref = teacher.like(_zero_branch(teacher.net, "down.0"))
        want = float(prediction_mse(teacher, ref(x, t, y), teacher(x, t, y), x, t).mean())
    assert scores["down.0"] == pytest.approx(want, rel=1e-4) and want > 0
    order = sorted(scores, key=scores.get)
    chosen = one_shot(teacher.net, order, 0.7)
    assert chosen == order[:len(chosen)] and _params(pruned_unet(teacher.net, chosen)) <= 0.7 * _params(teacher.net)
    assert _params(pruned_unet(teacher.net, chosen[:-1])) > 0.7 * _params(teacher.net)  # no layer more than needed
    with pytest.raises(ValueError, match="raise the budget"):
        one_shot(teacher.net, order, 0.05)
    # the method: the scored choice, and a random order under the same budget
    cfg = {"budget": 0.7, "calib_n": 8}
    scored = Laptop(teacher, build_config(Laptop.Config, cfg), shape=(1, 16, 16), num_classes=10)
    rand = Laptop(teacher, build_config(Laptop.Config, {**cfg, "selection": "random"}), shape=(1, 16, 16),
                  num_classes=10)
    assert scored.pruned_layers == one_shot(teacher.net, sorted(scored.scores, key=lambda k: (scored.scores[k], k)), 0.7)
    assert rand.pruned_layers != scored.pruned_layers
    assert _params(rand.student.net) <= 0.7 * _params(teacher.net)
    assert sum(scored.scores[k] for k in scored.pruned_layers) < sum(scored.scores[k] for k in rand.pruned_layers)


def test_laptop_student_learns_its_teacher(tmp_path):
    """The shipped teacher pruned to <= 0.6x its parameters; 15 steps cut the KD error on held-out inputs."""
    from fewstep.methods.compress.laptop import Laptop

    teacher = load_denoiser("mnist")[0]
    torch.manual_seed(0)
    method = Laptop(teacher, build_config(Laptop.Config, {"calib_n": 16, "optim": {"lr": 1e-3}}),
                    shape=(1, 28, 28), num_classes=10)
    assert _params(method.student.net) <= 0.6 * _params(teacher.net)
    test = load_dataset("mnist", "test")
    g = torch.Generator().manual_seed(1)
    x0, y = test.x[:32], test.labels[:32]
    t = method.cfg.time_sampler.sample(method.process, 32, g)
    eps = torch.randn(x0.shape, generator=g)
    before = _kd_error(method, x0, y, t, eps)
    Trainer(method, load_dataset("mnist", "train"),
            TrainConfig(out=str(tmp_path), max_iters=15, batch_size=16, ema_decay=0.0, progress=False,
                        grad_clip=0.0, eval_every=0, ckpt_every=0)).train()
    after = _kd_error(method, x0, y, t, eps)
    assert after < 0.8 * before, (before, after)  # measured: 1.33 -> 0.90; untrained stays at 1x
    den, _ = load_denoiser(str(tmp_path / "model"))
    assert set(den.net.cfg.pruned) == set(method.pruned_layers)
