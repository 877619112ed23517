"""Mixed precision: bf16 autocast on CUDA (float16 on GPUs without bf16), full float32 elsewhere.

bf16 keeps float32's exponent range, so BYOL's normalised-MSE loss and the EMA need no loss scaling,
and convolutions run on tensor cores at twice the rate of tf32. CPUs gain little from it unless
they have AMX, so ``auto`` leaves them in float32; but the same autocast runs on a CPU when a dtype
is asked for, which is how the numerics of the GPU path are tested on machines without one.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype ``auto`` uses on ``device``: bf16 (or fp16) on CUDA, None (float32) elsewhere."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    """``torch.autocast`` on ``device``'s type in ``dtype``; a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
