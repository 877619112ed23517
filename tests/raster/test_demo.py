"""The demo world: deterministic, overlapping scenes agree, and its truth is honest."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio

from outcrop.raster.demo import BANDS, CRS, UNITS, DemoLayout, render_scene, synthesise_scene, write_deposits
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
                    if (truth[y:y + 16, x:x + 16] == unit).all():
                        block = refl[3, y:y + 16, x:x + 16]
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
        frames.append(gpd.GeoDataFrame({"scene": f"demo_{i + 1}", "tile_id": np.arange(len(r))},
                                       geometry=box(x0, y0 - size * 30.0, x0 + size * 30.0, y0), crs=CRS))
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
    vectors = np.column_stack([best, np.sqrt(1 - best ** 2)]).astype(np.float32)
    recall = deposit_recall(vectors, table, positives, hidden, known=known.geometry.to_numpy(),
                            exclusion_m=exclusion_m, ks=[len(hidden)], site_overlap=default("analogues.site_overlap"))
    assert recall["set"][f"recall@{len(hidden)}"] == 1.0
