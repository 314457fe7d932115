"""Block removal on fewstep's UNet: the smaller architectures of BK-SDM (Kim et al. 2023, Sec. 3.1),
initialised from the teacher's weights (docs/methods.md section 11).

BK-SDM removes, from every stage, one residual+attention pair: SD-v1's encoder stages keep one of
two, its decoder stages two of three (*Base*); *Small* also removes the middle block; *Tiny* also
the innermost stage (its encoder and decoder blocks, and the downsampling into it). Every kept block
starts as a teacher block of the same width: an encoder stage loses its last block (its first changes
the width, so it stays), a decoder stage its second (the first takes the deeper stage's features and
the last the stage's entry skip, so those stay), and the student's decoder then pairs with the kept
skips as an ordinary UNet does. An encoder stage with a single block keeps it (removing it would
change the stage's width); its decoder stage still loses one block, and the stage's entry skip goes
unused (nets/unet.py pairs skips per level).

``copy_by_position`` maps names between two UNets by what each block is (``("res", level, k)``,
``("down"/"up", level)``), not by its index in the module list, and refuses any shape that differs.
The SD-scale version of the same removal, on diffusers' UNet2DConditionModel, is BK-SDM's released
models' architecture; this module covers fewstep's own UNet.
"""
from __future__ import annotations

import re
from dataclasses import replace

import torch
from torch import nn

from .unet import UNet, UNetConfig

VARIANTS = ("base", "small", "tiny")


def bk_sdm_config(cfg: UNetConfig, variant: str) -> UNetConfig:
    """The BK-SDM student architecture of ``variant`` for a teacher of architecture ``cfg``."""
    if variant not in VARIANTS:
        raise ValueError(f"BK-SDM variant must be one of {VARIANTS}, got {variant!r}")
    downs, ups = cfg.level_blocks()
    downs = tuple(d - 1 if d >= 2 else d for d in downs)
    ups = tuple(max(u - 1, 1) for u in ups)
    ch_mult, attn = cfg.ch_mult, cfg.attn_levels
    if variant == "tiny":
        if len(ch_mult) < 2:
            raise ValueError("BK-SDM-Tiny removes the innermost stage; this UNet has only one")
        ch_mult, downs, ups = ch_mult[:-1], downs[:-1], ups[:-1]
        attn = tuple(a for a in attn if a < len(ch_mult))
        ups = tuple(min(u, d + 1) for d, u in zip(downs, ups))
    return replace(cfg, ch_mult=ch_mult, attn_levels=attn, down_blocks=downs, up_blocks=ups,
                   mid_block=variant == "base" and cfg.mid_block)


def koala_config(cfg: UNetConfig, keep_levels: int = 1) -> UNetConfig:
    """KOALA's cut (Lee et al. 2023, Sec. 3.1) on fewstep's UNet: the depth goes from the deep stages only.
    The first ``keep_levels`` stages (the high-resolution ones, cheap in weights) keep every block; deeper
    stages lose one residual(+attention) pair per stage as BK-SDM's do, and the middle block goes
    (KOALA-700M). Kept blocks start from the teacher's as in BK-SDM (``copy_by_position``)."""
    if not 0 <= keep_levels < len(cfg.ch_mult):
        raise ValueError(f"keep_levels must be in [0, {len(cfg.ch_mult) - 1}] for this UNet, got {keep_levels}")
    downs, ups = cfg.level_blocks()
    downs = tuple(d if lvl < keep_levels or d < 2 else d - 1 for lvl, d in enumerate(downs))
    ups = tuple(u if lvl < keep_levels else max(u - 1, 1) for lvl, u in enumerate(ups))
    return replace(cfg, down_blocks=downs, up_blocks=ups, mid_block=False)


def rebuild(teacher: nn.Module, cfg: UNetConfig) -> UNet:
    """A UNet of architecture ``cfg`` whose every weight starts from ``teacher``'s block of the same position."""
    if not isinstance(teacher, UNet):
        raise ValueError(f"block removal works on fewstep's UNet; got {type(teacher).__name__}")
    student = UNet(cfg)
    with torch.no_grad():
        copy_by_position(student, teacher)
    return student


def kept_blocks(part: str, teacher_count: int, student_count: int) -> list[int]:
    """The teacher's blocks (indices within a stage) the student's blocks of that stage start from:
    an encoder stage keeps its first ones, a decoder stage its first and its last ones (BK-SDM)."""
    if not 0 <= student_count <= teacher_count:
        raise ValueError(f"a {part} stage of {student_count} blocks cannot come from one of {teacher_count}")
    if part == "down" or student_count == 0:
        return list(range(student_count))
    return [0] + list(range(teacher_count - student_count + 1, teacher_count))


def _position_map(student: UNet, teacher: UNet, part: str) -> dict[str, str]:
    which = 0 if part == "down" else 1
    t_counts, s_counts = teacher.cfg.level_blocks()[which], student.cfg.level_blocks()[which]
    t_pos = teacher.down_pos if part == "down" else teacher.up_pos
    out = {}
    for i, pos in enumerate(student.down_pos if part == "down" else student.up_pos):
        if pos[0] == "res":
            lvl = pos[1]
            pos = ("res", lvl, kept_blocks(part, t_counts[lvl], s_counts[lvl])[pos[2]])
        if pos not in t_pos:
            raise ValueError(f"the teacher has no {part} block {pos} to copy")
        out[f"{part}.{i}."] = f"{part}.{t_pos.index(pos)}."
    return out


def teacher_names(student: UNet, teacher: UNet) -> dict[str, str]:
    """Student parameter/buffer name -> the teacher's name for the weight it starts from."""
    prefixes = {**_position_map(student, teacher, "down"), **_position_map(student, teacher, "up")}
    names = {}
    for name in student.state_dict():
        m = re.match(r"(down|up)\.(\d+)\.", name)
        names[name] = prefixes[m.group(0)] + name[m.end():] if m else name
    return names


def copy_by_position(student: UNet, teacher: UNet) -> dict[str, str]:
    """Load every student weight from the teacher's weight of the same block; returns the name map.
    Any weight the teacher lacks or holds in another shape is an error (nothing is initialised at random)."""
    names = teacher_names(student, teacher)
    src = teacher.state_dict()
    state = {}
    for s_name, t_name in names.items():
        if t_name not in src:
            raise ValueError(f"the teacher has no weight {t_name} for the student's {s_name}")
        if src[t_name].shape != student.state_dict()[s_name].shape:
            raise ValueError(f"{s_name} has shape {tuple(student.state_dict()[s_name].shape)} but the teacher's "
                             f"{t_name} has {tuple(src[t_name].shape)}: this removal changes a stage's width")
        state[s_name] = src[t_name]
    student.load_state_dict(state, strict=True)
    return names


def remove_blocks(teacher: nn.Module, variant: str) -> nn.Module:
    """A BK-SDM student of ``variant`` built from ``teacher`` (a fewstep UNet, or a diffusers UNet behind
    its adapter) and initialised from it."""
    if hasattr(teacher, "unet"):  # nets/adapters/diffusers.py DiffusersUNet
        from .adapters.diffusers import DiffusersUNet

        with torch.no_grad():
            return DiffusersUNet(remove_blocks_diffusers(teacher.unet, variant))
    if not isinstance(teacher, UNet):
        raise ValueError(f"block removal works on fewstep's UNet (or a diffusers UNet2DConditionModel through "
                         f"its adapter); got {type(teacher).__name__}")
    return rebuild(teacher, bk_sdm_config(teacher.cfg, variant))


# -- the same removal on diffusers' UNet2DConditionModel (BK-SDM's own target) ---------------------
def _per_block(value, n: int) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def bk_sdm_diffusers_config(config: dict, variant: str) -> dict:
    """The UNet2DConditionModel config of the BK-SDM student of ``variant``: one resnet(+attention) pair
    fewer per encoder stage where it has two or more (diffusers gives each decoder stage one more than its
    encoder stage, so the decoder loses one too), no mid block for small/tiny, and for tiny no innermost
    stage (its down block, the first up block and the last channel width)."""
    if variant not in VARIANTS:
        raise ValueError(f"BK-SDM variant must be one of {VARIANTS}, got {variant!r}")
    cfg = {k: v for k, v in dict(config).items() if not k.startswith("_")}
    n = len(cfg["down_block_types"])
    layers = [n_l - 1 if n_l >= 2 else n_l for n_l in _per_block(cfg["layers_per_block"], n)]
    if variant != "base":
        cfg["mid_block_type"] = None
    if variant == "tiny":
        if n < 2:
            raise ValueError("BK-SDM-Tiny removes the innermost stage; this UNet has only one")
        for key in ("down_block_types", "block_out_channels"):
            cfg[key] = list(cfg[key])[:-1]
        cfg["up_block_types"] = list(cfg["up_block_types"])[1:]
        for key in ("attention_head_dim", "num_attention_heads", "only_cross_attention", "transformer_layers_per_block",
                    "cross_attention_dim"):  # per-block lists lose the innermost stage's entry
            if isinstance(cfg.get(key), (list, tuple)) and len(cfg[key]) == n:
                cfg[key] = list(cfg[key])[:-1]
        layers = layers[:-1]
    cfg["layers_per_block"] = layers[0] if len(set(layers)) == 1 else layers
    return cfg


def diffusers_teacher_name(name: str, teacher_cfg: dict, student_cfg: dict) -> str:
    """The teacher's weight a student UNet2DConditionModel weight starts from."""
    n_t, n_s = len(teacher_cfg["down_block_types"]), len(student_cfg["down_block_types"])
    t_layers, s_layers = _per_block(teacher_cfg["layers_per_block"], n_t), _per_block(student_cfg["layers_per_block"], n_s)
    m = re.match(r"(down|up)_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.", name)
    if m:
        part, i, kind, k = m.group(1), int(m.group(2)), m.group(3), int(m.group(4))
        if part == "down":
            j, kept = i, kept_blocks("down", t_layers[i], s_layers[i])
        else:  # up block i serves the stage n_s - 1 - i, which is the teacher's up block n_t - 1 - that
            j = i + (n_t - n_s)
            kept = kept_blocks("up", t_layers[n_t - 1 - j] + 1, s_layers[n_s - 1 - i] + 1)
        return f"{part}_blocks.{j}.{kind}.{kept[k]}." + name[m.end():]
    m = re.match(r"up_blocks\.(\d+)\.", name)
    if m:
        return f"up_blocks.{int(m.group(1)) + (n_t - n_s)}." + name[m.end():]
    return name


def remove_blocks_diffusers(unet, variant: str):
    """A BK-SDM student UNet2DConditionModel of ``variant``, initialised from ``unet``'s weights."""
    from diffusers import UNet2DConditionModel

    teacher_cfg = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
    student_cfg = bk_sdm_diffusers_config(teacher_cfg, variant)
    student = UNet2DConditionModel.from_config(student_cfg)
    src, own = unet.state_dict(), student.state_dict()
    state = {}
    for name, value in own.items():
        t_name = diffusers_teacher_name(name, teacher_cfg, student_cfg)
        if t_name not in src or src[t_name].shape != value.shape:
            found = tuple(src[t_name].shape) if t_name in src else None
            raise ValueError(f"{name} {tuple(value.shape)} cannot start from the teacher's {t_name} ({found}): "
                             f"this removal changes a stage's width")
        state[name] = src[t_name]
    student.load_state_dict(state, strict=True)
    return student.to(dtype=next(unet.parameters()).dtype)
