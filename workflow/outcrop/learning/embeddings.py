"""The embeddings stage: one L2-normalised vector per tile, rows aligned with the tile table.

Tiles are normalised with the per-band mean and standard deviation stored in the model file, so a
scene embedded months after training is treated exactly as the training tiles were. Vectors are unit
length so that an inner-product index ranks by cosine similarity. An encoder trained with the
default ``symmetry: d4`` embeds each tile as the mean representation of its eight flips and quarter
turns (``c4``: the four turns alone), so that the vector describes the ground whichever way it lies in the
pixel grid (:mod:`outcrop.learning.symmetry`). The forward passes run in bf16 where the CPU computes
it natively (``embed.precision: auto``, :mod:`outcrop.learning.precision`).

With ``embed.spectral_weight`` above zero the vector joins two parts: the learned one, and the
tile's spectrum (per-band mean, standard deviation and 10/50/90th percentiles, standardised by the statistics of the
training tiles stored with the encoder). Each part is L2-normalised, the spectral one scaled by the
weight, and the join normalised again, so the cosine of two tiles is a weighted mean of the two
parts' cosines. The learned part describes texture, which tells apart ground of one spectrum; the
explicit spectrum is what re-finds the same ground under a shifted or reprojected grid, and an
encoder trained to ignore band offsets (the strong band jitter) throws much of it away
(docs/evaluation.md has the figures). The vector is then ``D + 5C`` long.

With ``embed.context_weight`` above zero a third part joins: the spectrum of the tile's block, the
3 x 3 tile-sized squares centred on it (:mod:`outcrop.raster.spectra`), standardised the same way.
It describes the unit the tile sits in, which a tile framed differently shares far more than it
shares pixels; on real scenes it is what lifts re-identification of offset and reprojected tiles
well above the tile's own statistics. The vector is then ``D + 5C + 5C`` long.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from outcrop.config import default
from outcrop.errors import OutcropError
from outcrop.io import save_npy
from outcrop.learning.encoder import load_encoder, resolve_device
from outcrop.learning.precision import autocast, precision_dtype
from outcrop.learning.symmetry import orientations, posed
from outcrop.raster.spectra import tile_spectra
from outcrop.raster.tile_store import open_tiles
from outcrop.runtime.pages import release_pages


def inference_layout(device: torch.device) -> torch.memory_format:
    """NHWC on CPUs and CUDA, where oneDNN and cuDNN run small convolutions faster; NCHW elsewhere."""
    return torch.channels_last if device.type in ("cpu", "cuda") else torch.contiguous_format


def inference_copy(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """An evaluation-mode copy of ``model`` with every BatchNorm folded into the convolution before it.

    In evaluation a BatchNorm is a fixed per-channel affine map, so it can be absorbed exactly (up
    to rounding) into the preceding convolution's weights and bias: a whole pass over every
    activation map less per block. The copy is in :func:`inference_layout`. The caller's model is
    left as it was.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    net = copy.deepcopy(model).to(device).eval()
    for module in net.modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module._modules.items())
        for (name, conv), (bn_name, bn) in itertools.pairwise(children):
            if (
                isinstance(conv, nn.Conv2d)
                and isinstance(bn, nn.BatchNorm2d)
                and bn.track_running_stats
                and bn.running_mean is not None
            ):
                module._modules[name] = fuse_conv_bn_eval(conv, bn)
                module._modules[bn_name] = nn.Identity()
    # Module.to takes memory_format (torch's docs); its stub's overloads leave it out.
    return net.to(memory_format=inference_layout(device))  # type: ignore[call-overload]


def standardised(metadata: dict[str, Any], feats: np.ndarray) -> np.ndarray:
    """Spectra (N, 5C) standardised by the encoder's stored statistics: float32, unit rows.

    An encoder file written before the statistics were stored standardises every feature by the
    per-band pixel mean and standard deviation: the same scale, the spreads a little less centred.
    Block spectra are standardised by the tiles' statistics too, so a block and a tile of one
    uniform ground give one vector.
    """
    if "spectral_mean" in metadata:
        centre = np.asarray(metadata["spectral_mean"], dtype=np.float64)
        scale = np.asarray(metadata["spectral_std"], dtype=np.float64)
    else:
        mean, std = (np.asarray(metadata[k], dtype=np.float64) for k in ("mean", "std"))
        centre, scale = np.concatenate([mean, 0 * mean, mean, mean, mean]), np.tile(std, 5)
    z = (np.asarray(feats, dtype=np.float64) - centre) / scale
    return (z / (np.linalg.norm(z, axis=1, keepdims=True) + 1e-12)).astype(np.float32)


def spectral_part(metadata: dict[str, Any], tiles: np.ndarray) -> np.ndarray:
    """The tiles' own spectra, standardised: (N, 5C) float32, unit rows."""
    return standardised(metadata, tile_spectra(tiles))


def join_parts(learned: np.ndarray, *parts: tuple[float, np.ndarray]) -> np.ndarray:
    """``[learned, w1 * part1, ...]`` of unit-row arrays, rows L2-normalised; parts of weight 0 are left out.

    The cosine of two joined rows is then the weighted mean of the parts' cosines (weights squared).
    With no part above weight 0 the learned rows come back as they are.
    """
    kept = [w * p for w, p in parts if w > 0]
    if not kept:
        return learned
    joined = np.concatenate([learned, *kept], axis=1)
    return (joined / np.linalg.norm(joined, axis=1, keepdims=True)).astype(np.float32)


def embedding_dim(metadata: dict[str, Any], spectral_weight: float, context_weight: float = 0.0) -> int:
    """Length of the vectors :func:`embed_array` writes: D, plus 5C for each spectral part above weight 0."""
    per_part = 5 * len(metadata["bands"])
    return int(metadata["embedding_dim"]) + per_part * ((spectral_weight > 0) + (context_weight > 0))


def _check_weight(name: str, value: float) -> None:
    if not (np.isfinite(value) and value >= 0):
        raise OutcropError(f"{name} weight must be a finite number >= 0, got {value!r}")


@torch.inference_mode()
def embed_array(
    model: torch.nn.Module,
    metadata: dict[str, Any],
    tiles: np.ndarray,
    *,
    batch_size: int = 256,
    device: str = "cpu",
    precision: torch.dtype | None | str = "auto",
    spectral_weight: float = default("embed.spectral_weight"),
    context_weight: float = 0.0,
    context: np.ndarray | None = None,
) -> np.ndarray:
    """Embed (N, C, H, W) tiles (memory-mapped is fine) in batches: (N, :func:`embedding_dim`) float32, unit rows.

    Each row is the encoder's representation averaged over the poses of its symmetry, L2-normalised,
    joined with the tile's standardised spectrum when ``spectral_weight`` is above zero and with its
    block's, ``context`` (N, 5C) raw block spectra from :mod:`outcrop.raster.spectra`, when
    ``context_weight`` is (at zero weights the rows are the learned vectors alone, exactly). Tiles
    given as an array carry no neighbours, so the block part is off unless asked for with its spectra.
    ``precision``: the autocast dtype (None: float32), or its name (``auto``: bf16 on CUDA and on CPUs
    with native bf16, float32 elsewhere; :mod:`outcrop.learning.precision`). Poses are summed
    and normalised in float32; the spectral part is computed from the float32 tiles.
    """
    _check_weight("spectral", spectral_weight)
    _check_weight("context", context_weight)
    bands = list(metadata["bands"])
    if context_weight > 0 and (context is None or np.shape(context) != (tiles.shape[0], 5 * len(bands))):
        raise OutcropError(
            f"a context weight of {context_weight:g} needs the block spectra of all "
            f"{tiles.shape[0]} tiles ({5 * len(bands)} values each)"
        )
    if tiles.ndim != 4 or tiles.shape[1] != len(bands):
        raise OutcropError(
            f"tiles of shape {tuple(tiles.shape)} do not match the encoder's {len(bands)} bands ({','.join(bands)})"
        )
    dev = resolve_device(device)
    net = inference_copy(model, dev)
    mean = torch.as_tensor(metadata["mean"], dtype=torch.float32, device=dev)[None, :, None, None]
    std = torch.as_tensor(metadata["std"], dtype=torch.float32, device=dev)[None, :, None, None]
    out = np.empty((tiles.shape[0], embedding_dim(metadata, spectral_weight, context_weight)), dtype=np.float32)
    layout = inference_layout(dev)
    poses = orientations(metadata.get("symmetry", "none"))
    dtype = precision_dtype(precision, dev) if isinstance(precision, str) else precision
    for start in range(0, tiles.shape[0], max(1, batch_size)):
        host = np.array(tiles[start : start + batch_size], dtype=np.float32)
        release_pages(tiles)
        chunk = torch.from_numpy(host).to(dev)
        x = torch.empty_like(chunk, memory_format=layout)  # normalised straight into the net's layout
        torch.sub(chunk, mean, out=x).div_(std)
        with autocast(dev, dtype):
            z = net(x).float()
            for turns, flip in poses[1:]:
                z += net(posed(x, turns, flip).contiguous(memory_format=layout)).float()
        learned = F.normalize(z, dim=1).cpu().numpy()
        parts = []
        if spectral_weight > 0:
            parts.append((spectral_weight, spectral_part(metadata, host)))
        if context_weight > 0:
            assert context is not None  # checked above
            parts.append((context_weight, standardised(metadata, context[start : start + len(chunk)])))
        out[start : start + len(chunk)] = join_parts(learned, *parts)
    return out


def embed_tiles(
    tiles_path: Path,
    model_path: Path,
    out_path: Path,
    *,
    batch_size: int = default("embed.batch_size"),
    precision: str = default("embed.precision"),
    device: str = default("encoder.device"),
    bands: Sequence[str] | None = None,
    spectral_weight: float = default("embed.spectral_weight"),
    context_weight: float = default("embed.context_weight"),
    table_path: Path | None = None,
    log: Callable[[str], None] = print,
) -> None:
    """Embed one scene's tile array with a trained encoder and write ``out_path`` atomically.

    ``bands``, the run's band names, must be the encoder's: an encoder trained on other bands of
    the same count would otherwise be accepted and give meaningless vectors. The block part needs
    the scene's tile table (``table_path``, by default the ``.parquet`` beside the array, as the
    tiles stage writes it): it says where each tile lies, so which tiles are its neighbours.
    """
    tiles = open_tiles(tiles_path, table_path)
    model, metadata = load_encoder(model_path, device=device, expect_bands=bands)
    if tiles.ndim != 4 or tiles.shape[1] != len(metadata["bands"]):
        raise OutcropError(
            f"{tiles_path}: tiles of shape {tuple(tiles.shape)} do not match the "
            f"{len(metadata['bands'])} bands of {model_path} ({','.join(metadata['bands'])})"
        )
    dim = embedding_dim(metadata, spectral_weight, context_weight)
    dev = resolve_device(device)
    dtype = precision_dtype(precision, dev)
    log(
        f"embedding {tiles.shape[0]} tiles of {tiles_path} with {model_path} on {dev} in "
        f"{'float32' if dtype is None else str(dtype).removeprefix('torch.')} ({precision}), "
        f"{len(orientations(metadata.get('symmetry', 'none')))} pose(s) a tile, "
        f"spectral weight {spectral_weight:g}, context weight {context_weight:g} ({dim} dimensions)"
    )
    context = None
    if context_weight > 0:
        context = scene_block_spectra(tiles, tiles_path, table_path)
        log(f"block spectra of {len(context)} tiles")
    vectors = embed_array(
        model,
        metadata,
        tiles,
        batch_size=batch_size,
        device=device,
        precision=dtype,
        spectral_weight=spectral_weight,
        context_weight=context_weight,
        context=context,
    )
    save_npy(out_path, vectors)
    log(f"wrote {out_path} {vectors.shape}")


def scene_block_spectra(tiles: np.ndarray, tiles_path: Path, table_path: Path | None) -> np.ndarray:
    """Block spectra of one scene's tiles, their neighbours found through the scene's tile table."""
    from outcrop.raster.spectra import block_neighbours, block_spectra
    from outcrop.raster.tiles import read_tile_positions

    table_path = Path(table_path) if table_path else Path(tiles_path).with_suffix(".parquet")
    if not table_path.is_file():
        raise OutcropError(
            f"{table_path}: file not found (the block part of the embedding needs the scene's "
            "tile table: give --table, or --context-weight 0)"
        )
    rows, cols = read_tile_positions(table_path, tiles.shape[0])
    return block_spectra(tiles, block_neighbours(rows, cols, int(tiles.shape[-1])))
