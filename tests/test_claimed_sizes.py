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

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


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
    table = gpd.GeoDataFrame({"id": np.arange(4), "scene": "s1", "tile_id": np.arange(4)},
                             geometry=[box(i, 0, i + 1, 1) for i in range(4)], crs="EPSG:3031")
    table.to_parquet(results / "index" / "tiles.parquet", index=False)
    assert (results / "index" / "tiles.faiss").stat().st_size == 301
    line = assert_refused(run_capped(["query", "--results", results, "--tile", "s1:0"],
                                     "faiss, pyarrow.parquet, shapely, pyproj"),
                          "tiles.faiss: not a readable FAISS index", f"({gib}.0 GiB)", "301 bytes")
    assert line.startswith("outcrop query: error:")
