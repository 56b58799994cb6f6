"""Devices and precision: which device to run on, whether bf16 is fast there, autocast."""
from __future__ import annotations

import contextlib
import os
from functools import lru_cache

import torch

from ..errors import BrushworkError

NHWC = torch.channels_last  # memory format of frozen feed-forward nets at inference


def pick_device(name: str | torch.device | None = None) -> torch.device:
    """``name`` if given ('cpu', 'cuda', 'cuda:1'), else CUDA when available, else CPU.
    Raises BrushworkError for an unknown device or one that is not present."""
    if isinstance(name, torch.device):
        name = str(name)
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(name, str):
        raise BrushworkError(f"device must be a string such as 'cpu' or 'cuda', got {name!r}")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BrushworkError(f"unknown device {name!r} (use cpu, cuda or cuda:N)") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise BrushworkError(f"device {name!r} is not supported (use cpu, cuda or cuda:N)")
    if not torch.cuda.is_available():
        raise BrushworkError(f"device {name!r} requested but CUDA is not available")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise BrushworkError(f"device {name!r}: there are only {torch.cuda.device_count()} "
                             f"CUDA device(s)")
    return device


def has_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast is fast here: CUDA with bf16, or a CPU with AMX (AVX512-BF16
    alone runs bf16 convolutions slower than fp32). ``BRUSHWORK_BF16=0`` in the environment
    turns bf16 off everywhere (exact fp32 results)."""
    if os.environ.get("BRUSHWORK_BF16", "").strip().lower() in ("0", "off", "no", "false"):
        return False
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    return cpu_has_bf16()


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this CPU has AMX-BF16 (read once per process)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CPU (AMX) or CUDA; a no-op context when disabled."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)

