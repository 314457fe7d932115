"""A LoRA student shares the teacher's weights instead of copying them (nets/sharing.py): the student's
base, its EMA and a consistency target hold the teacher's own tensors, the teacher stays bitwise the
teacher, and only the adapters exist more than once."""
import copy

import pytest
import torch

from fewstep.methods.base import LoRAConfig, frozen, frozen_copy, trainable_copy
from fewstep.nets.ema import EMA
from fewstep.nets.lora import adapters, has_adapters
from fewstep.nets.sharing import copy_sharing_frozen, unique_bytes

from helpers import config, toy_denoiser, train_student

pytest.importorskip("peft")

LORA = LoRAConfig(rank=4)


def _nudge_adapters(net, seed=1):
    """Adapters away from their zero start (B = 0), so the student differs from the teacher."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))


def _ptrs(net):
    return {p.data_ptr() for p in net.parameters()}


def test_a_lora_student_holds_the_teachers_tensors_and_adapters_off_is_the_teacher_bitwise():
    teacher = toy_denoiser(0).eval().requires_grad_(False)
    x, t, y = torch.randn(8, 2), torch.full((8,), 1.3), torch.arange(8) % 8
    before = teacher(x, t, y)
    student = trainable_copy(teacher, LORA)
    base = [p for n, p in student.net.named_parameters() if "lora_" not in n]
    assert {p.data_ptr() for p in base} == _ptrs(teacher.net)  # no second copy of any base weight
    assert all(not p.requires_grad for p in base)
    assert not has_adapters(teacher.net) and has_adapters(student.net)  # the teacher's modules stay plain
    _nudge_adapters(student.net)
    assert not torch.equal(student(x, t, y), before)
    with adapters(student.net, False):
        assert torch.equal(student(x, t, y), before)
    assert torch.equal(teacher(x, t, y), before)


def test_training_a_lora_student_leaves_the_teacher_unchanged_and_its_memory_is_one_base(tmp_path):
    """LCM-LoRA keeps teacher, student, consistency target and EMA: four networks, one set of base weights."""
    from fewstep.methods.consistency.lcm import LatentConsistency as LCM
    from fewstep.methods.consistency.lcm import LCMConfig

    teacher = toy_denoiser(0)
    ref = copy.deepcopy(teacher).eval()
    x, t, y = torch.randn(8, 2), torch.full((8,), 0.7), torch.arange(8) % 8
    m = LCM(teacher, config(LCMConfig, lr=1e-3, lora={"rank": 4}, w_dim=0, num_scales=10), shape=(2,), num_classes=8)
    gen = train_student(m, tmp_path, iters=6, batch_size=32)
    assert torch.equal(m.teacher(x, t, y), ref(x, t, y))  # six updates of the adapters, teacher bitwise the same
    assert not torch.equal(gen(x, t, y), ref(x, t, y))  # the trained (EMA) student moved
    base = unique_bytes(teacher.net)
    nets = [m.teacher.net, m.student.net, m.target.net, gen.net]
    held = unique_bytes(*nets)
    copied = sum(unique_bytes(n) for n in nets)  # what four separate copies would hold
    adapters_bytes = sum(p.numel() * p.element_size() for n, p in m.student.net.named_parameters() if "lora_" in n)
    assert held == base + 3 * adapters_bytes  # student, target and EMA each own their adapters, nothing else
    assert copied > 3.5 * base


def test_ema_and_target_of_a_lora_student_average_the_adapters_only():
    teacher = toy_denoiser(0).eval().requires_grad_(False)
    student = trainable_copy(teacher, LORA)
    ema = EMA(student.net, 0.5, warmup=False)
    target = frozen_copy(student)
    for copy_ in (ema.net, target.net):
        shared = {p.data_ptr() for n, p in copy_.named_parameters() if "lora_" not in n}
        own = {p.data_ptr() for n, p in copy_.named_parameters() if "lora_" in n}
        assert shared == _ptrs(teacher.net) and not own & _ptrs(student.net)
    ema_before = {n: p.clone() for n, p in ema.net.named_parameters()}
    _nudge_adapters(student.net)
    base_before = {n: p.clone() for n, p in teacher.net.named_parameters()}
    ema.update(student.net)
    lora = [(n, e, p) for (n, e), p in zip(ema.net.named_parameters(), student.net.parameters()) if "lora_" in n]
    assert lora and all(torch.allclose(e, 0.5 * (ema_before[n] + p)) for n, e, p in lora)  # decay 0.5
    assert all(torch.equal(p, base_before[n]) for n, p in teacher.net.named_parameters())


def test_a_full_student_shares_nothing_with_its_teacher_or_ema():
    teacher = toy_denoiser(0).eval().requires_grad_(False)
    student = trainable_copy(teacher)
    ema = EMA(student.net, 0.9)
    assert not _ptrs(student.net) & _ptrs(teacher.net)
    assert not _ptrs(ema.net) & _ptrs(student.net)
    assert unique_bytes(teacher.net, student.net, ema.net) == 3 * unique_bytes(teacher.net)


def test_copy_sharing_frozen_copies_only_what_trains():
    net = toy_denoiser(0).net
    first = next(net.parameters())
    first.requires_grad_(False)
    twin = copy_sharing_frozen(net)
    assert next(twin.parameters()) is first
    assert not ({p.data_ptr() for p in list(twin.parameters())[1:]} & {p.data_ptr() for p in list(net.parameters())[1:]})


def test_frozen_restores_each_parameters_own_flag():
    net = toy_denoiser(0).net
    params = list(net.parameters())
    params[0].requires_grad_(False)
    with frozen(net):
        assert not any(p.requires_grad for p in params)
    assert [p.requires_grad for p in params] == [False] + [True] * (len(params) - 1)
    with pytest.raises(RuntimeError), frozen(net):
        raise RuntimeError("restored on errors too")
    assert [p.requires_grad for p in params] == [False] + [True] * (len(params) - 1)


def test_default_lora_targets_of_the_unet_are_its_block_convolutions_and_linears_as_in_sd():
    """On fewstep's UNet the default adapters cover what SD's do: the residual blocks' convolutions and
    time projections, the attention projections (1x1 convolutions here) and the time embedding, not the
    input, output or resampling convolutions; adapters at zero leave the output unchanged."""
    from fewstep.model_io import load_denoiser
    from fewstep.nets.lora import add_lora, default_targets

    den, _ = load_denoiser("mnist")
    targets = set(default_targets(den.net))
    assert {"mid1.c1", "mid1.c2", "mid1.emb", "up.0.0.skip", "mid_attn.qkv", "mid_attn.out", "embed.time_mlp.0"} <= targets
    assert not targets & {"inp", "down.1", "down.3", "out.2"}
    x, t, y = torch.randn(2, 1, 28, 28), torch.tensor([0.5, 2.0]), torch.tensor([3, 7])
    with torch.no_grad():
        ref = den(x, t, y)
        add_lora(den.net, 4)
        assert torch.allclose(den(x, t, y), ref, atol=1e-6)
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in den.net.named_parameters() if ".lora_A." in n}
    assert adapted == targets
