"""The embeddings stage: one L2-normalised vector per tile, rows aligned with the tile table.

Tiles are normalised with the per-band mean and standard deviation stored in the model file, so a
scene embedded months after training is treated exactly as the training tiles were. Vectors are unit
length so that an inner-product index ranks by cosine similarity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from outcrop import OutcropError
from outcrop.allocator import keep_large_blocks
from outcrop.encoder import load_encoder, resolve_device
from outcrop.io import load_npy, save_npy


@torch.inference_mode()
def embed_array(model: torch.nn.Module, metadata: dict[str, Any], tiles: np.ndarray, *,
                batch_size: int = 256, device: str = "cpu") -> np.ndarray:
    """Embed (N, C, H, W) tiles (memory-mapped is fine) in batches: (N, D) float32, unit rows."""
    bands = list(metadata["bands"])
    if tiles.ndim != 4 or tiles.shape[1] != len(bands):
        raise OutcropError(f"tiles of shape {tuple(tiles.shape)} do not match the encoder's "
                           f"{len(bands)} bands ({','.join(bands)})")
    dev = resolve_device(device)
    model = model.to(dev).eval()
    dim = int(metadata["embedding_dim"])
    mean = torch.as_tensor(metadata["mean"], dtype=torch.float32, device=dev)[None, :, None, None]
    std = torch.as_tensor(metadata["std"], dtype=torch.float32, device=dev)[None, :, None, None]
    out = np.empty((tiles.shape[0], dim), dtype=np.float32)
    for start in range(0, tiles.shape[0], max(1, batch_size)):
        chunk = np.array(tiles[start:start + batch_size], dtype=np.float32)  # a writable copy
        x = (torch.from_numpy(chunk).to(dev) - mean) / std
        z = F.normalize(model(x).float(), dim=1)
        out[start:start + len(chunk)] = z.cpu().numpy()
    return out


def embed_tiles(tiles_path: Path, model_path: Path, out_path: Path, *, batch_size: int = 256,
                device: str = "auto", bands: Sequence[str] | None = None,
                log: Callable[[str], None] = print) -> None:
    """Embed one scene's tile array with a trained encoder and write ``out_path`` atomically.

    ``bands``, the run's band names, must be the encoder's: an encoder trained on other bands of
    the same count would otherwise be accepted and give meaningless vectors.
    """
    keep_large_blocks()  # every batch allocates the same activation maps again
    tiles = load_npy(tiles_path)
    model, metadata = load_encoder(model_path, device=device, expect_bands=bands)
    if tiles.ndim != 4 or tiles.shape[1] != len(metadata["bands"]):
        raise OutcropError(f"{tiles_path}: tiles of shape {tuple(tiles.shape)} do not match the "
                           f"{len(metadata['bands'])} bands of {model_path} ({','.join(metadata['bands'])})")
    log(f"embedding {tiles.shape[0]} tiles of {tiles_path} with {model_path} on {resolve_device(device)}")
    vectors = embed_array(model, metadata, tiles, batch_size=batch_size, device=device)
    save_npy(out_path, vectors)
    log(f"wrote {out_path} {vectors.shape}")
