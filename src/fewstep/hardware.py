"""What this machine does fast. bf16 autocast pays off only where the hardware computes in bf16:
CUDA GPUs that support it, and CPUs with bf16 instructions (AVX512-BF16, AMX, Arm BF16). Elsewhere
torch emulates bf16 convolutions: on an AVX2-only CPU a small UNet's forward pass measured 20x slower
in bf16 than in fp32 (docs/notes.md). A bf16 request on such a device runs in fp32, said once."""
from __future__ import annotations

import functools
import sys

import torch

CPU_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 AVX512-BF16 / AMX, Arm BF16 (/proc/cpuinfo)


@functools.lru_cache(maxsize=None)
def _cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = {w for line in f if line.startswith(("flags", "Features")) for w in line.split(":", 1)[1].split()}
    except OSError:
        return False
    return bool(flags & CPU_BF16_FLAGS)


def native_bf16(device: torch.device | str = "cpu") -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and _cpu_has_bf16()


_warned: set[str] = set()


def use_bf16(requested: bool, device: torch.device | str = "cpu") -> bool:
    """``requested`` where the device computes bf16 natively; otherwise False, with a one-time note."""
    if not requested:
        return False
    if native_bf16(device):
        return True
    kind = torch.device(device).type
    if kind not in _warned:
        _warned.add(kind)
        print(f"note: no native bf16 on this {kind}; running fp32 instead of bf16 autocast (it would be slower)",
              file=sys.stderr)
    return False
