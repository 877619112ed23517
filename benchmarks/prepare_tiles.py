"""Benchmark: prepare + tile one real scene, against a bare rasterio read and TorchGeo.

The scene is the largest of shared/data: Sentinel-2 L1C over the Eastern Shore of Virginia, its
four 10 m bands B02, B03, B04, B08 (1933 x 1947 px each, JPEG 2000 as ESA ships them). Throughput
is MB of input per second, where input is the decoded pixels of those bands (uint16, 10^6 bytes
per MB), so that every variant is measured against the same amount of data:

- ``floor``: open each band file with rasterio and read it whole. Nothing can prepare the scene
  faster than it can be read.
- ``floor+cut``: the same read, plus cutting the tiles into one in-memory float32 array: what
  tiling costs with no reflectance, no surface mask, nothing written.
- ``outcrop``: :func:`outcrop.scenes.prepare_scene` onto the scene's own grid (EPSG:32618, 10 m),
  reflectance + surface mask written as a COG, then :func:`outcrop.tiles.tile_scene` cutting every
  32 px tile at stride 32 into the memory-mappable array and the GeoParquet table.
- ``torchgeo``: TorchGeo's ``RasterDataset`` (one file per band) with ``GridGeoSampler`` at
  32 px, stride 32, in the native CRS and resolution, every sample copied into one array.

Each run is a fresh Python process (no GDAL block cache carried over from another run); the band
files sit in the page cache after a warm-up read, as they would on a busy workstation. Variants
alternate run by run, and the median of ``--runs`` runs is reported. Run with the benchmark
environment (outcrop and TorchGeo installed side by side)::

    benchmarks/.venv-bench/bin/python benchmarks/prepare_tiles.py --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data"
if not DATA.is_dir():
    DATA = Path("/work/shared/data")
SCENE = DATA / "sentinel2" / "s2_virginia"
TOKENS = ["B02", "B03", "B04", "B08"]
BANDS = ["blue", "green", "red", "nir"]
SIZE = STRIDE = 32
VARIANTS = ("floor", "floor+cut", "outcrop", "torchgeo")


def band_paths() -> list[Path]:
    return [SCENE / f"s2_{t}.jp2" for t in TOKENS]


def input_mb() -> float:
    import numpy as np
    import rasterio

    total = 0
    for path in band_paths():
        with rasterio.open(path) as src:
            total += src.width * src.height * np.dtype(src.dtypes[0]).itemsize
    return total / 1e6


def run_floor(_: Path) -> dict:
    import rasterio

    shapes = []
    for path in band_paths():
        with rasterio.open(path) as src:
            shapes.append(src.read(1).shape)
    return {"bands": len(shapes)}


def run_floor_cut(_: Path) -> dict:
    import numpy as np
    import rasterio

    arrays = []
    for path in band_paths():
        with rasterio.open(path) as src:
            arrays.append(src.read(1, out_dtype=np.float32))
    stack = np.stack(arrays)
    c, h, w = stack.shape
    rows, cols = (h - SIZE) // STRIDE + 1, (w - SIZE) // STRIDE + 1
    windows = np.lib.stride_tricks.sliding_window_view(stack, (SIZE, SIZE), axis=(1, 2))[:, ::STRIDE, ::STRIDE]
    tiles = np.ascontiguousarray(windows[:, :rows, :cols].transpose(1, 2, 0, 3, 4)).reshape(-1, c, SIZE, SIZE)
    return {"tiles": len(tiles), "shape": list(tiles.shape)}


def run_outcrop(work: Path) -> dict:
    import numpy as np

    from outcrop.scenes import prepare_scene
    from outcrop.tiles import tile_scene

    prepared = work / "prepared.tif"
    prepare_scene(str(SCENE), "sentinel2-l1c", prepared, scene_id="virginia", bands=BANDS, crs="EPSG:32618",
                  resolution=10.0, offset=0.0, log=lambda _: None)
    n = tile_scene(prepared, work / "tiles.npy", work / "tiles.parquet", scene_id="virginia", size=SIZE,
                   stride=STRIDE, min_valid=0.0, log=lambda _: None)
    tiles = np.load(work / "tiles.npy", mmap_mode="r")
    return {"tiles": n, "shape": list(tiles.shape)}


def run_torchgeo(_: Path) -> dict:
    import numpy as np
    from torchgeo.datasets import RasterDataset
    from torchgeo.samplers import GridGeoSampler

    class Sentinel2Bands(RasterDataset):
        filename_glob = "s2_B02.jp2"
        filename_regex = r"^s2_(?P<band>B\d{2}A?)\.jp2$"
        separate_files = True
        all_bands = tuple(TOKENS)

    dataset = Sentinel2Bands(paths=str(SCENE), bands=TOKENS)
    sampler = GridGeoSampler(dataset, size=SIZE, stride=STRIDE)
    out = np.empty((len(sampler), len(TOKENS), SIZE, SIZE), dtype=np.float32)
    n = 0
    for query in sampler:
        out[n] = dataset[query]["image"].numpy()
        n += 1
    return {"tiles": n, "shape": list(out[:n].shape), "crs": f"EPSG:{dataset.crs.to_epsg()}", "res": list(dataset.res)}


RUNNERS = {"floor": run_floor, "floor+cut": run_floor_cut, "outcrop": run_outcrop, "torchgeo": run_torchgeo}


def one_run(variant: str) -> dict:
    """Time one variant in this process; imports are done before the clock starts."""
    import rasterio  # noqa: F401

    if variant == "outcrop":
        import geopandas  # noqa: F401
        import pyarrow.parquet  # noqa: F401
        import shapely  # noqa: F401

        import outcrop.scenes  # noqa: F401
        import outcrop.tiles  # noqa: F401
    if variant == "torchgeo":
        import torchgeo.datasets  # noqa: F401
        import torchgeo.samplers  # noqa: F401
    with tempfile.TemporaryDirectory(prefix="outcrop-bench-") as tmp:
        t0 = time.perf_counter()
        info = RUNNERS[variant](Path(tmp))
        info["seconds"] = time.perf_counter() - t0
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)  # a single timed run (child)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one)))
        return

    variants = [v for v in args.variants.split(",") if v]
    for path in band_paths():  # warm the page cache
        path.read_bytes()
    mb = input_mb()
    times: dict[str, list[float]] = {v: [] for v in variants}
    infos: dict[str, dict] = {}
    for r in range(args.runs):
        for v in variants:
            out = subprocess.run([sys.executable, __file__, "--one", v], check=True, capture_output=True, text=True)
            info = json.loads(out.stdout.strip().splitlines()[-1])
            times[v].append(info.pop("seconds"))
            infos[v] = info
            print(f"run {r + 1} {v}: {times[v][-1]:.2f} s {info}", flush=True)
    med = {v: statistics.median(t) for v, t in times.items()}
    print()
    print(f"scene: {SCENE.name} {','.join(TOKENS)} ({mb:.1f} MB of input), tiles {SIZE} px stride {STRIDE}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    print()
    print("| variant | median s | runs (s) | MB/s | outcrop speed-up |")
    print("| --- | ---: | --- | ---: | ---: |")
    for v in variants:
        ratio = med[v] / med["outcrop"] if "outcrop" in med else float("nan")
        runs = ", ".join(f"{t:.2f}" for t in times[v])
        print(f"| {v} | {med[v]:.2f} | {runs} | {mb / med[v]:.1f} | {ratio:.2f}x |")
    if "outcrop" in med and "floor" in med:
        print(f"\noutcrop / floor time: {med['outcrop'] / med['floor']:.2f} (target <= 1.5)")
    if "outcrop" in med and "torchgeo" in med:
        print(f"torchgeo / outcrop time: {med['torchgeo'] / med['outcrop']:.1f} (target >= 5)")


if __name__ == "__main__":
    main()
