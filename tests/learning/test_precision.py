"""The GPU path's bf16 autocast, run on the CPU: losses, gradients and embeddings stay close to float32."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from outcrop.learning.backbones import ARCHITECTURES, build_backbone
from outcrop.learning.byol import BYOL
from outcrop.learning.embeddings import embed_array
from outcrop.learning.precision import amp_dtype, autocast

CPU = torch.device("cpu")


def _byol(seed=0):
    torch.manual_seed(seed)
    return BYOL(build_backbone(next(iter(ARCHITECTURES)), 4, 32), 64, 16).to(memory_format=torch.channels_last)


def test_auto_precision_is_bf16_on_cuda_only():
    assert amp_dtype(CPU) is None
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
    assert embed_array(backbone, meta, tiles, batch_size=16).tobytes() == full.tobytes()  # auto on CPU: float32
