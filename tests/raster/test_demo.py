"""The demo world: deterministic, overlapping scenes agree, and its truth is honest."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio

from outcrop import OutcropError
from outcrop.raster.demo import (
    ACQUISITIONS,
    BANDS,
    CRS,
    UNITS,
    DemoLayout,
    render_scene,
    scene_name,
    scene_names,
    scene_place_and_date,
    synthesise_scene,
    write_deposits,
)
from outcrop.search.evaluate import band_statistics

LAYOUT = DemoLayout(size=256, seed=7)


def test_scenes_are_deterministic_and_overlaps_agree():
    a1, t1, (left1, top1) = render_scene(LAYOUT, 0)
    a2, _, _ = render_scene(LAYOUT, 0)
    np.testing.assert_array_equal(a1, a2)
    b, tb, (left2, top2) = render_scene(LAYOUT, 1)
    # Scene 1 starts 65 % of a scene east of scene 0: the shared columns show the same ground.
    dc = int(round((left2 - left1) / 30))
    dr = int(round((top1 - top2) / 30))
    assert 0 < dc < 256
    rows = slice(max(0, dr), 256 + min(0, dr))
    rows_b = slice(max(0, -dr), 256 - max(0, dr))
    # Truth (rock units) agrees exactly where neither scene is clouded.
    ta, tb_ = t1[rows, dc:], tb[rows_b, : 256 - dc]
    both = (ta > 0) & (tb_ > 0)
    assert both.sum() > 500
    assert (ta[both] == tb_[both]).all()


def test_paired_units_share_per_band_statistics_but_not_texture():
    refl, truth, _ = render_scene(DemoLayout(size=512, seed=7), 1)
    names = [u[0] for u in UNITS]

    def unit_pixels(name):
        sel = truth == names.index(name) + 1
        return refl[:, sel]

    for a, b in (("bedded_sandstone", "massive_sandstone"), ("banded_gneiss", "schist")):
        pa, pb = unit_pixels(a), unit_pixels(b)
        assert pa.shape[1] > 500 and pb.shape[1] > 500
        # Same mean spectrum and spread within a few percent: per-band statistics cannot tell them apart.
        np.testing.assert_allclose(pa.mean(axis=1), pb.mean(axis=1), rtol=0.1)
        np.testing.assert_allclose(pa.std(axis=1), pb.std(axis=1), rtol=0.25)
    # Unpaired units differ clearly in mean spectrum.
    assert abs(unit_pixels("granite").mean() - unit_pixels("dolerite").mean()) > 0.05


def test_texture_differs_between_paired_units():
    """Bedded sandstone varies along one direction; massive sandstone does not."""
    layout = DemoLayout(size=512, seed=7)
    names = [u[0] for u in UNITS]

    def anisotropy(name):
        unit = names.index(name) + 1
        ratios = []
        for index in range(3):
            refl, truth, _ = render_scene(layout, index)
            for y in range(0, 512 - 16, 8):
                for x in range(0, 512 - 16, 8):
                    if (truth[y : y + 16, x : x + 16] == unit).all():
                        block = refl[3, y : y + 16, x : x + 16]
                        gy = np.abs(np.diff(block, axis=0)).mean()
                        gx = np.abs(np.diff(block, axis=1)).mean()
                        ratios.append(max(gx, gy) / (min(gx, gy) + 1e-9))
        assert len(ratios) >= 10, name
        return np.median(ratios)

    # Layers make one gradient direction dominate far more than mottling does.
    assert anisotropy("bedded_sandstone") > 1.3 * anisotropy("massive_sandstone")


def test_written_scene_is_landsat_l2_scaled_on_the_grid(tmp_path):
    synthesise_scene(tmp_path / "s.tif", tmp_path / "t.tif", index=0, size=128, seed=3)
    with rasterio.open(tmp_path / "s.tif") as src:
        assert src.crs.to_epsg() == 3031 and src.count == len(BANDS)
        assert src.dtypes[0] == "uint16" and src.nodata == 0
        assert src.transform.a == 30 and src.transform.c % 30 == 0 and src.transform.f % 30 == 0
        assert [src.descriptions[i] for i in range(src.count)] == BANDS
        refl = src.read().astype(float) * 0.0000275 - 0.2
    assert 0.0 < np.median(refl) < 0.9


def test_scene_ids_name_a_place_and_a_day():
    assert scene_names(2, 3) == ["demo_1", "demo_2", "demo_1_t2", "demo_2_t2", "demo_1_t3", "demo_2_t3"]
    assert [scene_place_and_date(n) for n in ("demo_1", "demo_12", "demo_2_t3")] == [(0, 0), (11, 0), (1, 2)]
    assert scene_name(4, 1) == "demo_5_t2"
    for bad in ("demo_0", "demo_1_t1", "demo_1_t0", "demo_x", "demo_1_2", "other_1"):
        with pytest.raises(OutcropError, match="demo scene id"):
            scene_place_and_date(bad)


def test_another_day_shows_the_same_rock_under_other_light_snow_sea_ice_and_clouds():
    layout = DemoLayout(size=256, seed=7)
    first, truth1, origin1 = render_scene(layout, 0)
    assert np.array_equal(first, render_scene(layout, 0, 0)[0])  # day 0 is the single-date demo's scene
    for day in (1, 2, 3):
        other, truth2, origin2 = render_scene(layout, 0, day)
        assert origin2 == origin1
        both = (truth1 > 0) & (truth2 > 0)
        assert both.sum() > 2000
        # Where rock shows on both days it is the same unit, pixel for pixel ...
        assert (truth1[both] == truth2[both]).all()
        # ... but the snow line, the clouds and the sea ice moved: ground shows on one day only ...
        assert ((truth1 > 0) != (truth2 > 0)).sum() > 1000
        assert ((first[4] > 0.3) != (other[4] > 0.3)).mean() > 0.02  # bright NIR: snow, ice, cloud
        # ... and the light on the same rock changed: gain, haze and shading of the relief.
        rel = np.abs(other[:, both] - first[:, both]) / first[:, both]
        assert np.median(rel) > 0.05
        # The same ground all the same: its pattern is kept (rank correlation of the red band).
        from scipy.stats import spearmanr

        assert spearmanr(first[3, both], other[3, both])[0] > 0.5


def test_a_day_is_stamped_on_its_scene(tmp_path):
    from outcrop.raster.dates import acquisition_date

    synthesise_scene(tmp_path / "s.tif", tmp_path / "t.tif", index=1, date_index=2, size=128, seed=3)
    assert acquisition_date(tmp_path / "s.tif") == ACQUISITIONS[2].date
    with rasterio.open(tmp_path / "s.tif") as src:
        assert src.tags()["scene"] == "demo_2_t3"


def test_cross_date_reidentification_has_exact_answers(tmp_path):
    """Queries cut half a stride off the grid on day 2 of a place are answered by the day-1 tiles they
    overlap most, which cover them whole; and under every query the truth of both days names the same
    rock unit wherever both show rock: the answers are the same ground, exactly."""
    import shapely
    from rasterio.windows import from_bounds

    from outcrop.raster.scenes import prepare_scene
    from outcrop.raster.tiles import cut_offset_tiles, read_tile_table, tile_scene
    from outcrop.search.quality import best_overlaps

    for day in (0, 1):
        name = scene_name(0, day)
        synthesise_scene(
            tmp_path / f"{name}.tif", tmp_path / f"{name}_units.tif", index=0, date_index=day, size=256, seed=7
        )
        prepare_scene(
            str(tmp_path / f"{name}.tif"),
            "landsat-c2l2",
            tmp_path / f"p_{name}.tif",
            scene_id=name,
            bands=BANDS,
            crs=CRS,
            resolution=30.0,
            log=lambda m: None,
        )
    tile_scene(
        tmp_path / "p_demo_1.tif", tmp_path / "g.npy", tmp_path / "g.parquet", scene_id="demo_1", log=lambda m: None
    )
    gallery = read_tile_table(tmp_path / "g.parquet").geometry.to_numpy()
    _, boxes = cut_offset_tiles(tmp_path / "p_demo_1_t2.tif", size=32, stride=16, offset=8, min_valid=0.9)
    answers = best_overlaps(np.asarray(boxes), gallery)
    # Where day 1 kept the four tiles around a query (each shares 24 x 24 of its 32 x 32 px), they
    # are its answers and cover it whole; elsewhere the answers are whatever day-1 tiles are left.
    four = [
        q
        for q, a in zip(boxes, answers)
        if len(a) == 4 and np.allclose(shapely.area(shapely.intersection(q, gallery[a])), q.area * (24 / 32) ** 2)
    ]
    assert len(four) > 0.6 * len(boxes)
    for q, a in zip(boxes, answers):
        if q in four:
            assert shapely.area(shapely.intersection(q, shapely.union_all(gallery[a]))) == pytest.approx(q.area)
    with rasterio.open(tmp_path / "demo_1_units.tif") as one, rasterio.open(tmp_path / "demo_1_t2_units.tif") as two:
        judged = 0
        for q in four:
            win = from_bounds(*q.bounds, transform=one.transform).round_offsets().round_lengths()
            u1, u2 = one.read(1, window=win), two.read(1, window=win)
            both = (u1 > 0) & (u2 > 0)
            assert (u1[both] == u2[both]).all()
            judged += int(both.sum())
    assert judged > 20_000


def test_deposits_publish_some_and_hide_the_rest(tmp_path):
    write_deposits(tmp_path / "known.gpkg", tmp_path / "hidden.gpkg", scenes=3, size=512, seed=7)
    known = gpd.read_file(tmp_path / "known.gpkg")
    hidden = gpd.read_file(tmp_path / "hidden.gpkg")
    assert len(known) >= 5 and len(hidden) >= 10
    assert known.crs.to_epsg() == 4326 and hidden.crs.to_epsg() == 3031
    assert set(known.geom_type) == {"Point"} and set(hidden.geom_type) == {"Polygon"}
    # Known and hidden are different patches.
    assert not set(known.name.str.split("_").str[-1]) & set(hidden.name.str.split("_").str[-1])


def test_band_statistics_shape():
    tiles = np.random.default_rng(0).random((5, 7, 8, 8)).astype(np.float32)
    assert band_statistics(tiles).shape == (5, 14)
    assert band_statistics(tiles, percentiles=True).shape == (5, 35)


def _grid_table(layout: DemoLayout, scenes: int, size: int = 32, stride: int = 16) -> gpd.GeoDataFrame:
    """Every tile the tiles stage can cut from the demo scenes (global stride grid, each scene on its own)."""
    from shapely import box

    from outcrop.raster.tiles import tile_origins

    frames = []
    for i in range(scenes):
        left, top = layout.origin(i)
        rows = tile_origins(layout.size, int(round(-top / 30)), size, stride)
        cols = tile_origins(layout.size, int(round(left / 30)), size, stride)
        r, c = (a.ravel() for a in np.meshgrid(rows, cols, indexing="ij"))
        x0, y0 = left + c * 30.0, top - r * 30.0
        frames.append(
            gpd.GeoDataFrame(
                {"scene": f"demo_{i + 1}", "tile_id": np.arange(len(r))},
                geometry=box(x0, y0 - size * 30.0, x0 + size * 30.0, y0),
                crs=CRS,
            )
        )
    return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=CRS)


@pytest.mark.parametrize("size", [512, 256])
def test_every_hidden_deposit_is_reachable_and_an_oracle_finds_them_all(tmp_path, size):
    """Ranked by the truth itself, through the analogue search's exclusion and site suppression,
    every hidden deposit is found within as many places as there are hidden deposits."""
    import shapely

    from outcrop.config import default
    from outcrop.search.analogues import excluded_ids, read_deposits, select_positives
    from outcrop.search.evaluate import HIDDEN_OVERLAP, deposit_recall

    layout = DemoLayout(size=size, seed=7)
    write_deposits(tmp_path / "known.gpkg", tmp_path / "hidden.gpkg", scenes=3, size=size, seed=7)
    table = _grid_table(layout, 3)
    known = read_deposits(tmp_path / "known.gpkg", CRS)
    hidden = gpd.read_file(tmp_path / "hidden.gpkg")
    exclusion_m = default("analogues.exclusion_km") * 1000
    # No hidden deposit lies within the exclusion radius of a known one.
    assert hidden.distance(known.union_all()).min() > exclusion_m
    positives = select_positives(table, known, buffer_m=default("analogues.buffer_m"))
    excluded = excluded_ids(table, known.geometry.to_numpy(), positives, exclusion_m)
    # Share of each hidden disc that each tile covers; every disc is covered by a tile left in.
    discs = hidden.geometry.to_numpy()
    cover = shapely.area(shapely.intersection(table.geometry.to_numpy()[:, None], discs[None])) / shapely.area(discs)
    assert ((cover >= HIDDEN_OVERLAP) & ~excluded[:, None]).any(axis=0).all()
    # The oracle: a tile's score is the largest share of a hidden disc it covers (positives score 1,
    # so that the query, their mean, points at the truth).
    best = np.clip(cover.max(axis=1), 0.0, 1.0)
    best[np.concatenate(positives)] = 1.0
    vectors = np.column_stack([best, np.sqrt(1 - best**2)]).astype(np.float32)
    recall = deposit_recall(
        vectors,
        table,
        positives,
        hidden,
        known=known.geometry.to_numpy(),
        exclusion_m=exclusion_m,
        ks=[len(hidden)],
        site_overlap=default("analogues.site_overlap"),
    )
    assert recall["set"][f"recall@{len(hidden)}"] == 1.0
