"""Re-identification on real scenes with the shipped defaults: BYOL against band statistics,
a random encoder and raw pixels.

For each window of a real scene (three of the Paraná Landsat 8 scene, one of the Greenland Landsat 8
scene, one of the Sentinel-2 Virginia scene) the gallery is the window cut on a 32 px grid. Two
query sets: the same window cut half a tile off that grid (down, across and both), and a copy of
the window reprojected (Paraná to EPSG:3031, the northern scenes to EPSG:3995: the ground turns by
tens of degrees and is resampled) cut on a 16 px grid. A query is right when its most
cosine-similar gallery tile is one of those it overlaps most. Queries that are the gallery's own
tiles are not used: they are trivial.

The encoder trains once per window on the window's tiles at a 16 px stride, with the shipped
``encoder.settings`` except the budget (``--samples``, the product's default is 200000 views) and
whatever ``--set`` overrides. Each row reports top-1 for:

- ``learned``: the encoder's vector alone (``embed.spectral_weight: 0``);
- ``joined@w``: the joined embedding with spectral weight w (the default is 0) (each ``--weights``);
- ``band_stats``: per-band mean, std and 10/50/90th percentiles, standardised over gallery and queries;
- ``random`` and ``random_joined@w``: an untrained encoder of the same shape, alone and joined;
- ``pixels``: the raw pixels, standardised; ``shuffled``: the joined gallery rows permuted
  (chance, a guard against a scoring that leaks the answer).

Command (about 2 minutes a window on two busy cores at 30000 samples)::

    python benchmarks/reidentification_real.py --samples 30000 --weights 0.5,1,2 --out /tmp/reid.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "learning"))
from test_reidentification import best_matches, corner, cut, statistics_vectors, top1_rate  # noqa: E402

from outcrop.learning.embeddings import embed_array, join_spectral, spectral_part  # noqa: E402
from outcrop.learning.encoder import EncoderSettings, load_encoder, train_byol  # noqa: E402
from outcrop.search.evaluate import as_unit_vectors, random_encoder_embeddings  # noqa: E402

DATA = Path(os.environ.get("OUTCROP_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
TILE = 32
PARANA = DATA / "landsat8" / "LC08_L1TP_224078_20200518_parana"
GREENLAND = DATA / "landsat8" / "LC80030172015001LGN00_greenland"
VIRGINIA = DATA / "sentinel2" / "s2_virginia"
# name: (band files, (row, col, height, width), CRS of the reprojected copy)
WINDOWS = {
    "parana 700/700": ([next(PARANA.glob(f"*_{b}.TIF"), None) for b in ("B2", "B3", "B4")],
                       (700, 700, 384, 384), "EPSG:3031"),
    "parana 1200/300": ([next(PARANA.glob(f"*_{b}.TIF"), None) for b in ("B2", "B3", "B4")],
                        (1200, 300, 384, 384), "EPSG:3031"),
    "parana 1300/1500": ([next(PARANA.glob(f"*_{b}.TIF"), None) for b in ("B2", "B3", "B4")],
                         (1300, 1500, 384, 384), "EPSG:3031"),
    "greenland 256/512": ([GREENLAND / f"LC80030172015001LGN00_{b}.tiff" for b in ("B2", "B3", "B4", "B5")],
                          (256, 512, 384, 384), "EPSG:3995"),
    "virginia 512/512": ([VIRGINIA / f"s2_{b}.jp2" for b in ("B02", "B03", "B04", "B08")],
                         (512, 512, 384, 384), "EPSG:3995"),
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
    """The window warped to ``dst_crs`` at its own ground resolution (bilinear), with a validity mask."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    _, h, w = image.shape
    bounds = (*corner(transform, h, 0), *corner(transform, 0, w))
    dst_transform, dw, dh = calculate_default_transform(crs, dst_crs, w, h, *bounds)
    out = np.zeros((image.shape[0], dh, dw), dtype=np.float32)
    ones = np.zeros((dh, dw), dtype=np.float32)
    common = {"src_transform": transform, "src_crs": crs, "dst_transform": dst_transform, "dst_crs": dst_crs}
    reproject(image, out, resampling=Resampling.bilinear, **common)
    reproject(np.ones((h, w), np.float32), ones, resampling=Resampling.nearest, src_nodata=0, dst_nodata=0,
              **common)
    return out, dst_transform, ones > 0


def query_sets(image, transform, crs, dst_crs):
    """Gallery tiles and the shifted and reprojected query sets with their answers."""
    import geopandas as gpd

    gallery, gallery_boxes = cut(image, transform)
    shifted = [cut(image, transform, offset=offset) for offset in HALF_TILE_SHIFTS]
    shifted_tiles = np.concatenate([t for t, _ in shifted])
    shifted_boxes = np.concatenate([b for _, b in shifted])
    warped, warped_transform, valid = reprojected(image, transform, crs, dst_crs)
    warped_tiles, warped_boxes = cut(warped, warped_transform, stride=TILE // 2, valid=valid)
    warped_boxes = gpd.GeoSeries(warped_boxes, crs=dst_crs).to_crs(crs).to_numpy()
    return gallery, {"shifted": (shifted_tiles, best_matches(shifted_boxes, gallery_boxes)),
                     "reprojected": (warped_tiles, best_matches(warped_boxes, gallery_boxes))}


def train(image, transform, tmp: Path, settings: dict, bands: list[str]) -> Path:
    """Train an encoder on the window's tiles at a 16 px stride; the model file's path."""
    import pandas as pd

    tiles, _ = cut(image, transform, stride=16)
    np.save(tmp / "window.npy", tiles)
    pd.DataFrame({"tile_id": np.arange(len(tiles)), "rock": 1.0}).to_parquet(tmp / "window.parquet")
    model = tmp / "encoder.pt"
    train_byol([tmp / "window.npy"], [tmp / "window.parquet"], model, settings=EncoderSettings.from_dict(settings),
               curve_tsv=tmp / "curve.tsv", curve_png=tmp / "curve.png", checkpoint_path=tmp / "ckpt.pt",
               bands=bands, device="cpu", log=lambda m: None)
    return model


def score(model: Path, gallery: np.ndarray, tiles: np.ndarray, answers, weights: list[float],
          keep: Path | None = None) -> dict[str, float]:
    """Top-1 of every representation for one query set; with ``keep``, the vectors are saved there (npz)."""
    net, meta = load_encoder(model)
    out = {"chance": float(np.mean([len(a) for a in answers]) / len(gallery))}
    learned = [embed_array(net, meta, x, spectral_weight=0.0) for x in (gallery, tiles)]
    rand = [random_encoder_embeddings(model, x) for x in (gallery, tiles)]
    spectra = [spectral_part(meta, x) for x in (gallery, tiles)]
    if keep is not None:
        np.savez(keep, gallery_learned=learned[0], query_learned=learned[1], gallery_random=rand[0],
                 query_random=rand[1], gallery_spectral=spectra[0], query_spectral=spectra[1],
                 answers=np.array(answers, dtype=object))
    out["learned"] = top1_rate(*learned, answers)
    out["spectral"] = top1_rate(*spectra, answers)
    for w in weights:
        joined = [join_spectral(v, s, w) for v, s in zip(learned, spectra)]
        out[f"joined@{w:g}"] = top1_rate(*joined, answers)
        out[f"random_joined@{w:g}"] = top1_rate(*(join_spectral(v, s, w) for v, s in zip(rand, spectra)), answers)
        if w == weights[0]:
            perm = np.random.default_rng(0).permutation(len(gallery))
            out["shuffled"] = top1_rate(joined[0][perm], joined[1], answers)
    out["band_stats"] = top1_rate(*statistics_vectors(gallery, tiles), answers)
    out["random"] = top1_rate(*rand, answers)
    pixels = as_unit_vectors(np.concatenate([gallery, tiles]).reshape(len(gallery) + len(tiles), -1))
    out["pixels"] = top1_rate(pixels[:len(gallery)], pixels[len(gallery):], answers)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=30000, help="training budget in tile views per window")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="encoder setting (JSON value)")
    parser.add_argument("--weights", default="0.5,1,2", help="spectral weights to score")
    parser.add_argument("--windows", default=",".join(WINDOWS), help="comma-separated window names")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the rates as JSON here")
    parser.add_argument("--keep", type=Path, default=None, help="save each window's vectors in this folder")
    args = parser.parse_args()
    torch.set_num_threads(2)
    settings = {"samples": args.samples, "seed": args.seed, "log_every": 10_000}
    for item in args.set:
        key, _, value = item.partition("=")
        settings[key] = json.loads(value)
    weights = [float(w) for w in args.weights.split(",")]
    import tempfile

    results = {"settings": settings, "windows": {}}
    for name in args.windows.split(","):
        paths, window, dst_crs = WINDOWS[name]
        started = time.monotonic()
        image, transform, crs = read_window(paths, window)
        gallery, queries = query_sets(image, transform, crs, dst_crs)
        with tempfile.TemporaryDirectory() as tmp:
            model = train(image, transform, Path(tmp), settings, [f"b{i}" for i in range(image.shape[0])])
            trained = time.monotonic() - started
            keep = {kind: args.keep / f"{name.replace(' ', '_').replace('/', 'x')}_{kind}.npz" for kind in queries} \
                if args.keep else {}
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
            results["windows"][name] = {kind: score(model, gallery, t, a, weights, keep.get(kind))
                                        for kind, (t, a) in queries.items()}
        results["windows"][name]["seconds"] = round(time.monotonic() - started, 1)
        for kind in queries:
            r = results["windows"][name][kind]
            print(f"{name:18s} {kind:11s} n={len(queries[kind][0]):4d} train {trained:.0f}s  "
                  + " ".join(f"{k} {v:.3f}" for k, v in r.items()), flush=True)
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
