"""The grid chosen for a scene near the ±60° switch to polar stereographic, in its own UTM zone.

A Landsat-sized scene (7 000 x 7 000 px of 30 m, north-up in the WGS 84 UTM zone of its centre:
EPSG:326xx north, 327xx south) is centred at 59°, 60° and 61° north and south, and at latitudes
further on (85° N lies beyond UTM's domain); last, a run of two such scenes at 65° N in zones two
apart. Only headers are needed (:func:`outcrop.raster.grid_choice.choose_grid` reads no pixel),
so the scenes are described, not written. For each: the CRS and resolution chosen with
``grid: {crs: auto, resolution: auto}``, why, and any warning.

Run it with the package to measure (``PYTHONPATH=workflow`` for the working tree)::

    PYTHONPATH=workflow python benchmarks/grid_near_60.py --out /tmp/grid60.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from affine import Affine
from pyproj import Transformer

SIZE_PX = 7000
RES = 30.0


def utm_epsg(lon: float, lat: float) -> int:
    zone = int((lon + 180) // 6) + 1
    return (32600 if lat >= 0 else 32700) + zone


def scene_at(lat: float, lon: float, pixel: float = RES, size: int = SIZE_PX):
    """The header of a north-up scene centred at (lon, lat) in its own UTM zone."""
    from rasterio.crs import CRS

    from outcrop.raster.grid_choice import BandHeader, SceneHeader

    epsg = utm_epsg(lon, lat)
    x, y = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True).transform(lon, lat)
    half = size * pixel / 2
    transform = Affine(pixel, 0, round((x - half) / pixel) * pixel, 0, -pixel, round((y + half) / pixel) * pixel)
    band = BandHeader(f"scene_{lat:+.0f}_B4.TIF", CRS.from_epsg(epsg), transform, size, size)
    return SceneHeader(f"lat{lat:+.0f}", (band,)), epsg


def main() -> None:
    from outcrop.raster.grid_choice import SceneHeader, choose_grid

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lon", type=float, default=-147.0, help="centre longitude (default: -147, zone 6)")
    parser.add_argument("--out", type=Path, help="write the choices as JSON here too")
    args = parser.parse_args()
    rows = []
    print("| latitude | scene's own CRS | grid CRS | resolution (m) | why | polar | warnings |")
    print("| ---: | --- | --- | ---: | --- | --- | --- |")
    runs = [[lat] for lat in (59.0, 60.0, 61.0, 70.0, 80.0, 85.0, -59.0, -60.0, -61.0, -70.0, -79.0)]
    for lats in [*runs, [65.0, 65.0]]:
        scenes = [scene_at(lat, args.lon + 12.0 * i) for i, lat in enumerate(lats)]
        headers = [SceneHeader(f"{h.scene}_{i}", h.bands) for i, (h, _) in enumerate(scenes)]
        own = ", ".join(f"EPSG:{epsg}" for _, epsg in scenes)
        choice = choose_grid(headers, "auto", "auto", log=lambda _: None)
        row = {
            "latitudes": lats,
            "own_crs": own,
            "crs": choice["crs"],
            "resolution": choice["resolution"],
            "crs_reason": choice["crs_reason"],
            "polar_reason": choice.get("polar_reason", ""),
            "resolution_reason": choice["resolution_reason"],
            "warnings": choice["warnings"],
            "scenes": choice["scenes"],
        }
        rows.append(row)
        print(
            f"| {', '.join(f'{lat:+.0f}' for lat in lats)} | {own} | {choice['crs']} | {choice['resolution']:g} | "
            f"{choice['crs_reason']} | {choice.get('polar_reason', '') or '-'} | "
            f"{'; '.join(choice['warnings']) or '-'} |",
            flush=True,
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
