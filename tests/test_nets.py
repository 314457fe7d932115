import torch

from fewstep.nets import UNet, UNetConfig
from fewstep.nets.cond import NULL_LABEL, Cond, drop_cond, null_like
from fewstep.noise import EDM
from fewstep.noise.guidance import Guided, guided
from fewstep.noise.precond import Denoiser
from fewstep.samplers import CountNFE

from helpers import toy_denoiser


def _unet(**kw):
    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=1, image_size=16, channels=16, ch_mult=(1, 2), num_res_blocks=1, **kw))
    for p in net.parameters():  # zero-initialised output layers hide conditioning; randomise for the test
        torch.nn.init.normal_(p, std=0.05)
    return net


def test_unet_shapes_and_bottleneck():
    net = _unet()
    x = torch.randn(3, 1, 16, 16)
    out, mid = net(x, torch.randn(3), torch.tensor([0, 1, 2]), return_bottleneck=True)
    assert out.shape == x.shape and mid.shape == (3, 32, 8, 8)


def test_class_condition_changes_output_and_null_label_works():
    net = _unet()
    x, c = torch.randn(2, 1, 16, 16), torch.randn(2)
    a = net(x, c, torch.tensor([1, 1]))
    b = net(x, c, torch.tensor([2, 2]))
    n = net(x, c, torch.tensor([-1, -1]))
    assert not torch.allclose(a, b) and not torch.allclose(a, n)


def test_cfg_convention_scale_one_is_identity_and_two_extrapolates():
    den = Denoiser(_unet(), EDM())
    x, t, y = torch.randn(2, 1, 16, 16), torch.tensor([1.0, 2.0]), torch.tensor([3, 4])
    assert guided(den, 1.0) is den
    g = Guided(den, 2.0)
    c, u = den(x, t, y), den(x, t, null_like(y))
    assert torch.allclose(g(x, t, y), u + 2 * (c - u), atol=1e-5)
    counter = CountNFE(g)
    counter.raw(x, t, y)
    assert counter.calls == 2


def test_cond_object_for_text():
    c = Cond(text=torch.randn(4, 7, 8), pooled=torch.randn(4, 8), null_text=torch.zeros(1, 7, 8),
             null_pooled=torch.zeros(1, 8))
    n = null_like(c)
    assert n.text.shape == (4, 7, 8) and n.text.abs().sum() == 0
    d = drop_cond(c, 1.0, torch.Generator().manual_seed(0))
    assert d.text.abs().sum() == 0


def test_drop_cond_draws_on_the_generators_device_and_returns_the_conditions():
    """The trainer's generators live on the CPU; a batch on a GPU must come back on the GPU (a device
    mismatch here failed every class-conditional TwinFlow run on CUDA). The meta device stands in for it."""
    y = torch.tensor([3, 1, 4, 1], device="meta")
    out = drop_cond(y, 0.5, torch.Generator().manual_seed(0))
    assert out.device.type == "meta" and out.shape == y.shape
    cpu = drop_cond(torch.tensor([3, 1, 4, 1]), 0.5, torch.Generator().manual_seed(0))
    again = drop_cond(torch.tensor([3, 1, 4, 1]), 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(cpu, again) and (cpu == NULL_LABEL).any() and (cpu != NULL_LABEL).any()


def test_edm_precond_boundary():
    """EDM preconditioning: at sigma -> 0, c_skip -> 1 and c_out -> 0, so D(x) -> x."""
    den = toy_denoiser()
    x = torch.randn(4, 2)
    assert torch.allclose(den(x, torch.full((4,), 1e-6)), x, atol=1e-4)
