"""The tile array as blocks of the prepared pixels: the same tiles as whole float32 tiles, bit for bit,
in an eighth of the bytes at half-tile stride; earlier runs' float32 arrays read as they are."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.transform import from_origin
from shapely.geometry import box

from outcrop import OutcropError
from outcrop.io import decode_reflectance, load_npy, write_prepared
from outcrop.raster.surfaces import NODATA, ROCK, WATER
from outcrop.raster.tile_store import TileArray, block_layout, open_tiles
from outcrop.raster.tiles import _fill_gaps, read_tile_table, tile_scene

BANDS = ["blue", "green", "red", "nir"]


def _prepared(path, h=120, w=150, seed=0):
    rng = np.random.default_rng(seed)
    refl = rng.uniform(0.02, 0.6, (len(BANDS), h, w)).astype(np.float32)
    mask = np.full((h, w), ROCK, dtype=np.uint8)
    mask[:, :15] = WATER
    refl[:, 100:, :] = np.nan  # nodata rows: tiles reaching into them are kept with gaps
    mask[100:, :] = NODATA
    refl[:, 40:43, 70:74] = np.nan  # a hole inside the scene
    mask[40:43, 70:74] = NODATA
    write_prepared(path, refl, mask, "EPSG:3031", from_origin(300_000.0 + 30 * 5, -1_000_000.0 - 30 * 3, 30, 30), BANDS)


def _whole_tiles(prepared, table, size):
    """The tiles as the tiles stage wrote them before the block store: decoded, gaps filled per tile."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(prepared) as src:
        out = [
            decode_reflectance(src.read(list(range(1, src.count)), window=Window(int(c), int(r), size, size)))
            for r, c in zip(table.row, table.col)
        ]
    return _fill_gaps(np.stack(out)) if out else np.zeros((0, len(BANDS), size, size), np.float32)


@pytest.mark.parametrize("size,stride", [(16, 8), (16, 16), (24, 16), (16, 12), (8, 20)])
def test_block_tiles_equal_the_whole_float32_tiles_bit_for_bit(tmp_path, size, stride):
    _prepared(tmp_path / "s.tif")
    aoi = box(300_000.0, -1_003_000.0, 303_000.0, -999_000.0)  # drops the tiles of the right part
    n = tile_scene(
        tmp_path / "s.tif",
        tmp_path / "t.npy",
        tmp_path / "t.parquet",
        scene_id="s",
        size=size,
        stride=stride,
        min_valid=0.5,
        aoi=aoi,
        log=lambda _: None,
    )
    table = read_tile_table(tmp_path / "t.parquet")
    tiles = open_tiles(tmp_path / "t.npy")
    assert isinstance(tiles, TileArray) and tiles.shape == (n, 4, size, size) and len(tiles) == n
    assert n > 10
    assert (table.valid < 1).any() or stride > size  # some kept tiles have gaps to fill
    np.testing.assert_array_equal(tiles[:], _whole_tiles(tmp_path / "s.tif", table, size))


def test_each_kept_pixel_is_stored_once_as_its_uint16_code(tmp_path):
    _prepared(tmp_path / "s.tif")
    n = tile_scene(
        tmp_path / "s.tif",
        tmp_path / "t.npy",
        tmp_path / "t.parquet",
        scene_id="s",
        size=16,
        stride=8,
        min_valid=0.5,
        log=lambda _: None,
    )
    blocks = load_npy(tmp_path / "t.npy")
    assert blocks.dtype == np.uint16 and blocks.shape[1:] == (4, 8, 8)
    table = read_tile_table(tmp_path / "t.parquet")
    covered = np.zeros((120, 150), bool)
    for r, c in zip(table.row, table.col):
        covered[r : r + 16, c : c + 16] = True
    assert len(blocks) * 8 * 8 == covered.sum()  # every covered pixel once, nothing else
    whole_float32 = n * 4 * 16 * 16 * 4  # an eighth of this, plus the scene's edges, at half-tile stride
    assert blocks.nbytes < whole_float32 / 6
    data = (tmp_path / "t.npy").stat().st_size - blocks.offset
    assert data == blocks.nbytes


def test_tiles_index_like_an_array(tmp_path):
    _prepared(tmp_path / "s.tif")
    tile_scene(
        tmp_path / "s.tif",
        tmp_path / "t.npy",
        tmp_path / "t.parquet",
        scene_id="s",
        size=16,
        stride=8,
        min_valid=0.5,
        log=lambda _: None,
    )
    tiles = open_tiles(tmp_path / "t.npy")
    whole = np.asarray(tiles)
    n = len(whole)
    mask = np.zeros(n, bool)
    mask[[1, 5, n - 1]] = True
    for key in (
        3,
        -1,
        slice(2, 40, 3),
        slice(None, None, -7),
        [7, 2, 2, 0],
        np.array([n - 1, 0]),
        mask,
        (np.array([4, 9]), slice(None), slice(None, None, 2)),
        (5, 1),
    ):
        np.testing.assert_array_equal(tiles[key], whole[key])
    assert tiles[np.empty(0, np.int64)].shape == (0, 4, 16, 16)
    with pytest.raises(IndexError):
        tiles[n]


def test_tiles_of_an_earlier_run_are_read_as_they_are(tmp_path):
    """A run tiled before the block store has float32 whole tiles: they are read unchanged, and the
    training sampler reads them as it reads the block store's."""
    from outcrop.learning.training_data import open_training_tiles

    _prepared(tmp_path / "s.tif")
    tile_scene(
        tmp_path / "s.tif",
        tmp_path / "t.npy",
        tmp_path / "t.parquet",
        scene_id="s",
        size=16,
        stride=8,
        min_valid=0.5,
        log=lambda _: None,
    )
    whole = open_tiles(tmp_path / "t.npy")[:]
    np.save(tmp_path / "old.npy", whole)
    (tmp_path / "old.parquet").write_bytes((tmp_path / "t.parquet").read_bytes())
    old = open_tiles(tmp_path / "old.npy")
    assert isinstance(old, np.memmap) and old.dtype == np.float32
    new_set = open_training_tiles([tmp_path / "t.npy"], [tmp_path / "t.parquet"])
    old_set = open_training_tiles([tmp_path / "old.npy"], [tmp_path / "old.parquet"])
    pick = np.random.default_rng(1).permutation(len(whole))[:20]
    np.testing.assert_array_equal(new_set.gather(pick), old_set.gather(pick))


def test_a_tile_array_and_a_table_of_different_runs_are_refused(tmp_path):
    _prepared(tmp_path / "s.tif")
    tile_scene(
        tmp_path / "s.tif",
        tmp_path / "t.npy",
        tmp_path / "t.parquet",
        scene_id="s",
        size=16,
        stride=8,
        min_valid=0.5,
        log=lambda _: None,
    )
    tile_scene(
        tmp_path / "s.tif",
        tmp_path / "u.npy",
        tmp_path / "u.parquet",
        scene_id="s",
        size=16,
        stride=8,
        min_valid=1.0,
        log=lambda _: None,
    )
    with pytest.raises(
        OutcropError,
        match=r"t\.npy: holds \d+ blocks, but the \d+ tiles of .*u\.parquet cover \d+: "
        "the array and the table are of different runs",
    ):
        open_tiles(tmp_path / "t.npy", tmp_path / "u.parquet")
    np.save(tmp_path / "v.npy", np.zeros((3, 4), np.float64))
    with pytest.raises(OutcropError, match=r"v\.npy: not a tile array: float64 \(3, 4\)"):
        open_tiles(tmp_path / "v.npy")
    (tmp_path / "t.parquet").unlink()
    with pytest.raises(OutcropError, match=r"t\.parquet: file not found"):
        open_tiles(tmp_path / "t.npy")


def test_block_layout_shares_blocks_between_overlapping_tiles():
    layout = block_layout(np.array([4, 4, 12]), np.array([4, 12, 4]), size=16, side=8)
    assert layout.k == 2 and len(layout.keys) == 3 * 3 - 1  # a 3 x 3 block square, less the unused corner
    assert layout.slots[0, 0, 1] == layout.slots[1, 0, 0] and layout.slots[0, 1, 0] == layout.slots[2, 0, 0]
    with pytest.raises(ValueError, match="one grid"):
        block_layout(np.array([0, 3]), np.array([0, 0]), size=16, side=8)
