"""Any-size sampling (samplers/tiled.py): tile layout, fusion weights, and the fused prediction against
hand computations and a denoiser whose answer does not depend on the tiling."""
import json

import pytest
import torch

from fewstep.cli import main
from fewstep.noise.edm import EDM
from fewstep.samplers.generate import SamplingSpec, generate, sigmas_for
from fewstep.samplers.tiled import Tiled, enlarge, generate_enlarged, ramp, tail_spec, tile_starts


class Pointwise(torch.nn.Module):
    """x0 = x / (1 + sigma^2) per pixel (the exact denoiser of N(0, 1) data): tiling cannot change it."""

    def __init__(self):
        super().__init__()
        self.process, self.w = EDM(), torch.nn.Parameter(torch.zeros(()))

    def raw(self, x, t, cond=None):
        s = torch.as_tensor(t, dtype=x.dtype).reshape(-1, *[1] * (x.ndim - 1))
        x0 = x / (1 + s**2)
        return x0, (x - x0) / s


class TileId(Pointwise):
    """Predicts a constant per tile: the tile's mean input (so each tile's answer is distinct)."""

    def raw(self, x, t, cond=None):
        x0 = x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x)
        return x0, x0


def test_tile_starts_cover_the_canvas_with_the_overlap():
    assert tile_starts(28, 28, 14) == [0]
    assert tile_starts(56, 28, 14) == [0, 14, 28]
    assert tile_starts(50, 28, 14) == [0, 11, 22]
    for size, tile, ov in [(57, 28, 14), (112, 28, 7), (29, 28, 4)]:
        s = tile_starts(size, tile, ov)
        assert s[0] == 0 and s[-1] == size - tile
        assert all(b - a <= tile - ov for a, b in zip(s, s[1:]))  # neighbours share at least the overlap


def test_ramp_is_a_raised_cosine_that_never_reaches_zero():
    r = ramp(12, 4)
    i = torch.arange(12) + 0.5
    expect = 0.5 - 0.5 * torch.cos(torch.pi * (torch.minimum(i, 12 - i) / 4).clamp(max=1))
    torch.testing.assert_close(r, expect)
    assert r.min() > 0 and r.max() == 1 and (r == 1).sum() == 4 and torch.equal(r, r.flip(0))


def test_native_size_is_the_denoiser_itself():
    den, x = TileId(), torch.randn(2, 1, 8, 8)
    for a, b in zip(Tiled(den, (8, 8)).raw(x, 1.0), den.raw(x, 1.0)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_pointwise_denoiser_is_unchanged_by_tiling():
    den, x = Pointwise(), torch.randn(3, 2, 20, 33)
    t = torch.tensor([0.5, 2.0, 10.0])
    for a, b in zip(Tiled(den, (8, 8), overlap=3).raw(x, t), den.raw(x, t)):
        torch.testing.assert_close(a, b)


def test_fusion_is_the_weighted_mean_of_the_tiles_by_hand():
    den, x = TileId(), torch.randn(1, 1, 4, 6)
    tiled = Tiled(den, (4, 4), overlap=2)
    x0, _ = tiled.raw(x, 1.0)
    (c0, c1) = tile_starts(6, 4, 2)
    assert (c0, c1) == (0, 2)
    w = ramp(4, 2)
    m0, m1 = x[..., 0:4].mean(), x[..., 2:6].mean()
    for col in range(6):
        a = w[col] if col < 4 else 0.0
        b = w[col - 2] if col >= 2 else 0.0
        expect = (a * m0 + b * m1) / (a + b)
        torch.testing.assert_close(x0[0, 0, :, col], expect.expand(4).float())


def test_samplers_run_on_a_larger_canvas_with_labels_and_guidance():
    from fewstep.model_io import load_denoiser

    den, _ = load_denoiser("mnist")
    out = generate(Tiled(den, (28, 28)), 2, SamplingSpec("euler", 2, "karras", cfg=1.5), (1, 56, 42), torch.tensor([3, 7]))
    assert out.shape == (2, 1, 56, 42) and torch.isfinite(out).all()


def test_the_refinement_runs_the_last_steps_of_the_models_own_grid():
    den, spec = Pointwise(), SamplingSpec("euler", 6, "karras")
    tail = tail_spec(den, spec, 2)
    full = sigmas_for(den, spec)
    assert tail.sigmas == [float(v) for v in full[-3:]] and tail.sigmas[-1] == 0 and tail.steps == 2
    for bad in (0, 6, 9):  # K must leave the grid a first step to compose with
        with pytest.raises(ValueError, match="refine steps"):
            tail_spec(den, spec, bad)


def test_enlarging_without_refinement_is_the_native_sample_enlarged_bitwise():
    den, spec = Pointwise(), SamplingSpec("euler", 3, "karras")
    big, nfe = generate_enlarged(den, 3, spec, (1, 8, 8), (16, 24), seed=5, return_nfe=True)
    native = generate(den, 3, spec, (1, 8, 8), seed=5)
    assert torch.equal(big, enlarge(native, (16, 24))) and big.shape == (3, 1, 16, 24) and nfe == 3
    assert big.abs().max() <= 1


def test_the_refinement_noises_the_enlarged_sample_and_denoises_it_by_hand():
    """One refine step with Euler from level s to 0 returns the denoiser's x0 at x = up + s z; for the exact
    denoiser of N(0, 1) data that is (up + s z) / (1 + s^2), z drawn from the seed + 1 generator."""
    den, spec = Pointwise(), SamplingSpec("euler", 4, "karras")
    big, nfe = generate_enlarged(den, 2, spec, (1, 8, 8), (16, 16), seed=3, refine_steps=1, overlap=4, return_nfe=True)
    up = enlarge(generate(den, 2, spec, (1, 8, 8), seed=3), (16, 16))
    s = tail_spec(den, spec, 1).sigmas[0]
    z = torch.randn(up.shape, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(big, (up + s * z) / (1 + s**2))
    assert nfe == 4 + 1 * 9  # the native grid, then one call on 3 x 3 tiles of the 16x16 canvas


def test_generate_from_start_images_refuses_the_wrong_shape():
    with pytest.raises(ValueError, match="start images"):
        generate(Pointwise(), 2, SamplingSpec("euler", 2), (1, 4, 4), start=torch.zeros(2, 1, 8, 8))


def test_sample_cli_enlarges_and_refines_a_canvas(tmp_path, capsys):
    out = tmp_path / "g.png"
    assert main(["sample", "--model", "mnist", "--n", "2", "--sampler", "dpmpp2m", "--grid", "flow", "--steps", "4",
                 "--width", "56", "--height", "42", "--enlarge", "1", "--out", str(out)]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["shape"] == [1, 42, 56] and rec["nfe"] == 4 + 1 * 6 and out.is_file()  # 3 x 2 tiles of 28x28


@pytest.mark.parametrize("argv,says", [(["--enlarge", "1"], "--enlarge needs --width"),
                                       (["--width", "56", "--steps", "4", "--enlarge", "4"], "refine steps")])
def test_sample_cli_refuses_an_enlargement_it_cannot_do(argv, says, capsys, tmp_path):
    assert main(["sample", "--model", "mnist", "--n", "2", "--sampler", "euler", "--out", str(tmp_path / "g.png"), *argv]) != 0
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1 and not (tmp_path / "g.png").exists()
