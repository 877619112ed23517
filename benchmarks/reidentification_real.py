"""Re-identification on real scenes with the shipped defaults: BYOL against band statistics,
a random encoder and raw pixels.

For each window of a real scene (three of the Paraná Landsat 8 scene, one of the Greenland Landsat 8
scene, one of the Sentinel-2 Virginia scene) the gallery is the window cut on a 32 px grid. Two
query sets: the same window cut half a tile off that grid (down, across and both), and a copy of
the window reprojected (Paraná to EPSG:3031, the northern scenes to EPSG:3995: the ground turns by
tens of degrees and is resampled, by the package's own warp, :mod:`outcrop.search.same_scene`, which
the quality stage runs on one window of every run) cut on a 16 px grid. A query is right when its most
cosine-similar gallery tile is one of those it overlaps most. Queries that are the gallery's own
tiles are not used: they are trivial.

The encoder trains once per window on the window's tiles at a 16 px stride, with the shipped
``encoder.settings`` (its budget too, unless ``--samples`` is given) and whatever ``--set``
overrides. Each tile's block (the 3 x 3 tile-sized squares centred on it, :mod:`outcrop.raster.spectra`)
is found among the tiles of its own set, 32 px away, as the embed stage finds it in a tile table.
Each row reports top-1 for:

- ``byol``: the shipped embedding (learned, spectral and block parts at the shipped weights, or ``--weights``);
- ``learned``: the encoder's vector alone (the embedding of the previous defaults, both weights 0);
- ``band_stats``: per-band mean, std and 10/50/90th percentiles, standardised over gallery and queries;
- ``random``: an untrained encoder of the same shape alone; ``random_joined``: joined like ``byol``;
- ``spectral``: the spectral and block parts alone, joined at the same weights, with no network;
- ``pixels``: the raw pixels, standardised; ``shuffled``: the ``byol`` gallery rows permuted
  (chance, a guard against a scoring that leaks the answer).

Each is scored top-1 (``name``) and top-5 (``name@5``). The baselines need no training beyond the
statistics stored with the encoder (``--samples 128`` gives them at the cost of one step).

Command (about 3 minutes a window on two cores)::

    python benchmarks/reidentification_real.py --out /tmp/reid.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # shared_data: where the real scenes lie
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "learning"))
from test_reidentification import best_matches, blocks_of, cut, origins, statistics_vectors, top1_rate  # noqa: E402

from outcrop.config import default  # noqa: E402
from outcrop.learning.embeddings import embed_array, join_parts, spectral_part, standardised  # noqa: E402
from outcrop.learning.encoder import EncoderSettings, load_encoder, train_byol  # noqa: E402
from outcrop.search.evaluate import as_unit_vectors, random_encoder_embeddings  # noqa: E402
from outcrop.search.same_scene import reprojected as warp  # noqa: E402

DATA = Path(os.environ.get("OUTCROP_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
TILE = 32
PARANA = DATA / "landsat8" / "LC08_L1TP_224078_20200518_parana"
GREENLAND = DATA / "landsat8" / "LC80030172015001LGN00_greenland"
VIRGINIA = DATA / "sentinel2" / "s2_virginia"
# name: (band files, (row, col, height, width), CRS of the reprojected copy)
WINDOWS = {
    "parana 700/700": (
        [next(PARANA.glob(f"*_{b}.TIF"), None) for b in ("B2", "B3", "B4")],
        (700, 700, 384, 384),
        "EPSG:3031",
    ),
    "parana 1200/300": (
        [next(PARANA.glob(f"*_{b}.TIF"), None) for b in ("B2", "B3", "B4")],
        (1200, 300, 384, 384),
        "EPSG:3031",
    ),
    "parana 1300/1500": (
        [next(PARANA.glob(f"*_{b}.TIF"), None) for b in ("B2", "B3", "B4")],
        (1300, 1500, 384, 384),
        "EPSG:3031",
    ),
    "greenland 256/512": (
        [GREENLAND / f"LC80030172015001LGN00_{b}.tiff" for b in ("B2", "B3", "B4", "B5")],
        (256, 512, 384, 384),
        "EPSG:3995",
    ),
    "virginia 512/512": (
        [VIRGINIA / f"s2_{b}.jp2" for b in ("B02", "B03", "B04", "B08")],
        (512, 512, 384, 384),
        "EPSG:3995",
    ),
}
HALF_TILE_SHIFTS = ((TILE // 2, TILE // 2), (TILE // 2, 0), (0, TILE // 2))


def read_window(paths: list[Path], window: tuple[int, int, int, int]) -> tuple[np.ndarray, object, object]:
    """The window's bands as float32 (digital numbers * 1e-4), its transform and CRS."""
    import rasterio
    from rasterio.windows import Window

    row, col, h, w = window
    bands = []
    for path in paths:
        with rasterio.open(path) as src:
            bands.append(src.read(1, window=Window(col, row, w, h)).astype(np.float32) * 1e-4)
            transform, crs = src.window_transform(Window(col, row, w, h)), src.crs
    return np.stack(bands), transform, crs


def reprojected(image: np.ndarray, transform, crs, dst_crs: str) -> tuple[np.ndarray, object, np.ndarray]:
    """The window warped to ``dst_crs`` at its own ground resolution (bilinear), with a validity mask:
    the package's warp (:func:`outcrop.search.same_scene.reprojected`), which the quality stage's
    same-scene check runs on every run's own scene."""
    warped = warp(image, transform, crs, dst_crs)
    return warped.image, warped.transform, warped.valid


def query_sets(image, transform, crs, dst_crs):
    """Gallery tiles with their blocks, and the shifted and reprojected query sets with theirs and their answers."""
    import geopandas as gpd

    _, h, w = image.shape
    gallery, gallery_boxes = cut(image, transform)
    gallery_blocks = blocks_of(gallery, *origins(h, w))
    shifted = [cut(image, transform, offset=offset) for offset in HALF_TILE_SHIFTS]
    shifted_blocks = np.concatenate(
        [blocks_of(t, *origins(h, w, offset=o)) for (t, _), o in zip(shifted, HALF_TILE_SHIFTS)]
    )
    shifted_tiles = np.concatenate([t for t, _ in shifted])
    shifted_boxes = np.concatenate([b for _, b in shifted])
    warped, warped_transform, valid = reprojected(image, transform, crs, dst_crs)
    warped_tiles, warped_boxes = cut(warped, warped_transform, stride=TILE // 2, valid=valid)
    warped_blocks = blocks_of(warped_tiles, *origins(*warped.shape[1:], stride=TILE // 2, valid=valid))
    warped_boxes = gpd.GeoSeries(warped_boxes, crs=dst_crs).to_crs(crs).to_numpy()
    return (gallery, gallery_blocks), {
        "shifted": (shifted_tiles, shifted_blocks, best_matches(shifted_boxes, gallery_boxes)),
        "reprojected": (warped_tiles, warped_blocks, best_matches(warped_boxes, gallery_boxes)),
    }


def train(image, transform, tmp: Path, settings: dict, bands: list[str]) -> Path:
    """Train an encoder on the window's tiles at a 16 px stride; the model file's path."""
    import pandas as pd

    tiles, _ = cut(image, transform, stride=16)
    np.save(tmp / "window.npy", tiles)
    pd.DataFrame({"tile_id": np.arange(len(tiles)), "rock": 1.0}).to_parquet(tmp / "window.parquet")
    model = tmp / "encoder.pt"
    train_byol(
        [tmp / "window.npy"],
        [tmp / "window.parquet"],
        model,
        settings=EncoderSettings.from_dict(settings),
        curve_tsv=tmp / "curve.tsv",
        curve_png=tmp / "curve.png",
        checkpoint_path=tmp / "ckpt.pt",
        bands=bands,
        device="cpu",
        log=lambda m: None,
    )
    return model


def joined(
    meta: dict, learned: np.ndarray | None, tiles: np.ndarray, blocks: np.ndarray, weights: tuple[float, float]
) -> np.ndarray:
    """``learned`` joined with the tiles' spectral and block parts as the embed stage joins them;
    with ``learned`` None, the two parts alone at the same weights."""
    parts = (weights[0], spectral_part(meta, tiles)), (weights[1], standardised(meta, blocks))
    if learned is None:
        v = np.concatenate([w * p for w, p in parts], axis=1)
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    return join_parts(learned, *parts)


def top5_rate(gallery: np.ndarray, queries: np.ndarray, answers: list[np.ndarray]) -> float:
    """Share of queries with one of their answers among their five most cosine-similar gallery vectors."""
    top = np.argsort(-(queries @ gallery.T), axis=1, kind="stable")[:, :5]
    return float(np.mean([bool(set(t.tolist()) & set(a.tolist())) for t, a in zip(top, answers)]))


FEWER_POSES: tuple[tuple[int, bool], ...] = ()  # --fewer-poses
FEWER_PRECISION: torch.dtype | None = None  # --fewer-precision
PRECISION = "auto"  # --precision


def score(
    model: Path,
    gallery: tuple[np.ndarray, np.ndarray],
    tiles: np.ndarray,
    blocks: np.ndarray,
    answers,
    weights: tuple[float, float],
) -> dict[str, float]:
    """Top-1 of every representation for one query set."""
    net, meta = load_encoder(model)
    g_tiles, g_blocks = gallery
    out = {"chance": float(np.mean([len(a) for a in answers]) / len(g_tiles))}
    learned = [embed_array(net, meta, x, spectral_weight=0.0, precision=PRECISION) for x in (g_tiles, tiles)]
    fewer = {}
    if FEWER_POSES:  # the same encoder embedding with fewer poses averaged (the embedding's cost)
        import outcrop.learning.embeddings as embeddings_module

        with mock.patch.object(embeddings_module, "orientations", lambda _: FEWER_POSES):
            alt = [embed_array(net, meta, x, spectral_weight=0.0, precision=FEWER_PRECISION) for x in (g_tiles, tiles)]
        label = f"{len(FEWER_POSES)}_poses"
        fewer[f"byol_{label}"] = [
            joined(meta, v, x, b, weights) for v, x, b in zip(alt, (g_tiles, tiles), (g_blocks, blocks))
        ]
        fewer[f"learned_{label}"] = alt
    rand = [random_encoder_embeddings(model, x) for x in (g_tiles, tiles)]
    byol = [joined(meta, v, x, b, weights) for v, x, b in zip(learned, (g_tiles, tiles), (g_blocks, blocks))]
    pixels = as_unit_vectors(np.concatenate([g_tiles, tiles]).reshape(len(g_tiles) + len(tiles), -1))
    perm = np.random.default_rng(0).permutation(len(g_tiles))
    sets = {
        "byol": byol,
        "learned": learned,
        "band_stats": statistics_vectors(g_tiles, tiles),
        "random": rand,
        "random_joined": [
            joined(meta, v, x, b, weights) for v, x, b in zip(rand, (g_tiles, tiles), (g_blocks, blocks))
        ],
        "spectral": [joined(meta, None, x, b, weights) for x, b in zip((g_tiles, tiles), (g_blocks, blocks))],
        "pixels": (pixels[: len(g_tiles)], pixels[len(g_tiles) :]),
        "shuffled": (byol[0][perm], byol[1]),
        **fewer,
    }
    for name, (g, q) in sets.items():
        out[name] = top1_rate(g, q, answers)
        out[f"{name}@5"] = top5_rate(g, q, answers)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--samples",
        type=int,
        default=None,
        help="training budget in tile views per window "
        "(default: the shipped budget, which max_epochs caps on a window)",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="encoder setting (JSON value)")
    parser.add_argument(
        "--weights",
        default=f"{default('embed.spectral_weight')},{default('embed.context_weight')}",
        help="spectral and context weights of the byol embedding (default: the shipped ones)",
    )
    parser.add_argument("--windows", default=",".join(WINDOWS), help="comma-separated window names")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the rates as JSON here")
    parser.add_argument(
        "--fewer-poses",
        type=int,
        choices=(1, 2, 4),
        default=None,
        help="also score the same encoder embedding with this many poses averaged instead of the "
        "symmetry's eight (1: the tile as it is; 2: and its half turn; 4: the four quarter turns)",
    )
    parser.add_argument(
        "--fewer-precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="the autocast precision of the --fewer-poses embedding (bf16: on a CPU with native bf16)",
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "float32", "bfloat16"),
        default="auto",
        help="the arithmetic of the encoder's embedding (embed.precision; auto as shipped)",
    )
    args = parser.parse_args()
    global FEWER_POSES, FEWER_PRECISION, PRECISION
    PRECISION = args.precision
    FEWER_PRECISION = torch.bfloat16 if args.fewer_precision == "bf16" else None
    FEWER_POSES = {None: (), 1: ((0, False),), 2: ((0, False), (2, False)), 4: tuple((t, False) for t in range(4))}[
        args.fewer_poses
    ]
    torch.set_num_threads(2)
    settings = {"seed": args.seed, "log_every": 10_000, **({"samples": args.samples} if args.samples else {})}
    for item in args.set:
        key, _, value = item.partition("=")
        settings[key] = json.loads(value)
    weights = tuple(float(w) for w in args.weights.split(","))
    import tempfile

    results = {"settings": settings, "weights": weights, "windows": {}}
    for name in args.windows.split(","):
        paths, window, dst_crs = WINDOWS[name]
        started = time.monotonic()
        image, transform, crs = read_window(paths, window)
        gallery, queries = query_sets(image, transform, crs, dst_crs)
        with tempfile.TemporaryDirectory() as tmp:
            model = train(image, transform, Path(tmp), settings, [f"b{i}" for i in range(image.shape[0])])
            trained = time.monotonic() - started
            results["windows"][name] = {
                kind: score(model, gallery, t, b, a, weights) for kind, (t, b, a) in queries.items()
            }
            results["windows"][name]["train_seconds"] = round(trained, 1)
        results["windows"][name]["seconds"] = round(time.monotonic() - started, 1)
        for kind in queries:
            r = results["windows"][name][kind]
            print(
                f"{name:18s} {kind:11s} n={len(queries[kind][0]):4d} train {trained:.0f}s  "
                + " ".join(f"{k} {v:.3f}" for k, v in r.items()),
                flush=True,
            )
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))
    kinds = [(n, k) for n, r in results["windows"].items() for k in ("shifted", "reprojected")]
    extra = [f"{k}_{len(FEWER_POSES)}_poses" for k in ("byol", "learned")] if FEWER_POSES else []
    for key in ("byol", "learned", "band_stats", "random", "random_joined", "spectral", "pixels", "shuffled", *extra):
        rates = [results["windows"][n][k][key] for n, k in kinds]
        top5 = [results["windows"][n][k][f"{key}@5"] for n, k in kinds]
        print(
            f"mean {key:14s} top-1 {np.mean(rates):.3f} (min {min(rates):.3f})  top-5 {np.mean(top5):.3f}", flush=True
        )


if __name__ == "__main__":
    main()
