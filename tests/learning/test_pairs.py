"""Cross-scene pairs from real tile tables, and training views that really come from two scenes.

The tiles are real: two of the four days of the Bouconne Sentinel-2 crops (tests/data/bouconne),
prepared onto one run grid and cut by the tiles stage, exactly as a run of two scenes of one place
would cut them.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.windows import Window

from outcrop.learning.encoder import batch_views
from outcrop.learning.pairs import MIN_OVERLAP, Partners, cross_scene_partners, neighbour_partners, second_view_rows
from outcrop.learning.training_data import open_training_tiles
from outcrop.raster.scenes import prepare_scene
from outcrop.raster.tiles import tile_scene

DATA = Path(__file__).resolve().parents[1] / "data" / "bouconne"
BANDS = ["blue", "green", "red", "nir", "swir1", "swir2"]
SPRING, AUTUMN = DATA / "bouconne_s2_l3a_20180429.tif", DATA / "bouconne_s2_l3a_20181115.tif"
# The crops are forest and fields, which the surface mask classes as vegetation (no exposed ground):
# every clear tile trains here, so that the pairs are those of a whole place.
MIN_ROCK = 0.0


def _prepare_and_tile(source: Path, out: Path, scene: str, *, stride: int = 16) -> tuple[Path, Path]:
    prepared = out / f"{scene}.tif"
    prepare_scene(
        str(source),
        "geotiff",
        prepared,
        scene_id=scene,
        bands=BANDS,
        crs="EPSG:32631",
        resolution=10.0,
        scale=1e-4,
        offset=0.0,
        log=lambda m: None,
    )
    tile_scene(
        prepared, out / f"{scene}.npy", out / f"{scene}.parquet", scene_id=scene, stride=stride, log=lambda m: None
    )
    return out / f"{scene}.npy", out / f"{scene}.parquet"


def _crop(source: Path, out: Path, row: int, col: int) -> Path:
    """The source without its first ``row`` rows and ``col`` columns (its tags and band names kept)."""
    with rasterio.open(source) as src:
        window = Window(col, row, src.width - col, src.height - row)
        profile = src.profile | {
            "width": window.width,
            "height": window.height,
            "transform": src.window_transform(window),
        }
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read(window=window))
            dst.descriptions = src.descriptions
            dst.update_tags(**src.tags())
    return out


@pytest.fixture(scope="module")
def two_days(tmp_path_factory):
    """Real tile arrays and tables of one place on two days: (tile paths, table paths)."""
    out = tmp_path_factory.mktemp("bouconne")
    spring = _prepare_and_tile(SPRING, out, "spring")
    autumn = _prepare_and_tile(AUTUMN, out, "autumn")
    return [spring[0], autumn[0]], [spring[1], autumn[1]]


def _footprints(table_paths, tiles):
    tables = [gpd.read_parquet(p) for p in table_paths]
    return np.array([tables[s].geometry.iloc[r] for s, r in zip(tiles.scene_of, tiles.row_of)])


def test_a_tile_pairs_with_the_tile_of_the_same_footprint_on_the_other_day(two_days):
    tile_paths, table_paths = two_days
    tiles = open_training_tiles(tile_paths, table_paths, min_rock=MIN_ROCK)
    partners = cross_scene_partners(table_paths, tiles.scene_of, tiles.row_of)
    foot = _footprints(table_paths, tiles)
    assert len(tiles) > 300 and (partners.counts > 0).sum() > 300
    for i in range(len(tiles)):
        for j in partners.of(i):
            assert tiles.scene_of[j] != tiles.scene_of[i]
            assert shapely.equals_exact(foot[i], foot[j], tolerance=1e-6)
    # Every tile whose footprint the other day also trains on is paired with it: none is missed.
    keys = {(s, f.bounds) for s, f in zip(tiles.scene_of, foot)}
    for i, f in enumerate(foot):
        twin = (1 - tiles.scene_of[i], f.bounds) in keys
        assert (partners.counts[i] == 1) == twin


def test_strides_that_do_not_align_pair_the_tile_sharing_most_ground(two_days, tmp_path):
    """The autumn scene cut at a stride of 24 px: its tiles sit off the spring grid, and each spring
    tile pairs with the autumn tile it overlaps most, if they share at least half a tile."""
    tile_paths, table_paths = two_days
    autumn = _prepare_and_tile(AUTUMN, tmp_path, "autumn24", stride=24)
    paths = [table_paths[0], autumn[1]]
    tiles = open_training_tiles([tile_paths[0], autumn[0]], paths, min_rock=MIN_ROCK)
    partners = cross_scene_partners(paths, tiles.scene_of, tiles.row_of)
    foot = _footprints(paths, tiles)
    theirs = np.flatnonzero(tiles.scene_of == 1)
    checked = 0
    for i in np.flatnonzero(tiles.scene_of == 0):
        share = shapely.area(shapely.intersection(foot[i], foot[theirs])) / foot[i].area
        best = share.max()
        if best >= MIN_OVERLAP:
            assert partners.counts[i] == 1
            assert share[theirs == partners.of(i)[0]][0] == pytest.approx(best)
            checked += best < 1 - 1e-9  # a partner that is not the same footprint
        else:
            assert partners.counts[i] == 0
    assert checked > 50


def test_ground_seen_once_has_no_partner(two_days, tmp_path):
    """An autumn scene that covers only the lower half of the spring one: the upper half's tiles
    keep augmented views."""
    tile_paths, table_paths = two_days
    half = _prepare_and_tile(_crop(AUTUMN, tmp_path / "lower.tif", 128, 0), tmp_path, "lower")
    paths = [table_paths[0], half[1]]
    tiles = open_training_tiles([tile_paths[0], half[0]], paths, min_rock=MIN_ROCK)
    partners = cross_scene_partners(paths, tiles.scene_of, tiles.row_of)
    foot = _footprints(paths, tiles)
    with rasterio.open(tmp_path / "lower.tif") as src:
        top = src.bounds.top
    spring = tiles.scene_of == 0
    above = spring & np.array([f.bounds[3] > top + 1e-6 for f in foot])
    assert above.sum() > 50 and (partners.counts[above] == 0).all()
    assert (partners.counts[spring & ~above] == 1).mean() > 0.9


def test_second_views_come_from_the_other_scene(two_days):
    tile_paths, table_paths = two_days
    tiles = open_training_tiles(tile_paths, table_paths, min_rock=MIN_ROCK)
    partners = cross_scene_partners(table_paths, tiles.scene_of, tiles.row_of)
    rows = np.arange(len(tiles))
    first, second = batch_views(tiles, rows, partners, 1.0, seed=0, step=3)
    other = second_view_rows(partners, rows, 1.0, seed=0, step=3)
    across = other >= 0
    assert across.sum() == (partners.counts > 0).sum()
    np.testing.assert_array_equal(first, tiles.gather(rows))
    # The second view of a paired tile is the other day's tile of its ground, pixel for pixel ...
    np.testing.assert_array_equal(second[across], tiles.gather(other[across]))
    assert (tiles.scene_of[other[across]] != tiles.scene_of[across]).all()
    # ... which is other light on the same ground, not the same pixels.
    assert np.abs(second[across] - first[across]).mean() > 0.005
    # Tiles without a partner keep their own pixels for both views.
    np.testing.assert_array_equal(second[~across], first[~across])
    # About the share asked for crosses; none at share 0; the draw repeats for a (seed, step).
    half = second_view_rows(partners, rows, 0.5, seed=0, step=3) >= 0
    assert 0.35 < half.sum() / across.sum() < 0.65
    assert batch_views(tiles, rows, partners, 0.0, seed=0, step=3)[1] is None
    np.testing.assert_array_equal(second_view_rows(partners, rows, 0.5, seed=0, step=3) >= 0, half)


def test_neighbour_partners_lie_in_the_same_scene_one_stride_away(two_days):
    tile_paths, table_paths = two_days
    tiles = open_training_tiles(tile_paths, table_paths, min_rock=MIN_ROCK)
    partners = neighbour_partners(table_paths, tiles.scene_of, tiles.row_of, max_offset=0.5)
    foot = _footprints(table_paths, tiles)
    assert partners.counts.max() == 8 and partners.counts.min() >= 3
    for i in range(0, len(tiles), 7):
        for j in partners.of(i):
            assert tiles.scene_of[j] == tiles.scene_of[i]
            dx = abs(foot[i].bounds[0] - foot[j].bounds[0])
            dy = abs(foot[i].bounds[3] - foot[j].bounds[3])
            assert 0 < max(dx, dy) <= 160 + 1e-6  # one stride of 16 px at 10 m


def test_partners_count_the_places_they_join():
    """Tiles 0, 1 and 3 show one place (0-1 and 0-3 paired), 2 and 4 another, 5 is seen once."""
    partners = Partners.from_pairs(6, np.array([0, 1, 0, 3, 2, 4]), np.array([1, 0, 3, 0, 4, 2]))
    assert partners.places() == 3
    assert Partners.from_pairs(4, np.zeros(0), np.zeros(0)).places() == 4


def test_partners_draw_only_partners():
    partners = Partners.from_pairs(4, np.array([0, 0, 2]), np.array([1, 3, 0]))
    drawn = partners.draw(np.array([0, 1, 2, 0, 0, 0, 0, 0]), np.random.default_rng(1))
    assert drawn[1] == -1 and drawn[2] == 0
    assert set(drawn[[0, 3, 4, 5, 6, 7]]) == {1, 3}


def test_training_takes_its_second_views_across_scenes(two_days, tmp_path, monkeypatch):
    """A real training run of two days draws the second view of a paired tile from the other day:
    every batch it trains on holds tiles whose two views come from two scenes, and none otherwise."""
    import outcrop.learning.encoder as encoder
    from outcrop.learning.encoder import EncoderSettings, train_byol

    tile_paths, table_paths = two_days
    seen = []

    def spy(tiles, rows, partners, share, seed, step):
        first, second = batch_views(tiles, rows, partners, share, seed, step)
        crossed = 0 if second is None else int((second != first).any(axis=(1, 2, 3)).sum())
        seen.append((share, crossed, len(rows)))
        return first, second

    monkeypatch.setattr(encoder, "batch_views", spy)
    lines = []
    for share in (1.0, 0.0):
        train_byol(
            tile_paths,
            table_paths,
            tmp_path / f"m{share}.pt",
            curve_tsv=tmp_path / "c.tsv",
            curve_png=tmp_path / "c.png",
            checkpoint_path=tmp_path / f"ck{share}.pt",
            settings=EncoderSettings.from_dict({"epochs": 1, "batch_size": 64, "cross_scene": share}),
            bands=BANDS,
            min_rock=MIN_ROCK,
            device="cpu",
            log=lines.append,
        )
    across = [c for s, c, _ in seen if s == 1.0]
    assert len(across) >= 4 and min(across) > 0.5 * 64
    assert [c for s, c, _ in seen if s == 0.0] == [0] * len(across)  # cross_scene 0: one tile, two crops
    assert any(line.startswith("cross-scene views: ") and " of " in line for line in lines)
