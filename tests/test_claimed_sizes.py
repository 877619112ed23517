"""Sizes a file claims in its header are checked before anything of that size is allocated.

Each hostile file here is tiny on disk and claims gigabytes; the stage that reads it runs in a
child process whose address space is capped (``RLIMIT_AS``), so a stage that believed the claim
would die of ``MemoryError`` instead of refusing with one line.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import faiss
import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import box

HEADROOM = 1 << 30  # address space the child may add after its imports: a 2 GiB claim does not fit


def run_capped(args: list[str], imports: str, headroom: int = HEADROOM) -> subprocess.CompletedProcess[str]:
    """``outcrop *args`` in a child whose address space may grow by ``headroom`` bytes once the
    libraries named in ``imports`` (their thread pools reserve much address space) are loaded."""
    code = textwrap.dedent(f"""
        import resource, sys
        import {imports}
        from outcrop.cli import main
        with open("/proc/self/statm") as fh:
            used = int(fh.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (used + {headroom}, used + {headroom}))
        sys.exit(main({[str(a) for a in args]!r}))
    """)
    env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    import os

    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )


def assert_refused(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit status 2, one stderr line holding every fragment, no traceback."""
    assert proc.returncode == 2, f"exit {proc.returncode}:\n{proc.stderr[-3000:]}"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def hostile_flat_index(path: Path, claim: int, d: int = 8) -> Path:
    """A real flat index of 4 vectors whose header claims ``claim`` bytes of vectors."""
    index = faiss.IndexFlatIP(d)
    index.add(np.eye(4, d, dtype=np.float32))
    faiss.write_index(index, str(path))
    data = bytearray(path.read_bytes())
    ntotal = claim // (4 * d)
    data[8:16] = struct.pack("<q", ntotal)  # after the kind (4 bytes) and d (int32)
    data[37:45] = struct.pack("<Q", ntotal * d)  # the count of the vector of floats that follows
    data += bytes(301 - len(data))
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("gib", [2, 16, 256])
def test_faiss_header_that_claims_gigabytes(tmp_path, gib):
    results = tmp_path / "results"
    (results / "index").mkdir(parents=True)
    hostile_flat_index(results / "index" / "tiles.faiss", gib << 30)
    table = gpd.GeoDataFrame(
        {"id": np.arange(4), "scene": "s1", "tile_id": np.arange(4)},
        geometry=[box(i, 0, i + 1, 1) for i in range(4)],
        crs="EPSG:3031",
    )
    table.to_parquet(results / "index" / "tiles.parquet", index=False)
    assert (results / "index" / "tiles.faiss").stat().st_size == 301
    line = assert_refused(
        run_capped(["query", "--results", results, "--tile", "s1:0"], "faiss, pyarrow.parquet, shapely, pyproj"),
        "tiles.faiss: not a readable FAISS index",
        f"({gib}.0 GiB)",
        "301 bytes",
    )
    assert line.startswith("outcrop query: error:")


def write_uint16_scene(
    path: Path,
    width: int,
    height: int,
    *,
    crs: str,
    origin: tuple[float, float],
    res: float = 30.0,
    fill: bool = True,
    sparse: bool = False,
) -> Path:
    """A 7-band Level-2-style uint16 scene (0 = nodata), written in row strips; ``sparse`` writes
    only one block of data so the file stays tiny whatever size it claims."""
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 7,
        "dtype": "uint16",
        "crs": crs,
        "transform": Affine(res, 0, origin[0], 0, -res, origin[1]),
        "nodata": 0,
        "tiled": True,
        "blockxsize": 1024 if sparse else 256,
        "blockysize": 1024 if sparse else 256,
        "compress": "deflate",
        "SPARSE_OK": "TRUE",
        "BIGTIFF": "YES" if sparse else "IF_NEEDED",
    }
    rng = np.random.default_rng(1)
    rock = (np.array([0.10, 0.11, 0.13, 0.16, 0.20, 0.26, 0.22]) + 0.2) / 0.0000275
    with rasterio.open(path, "w", **profile) as dst:
        for i, name in enumerate(["coastal", "blue", "green", "red", "nir", "swir1", "swir2"], start=1):
            dst.set_band_description(i, name)
        rows = [0] if sparse else range(0, height, 256)
        for r in rows:
            h = min(256, height - r)
            w = 256 if sparse else width
            noise = rng.normal(0, 300, size=(7, h, w))
            dn = np.clip(rock[:, None, None] + noise + np.linspace(0, 2000, w)[None, None, :], 1, 65535)
            dst.write(dn.astype(np.uint16), window=rasterio.windows.Window(0, r, w, h))
    return path


def test_sparse_scene_that_claims_200000_squared_pixels(tmp_path):
    scene = write_uint16_scene(
        tmp_path / "huge.tif", 200_000, 200_000, crs="EPSG:3031", origin=(-1_200_000.0, 900_000.0), sparse=True
    )
    assert scene.stat().st_size < 2_000_000  # 1.1 TB of float32 claimed
    out = tmp_path / "prepared" / "huge.tif"
    proc = run_capped(
        [
            "prepare",
            "--source",
            scene,
            "--sensor",
            "landsat-c2l2",
            "--scene",
            "huge",
            "--bands",
            "coastal,blue,green,red,nir,swir1,swir2",
            "--out",
            out,
        ],
        "rasterio, numpy, shapely, pyproj",
    )
    assert_refused(
        proc, "huge.tif: the scene covers 200000x200000 px of the run grid (40.0 Gpx)", "more than the 2.0 Gpx"
    )
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_prepare_in_windows_equals_prepare_at_once(tmp_path):
    """A scene resampled onto the grid (20 m, off the 30 m pixel edges) and cut into many windows
    gives the pixels of one window. (Across CRSs GDAL approximates the transformation along each
    warped chunk to within 0.125 px, so the pixels may differ by that much, as between GDAL's
    own chunks of a whole-scene warp.)"""
    from outcrop.raster.scenes import prepare_scene

    scene = write_uint16_scene(
        tmp_path / "fine.tif", 1000, 900, crs="EPSG:3031", origin=(-1_200_007.0, 900_011.0), res=20.0
    )
    outs = []
    for window_pixels in (1 << 16, 1 << 30):
        out = tmp_path / f"w{window_pixels}.tif"
        prepare_scene(
            str(scene),
            "landsat-c2l2",
            out,
            scene_id="u",
            log=lambda _: None,
            window_pixels=window_pixels,
            bands=["coastal", "blue", "green", "red", "nir", "swir1", "swir2"],
        )
        with rasterio.open(out) as src:
            outs.append((src.read(), src.profile, src.tags(), src.overviews(1)))
    (a, pa, ta, oa), (b, pb, tb, ob) = outs
    assert a.shape[1] > 512 and a.shape[2] > 512  # several 256-px windows each way
    np.testing.assert_array_equal(a, b)
    assert pa == pb and ta == tb and oa == ob


def test_prepare_memory_is_bounded_by_the_window(tmp_path):
    """A 3000 x 3000 px, 7-band scene (250 MB as float32) prepares with 400 MB of headroom."""
    scene = write_uint16_scene(tmp_path / "big.tif", 3000, 3000, crs="EPSG:3031", origin=(-1_200_000.0, 900_000.0))
    out = tmp_path / "big_prepared.tif"
    proc = run_capped(
        [
            "prepare",
            "--source",
            scene,
            "--sensor",
            "landsat-c2l2",
            "--scene",
            "big",
            "--bands",
            "coastal,blue,green,red,nir,swir1,swir2",
            "--out",
            out,
        ],
        "rasterio, numpy, shapely, pyproj",
        headroom=400 << 20,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with rasterio.open(out) as src:
        assert (src.count, src.height, src.width) == (8, 3000, 3000)


def test_the_block_cache_cap_is_left_to_the_command_that_set_it(tmp_path):
    """main() run inside another process (a test, a notebook) sets GDAL_CACHEMAX for its own command
    only: a later child computes its own, under its own memory limit."""
    import os

    from outcrop.cli import main

    os.environ.pop("GDAL_CACHEMAX", None)
    assert main(["info", str(tmp_path / "no-run")]) == 2
    assert "GDAL_CACHEMAX" not in os.environ
    os.environ["GDAL_CACHEMAX"] = "64"
    try:
        main(["info", str(tmp_path / "no-run")])
        assert os.environ["GDAL_CACHEMAX"] == "64"  # a user's setting is left as it is
    finally:
        os.environ.pop("GDAL_CACHEMAX", None)
