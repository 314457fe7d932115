"""Any-size sampling (samplers/tiled.py): tile layout, fusion weights, and the fused prediction against
hand computations and a denoiser whose answer does not depend on the tiling."""
import torch

from fewstep.noise.edm import EDM
from fewstep.samplers.generate import SamplingSpec, generate
from fewstep.samplers.tiled import Tiled, ramp, tile_starts


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
