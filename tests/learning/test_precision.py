"""bf16 autocast, run on the CPU: losses, gradients and embeddings stay close to float32; ``auto``
takes it where the CPU computes bf16 natively, and only there."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from outcrop import OutcropError
from outcrop.learning.backbones import ARCHITECTURES, build_backbone
from outcrop.learning.byol import BYOL
from outcrop.learning.embeddings import embed_array
from outcrop.learning.precision import amp_dtype, autocast, cpu_has_native_bf16, native_bf16, precision_dtype

CPU = torch.device("cpu")


def _byol(seed=0):
    torch.manual_seed(seed)
    return BYOL(build_backbone(next(iter(ARCHITECTURES)), 4, 32), 64, 16).to(memory_format=torch.channels_last)


# Flags lines of /proc/cpuinfo, shortened: an AMD EPYC with avx512_bf16, an Intel Xeon with AMX, and
# AVX2 and AVX-512 CPUs without bf16 instructions (bf16 emulated there, slower than float32).
EPYC_BF16 = "fpu sse2 avx2 fma avx512f avx512dq avx512_bf16 avx512vbmi avx512_vnni"
XEON_AMX = "fpu sse2 avx2 fma avx512f avx512_vnni amx_bf16 amx_tile amx_int8"
AVX2_ONLY = "fpu sse2 avx2 fma"
AVX512_NO_BF16 = "fpu sse2 avx2 fma avx512f avx512dq avx512_vnni avx512_bf16x"


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    assert native_bf16(EPYC_BF16) and native_bf16(XEON_AMX)
    assert not native_bf16(AVX2_ONLY) and not native_bf16(AVX512_NO_BF16) and not native_bf16("")
    epyc, avx2 = tmp_path / "epyc", tmp_path / "avx2"
    epyc.write_text(f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: {EPYC_BF16}\n\nprocessor\t: 1\n")
    avx2.write_text(f"processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: {AVX2_ONLY}\n")
    assert cpu_has_native_bf16(str(epyc))
    assert not cpu_has_native_bf16(str(avx2))
    assert not cpu_has_native_bf16(str(tmp_path / "absent"))  # no /proc/cpuinfo (not Linux): float32


def test_auto_precision_is_bf16_on_cuda_and_on_cpus_with_native_bf16():
    assert amp_dtype(CPU) == (torch.bfloat16 if cpu_has_native_bf16() else None)
    assert precision_dtype("auto", CPU) == amp_dtype(CPU)
    assert precision_dtype("float32", CPU) is None and precision_dtype("bfloat16", CPU) == torch.bfloat16
    with pytest.raises(OutcropError, match="unknown precision 'float16'"):
        precision_dtype("float16", CPU)
    with autocast(CPU, None):
        assert not torch.is_autocast_cpu_enabled()
    with autocast(CPU, torch.bfloat16):
        assert torch.is_autocast_cpu_enabled()
        assert (torch.ones(2, 3) @ torch.ones(3, 2)).dtype == torch.bfloat16


def test_bf16_training_step_matches_float32():
    model = _byol()
    g = torch.Generator().manual_seed(1)
    v1, v2 = (torch.randn(16, 4, 16, 16, generator=g).contiguous(memory_format=torch.channels_last) for _ in range(2))
    losses, grads = [], []
    for dtype in (None, torch.bfloat16):
        model.zero_grad(set_to_none=True)
        with autocast(CPU, dtype):
            loss = model(v1, v2)
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert abs(losses[1] - losses[0]) < 0.02 * abs(losses[0]) + 1e-3
    assert torch.isfinite(grads[1]).all()
    assert float(F.cosine_similarity(grads[0], grads[1], dim=0)) > 0.95


def test_bf16_embeddings_match_float32():
    backbone = _byol().online_backbone.eval()
    meta = {"bands": ["a", "b", "c", "d"], "embedding_dim": 32, "mean": [0.0] * 4, "std": [1.0] * 4}
    tiles = np.random.default_rng(2).normal(size=(40, 4, 16, 16)).astype(np.float32)
    full = embed_array(backbone, meta, tiles, batch_size=16, precision=None)
    half = embed_array(backbone, meta, tiles, batch_size=16, precision=torch.bfloat16)
    assert half.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(half, axis=1), 1.0, atol=1e-5)
    cosine = (full * half).sum(axis=1)
    assert cosine.min() > 0.99
    assert embed_array(backbone, meta, tiles, batch_size=16, precision="float32").tobytes() == full.tobytes()
    auto = embed_array(backbone, meta, tiles, batch_size=16)  # auto: bf16 only where this CPU has it
    assert auto.tobytes() == (half if cpu_has_native_bf16() else full).tobytes()
