"""Benchmark: prepare + tile a scene with outcrop, against GDAL itself (the floor) and TorchGeo.

Two scenes:

- ``virginia``: the largest real scene of shared/data, Sentinel-2 L1C over the Eastern Shore of
  Virginia, its four 10 m bands B02, B03, B04, B08 (1933 x 1947 px each, JPEG 2000 as ESA ships
  them), onto its own grid (EPSG:32618, 10 m).
- ``landsat``: a full-size synthetic Landsat Collection 2 Level-2 scene, 7 800 x 7 600 px, 7 bands
  uint16 in one tiled GeoTIFF (``prepare_memory.synthesise``: rock with a gradient and noise),
  onto its own grid (EPSG:3031, 30 m). Written once under ``--workdir`` and reused.

Variants, each timed in a fresh process with its imports done before the clock starts:

- ``read``: rasterio reads every band whole. Context only: it writes nothing.
- ``gdal``, the floor: what a GDAL user writes to get the same files. ``gdalbuildvrt -separate``
  (one file per band) and ``gdalwarp`` onto the same grid with the same resampling (bilinear) to a
  COG of the same compression (ZSTD level 1, horizontal differencing, 256 px blocks) and
  overviews (nearest, down to a block), then, in the same process, the COG read back and the same
  tile array (float32 reflectance, (N, C, 32, 32), ``.npy``) and table (tile id, row, col, size,
  valid fraction, footprint as WKB; GeoParquet) written with numpy and pyarrow. It computes no
  surface mask, no radiometry check and no class fractions; outcrop does all three.
- ``outcrop``: :func:`outcrop.raster.scenes.prepare_scene` (reflectance, surface mask, COG with
  overviews) then :func:`outcrop.raster.tiles.tile_scene` (tile array + GeoParquet table), every
  tile kept (``min_valid=0``).
- ``torchgeo``: TorchGeo's ``RasterDataset`` + ``GridGeoSampler(size=32, stride=32)`` in the
  native CRS and resolution, every sample copied into one array (it writes nothing).

The input files sit in the page cache after a warm-up read. Variants alternate run by run; the
median of ``--runs`` runs is reported (``--torchgeo-runs`` for TorchGeo, minutes a run on the full
Landsat scene). Run with the benchmark environment (outcrop and TorchGeo side by side)::

    benchmarks/.venv-bench/bin/python benchmarks/prepare_tiles.py --scenes virginia,landsat --runs 3
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
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data"
if not DATA.is_dir():
    DATA = Path("/work/shared/data")
SIZE = STRIDE = 32
VARIANTS = ("read", "gdal", "outcrop", "torchgeo")
LANDSAT_BANDS = ["coastal", "blue", "green", "red", "nir", "swir1", "swir2"]


@dataclass(frozen=True)
class Scene:
    name: str
    files: tuple[Path, ...]  # one per band, or one multi-band file
    source: str  # what outcrop's prepare is given
    sensor: str
    bands: tuple[str, ...]  # outcrop's names
    tokens: tuple[str, ...]  # TorchGeo's band names
    crs: str
    resolution: float
    scale: float  # reflectance = DN * scale + offset
    offset: float


def scene_of(name: str, workdir: Path) -> Scene:
    if name == "virginia":
        folder = DATA / "sentinel2" / "s2_virginia"
        tokens = ("B02", "B03", "B04", "B08")
        return Scene(
            name,
            tuple(folder / f"s2_{t}.jp2" for t in tokens),
            str(folder),
            "sentinel2-l1c",
            ("blue", "green", "red", "nir"),
            tokens,
            "EPSG:32618",
            10.0,
            1e-4,
            0.0,
        )
    path = workdir / "landsat_7800x7600x7.tif"
    return Scene(
        name,
        (path,),
        str(path),
        "landsat-c2l2",
        tuple(LANDSAT_BANDS),
        tuple(LANDSAT_BANDS),
        "EPSG:3031",
        30.0,
        2.75e-5,
        -0.2,
    )


def ensure_landsat(scene: Scene) -> None:
    """Write the synthetic Landsat scene once (7 800 x 7 600 x 7 uint16, 512 px blocks)."""
    path = scene.files[0]
    if path.exists():
        return
    sys.path.insert(0, str(HERE))
    from prepare_memory import synthesise

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.tif")
    synthesise(tmp, 7800, 7600)
    tmp.rename(path)


def input_mb(scene: Scene) -> float:
    import numpy as np
    import rasterio

    total = 0
    for path in scene.files:
        with rasterio.open(path) as src:
            total += src.width * src.height * src.count * np.dtype(src.dtypes[0]).itemsize
    return total / 1e6


def written_mb(work: Path) -> dict:
    """MB of each file a variant left (COG, tile array, table): the bytes it wrote, temporaries aside."""
    return {p.name: round(p.stat().st_size / 1e6, 1) for p in sorted(work.iterdir()) if p.suffix != ".vrt"}


def run_read(scene: Scene, _: Path) -> dict:
    import rasterio

    shapes = []
    for path in scene.files:
        with rasterio.open(path) as src:
            shapes.append(src.read().shape)
    return {"arrays": len(shapes)}


def run_gdal(scene: Scene, work: Path) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import rasterio
    import shapely
    from pyproj import CRS

    source = str(scene.files[0])
    if len(scene.files) > 1:
        source = str(work / "stack.vrt")
        subprocess.run(["gdalbuildvrt", "-q", "-separate", source, *map(str, scene.files)], check=True)
    cog = work / "prepared.tif"
    subprocess.run(
        [
            "gdalwarp",
            "-q",
            "-t_srs",
            scene.crs,
            "-tr",
            str(scene.resolution),
            str(scene.resolution),
            "-tap",
            "-r",
            "bilinear",
            "-srcnodata",
            "0",
            "-dstnodata",
            "0",
            "-of",
            "COG",
            "-co",
            "COMPRESS=ZSTD",
            "-co",
            "LEVEL=1",
            "-co",
            "PREDICTOR=2",
            "-co",
            "BLOCKSIZE=256",
            "-co",
            "OVERVIEWS=AUTO",
            "-co",
            "OVERVIEW_RESAMPLING=NEAREST",
            "-co",
            "BIGTIFF=IF_SAFER",
            source,
            str(cog),
        ],
        check=True,
    )
    with rasterio.open(cog) as src:
        dn = src.read()
        transform, crs = src.transform, src.crs
    c, h, w = dn.shape
    rows, cols = (h - SIZE) // STRIDE + 1, (w - SIZE) // STRIDE + 1
    with open(work / "tiles.npy", "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": "<f4", "fortran_order": False, "shape": (rows * cols, c, SIZE, SIZE)}
        )
        valid = np.empty((rows, cols), dtype=np.float32)
        for r in range(rows):
            strip = dn[:, r * STRIDE : r * STRIDE + SIZE, : cols * STRIDE]
            tiles = strip.reshape(c, SIZE, cols, SIZE).transpose(2, 0, 1, 3).astype(np.float32)
            valid[r] = 1.0 - (tiles[:, 0] == 0).mean(axis=(1, 2))
            tiles *= np.float32(scene.scale)
            tiles += np.float32(scene.offset)
            fh.write(memoryview(np.ascontiguousarray(tiles)).cast("B"))
    r, k = np.divmod(np.arange(rows * cols), cols)
    x0 = transform.c + k * STRIDE * transform.a
    y0 = transform.f + r * STRIDE * transform.e
    feet = shapely.box(x0, y0 + SIZE * transform.e, x0 + SIZE * transform.a, y0)
    table = pa.table(
        {
            "tile_id": np.arange(rows * cols),
            "row": r * STRIDE,
            "col": k * STRIDE,
            "size": np.full(rows * cols, SIZE),
            "valid": valid.ravel(),
            "geometry": shapely.to_wkb(feet),
        }
    )
    geo = {
        "version": "1.0.0",
        "primary_column": "geometry",
        "columns": {
            "geometry": {
                "encoding": "WKB",
                "geometry_types": ["Polygon"],
                "crs": CRS.from_user_input(crs.to_wkt()).to_json_dict(),
            }
        },
    }
    table = table.replace_schema_metadata({b"geo": json.dumps(geo).encode()})
    pq.write_table(table, work / "tiles.parquet")
    return {
        "tiles": rows * cols,
        "shape": [rows * cols, c, SIZE, SIZE],
        "cog_mb": round(cog.stat().st_size / 1e6, 1),
        "written_mb": written_mb(work),
    }


def run_outcrop(scene: Scene, work: Path) -> dict:

    from outcrop.raster.scenes import prepare_scene
    from outcrop.raster.tiles import tile_scene

    prepared = work / "prepared.tif"
    prepare_scene(
        scene.source,
        scene.sensor,
        prepared,
        scene_id=scene.name,
        bands=list(scene.bands),
        crs=scene.crs,
        resolution=scene.resolution,
        scale=scene.scale,
        offset=scene.offset,
        log=lambda _: None,
    )
    n = tile_scene(
        prepared,
        work / "tiles.npy",
        work / "tiles.parquet",
        scene_id=scene.name,
        size=SIZE,
        stride=STRIDE,
        min_valid=0.0,
        log=lambda _: None,
    )
    from outcrop.raster.tile_store import open_tiles

    tiles = open_tiles(work / "tiles.npy")
    return {
        "tiles": n,
        "shape": list(tiles.shape),
        "cog_mb": round(prepared.stat().st_size / 1e6, 1),
        "written_mb": written_mb(work),
    }


def run_torchgeo(scene: Scene, _: Path) -> dict:
    import numpy as np
    from torchgeo.datasets import RasterDataset
    from torchgeo.samplers import GridGeoSampler

    separate = len(scene.files) > 1

    class Bands(RasterDataset):
        filename_glob = scene.files[0].name
        filename_regex = r"^s2_(?P<band>B\d{2}A?)\.jp2$" if separate else r".*"
        separate_files = separate
        all_bands = scene.tokens

    # One file: its own path (TorchGeo globs a folder recursively, and other scenes may lie there).
    dataset = Bands(paths=str(scene.files[0].parent) if separate else str(scene.files[0]), bands=scene.tokens)
    sampler = GridGeoSampler(dataset, size=SIZE, stride=STRIDE)
    out = np.empty((len(sampler), len(scene.tokens), SIZE, SIZE), dtype=np.float32)
    n = 0
    for query in sampler:
        out[n] = dataset[query]["image"].numpy()
        n += 1
    return {"tiles": n, "shape": list(out[:n].shape), "crs": f"EPSG:{dataset.crs.to_epsg()}", "res": list(dataset.res)}


RUNNERS = {"read": run_read, "gdal": run_gdal, "outcrop": run_outcrop, "torchgeo": run_torchgeo}


def one_run(variant: str, scene: Scene) -> dict:
    """Time one variant in this process; imports are done before the clock starts."""
    import numpy  # noqa: F401
    import rasterio  # noqa: F401

    if variant in ("outcrop", "gdal"):
        import pyarrow.parquet  # noqa: F401
        import pyproj  # noqa: F401
        import shapely  # noqa: F401
    if variant == "outcrop":
        import geopandas  # noqa: F401

        import outcrop.raster.scenes  # noqa: F401
        import outcrop.raster.tiles  # noqa: F401
        # malloc left as it is: the prepare and tile commands do not keep large blocks (outcrop.cli)
    if variant == "torchgeo":
        import torchgeo.datasets  # noqa: F401
        import torchgeo.samplers  # noqa: F401
    with tempfile.TemporaryDirectory(prefix="outcrop-bench-", dir=os.environ.get("BENCH_TMP")) as tmp:
        t0 = time.perf_counter()
        info = RUNNERS[variant](scene, Path(tmp))
        info["seconds"] = time.perf_counter() - t0
    return info


def bench_scene(scene: Scene, variants: list[str], runs: int, torchgeo_runs: int, workdir: Path) -> dict:
    for path in scene.files:  # warm the page cache
        path.read_bytes()
    mb = input_mb(scene)
    times: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(runs):
        for v in variants:
            if v == "torchgeo" and r >= torchgeo_runs:
                continue
            os.sync()  # each run starts with no other run's writes still being flushed to disk
            out = subprocess.run(
                [sys.executable, __file__, "--one", v, "--scenes", scene.name, "--workdir", str(workdir)],
                check=True,
                capture_output=True,
                text=True,
            )
            info = json.loads(out.stdout.strip().splitlines()[-1])
            times[v].append(info.pop("seconds"))
            print(f"{scene.name} run {r + 1} {v}: {times[v][-1]:.2f} s {info}", flush=True)
    med = {v: statistics.median(t) for v, t in times.items() if t}
    print(
        f"\nscene {scene.name}: {', '.join(p.name for p in scene.files)} ({mb:.1f} MB of decoded input), "
        f"tiles {SIZE} px stride {STRIDE}\n"
    )
    print("| variant | median s | runs (s) | MB/s of input | time ÷ outcrop |")
    print("| --- | ---: | --- | ---: | ---: |")
    for v, m in med.items():
        ratio = m / med["outcrop"] if "outcrop" in med else float("nan")
        print(f"| {v} | {m:.2f} | {', '.join(f'{t:.2f}' for t in times[v])} | {mb / m:.0f} | {ratio:.2f} |")
    if "outcrop" in med and "gdal" in med:
        print(f"\noutcrop ÷ gdal floor: {med['outcrop'] / med['gdal']:.2f} (target <= 1.3)")
    if "outcrop" in med and "torchgeo" in med:
        print(f"torchgeo ÷ outcrop: {med['torchgeo'] / med['outcrop']:.1f} (target >= 15)")
    return {"scene": scene.name, "input_mb": mb, "times": times, "median": med}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", default="virginia,landsat")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--torchgeo-runs", type=int, default=1)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/outcrop-bench-prepare"))
    parser.add_argument("--out", type=Path, help="write the times as JSON")
    parser.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)  # a single timed run (child)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one, scene_of(args.scenes, args.workdir))))
        return
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{subprocess.run(['gdalwarp', '--version'], capture_output=True, text=True).stdout.strip()}"
    )
    results = []
    for name in args.scenes.split(","):
        scene = scene_of(name, args.workdir)
        if name == "landsat":
            ensure_landsat(scene)
        results.append(
            bench_scene(scene, [v for v in args.variants.split(",") if v], args.runs, args.torchgeo_runs, args.workdir)
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
