"""LoRA students through peft: low-rank adapters on a network's linear/conv layers, the rest frozen.

The adapter settings are stored in the network's config (``arch['lora']``) so a saved LoRA student
rebuilds with the same adapters before its weights load (model_io.py).
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager

from torch import nn

# What LCM-LoRA / DMD2-LoRA adapt in an SD UNet (diffusers examples): attention projections,
# feed-forward, and the ResNet convolutions and time projections.
DIFFUSERS_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                     "conv1", "conv2", "conv_shortcut", "time_emb_proj"]


def _inner(net: nn.Module) -> nn.Module:
    """The module peft adapts: the wrapped diffusers model for adapters, else the net itself."""
    return getattr(net, "unet", None) or getattr(net, "transformer", None) or net


def default_targets(net: nn.Module) -> list[str]:
    inner = _inner(net)
    names = [n for n, m in inner.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    # a target matches a module whose dotted name ends with it ("to_out.0" must not match an MLP's "0")
    targets = [t for t in DIFFUSERS_TARGETS if any(n == t or n.endswith("." + t) for n in names)]
    if not targets:  # fewstep's own architectures, by full name (peft matches name suffixes, and an MLP's "0"
        # would also hit the activations of other blocks): every linear layer, and, as in an SD UNet, the
        # convolutions of the residual and attention blocks (the UNet's attention projections are 1x1
        # convolutions); the input, output and resampling convolutions stay as they are, as SD's do
        from .unet import Attention, ResBlock

        block_convs = {f"{p}.{c}" if p else c for p, m in inner.named_modules() if isinstance(m, (ResBlock, Attention))
                       for c, sub in m.named_children() if isinstance(sub, nn.Conv2d)}
        targets = sorted({n for n, m in inner.named_modules() if isinstance(m, nn.Linear)} | block_convs)
    return targets


def add_lora(net: nn.Module, rank: int, alpha: float | None = None, targets: list | None = None,
             names: list[str] | None = None) -> nn.Module:
    """Inject LoRA adapters (B = 0 at the start, so the output is unchanged) and freeze everything else.
    ``names`` gives several independent adapters on the same layers (peft's named adapters; one trains per
    phase in Phased DMD), of which ``use_adapter`` picks the one a call runs with; None is peft's one
    ``default`` adapter."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise ImportError("LoRA students need peft: pip install 'fewstep[diffusers]'") from None
    if names is not None and (not names or len(set(names)) != len(names)):
        raise ValueError(f"LoRA adapter names must be distinct and at least one, got {names}")
    targets = list(targets or default_targets(net))
    alpha = float(alpha or rank)
    for name in names or ["default"]:
        with warnings.catch_warnings():  # peft warns on every adapter after the first, which is the intent here
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets), _inner(net),
                                    adapter_name=name)
    for name, p in net.named_parameters():
        p.requires_grad_("lora_" in name)  # every adapter trains (peft would freeze all but the active one)
    net.lora_config = {"lora": {"rank": rank, "alpha": alpha, "targets": targets, **({"names": list(names)} if names else {})}}
    return net


def lora_state_dict(net: nn.Module, name: str = "default") -> dict:
    """One adapter's weights alone (``name``: one of ``add_lora``'s names), in peft's naming relative to the
    adapted module, without the adapter's name."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(_inner(net), adapter_name=name)


def _tuner_layers(net: nn.Module) -> list:
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # without peft no network can carry adapters
        return []

    return [m for m in _inner(getattr(net, "module", net)).modules() if isinstance(m, BaseTunerLayer)]


def has_adapters(net: nn.Module) -> bool:
    return bool(_tuner_layers(net))


def set_adapters(net: nn.Module, enabled: bool) -> None:
    """Switch every LoRA adapter of ``net`` on or off (their ``requires_grad`` untouched)."""
    layers = _tuner_layers(net)
    if not layers:
        raise ValueError("the network has no LoRA adapters to switch")
    for m in layers:
        m._disable_adapters = not enabled


@contextmanager
def adapters(net: nn.Module, enabled: bool):
    """Run with every LoRA adapter of ``net`` switched on or off, then restore each layer's state.
    peft's ``enable_adapters`` would also flip the adapters' ``requires_grad`` (freezing them whenever
    they are off), so only its on/off flag is toggled here; tests/test_vsd.py checks the switch changes
    the output, so a peft that renames the flag fails there rather than silently."""
    layers = _tuner_layers(net)
    before = [m._disable_adapters for m in layers]
    set_adapters(net, enabled)
    try:
        yield net
    finally:
        for m, b in zip(layers, before):
            m._disable_adapters = b


@contextmanager
def use_adapter(net: nn.Module, name: str):
    """Run with the named adapter of ``net`` (one of ``add_lora``'s ``names``) as the only active one, then
    restore each layer's. Only peft's active-adapter field is set: its ``set_adapter`` would also freeze every
    other adapter, while all of them train (tests/test_dmd_phases.py checks that the switch changes the output)."""
    layers = _tuner_layers(net)
    if not layers:
        raise ValueError("the network has no LoRA adapters to switch")
    if any(name not in m.lora_A for m in layers):
        raise ValueError(f"the network has no LoRA adapter named {name!r}")
    before = [m._active_adapter for m in layers]
    for m in layers:
        m._active_adapter = name
    try:
        yield net
    finally:
        for m, b in zip(layers, before):
            m._active_adapter = b
