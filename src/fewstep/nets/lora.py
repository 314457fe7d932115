"""LoRA students through peft: low-rank adapters on a network's linear/conv layers, the rest frozen.

The adapter settings are stored in the network's config (``arch['lora']``) so a saved LoRA student
rebuilds with the same adapters before its weights load (model_io.py).
"""
from __future__ import annotations

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
    if not targets:  # fewstep's own architectures: every linear layer, by full name (peft matches name
        # suffixes, and an MLP's "0" would also hit the activations of other blocks)
        targets = sorted(n for n, m in inner.named_modules() if isinstance(m, nn.Linear))
    return targets


def add_lora(net: nn.Module, rank: int, alpha: float | None = None, targets: list | None = None) -> nn.Module:
    """Inject LoRA adapters (B = 0 at the start, so the output is unchanged) and freeze everything else."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise ImportError("LoRA students need peft: pip install 'fewstep[diffusers]'") from None
    targets = list(targets or default_targets(net))
    alpha = float(alpha or rank)
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets), _inner(net))
    for name, p in net.named_parameters():
        p.requires_grad_("lora_" in name)
    net.lora_config = {"lora": {"rank": rank, "alpha": alpha, "targets": targets}}
    return net


def lora_state_dict(net: nn.Module) -> dict:
    """The adapter weights alone, in peft's naming relative to the adapted module."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(_inner(net))


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
