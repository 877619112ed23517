"""Re-identification on a real scene: a tile's nearest neighbour should be the ground it covers.

Three 384 px windows of the Paraná Landsat 8 scene (B2-B4: reservoir shoreline, fields, forest,
town) are each cut on a 32 px grid (the gallery). Queries are cut from the same window shifted by
half a tile (down, across and both), and on a 16 px grid from a copy of the window reprojected to
EPSG:3031, which turns the ground by about 53°. For each query, the right answer is the gallery
tile it overlaps most (ties all count). A representation that describes the ground rather than
the exact pixel grid finds it by cosine similarity; the test compares a small BYOL encoder trained
on the three windows together (one training, as a run trains one encoder on all its scenes) against
a random encoder of the same shape and prints per-band statistics beside them.

Every half-tile offset and every 16 px position of the reprojected copy is used: with the 121
diagonal shifts of one window alone, two 8-epoch trainings that differ only in seed re-identify
0.372 and 0.438 of them, a spread wider than the gaps between the representations.

The encoder trains with the product's default settings (a smaller budget, for time) and is scored
by the shipped embedding: the learned part joined with the tile's spectrum and its block's
(``embed.spectral_weight`` and ``embed.context_weight``), each tile's block found among the tiles
of its own set one tile away, as the embed stage finds it in a tile table. docs/evaluation.md and
benchmarks/reidentification_real.py have the figures at the full budget and on two more scenes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import shapely
import torch

from outcrop.config import default
from outcrop.learning.embeddings import embed_array, join_parts, spectral_part, standardised
from outcrop.learning.encoder import EncoderSettings, load_encoder, train_byol
from outcrop.raster.spectra import block_neighbours, block_spectra
from outcrop.search.evaluate import as_unit_vectors, band_statistics, random_encoder_embeddings
from shared_data import DATA

SCENE = DATA / "landsat8" / "LC08_L1TP_224078_20200518_parana"
BANDS = {"blue": "B2", "green": "B3", "red": "B4"}
TILE = 32
# row, col, height, width: inside the scene, away from its nodata collar; the first is the shoreline
WINDOWS = ((700, 700, 384, 384), (1200, 300, 384, 384), (1300, 1500, 384, 384))
# The product's default settings, at a budget that keeps the test near a minute per window.
SETTINGS = {"samples": 16_000, "log_every": 1000}
HALF_TILE_SHIFTS = ((TILE // 2, TILE // 2), (TILE // 2, 0), (0, TILE // 2))

pytestmark = pytest.mark.skipif(not SCENE.exists(), reason=f"real scene not found at {SCENE}")


def read_window(window: tuple[int, int, int, int]) -> tuple[np.ndarray, object, object]:
    """The window's bands as float32 reflectance-like values, its transform and CRS."""
    import rasterio
    from rasterio.windows import Window

    row, col, h, w = window
    bands = []
    for name in BANDS.values():
        with rasterio.open(next(SCENE.glob(f"*_{name}.TIF"))) as src:
            bands.append(src.read(1, window=Window(col, row, w, h)).astype(np.float32) * 1e-4)
            transform = src.window_transform(Window(col, row, w, h))
            crs = src.crs
    return np.stack(bands), transform, crs


def corner(transform, row: int, col: int) -> tuple[float, float]:
    """Map coordinates of the pixel corner at (row, col)."""
    from rasterio.transform import xy

    x, y = xy(transform, row, col, offset="ul")
    return float(x), float(y)


def origins(
    h: int, w: int, stride: int = TILE, offset: tuple[int, int] = (0, 0), valid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel origins (rows, cols) of the tiles :func:`cut` returns for the same arguments, in its order."""
    rc = [
        (r, c)
        for r in range(offset[0], h - TILE + 1, stride)
        for c in range(offset[1], w - TILE + 1, stride)
        if valid is None or valid[r : r + TILE, c : c + TILE].all()
    ]
    return np.array([r for r, _ in rc]), np.array([c for _, c in rc])


def blocks_of(tiles: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Block spectra of a set of tiles, each tile's neighbours looked up among the set, one tile away."""
    return block_spectra(tiles, block_neighbours(rows, cols, TILE))


def cut(
    image: np.ndarray, transform, stride: int = TILE, offset: tuple[int, int] = (0, 0), valid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Tiles of ``image`` on a grid from ``offset`` (rows, cols) and their footprints in its CRS.

    With ``valid``, only tiles whose every pixel is valid are kept.
    """
    _, h, w = image.shape
    tiles, boxes = [], []
    for r in range(offset[0], h - TILE + 1, stride):
        for c in range(offset[1], w - TILE + 1, stride):
            if valid is not None and not valid[r : r + TILE, c : c + TILE].all():
                continue
            tiles.append(image[:, r : r + TILE, c : c + TILE])
            x0, y0 = corner(transform, r, c)
            x1, y1 = corner(transform, r + TILE, c + TILE)
            boxes.append(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    return np.ascontiguousarray(np.stack(tiles)), np.array(boxes)


def reprojected(image: np.ndarray, transform, crs) -> tuple[np.ndarray, object, np.ndarray]:
    """The window warped to EPSG:3031 at its own ground resolution (bilinear), with a validity mask."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    _, h, w = image.shape
    bounds = (*corner(transform, h, 0), *corner(transform, 0, w))
    dst_transform, dw, dh = calculate_default_transform(crs, "EPSG:3031", w, h, *bounds)
    out = np.zeros((image.shape[0], dh, dw), dtype=np.float32)
    ones = np.zeros((dh, dw), dtype=np.float32)
    common = {"src_transform": transform, "src_crs": crs, "dst_transform": dst_transform, "dst_crs": "EPSG:3031"}
    reproject(image, out, resampling=Resampling.bilinear, **common)
    reproject(np.ones((h, w), np.float32), ones, resampling=Resampling.nearest, src_nodata=0, dst_nodata=0, **common)
    return out, dst_transform, ones > 0


def best_matches(query_boxes: np.ndarray, gallery_boxes: np.ndarray) -> list[np.ndarray]:
    """For each query footprint, the gallery tiles it overlaps most (several when tied)."""
    overlap = shapely.area(shapely.intersection(query_boxes[:, None], gallery_boxes[None, :]))
    best = overlap.max(axis=1, keepdims=True)
    return [np.flatnonzero(row >= 0.999 * b) for row, b in zip(overlap, best[:, 0])]


def top1_rate(gallery: np.ndarray, queries: np.ndarray, answers: list[np.ndarray]) -> float:
    """Share of queries whose most cosine-similar gallery vector is one of their answers."""
    nearest = np.argmax(queries @ gallery.T, axis=1)
    return float(np.mean([n in a for n, a in zip(nearest, answers)]))


def statistics_vectors(gallery: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean, std and 10/50/90th percentiles, standardised over both sets together."""
    feats = as_unit_vectors(
        np.concatenate([band_statistics(gallery, percentiles=True), band_statistics(queries, percentiles=True)])
    )
    return feats[: len(gallery)], feats[len(gallery) :]


def query_sets(window: tuple[int, int, int, int]) -> tuple[tuple, dict[str, tuple]]:
    """The window's gallery tiles with their blocks, and its shifted and reprojected queries with
    their blocks and answers."""
    import geopandas as gpd

    image, transform, crs = read_window(window)
    h, w = image.shape[1:]
    gallery, gallery_boxes = cut(image, transform)
    shifted_sets = [cut(image, transform, offset=offset) for offset in HALF_TILE_SHIFTS]
    shifted = np.concatenate([tiles for tiles, _ in shifted_sets])
    shifted_blocks = np.concatenate(
        [blocks_of(tiles, *origins(h, w, offset=offset)) for (tiles, _), offset in zip(shifted_sets, HALF_TILE_SHIFTS)]
    )
    shifted_boxes = np.concatenate([boxes for _, boxes in shifted_sets])
    warped, warped_transform, valid = reprojected(image, transform, crs)
    warped_tiles, warped_boxes_3031 = cut(warped, warped_transform, stride=TILE // 2, valid=valid)
    warped_blocks = blocks_of(warped_tiles, *origins(*warped.shape[1:], stride=TILE // 2, valid=valid))
    warped_boxes = gpd.GeoSeries(warped_boxes_3031, crs="EPSG:3031").to_crs(crs).to_numpy()
    return (gallery, blocks_of(gallery, *origins(h, w))), {
        "shifted": (shifted, shifted_blocks, best_matches(shifted_boxes, gallery_boxes)),
        "reprojected": (warped_tiles, warped_blocks, best_matches(warped_boxes, gallery_boxes)),
    }


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Path:
    """One BYOL encoder trained on the three windows together, as a run trains one encoder on all
    its training scenes: every position of the ground at a stride of 16 px, no pairing given."""
    import pandas as pd

    torch.set_num_threads(2)
    tmp = tmp_path_factory.mktemp("reid")
    arrays, tables = [], []
    for i, window in enumerate(WINDOWS):
        image, transform, _ = read_window(window)
        train_tiles, _ = cut(image, transform, stride=16)
        arrays.append(tmp / f"window{i}.npy")
        tables.append(tmp / f"window{i}.parquet")
        np.save(arrays[-1], train_tiles)
        pd.DataFrame({"tile_id": np.arange(len(train_tiles)), "rock": 1.0}).to_parquet(tables[-1])
    model = tmp / "encoder.pt"
    train_byol(
        arrays,
        tables,
        model,
        settings=EncoderSettings.from_dict(SETTINGS),
        curve_tsv=tmp / "curve.tsv",
        curve_png=tmp / "curve.png",
        checkpoint_path=tmp / "ckpt.pt",
        bands=list(BANDS),
        device="cpu",
        log=lambda m: None,
    )
    return model


@pytest.fixture(scope="module", params=WINDOWS, ids=lambda w: f"window{w[0]}x{w[1]}")
def scene(request, encoder):
    """Gallery tiles, two query sets with their answers, the encoder trained on the windows, and
    the window's (row, col)."""
    gallery, queries = query_sets(request.param)
    return gallery, queries, encoder, request.param[:2]


def shipped(net, meta: dict, tiles: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """The embedding the embed stage writes with the shipped weights."""
    learned = embed_array(net, meta, tiles, spectral_weight=0.0)
    return join_parts(
        learned,
        (default("embed.spectral_weight"), spectral_part(meta, tiles)),
        (default("embed.context_weight"), standardised(meta, blocks)),
    )


def rates(
    gallery: tuple, queries: np.ndarray, blocks: np.ndarray, answers: list[np.ndarray], model: Path
) -> dict[str, float]:
    net, meta = load_encoder(model)
    gallery, gallery_blocks = gallery
    stats_g, stats_q = statistics_vectors(gallery, queries)
    return {
        "byol": top1_rate(shipped(net, meta, gallery, gallery_blocks), shipped(net, meta, queries, blocks), answers),
        "band_statistics": top1_rate(stats_g, stats_q, answers),
        "random_encoder": top1_rate(
            random_encoder_embeddings(model, gallery), random_encoder_embeddings(model, queries), answers
        ),
        "chance": float(np.mean([len(a) for a in answers]) / len(gallery)),
    }


@pytest.mark.parametrize("kind", ["shifted", "reprojected"])
def test_byol_reidentifies_real_ground_better_than_both_baselines(scene, kind):
    """Training must add to what the architecture gives untrained and to the tile's band statistics.

    Run with ``-s`` to see the rates.
    """
    gallery, queries, model, corner_px = scene
    tiles, blocks, answers = queries[kind]
    assert len(tiles) >= 300 and all(len(a) >= 1 for a in answers)
    result = rates(gallery, tiles, blocks, answers, model)
    print(
        f"\nre-identification top-1, window at {corner_px}, {kind} ({len(tiles)} queries, {len(gallery[0])} "
        "gallery tiles): " + ", ".join(f"{k} {v:.3f}" for k, v in result.items())
    )
    assert result["byol"] > result["random_encoder"]
    assert result["byol"] > result["band_statistics"]
    assert result["band_statistics"] > 5 * result["chance"]  # the baseline is a working one


@pytest.mark.parametrize("kind", ["shifted", "reprojected"])
def test_a_shuffled_gallery_scores_near_chance(kind):
    """The scoring cannot leak the answer: the same vectors with the gallery's rows permuted fall to chance.

    Band statistics and raw pixels (no training, so seconds) are scored as they are and shuffled.
    """
    (gallery, _), queries = query_sets(WINDOWS[0])
    tiles, _, answers = queries[kind]
    chance = float(np.mean([len(a) for a in answers]) / len(gallery))
    stats_g, stats_q = statistics_vectors(gallery, tiles)
    pixels = as_unit_vectors(np.concatenate([gallery, tiles]).reshape(len(gallery) + len(tiles), -1))
    rng = np.random.default_rng(0)
    for g, q in ((stats_g, stats_q), (pixels[: len(gallery)], pixels[len(gallery) :])):
        honest = top1_rate(g, q, answers)
        shuffled = np.mean([top1_rate(g[rng.permutation(len(g))], q, answers) for _ in range(5)])
        assert honest > 5 * chance
        assert shuffled < 3 * chance, (shuffled, chance)
