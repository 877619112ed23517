"""Mixed precision: bf16 autocast on CUDA (float16 on GPUs without bf16) and, for embedding, on CPUs
that compute in bf16 natively; full float32 elsewhere.

bf16 keeps float32's exponent range, so BYOL's normalised-MSE loss and the EMA need no loss scaling,
and convolutions run on tensor cores at twice the rate of tf32. On a CPU it pays only where the
instructions exist (``avx512_bf16`` on recent AMD EPYC and Intel Xeon, AMX on Sapphire Rapids and
later): there the embedding's forward passes take about half the CPU time of float32, with the
demo's scores unchanged (benchmarks/embedding_cost.py); elsewhere bf16 is emulated and slower, so
``auto`` keeps float32. The same autocast runs on any CPU when a dtype is asked for, which is how the
numerics of the GPU path are tested on machines without one.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any

import torch

from outcrop.errors import OutcropError

# CPU flags (Linux /proc/cpuinfo names) of instructions that compute in bf16 rather than emulate it.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# The precisions a run may name besides ``auto``, with their autocast dtype (None: float32).
FIXED_PRECISIONS: dict[str, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16}


def native_bf16(flags: str) -> bool:
    """Whether a CPU with these ``/proc/cpuinfo`` ``flags`` (space-separated) computes bf16 natively."""
    return bool(NATIVE_BF16_FLAGS & set(flags.split()))


@functools.cache
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Read once per process: this machine's first ``flags`` line (absent off Linux: no)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return native_bf16(line.partition(":")[2])
    return False


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype ``auto`` uses on ``device``: bf16 (or fp16) on CUDA, bf16 on a CPU with
    native bf16, None (float32) elsewhere."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def precision_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a configured ``precision`` (``auto``, ``float32`` or ``bfloat16``) on ``device``."""
    if precision == "auto":
        return amp_dtype(device)
    if precision not in FIXED_PRECISIONS:
        raise OutcropError(f"unknown precision {precision!r} (known: auto, {', '.join(FIXED_PRECISIONS)})")
    return FIXED_PRECISIONS[precision]


def autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    """``torch.autocast`` on ``device``'s type in ``dtype``; a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
