"""Surface-class shares on every real scene of ``../shared/data`` and on the tropical crop of ``tests/data``.

Each scene is prepared as a user would prepare it (``prepare_scene`` with every band it has among
blue, green, red, NIR, SWIR1 and SWIR2, in its own CRS at ``grid.resolution: auto``),
and the mask band is counted: the share of the scene's valid pixels (not nodata) in each class. The
NDVI column gives the 10th, 50th and 90th percentile of NDVI over the valid pixels where the scene
has red and NIR, which is what the vegetation threshold is judged against.

Run it with the package to measure (``PYTHONPATH=workflow`` for the working tree); classes the
package does not know read 0::

    PYTHONPATH=workflow python benchmarks/surface_shares.py --out /tmp/shares.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("rock", "vegetation", "water", "snow_ice", "cloud", "unknown")
SIX = ["blue", "green", "red", "nir", "swir1", "swir2"]


def shared_data() -> Path:
    for candidate in (REPO.parent / "shared" / "data", Path("/work/shared/data")):
        if candidate.is_dir():
            return candidate
    sys.exit("the shared real scenes (../shared/data) are not here")


def scenes() -> list[tuple[str, Path, str, list[str], list[str] | None, str]]:
    """(name, source, sensor, run bands, declared bands of a generic GeoTIFF, the scene's own CRS)."""
    data = shared_data()
    return [
        (
            "greenland (L8 L1, B2-B5)",
            data / "landsat8" / "LC80030172015001LGN00_greenland",
            "landsat-c2l1",
            ["blue", "green", "red", "nir"],
            None,
            "EPSG:32622",
        ),
        (
            "parana (L8 L1, RGB)",
            data / "landsat8" / "LC08_L1TP_224078_20200518_parana",
            "landsat-c2l1",
            ["blue", "green", "red"],
            None,
            "EPSG:32621",
        ),
        (
            "gulf coast (L8 L1, cloudy)",
            data / "landsat8" / "l8_gulfcoast_cloudy",
            "landsat-c2l1",
            SIX,
            None,
            "EPSG:32616",
        ),
        ("virginia (S2 L1C)", data / "sentinel2" / "s2_virginia", "sentinel2-l1c", SIX, None, "EPSG:32618"),
        ("olinda (L7, uint8)", data / "landsat7" / "L7_ETMs_olinda.tif", "geotiff", SIX, SIX, "EPSG:31985"),
        (
            "bahamas (L7 RGB, uint8)",
            data / "landsat7" / "RGB.byte_bahamas.tif",
            "geotiff",
            ["red", "green", "blue"],
            ["red", "green", "blue"],
            "EPSG:32618",
        ),
        (
            "amazon (L5 SR float, 6 bands)",
            REPO / "tests" / "data" / "amazon_tucurui_tm5.tif",
            "geotiff",
            SIX,
            SIX,
            "EPSG:32622",
        ),
        (
            "amazon (green, red, NIR, SWIR1 only)",
            REPO / "tests" / "data" / "amazon_tucurui_tm5.tif",
            "geotiff",
            ["green", "red", "nir", "swir1"],
            SIX,
            "EPSG:32622",
        ),
    ]


def shares(source: Path, sensor: str, bands: list[str], declared: list[str] | None, crs: str, work: Path) -> dict:
    import rasterio

    from outcrop.raster.scenes import prepare_scene
    from outcrop.raster.surfaces import CLASS_NAMES, NODATA

    out = work / "scene.tif"
    prepare_scene(
        str(source),
        sensor,
        out,
        scene_id="s",
        bands=bands,
        crs=crs,
        resolution="auto",
        declared_bands=declared,
        log=lambda _: None,
    )
    with rasterio.open(out) as src:
        mask = src.read(src.count)
        tags = src.tags()
        names = tags["bands"].split(",")
        reflectance = None
        if {"red", "nir"} <= set(names):
            from outcrop.io import decode_reflectance

            reflectance = decode_reflectance(src.read([names.index("red") + 1, names.index("nir") + 1]))
    valid = mask != NODATA
    n = int(valid.sum())
    row = {name: float(np.count_nonzero(mask == code) / n) for code, name in CLASS_NAMES.items() if code != NODATA}
    row = {c: row.get(c, 0.0) for c in CLASSES} | {"valid_pixels": n, "radiometry": tags.get("radiometry", "")}
    if reflectance is not None:
        red, nir = reflectance
        with np.errstate(divide="ignore", invalid="ignore"):
            ndvi = ((nir - red) / (nir + red))[valid]
        ndvi = ndvi[np.isfinite(ndvi)]
        row["ndvi_p10_p50_p90"] = [round(float(v), 3) for v in np.percentile(ndvi, [10, 50, 90])]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the shares as JSON here too")
    args = parser.parse_args()
    results = {}
    print("| scene | " + " | ".join(CLASSES) + " | NDVI p10/p50/p90 |")
    print("| --- |" + " ---: |" * (len(CLASSES) + 1))
    for name, source, sensor, bands, declared, crs in scenes():
        with tempfile.TemporaryDirectory() as tmp:
            row = shares(source, sensor, bands, declared, crs, Path(tmp))
        results[name] = row
        ndvi = "/".join(f"{v:.2f}" for v in row.get("ndvi_p10_p50_p90", [])) or "-"
        print(f"| {name} | " + " | ".join(f"{100 * row[c]:.1f} %" for c in CLASSES) + f" | {ndvi} |", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
