"""Feature caching between sampling steps (nets/cache.py): interval 1 is bitwise the plain network,
cached calls skip the parts they say they skip, caches never leak into the next batch, and the CLI
takes --cache."""
import json

import pytest
import torch

from fewstep.cli import main
from fewstep.model_io import build_denoiser, save_denoiser
from fewstep.nets.cache import CacheSpec, cache_counts, parse_cache, with_cache
from fewstep.samplers import SamplingSpec, generate


def tiny_unet(seed=0):
    torch.manual_seed(seed)
    den = build_denoiser({"arch": {"arch": "unet", "in_channels": 1, "image_size": 28, "channels": 8,
                                   "ch_mult": [1, 2], "num_res_blocks": 1, "attn_levels": [1], "num_classes": 10,
                                   "time_scale": 1000.0},
                          "process": {"family": "edm"}, "param": "edm"})
    with torch.no_grad():  # the output conv starts at zero; give it weights so every part shows in the output
        for p in den.net.out.parameters():
            p.normal_(0, 0.1)
    return den.eval()


def _sample(den, spec, labels, seed=0):
    return generate(den, labels.shape[0], spec, (1, 28, 28), labels, seed=seed, batch=labels.shape[0])


@pytest.mark.parametrize("cache", ["deepcache:1", "deepcache:1:2", "faster:1"])
def test_interval_one_is_bitwise_the_plain_network(cache):
    den, labels = tiny_unet(), torch.arange(6) % 10
    spec = SamplingSpec("heun", 7, "karras", 1.5)  # two calls per step and a guided (doubled) batch
    assert torch.equal(_sample(with_cache(den, parse_cache(cache)), spec, labels), _sample(den, spec, labels))


@pytest.mark.parametrize("cache", ["deepcache:3", "faster:3", "faster:0,1,4"])
def test_cached_calls_reuse_features_and_stay_close(cache):
    den, labels = tiny_unet(), torch.arange(6) % 10
    spec = SamplingSpec("euler", 8, "karras")
    cached = with_cache(den, parse_cache(cache))
    plain, fast = _sample(den, spec, labels), _sample(cached, spec, labels)
    full, reused = cache_counts(cached)
    assert full + reused == 8 and full == (3 if cache != "faster:0,1,4" else 3) and reused == 5
    assert not torch.equal(plain, fast) and torch.isfinite(fast).all()
    assert (fast - plain).abs().mean() < 0.5 * plain.abs().mean()


def test_a_cached_call_on_the_same_input_returns_the_full_output():
    """With the same input and level as the last full call, the reused features are exactly the ones
    the full call would compute, so the output is the full network's."""
    for cache in ("deepcache:5", "deepcache:5:3", "faster:5"):
        net = tiny_unet().net
        cached = with_cache(tiny_unet(), parse_cache(cache)).net
        x, c, y = torch.randn(3, 1, 28, 28), torch.full((3,), 0.3), torch.tensor([1, 2, 3])
        with torch.no_grad():
            ref = net(x, c, y)
            assert torch.equal(cached(x, c, y), ref)  # full
            assert torch.allclose(cached(x, c, y), ref, atol=1e-6)  # reused
        assert (cached.full_calls, cached.cached_calls) == (1, 1)


def test_cached_calls_skip_the_deep_network():
    den = tiny_unet()
    calls = {"mid": 0, "down": 0}
    den.net.mid1.register_forward_hook(lambda *a: calls.__setitem__("mid", calls["mid"] + 1))
    den.net.down[0][0].register_forward_hook(lambda *a: calls.__setitem__("down", calls["down"] + 1))
    spec = SamplingSpec("euler", 6, "karras")
    _sample(with_cache(den, parse_cache("deepcache:3")), spec, torch.arange(4))
    assert calls == {"mid": 2, "down": 2}  # depth 1: the cached calls run only the input conv and the last up block
    calls.update(mid=0, down=0)
    _sample(with_cache(den, parse_cache("faster:3")), spec, torch.arange(4))
    assert calls == {"mid": 2, "down": 2}  # encoder and bottleneck reused, decoder runs every call


def test_a_new_batch_starts_with_a_full_call():
    den = with_cache(tiny_unet(), parse_cache("deepcache:4"))
    spec = SamplingSpec("euler", 6, "karras")
    generate(den, 8, spec, (1, 28, 28), torch.arange(8) % 10, seed=0, batch=4)  # two batches of 4
    assert cache_counts(den) == (4, 8)  # calls 0 and 4 of each batch are full
    first = _sample(with_cache(tiny_unet(), parse_cache("deepcache:4")), spec, torch.arange(4))
    again = with_cache(tiny_unet(), parse_cache("deepcache:4"))
    _sample(again, spec, torch.arange(4) + 4, seed=3)
    assert torch.equal(_sample(again, spec, torch.arange(4)), first)  # nothing carried over from the last batch


def test_cache_specs_and_errors():
    assert parse_cache("deepcache:3") == CacheSpec("deepcache", interval=3)
    assert parse_cache("deepcache:3:2") == CacheSpec("deepcache", interval=3, depth=2)
    assert parse_cache("faster:0,2,5").keys == (0, 2, 5) and parse_cache(None) is None
    for bad in ("deepcache:0", "faster:1,2", "nocache:2", "deepcache:a", "faster:2:3"):
        with pytest.raises(ValueError):
            parse_cache(bad)
    with pytest.raises(ValueError, match="depth"):
        with_cache(tiny_unet(), parse_cache("deepcache:2:9"))
    mlp = build_denoiser({"arch": {"arch": "mlp", "dim": 2, "hidden": 8, "depth": 1}, "process": {"family": "edm"},
                          "param": "edm"})
    with pytest.raises(ValueError, match="fewstep's UNet"):
        with_cache(mlp, parse_cache("deepcache:2"))


def test_eval_and_sample_take_cache(tmp_path, capsys):
    model = save_denoiser(tiny_unet(), tmp_path / "m", {"data": {"name": "mnist", "shape": [1, 28, 28], "num_classes": 10},
                                                        "sampling": {"sampler": "euler", "steps": 6, "grid": "karras"}})
    assert main(["eval", "--model", str(model), "--n", "100", "--cache", "deepcache:3"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["cache"] == "deepcache:3" and res["macs"] > 0 and res["params"] > 0
    from fewstep.metrics.speed import macs_per_image

    spec = SamplingSpec("euler", 6, "karras")
    macs = {c: macs_per_image(lambda b: _sample(with_cache(tiny_unet(), parse_cache(c)), spec, torch.arange(b)))  # noqa: B023
            for c in (None, "deepcache:3")}
    assert macs["deepcache:3"] == pytest.approx(res["macs"]) and macs[None] > macs["deepcache:3"]  # fewer MACs measured
    assert main(["sample", "--model", str(model), "--n", "4", "--cache", "faster:2", "--out", str(tmp_path / "g.png")]) == 0
    assert main(["sample", "--model", str(model), "--cache", "deepcache:0"]) == 2


def test_bench_measures_each_cache_mode_and_retimes_without_touching_fd(tmp_path, capsys):
    model = save_denoiser(tiny_unet(), tmp_path / "m", {"data": {"name": "mnist", "shape": [1, 28, 28], "num_classes": 10},
                                                        "sampling": {"sampler": "euler", "steps": 6, "grid": "karras"}})
    results = tmp_path / "results"
    argv = ["bench", "--model", str(model), "--name", "c", "--samplers", "euler", "--nfe", "12", "--seeds", "1",
            "--n", "100", "--results-dir", str(results), "--no-bf16", "--cache", "none", "--cache", "deepcache:2"]
    assert main(argv) == 0
    res = json.loads((results / "c.json").read_text())
    rows = {r["cache"]: r for r in res["rows"]}
    assert set(rows) == {None, "deepcache:2"}
    assert all(r["params"] > 0 and r["images_per_s_timed"] for r in rows.values())  # every row of a cache sweep is timed
    assert rows["deepcache:2"]["macs"] < rows[None]["macs"]
    table = (results / "c.md").read_text()
    assert "euler + deepcache:2" in table and "GMACs/image" in table
    capsys.readouterr()
    for r in res["rows"]:  # and as if written before MACs were counted: a resumed file gets them
        r.pop("macs")
    (results / "c.json").write_text(json.dumps(res))
    assert main(argv + ["--retime"]) == 0
    again = json.loads((results / "c.json").read_text())
    assert [r["fd"] for r in again["rows"]] == [r["fd"] for r in res["rows"]]  # FD carried over, not recomputed
    assert again["resumed"][-1]["retime"] and again["command"] == res["command"] and again["bench_s"] == res["bench_s"]
    assert all(r["macs"] > 0 for r in again["rows"])
    assert main([a if a != "12" else "4" for a in argv] + ["--retime"]) == 1  # another sweep: nothing to retime


@pytest.mark.parametrize("cache", ["deepcache:1", "faster:1"])
def test_a_block_removed_student_caches_like_any_unet(cache):
    """BK-SDM-Small of a UNet with one encoder block per stage: the shallowest decoder block takes the
    first block's skip, not the input conv's, so deepcache's shallow branch needs more encoder than its
    depth; interval 1 is still bitwise the plain student, and interval 2 skips calls."""
    from fewstep.nets.surgery import remove_blocks

    den = tiny_unet()
    student = den.like(remove_blocks(den.net, "small")).eval()
    assert student.net.shallow_branch(1)[1] == 2  # the skip of the first encoder block
    labels, spec = torch.arange(6) % 10, SamplingSpec("euler", 6, "karras")
    assert torch.equal(_sample(with_cache(student, parse_cache(cache)), spec, labels), _sample(student, spec, labels))
    cached = with_cache(student, parse_cache(cache.split(":")[0] + ":2"))
    _sample(cached, spec, labels)
    assert cache_counts(cached) == (3, 3)


# -- DisCa: the learned cache (methods/compress/disca.py) --------------------------------------------
def _disca(den, interval=2, **cfg):
    from fewstep.config import build_config
    from fewstep.methods.compress.disca import DisCa

    return DisCa(den, build_config(DisCa.Config, {"interval": interval, "trajectories": 16, "more_nfe": [], **cfg}),
                 shape=(1, 28, 28), num_classes=10)


def test_an_untrained_disca_predictor_is_deepcache_exactly():
    """The predictor's correction starts at zero, so before training the learned cache is DeepCache."""
    den, labels, spec = tiny_unet(), torch.arange(6) % 10, SamplingSpec("euler", 8, "karras")
    method = _disca(den, interval=3)
    untrained = method.generator()
    assert torch.equal(_sample(untrained, spec, labels), _sample(with_cache(den, parse_cache("deepcache:3")), spec, labels))
    assert cache_counts(untrained) == (3, 5)


def test_disca_x0_weighting_is_c_out_squared_at_each_recorded_call():
    """out_space="x0" weighs a cached call's output error by (d x0 / dF)^2: for EDM c_out^2 =
    (sigma sd)^2 / (sigma^2 + sd^2) at the level the teacher's trajectory visited at that call (Euler,
    8 steps: the grid's first 8 levels); "raw" weighs every call 1. output_scale for an eps-parameterised
    VP denoiser is -sigma/alpha."""
    from fewstep.noise import process_from_config
    from fewstep.noise.precond import Denoiser
    from fewstep.samplers import make_grid

    den = tiny_unet()
    method = _disca(den, out_space="x0", nfe=8, trajectories=2)
    method.prepare(None)
    levels = make_grid("karras", den.process, 8)[:-1]  # EDM: time = sigma
    sd = den.sigma_data
    c_out = levels * sd / torch.sqrt(levels ** 2 + sd * sd)
    idx = torch.arange(16)  # trajectory-major: 2 trajectories x 8 calls
    assert torch.allclose(method.out_weights(idx, "cpu").double(), (c_out ** 2).repeat(2), rtol=1e-5)
    assert torch.equal(_disca(den).out_weights(idx, "cpu"), torch.ones(16))
    vp = Denoiser(den.net, process_from_config({"family": "vp_continuous"}), "eps")
    t = torch.tensor([0.3, 0.9], dtype=torch.float64)
    a, s = vp.process.alpha(t), vp.process.sigma(t)
    assert torch.allclose(vp.output_scale(t).double(), -s / a, rtol=1e-5)
    with pytest.raises(ValueError, match="out_space"):
        _disca(den, out_space="eps")


def test_disca_learns_to_beat_deepcache_and_its_folder_is_the_cache(tmp_path):
    """30 steps on the shipped teacher's own trajectories: the predicted output's error at cached calls
    falls well below DeepCache's on held-out pairs (the control: 1.0 untrained; measured ~0.4 after 30
    steps), the teacher does not move, and the saved folder samples like ``--cache disca:FOLDER`` on the
    teacher; a predictor trained for another network, or a folder without one, is refused."""
    from fewstep.data import load_dataset
    from fewstep.model_io import load_denoiser
    from fewstep.train.loop import TrainConfig, Trainer

    den = load_denoiser("mnist")[0]
    torch.manual_seed(0)
    method = _disca(den)
    method.prepare(None)
    g = torch.Generator().manual_seed(5)
    held = method.bank["pairs"][torch.randint(len(method.bank["pairs"]), (64,), generator=g)]

    def ratio():
        net, start, si = den.net, method.cached.start, method.cached.skip_index
        with torch.no_grad():
            h_c, hs_c, emb_c = method.targets(*method._calls(held[:, 0], "cpu"))
            h, hs, emb = method.targets(*method._calls(held[:, 1], "cpu"))
            out = net.decode(h, hs, emb, start=start)
            reuse = net.decode(h_c, hs, emb, start=start)
            pred = net.decode(method.predictor(h_c, hs_c[si], hs[si], emb_c, emb), hs, emb, start=start)
        return float((pred - out).pow(2).mean() / (reuse - out).pow(2).mean())

    teacher_before = {k: v.clone() for k, v in den.net.state_dict().items()}
    assert ratio() == pytest.approx(1.0)
    Trainer(method, load_dataset("mnist", "train").subset(256),
            TrainConfig(out=str(tmp_path / "run"), max_iters=30, batch_size=32, ema_decay=0.0, progress=False,
                        grad_clip=0.0, eval_every=0, ckpt_every=0), {"method": "disca"}).train()
    assert ratio() < 0.7
    assert all(torch.equal(v, method.teacher.net.state_dict()[k]) for k, v in teacher_before.items())
    model, cfg = load_denoiser(str(tmp_path / "run" / "model"))
    assert cfg["arch"]["arch"] == "disca" and cfg["arch"]["interval"] == 2
    labels, spec = torch.arange(6) % 10, SamplingSpec("euler", 8, "karras")
    via_flag = with_cache(den, parse_cache(f"disca:{tmp_path / 'run'}"))
    assert torch.equal(_sample(model, spec, labels), _sample(via_flag, spec, labels))
    assert not torch.equal(_sample(model, spec, labels), _sample(with_cache(den, parse_cache("deepcache:2")), spec, labels))
    with pytest.raises(ValueError, match="already cached"):
        with_cache(model, parse_cache("deepcache:2"))
    with pytest.raises(ValueError, match="another network"):
        with_cache(tiny_unet(), parse_cache(f"disca:{tmp_path / 'run'}"))
    plain = save_denoiser(tiny_unet(), tmp_path / "plain")
    with pytest.raises(ValueError, match="not a DisCa model"):
        with_cache(tiny_unet(), parse_cache(f"disca:{plain}"))
    with pytest.raises(ValueError, match="disca:PATH"):
        parse_cache("disca:")
