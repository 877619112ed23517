"""Memory-mapped reads leave the resident set as they found it (Linux: /proc/self/status)."""

from __future__ import annotations

import numpy as np

from outcrop.io import load_npy, save_npy
from outcrop.learning.training_data import open_training_tiles
from outcrop.runtime.pages import release_pages


def _rss_file_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssFile:"))


def _tiles(tmp_path, n=2400):
    """A 39 MB tile array (n tiles of 4 x 32 x 32 float32) and a table whose tiles are all rock."""
    import geopandas as gpd
    from shapely.geometry import box

    from outcrop.io import write_geodataframe

    save_npy(tmp_path / "s.npy", np.random.default_rng(0).random((n, 4, 32, 32), dtype=np.float32))
    write_geodataframe(
        tmp_path / "s.parquet", gpd.GeoDataFrame({"rock": np.ones(n)}, geometry=[box(0, 0, 1, 1)] * n, crs="EPSG:3031")
    )
    return tmp_path / "s.npy", tmp_path / "s.parquet"


def test_training_batches_do_not_pile_up_the_tile_array_in_memory(tmp_path):
    tiles = open_training_tiles(*[[p] for p in _tiles(tmp_path)])
    before = _rss_file_kib()
    rng = np.random.default_rng(1)
    for _ in range(256):  # 256 batches of 64 random tiles: every page of the array is read
        tiles.gather(rng.integers(0, len(tiles), 64))
    assert _rss_file_kib() - before < 16 * 1024  # without releasing: ~37 MiB stay mapped


def test_only_read_only_maps_are_released(tmp_path):
    save_npy(tmp_path / "a.npy", np.zeros((1000, 1024), dtype=np.float32))
    writable = np.load(tmp_path / "a.npy", mmap_mode="c")  # private copy-on-write: edits live in memory only
    writable[:] = 7.0
    release_pages(writable)
    assert float(writable[500, 3]) == 7.0  # a release would have dropped the edit
    release_pages(load_npy(tmp_path / "a.npy"))  # read-only: fine
    release_pages(np.ones(3))  # not a map: nothing to do
