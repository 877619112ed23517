"""Block spectra: the ground around a tile, the same whether its neighbours come from the tile table or
from the prepared raster, and never counting cloud, nodata or what lies past the scene's edge."""

from __future__ import annotations

import numpy as np
from rasterio.transform import from_origin

from outcrop.io import write_prepared
from outcrop.raster.spectra import block_neighbours, block_spectra, square_spectra, tile_spectra
from outcrop.raster.surfaces import CLOUD, NODATA, ROCK
from outcrop.raster.tile_store import open_tiles
from outcrop.raster.tiles import cut_offset_tiles, read_tile_positions, tile_scene

BANDS = ["blue", "green", "red", "nir"]


def test_block_neighbours_are_the_tiles_one_size_away_and_nothing_else():
    # A 3 x 4 grid of 16 px tiles at stride 8 (so tiles half a size away exist too), one tile missing.
    rows, cols = np.meshgrid(np.arange(0, 48, 8), np.arange(0, 64, 8), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    keep = ~((rows == 16) & (cols == 32))
    rows, cols = rows[keep], cols[keep]
    nb = block_neighbours(rows, cols, 16)
    where = {(r, c): i for i, (r, c) in enumerate(zip(rows, cols))}
    for i, (r, c) in enumerate(zip(rows, cols)):
        assert nb[i, 0] == i  # the centre first
        want = {where[(r + dr, c + dc)] for dr in (-16, 0, 16) for dc in (-16, 0, 16) if (r + dr, c + dc) in where}
        assert set(nb[i][nb[i] >= 0]) == want
    # The missing tile's neighbours lack it; the far corner has its three neighbours and itself.
    centre = where[(16, 16)]
    assert (nb[centre] >= 0).sum() == 8
    assert (nb[where[(0, 0)]] >= 0).sum() == 4


def test_block_spectra_of_whole_and_partial_blocks_are_those_of_their_squares():
    rng = np.random.default_rng(1)
    tiles = rng.uniform(0, 1, (9, 2, 8, 8)).astype(np.float32) * np.arange(1, 10, dtype=np.float32)[:, None, None, None]
    rows, cols = (np.repeat(np.arange(3), 3) * 8), (np.tile(np.arange(3), 3) * 8)
    got = block_spectra(tiles, block_neighbours(rows, cols, 8), chunk=4)
    # The middle tile sees all nine, a corner four, an edge six.
    np.testing.assert_allclose(got[4], square_spectra(tiles))
    np.testing.assert_allclose(got[0], square_spectra(tiles[[0, 1, 3, 4]]))
    np.testing.assert_allclose(got[1], square_spectra(tiles[[0, 1, 2, 3, 4, 5]]))
    # The blocks of some tiles only (the indexed ones, or a sample): those tiles' rows of the whole.
    some = np.array([7, 4, 0])
    np.testing.assert_allclose(block_spectra(tiles, block_neighbours(rows, cols, 8)[some], chunk=2), got[some])
    # A block of one uniform ground is that ground's tile spectrum.
    flat = np.full((9, 2, 8, 8), 0.3, dtype=np.float32)
    np.testing.assert_allclose(block_spectra(flat, block_neighbours(rows, cols, 8))[4], tile_spectra(flat[:1])[0])


def test_the_raster_path_gives_the_table_path_block_and_skips_cloud_and_the_edge(tmp_path):
    rng = np.random.default_rng(2)
    h, w = 96, 112
    refl = rng.uniform(0.05, 0.5, (len(BANDS), h, w)).astype(np.float32)
    refl += np.linspace(0, 0.3, w, dtype=np.float32)[None, None, :]  # ground that changes across the scene
    mask = np.full((h, w), ROCK, dtype=np.uint8)
    mask[:16, 64:80] = CLOUD  # one tile-sized square of cloud
    refl[:, 80:, :16] = np.nan
    mask[80:, :16] = NODATA
    write_prepared(tmp_path / "s.tif", refl, mask, "EPSG:3031", from_origin(0, 0, 30, 30), BANDS)
    tile_scene(
        tmp_path / "s.tif", tmp_path / "t.npy", tmp_path / "t.parquet", scene_id="s", size=16, stride=16, min_valid=0.9
    )
    tiles = open_tiles(tmp_path / "t.npy")[:]
    rows, cols = read_tile_positions(tmp_path / "t.parquet", len(tiles))
    from_table = block_spectra(tiles, block_neighbours(rows, cols, 16))
    cut, _, from_raster = cut_offset_tiles(
        tmp_path / "s.tif", size=16, stride=16, offset=0, min_valid=0.9, context=True
    )
    assert len(cut) == len(tiles)
    np.testing.assert_allclose(cut, tiles, atol=1e-6)
    np.testing.assert_allclose(from_raster, from_table, rtol=1e-5, atol=1e-6)
    # The tile under the cloud square is not a tile, and its neighbours' blocks leave it out.
    assert not ((rows == 0) & (cols == 64)).any()
    beside = np.flatnonzero((rows == 0) & (cols == 48))[0]
    squares = [
        tiles[np.flatnonzero((rows == r) & (cols == c))[0]] for r, c in ((0, 32), (0, 48), (16, 32), (16, 48), (16, 64))
    ]
    np.testing.assert_allclose(from_table[beside], square_spectra(np.stack(squares)))
    assert np.isfinite(from_table).all()
