"""Tiles: alignment to the global grid, surface fractions, filters, AOI, and the files' contracts."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.transform import from_origin
from shapely.geometry import box

from outcrop import OutcropError
from outcrop.io import load_npy, write_prepared
from outcrop.raster.surfaces import CLOUD, NODATA, ROCK, SNOW_ICE, WATER
from outcrop.raster.tiles import read_tile_table, tile_origins, tile_scene

BANDS = ["blue", "green", "red", "nir"]


def _prepared(path, left=300_000.0, top=-999_990.0, h=100, w=130, seed=0):
    rng = np.random.default_rng(seed)
    refl = rng.uniform(0.05, 0.5, (len(BANDS), h, w)).astype(np.float32)
    mask = np.full((h, w), ROCK, dtype=np.uint8)
    mask[:, :20] = WATER
    mask[:10, :] = SNOW_ICE
    refl[:, 90:, :] = np.nan
    mask[90:, :] = NODATA
    write_prepared(path, refl, mask, "EPSG:3031", from_origin(left, top, 30, 30), BANDS)
    return refl, mask


def test_tile_origins_sit_on_global_multiples_of_the_stride():
    offsets = tile_origins(100, first_global=1007, size=16, stride=8)
    assert ((offsets + 1007) % 8 == 0).all()
    assert offsets[0] == 1 and offsets[-1] + 16 <= 100


def test_tiles_match_the_scene_pixels_and_table(tmp_path):
    refl, mask = _prepared(tmp_path / "s.tif")
    n = tile_scene(
        tmp_path / "s.tif", tmp_path / "t.npy", tmp_path / "t.parquet", scene_id="s", size=16, stride=16, min_valid=1.0
    )
    tiles = load_npy(tmp_path / "t.npy")
    table = read_tile_table(tmp_path / "t.parquet")
    assert tiles.shape == (n, 4, 16, 16) and tiles.dtype == np.float32
    assert isinstance(tiles, np.memmap)
    assert len(table) == n and table.crs.to_epsg() == 3031
    assert list(table.tile_id) == list(range(n))
    # Each tile equals the scene pixels at its row/col (within the uint16 encoding step).
    for t in (0, n // 2, n - 1):
        r, c = table.row[t], table.col[t]
        np.testing.assert_allclose(tiles[t], refl[:, r : r + 16, c : c + 16], atol=1e-4)
    # No tile reaches into the nodata bottom rows.
    assert (table.row + 16 <= 90).all()
    assert np.isfinite(tiles).all()
    # Fractions add up and match the mask.
    fr = table[["rock", "snow_ice", "water", "cloud"]].sum(axis=1) + (1 - table.valid)
    np.testing.assert_allclose(fr, 1.0)
    t = table.iloc[0]
    block = mask[t.row : t.row + 16, t.col : t.col + 16]
    assert t.water == pytest.approx((block == WATER).mean())
    # Footprints are squares of 16 px at the right place.
    minx, miny, maxx, maxy = table.geometry.iloc[0].bounds
    assert maxx - minx == pytest.approx(480) and maxy - miny == pytest.approx(480)
    assert minx == pytest.approx(300_000 + table.col[0] * 30)


def test_overlapping_scenes_cut_the_same_tiles(tmp_path):
    _prepared(tmp_path / "a.tif", left=300_000.0)
    _prepared(tmp_path / "b.tif", left=300_000.0 + 30 * 37)  # shifted by 37 px
    for s in "ab":
        tile_scene(
            tmp_path / f"{s}.tif",
            tmp_path / f"{s}.npy",
            tmp_path / f"{s}.parquet",
            scene_id=s,
            size=16,
            stride=8,
            min_valid=0.5,
        )
    a = read_tile_table(tmp_path / "a.parquet")
    b = read_tile_table(tmp_path / "b.parquet")
    shared = set(a.geometry.bounds.minx.round()) & set(b.geometry.bounds.minx.round())
    assert len(shared) > 5  # the same tile edges exist in both scenes


def test_aoi_limits_tiles_and_disjoint_aoi_is_an_error(tmp_path):
    _prepared(tmp_path / "s.tif")
    aoi = box(300_000, -999_990 - 30 * 50, 300_000 + 30 * 60, -999_990)
    n = tile_scene(
        tmp_path / "s.tif",
        tmp_path / "t.npy",
        tmp_path / "t.parquet",
        scene_id="s",
        size=16,
        stride=16,
        min_valid=0.5,
        aoi=aoi,
    )
    table = read_tile_table(tmp_path / "t.parquet")
    assert n > 0 and table.geometry.centroid.within(aoi).all()
    far = box(0, 0, 1000, 1000)
    with pytest.raises(OutcropError, match=r"s\.tif.*coast\.gpkg"):
        tile_scene(
            tmp_path / "s.tif",
            tmp_path / "u.npy",
            tmp_path / "u.parquet",
            scene_id="s",
            size=16,
            stride=16,
            aoi=far,
            aoi_name="coast.gpkg",
        )
    assert not (tmp_path / "u.npy").exists() and not (tmp_path / "u.parquet").exists()


def test_tile_larger_than_scene_is_an_error(tmp_path):
    _prepared(tmp_path / "s.tif")
    with pytest.raises(OutcropError, match="larger than the scene"):
        tile_scene(tmp_path / "s.tif", tmp_path / "t.npy", tmp_path / "t.parquet", scene_id="s", size=512)
    assert list(tmp_path.glob("t.*")) == []


def test_cloudy_tiles_are_dropped(tmp_path):
    refl = np.full((4, 32, 32), 0.2, dtype=np.float32)
    mask = np.full((32, 32), ROCK, dtype=np.uint8)
    mask[:, 16:] = CLOUD
    write_prepared(tmp_path / "c.tif", refl, mask, "EPSG:3031", from_origin(0, 0, 30, 30), BANDS)
    n = tile_scene(
        tmp_path / "c.tif", tmp_path / "t.npy", tmp_path / "t.parquet", scene_id="c", size=16, stride=16, min_valid=0.9
    )
    table = read_tile_table(tmp_path / "t.parquet")
    assert n == 2 and (table.col == 0).all()


def test_an_all_cloud_scene_gives_an_empty_tile_table_and_array(tmp_path):
    """No usable tile is not an error: the run goes on with the other scenes, and the log says why."""
    refl = np.full((4, 48, 48), 0.6, dtype=np.float32)
    mask = np.full((48, 48), CLOUD, dtype=np.uint8)
    mask[:4, :4] = ROCK  # a few clear pixels, far from enough for any tile
    write_prepared(tmp_path / "c.tif", refl, mask, "EPSG:3031", from_origin(0, 0, 30, 30), BANDS)
    lines: list[str] = []
    n = tile_scene(
        tmp_path / "c.tif",
        tmp_path / "t.npy",
        tmp_path / "t.parquet",
        scene_id="c",
        size=16,
        stride=8,
        min_valid=0.9,
        log=lines.append,
    )
    assert n == 0
    tiles = load_npy(tmp_path / "t.npy")
    assert tiles.shape == (0, 4, 16, 16) and tiles.dtype == np.float32
    table = read_tile_table(tmp_path / "t.parquet")
    assert len(table) == 0 and table.crs.to_epsg() == 3031
    assert table.row.dtype == np.int64 and table.valid.dtype == np.float64
    assert any("c: no usable tiles" in line and "90%" in line for line in lines), lines


def test_a_scene_with_no_usable_tiles_is_named_by_the_summary_and_info(tmp_path):
    from outcrop.figures.report import run_info, summary_of_run

    results = tmp_path / "results"
    (results / "prepared").mkdir(parents=True)
    refl = np.full((4, 32, 32), 0.6, dtype=np.float32)
    clear = np.full((32, 32), ROCK, dtype=np.uint8)
    write_prepared(results / "prepared" / "a.tif", refl, clear, "EPSG:3031", from_origin(0, 0, 30, 30), BANDS)
    cloud = np.full((32, 32), CLOUD, dtype=np.uint8)
    write_prepared(results / "prepared" / "c.tif", refl, cloud, "EPSG:3031", from_origin(0, 0, 30, 30), BANDS)
    half = cloud.copy()
    half[:, :8] = NODATA
    write_prepared(results / "prepared" / "h.tif", refl, half, "EPSG:3031", from_origin(0, 0, 30, 30), BANDS)
    for s in "ach":
        tile_scene(
            results / "prepared" / f"{s}.tif",
            results / "tiles" / f"{s}.npy",
            results / "tiles" / f"{s}.parquet",
            scene_id=s,
            size=16,
            stride=16,
            log=lambda _: None,
        )
    summary_of_run(results, ["a", "c", "h"], tmp_path / "summary.html", log=lambda _: None)
    line = "scenes without usable tiles: c (all cloud), h (75% cloud, 25% nodata)"
    assert line in (tmp_path / "summary.html").read_text()
    assert line in run_info(results).splitlines()


def test_nodata_pixels_of_kept_tiles_are_filled_with_the_tile_band_mean(tmp_path):
    refl, _ = _prepared(tmp_path / "s.tif")
    tile_scene(
        tmp_path / "s.tif", tmp_path / "t.npy", tmp_path / "t.parquet", scene_id="s", size=16, stride=16, min_valid=0.9
    )
    tiles = load_npy(tmp_path / "t.npy")
    table = read_tile_table(tmp_path / "t.parquet")
    partial = table.index[table.valid < 1.0]
    assert len(partial) > 0 and np.isfinite(tiles).all()
    t = partial[0]
    src = refl[:, table.row[t] : table.row[t] + 16, table.col[t] : table.col[t] + 16]
    gap = ~np.isfinite(src[0])
    np.testing.assert_allclose(
        tiles[t][:, gap], np.broadcast_to(np.nanmean(src, axis=(1, 2))[:, None], (4, gap.sum())), atol=1e-4
    )


# --- facts recorded where they are made: the tile grid, and one offset rule for every cut ---------------


def test_the_tile_table_records_the_grid_it_was_cut_on(tmp_path):
    """Size, stride and clear fraction go into the table's metadata, for the stages that frame tiles
    later (the quality stage's queries, the index table); a scene with no tile records them too."""
    import geopandas as gpd

    from outcrop.raster.geo import TileLayout
    from outcrop.raster.tiles import read_tile_grid

    _prepared(tmp_path / "s.tif")
    tile_scene(
        tmp_path / "s.tif", tmp_path / "t.npy", tmp_path / "t.parquet", scene_id="s", size=16, stride=8, min_valid=0.8
    )
    assert read_tile_grid(tmp_path / "t.parquet") == TileLayout(16, 8, 0.8)
    assert gpd.read_parquet(tmp_path / "t.parquet").attrs["tile_grid"] == {"size": 16, "stride": 8, "min_valid": 0.8}
    refl = np.full((len(BANDS), 40, 40), 0.2, dtype=np.float32)
    write_prepared(
        tmp_path / "cloud.tif",
        refl,
        np.full((40, 40), CLOUD, dtype=np.uint8),
        "EPSG:3031",
        from_origin(0, 0, 30, 30),
        BANDS,
    )
    assert (
        tile_scene(
            tmp_path / "cloud.tif",
            tmp_path / "c.npy",
            tmp_path / "c.parquet",
            scene_id="c",
            size=16,
            stride=16,
            log=lambda m: None,
        )
        == 0
    )
    assert read_tile_grid(tmp_path / "c.parquet") == TileLayout(16, 16, 0.9)


def test_a_table_without_a_recorded_grid_or_of_another_grid_is_one_clear_error(tmp_path):
    import geopandas as gpd

    from outcrop.raster.tiles import read_tile_grid, tables_tile_grid

    _prepared(tmp_path / "s.tif")
    for name, stride in (("a", 8), ("b", 16)):
        tile_scene(
            tmp_path / "s.tif",
            tmp_path / f"{name}.npy",
            tmp_path / f"{name}.parquet",
            scene_id=name,
            size=16,
            stride=stride,
        )
    old = gpd.read_parquet(tmp_path / "a.parquet")
    old.attrs = {}
    old.to_parquet(tmp_path / "old.parquet")  # as tables were written before the grid was recorded
    assert read_tile_grid(tmp_path / "old.parquet") is None
    with pytest.raises(
        OutcropError,
        match=r"old\.parquet: the tile table records no tile size and stride .*"
        r"cut the tiles again \(snakemake --forcerun tiles\)",
    ):
        tables_tile_grid([tmp_path / "a.parquet", tmp_path / "old.parquet"])
    with pytest.raises(
        OutcropError, match=r"b\.parquet: tiles of 16 px at a stride of 16, other scenes' of 16 px at 8"
    ):
        tables_tile_grid([tmp_path / "a.parquet", tmp_path / "b.parquet"])
    assert tables_tile_grid([tmp_path / "a.parquet"]).stride == 8


@pytest.mark.parametrize("west", [45.0, 300_015.0, 300_000.0])
def test_an_offset_cut_lands_where_the_runs_own_cut_would(tmp_path, west):
    """cut_offset_tiles (the quality stage's queries) places tiles by the rule tile_scene uses: at
    offset 0 it cuts the run's own tiles, at offset k the same grid moved k pixels. The scene sits
    half a pixel off the grid's multiples (x / 30 m = 1.5, 10 000.5): rounding there picks the
    next pixel column, as flooring does not."""
    from outcrop.raster.tiles import cut_offset_tiles, read_tile_table

    _prepared(tmp_path / "s.tif", left=west, top=-45.0 - 30.0 * 1000)
    tile_scene(
        tmp_path / "s.tif", tmp_path / "t.npy", tmp_path / "t.parquet", scene_id="s", size=16, stride=8, min_valid=0.9
    )
    own = read_tile_table(tmp_path / "t.parquet")
    own_boxes = {tuple(np.round(g.bounds, 6)) for g in own.geometry}
    tiles, boxes = cut_offset_tiles(tmp_path / "s.tif", size=16, stride=8, offset=0, min_valid=0.9)
    assert {tuple(np.round(b.bounds, 6)) for b in boxes} == own_boxes
    assert np.array_equal(tiles, load_npy(tmp_path / "t.npy")[np.lexsort((own["col"], own["row"]))])
    _, shifted = cut_offset_tiles(tmp_path / "s.tif", size=16, stride=8, offset=3, min_valid=0.9)
    x0 = min(b[0] for b in own_boxes)
    lefts = np.array([b.bounds[0] for b in shifted])
    assert len(lefts) and np.allclose(((lefts - x0) / 30.0) % 8, 3)
