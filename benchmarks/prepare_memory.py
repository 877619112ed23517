"""Peak memory of ``outcrop prepare`` and ``outcrop tile`` on a large synthetic Level-2 scene.

Writes a SIZE x SIZE px, 7-band uint16 Landsat Collection 2 Level-2-style GeoTIFF (rock with a
gradient and noise, written in row strips so that the generator itself stays small), then runs
each stage under ``/usr/bin/time -v`` and reports its peak RSS (Maximum resident set size) and
wall time. Both stages work in windows, so peak RSS should not grow with SIZE.

    python benchmarks/prepare_memory.py --size 20000 --workdir /tmp/outcrop-bench
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

BANDS = ["coastal", "blue", "green", "red", "nir", "swir1", "swir2"]
ROCK = np.array([0.10, 0.11, 0.13, 0.16, 0.20, 0.26, 0.22])


def synthesise(path: Path, size: int, height: int | None = None) -> None:
    """A Level-2-style scene ``size`` px wide and ``height`` (default ``size``) high,
    DN = (reflectance + 0.2) / 2.75e-5."""
    width, height = size, height or size
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 7,
        "dtype": "uint16",
        "crs": "EPSG:3031",
        "transform": Affine(30.0, 0, -1_200_000.0, 0, -30.0, 900_000.0),
        "nodata": 0,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "BIGTIFF": "YES",
    }
    rng = np.random.default_rng(0)
    base = ((ROCK + 0.2) / 0.0000275)[:, None, None]
    ramp = np.linspace(0, 3000, width, dtype=np.float32)[None, None, :]
    with rasterio.open(path, "w", **profile) as dst:
        for i, name in enumerate(BANDS, start=1):
            dst.set_band_description(i, name)
        for row in range(0, height, 512):
            h = min(512, height - row)
            dn = base + ramp + rng.normal(0, 200, size=(7, h, width)).astype(np.float32)
            dst.write(np.clip(dn, 1, 65535).astype(np.uint16), window=Window(0, row, width, h))


def timed(args: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of ``outcrop *args`` under /usr/bin/time -v."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/time", "-v", sys.executable, "-m", "outcrop.cli", *args], capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"outcrop {args[0]} failed:\n{proc.stderr[-3000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return rss_kb / 1024, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/outcrop-prepare-memory"))
    parser.add_argument("--keep", action="store_true", help="keep the files written")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    scene = args.workdir / "scene.tif"
    t0 = time.perf_counter()
    synthesise(scene, args.size)
    print(
        f"synthesised {args.size}x{args.size}x7 uint16 ({scene.stat().st_size / 2**30:.1f} GiB) "
        f"in {time.perf_counter() - t0:.0f}s"
    )
    prepared = args.workdir / "prepared.tif"
    rss, wall = timed(
        [
            "prepare",
            "--source",
            str(scene),
            "--sensor",
            "landsat-c2l2",
            "--scene",
            "big",
            "--bands",
            ",".join(BANDS),
            "--out",
            str(prepared),
        ]
    )
    print(f"prepare: peak RSS {rss:.0f} MiB, wall {wall:.0f}s")
    rss, wall = timed(
        [
            "tile",
            "--prepared",
            str(prepared),
            "--scene",
            "big",
            "--size",
            "32",
            "--stride",
            "32",
            "--out-tiles",
            str(args.workdir / "tiles.npy"),
            "--out-table",
            str(args.workdir / "tiles.parquet"),
        ]
    )
    print(f"tile: peak RSS {rss:.0f} MiB, wall {wall:.0f}s")
    if not args.keep:
        shutil.rmtree(args.workdir)


if __name__ == "__main__":
    main()
