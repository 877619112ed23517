"""A unit map, as polygons or as a class raster, in the run CRS or another: each tile gets the same
unit and every feature set the same scores; a bad map stops with one line naming it."""

from __future__ import annotations

import subprocess
import sys

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import box, shape

from outcrop import OutcropError
from outcrop.io import write_categories
from outcrop.search.unit_agreement import set_scores
from outcrop.search.unit_map import open_unit_map, open_unit_maps, tile_units

CRS = "EPSG:3031"
RES = 30.0  # run pixel
SIZE, STRIDE = 16, 8  # tiles of 16 px every 8 px: neighbouring tiles overlap
X0, Y0 = -1_200_000.0, 1_500_000.0
SIDE = 224  # run pixels across the area
NAMES = {1: "granite", 2: "gneiss", 3: "schist", 4: "basalt", 5: "till"}


def _footprints() -> gpd.GeoDataFrame:
    starts = np.arange(0, SIDE - SIZE + 1, STRIDE)
    boxes = [
        box(X0 + c * RES, Y0 - (r + SIZE) * RES, X0 + (c + SIZE) * RES, Y0 - r * RES) for r in starts for c in starts
    ]
    return gpd.GeoDataFrame({"scene": "s", "tile_id": np.arange(len(boxes)), "size": SIZE}, geometry=boxes, crs=CRS)


def _classes(fine: int = 3) -> tuple[np.ndarray, object]:
    """Units from the nearest of a few seeds on a grid ``fine`` times finer than the run's, a blank
    (no unit, 0) corner, and its transform."""
    n = SIDE * fine
    rng = np.random.default_rng(3)
    seeds = rng.uniform(0, n, (9, 2))
    rr, cc = np.mgrid[0:n, 0:n]
    nearest = np.argmin((rr[..., None] - seeds[:, 0]) ** 2 + (cc[..., None] - seeds[:, 1]) ** 2, axis=2)
    classes = (nearest % len(NAMES) + 1).astype(np.uint8)
    classes[: n // 5, : n // 4] = 0  # ground the map leaves blank
    return classes, from_origin(X0, Y0, RES / fine, RES / fine)


def _write_raster(path, classes, transform, crs=CRS) -> None:
    profile = {
        "driver": "GTiff",
        "height": classes.shape[0],
        "width": classes.shape[1],
        "count": 1,
        "dtype": "uint8",
        "crs": crs,
        "transform": transform,
        "nodata": 0,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(classes, 1)
    write_categories(path, {1: {0: "", **NAMES}})


def _polygons(classes, transform) -> gpd.GeoDataFrame:
    from rasterio.features import shapes

    parts = [(shape(g), NAMES[int(v)]) for g, v in shapes(classes, mask=classes > 0, transform=transform)]
    return gpd.GeoDataFrame({"unit": [n for _, n in parts], "note": "x"}, geometry=[g for g, _ in parts], crs=CRS)


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("units")
    classes, transform = _classes()
    _write_raster(tmp / "units.tif", classes, transform)
    polygons = _polygons(classes, transform)
    polygons.to_file(tmp / "units.gpkg", layer="units")
    polygons.to_crs("EPSG:4326").to_file(tmp / "units_wgs84.geojson")
    polygons.rename(columns={"unit": "lithology"}).to_file(tmp / "other_field.gpkg")
    # The same raster in another CRS: warped to UTM zone 5S at 10 m, nearest neighbour.
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    dst_crs = "EPSG:32705"
    left, top = transform * (0, 0)
    right, bottom = transform * (classes.shape[1], classes.shape[0])
    t2, w2, h2 = calculate_default_transform(
        CRS, dst_crs, classes.shape[1], classes.shape[0], left, bottom, right, top, resolution=RES / 3
    )
    warped = np.zeros((h2, w2), dtype=np.uint8)
    reproject(
        classes,
        warped,
        src_transform=transform,
        src_crs=CRS,
        dst_transform=t2,
        dst_crs=dst_crs,
        resampling=Resampling.nearest,
        src_nodata=0,
        dst_nodata=0,
    )
    _write_raster(tmp / "units_utm.tif", warped, t2, crs=dst_crs)
    return tmp


def _vectors(names: np.ndarray, seed: int = 0) -> np.ndarray:
    """Vectors near one direction per unit, noisy enough that the scores are not all perfect."""
    rng = np.random.default_rng(seed)
    units = sorted(set(NAMES.values()))
    centres = rng.standard_normal((len(units), 12))
    v = np.stack([centres[units.index(n)] for n in names]) + 1.2 * rng.standard_normal((len(names), 12))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _scores(table, names, seed=0):
    has = np.array([n is not None for n in names])
    units = sorted({str(n) for n in names[has]})
    codes = np.array([units.index(n) for n in names[has]])
    return set_scores(
        _vectors(names[has], seed),
        codes,
        units,
        table.geometry.bounds.to_numpy()[has],
        ks=[3, 5, 8],
        cuts=[2, 4],
        seed=0,
    )


def test_polygons_and_a_raster_of_the_same_map_give_every_tile_the_same_unit_and_the_same_scores(maps):
    table = _footprints()
    by_raster, share_r = tile_units(
        table.geometry, table["size"].to_numpy(), [open_unit_map(maps / "units.tif")], min_share=0.6
    )
    by_polygons, share_p = tile_units(
        table.geometry, table["size"].to_numpy(), [open_unit_map(maps / "units.gpkg", "unit")], min_share=0.6
    )
    assert list(by_raster) == list(by_polygons)
    np.testing.assert_allclose(share_r, share_p)
    has = np.array([n is not None for n in by_raster])
    # The rule: a clear majority; contacts and the blank corner leave some tiles out, most get a unit.
    assert 0.4 < has.mean() < 0.95 and set(by_raster[has]) == set(NAMES.values())
    assert (share_r[has] >= 0.6).all()
    assert _scores(table, by_raster) == _scores(table, by_polygons)


def test_the_majority_unit_is_counted_on_the_run_grid(tmp_path):
    """A tile half one unit and half another has no clear unit; three quarters of one gives it that unit."""
    table = _footprints().iloc[:1]
    classes = np.zeros((SIZE, SIZE), dtype=np.uint8)
    classes[:, : SIZE // 2], classes[:, SIZE // 2 :] = 1, 2
    half = tmp_path / "half.tif"
    _write_raster(half, classes, from_origin(X0, Y0, RES, RES))
    names, shares = tile_units(table.geometry, table["size"].to_numpy(), [open_unit_map(half)], min_share=0.6)
    assert names[0] is None and shares[0] == 0
    classes[:, : 3 * SIZE // 4] = 1
    _write_raster(half, classes, from_origin(X0, Y0, RES, RES))
    names, shares = tile_units(table.geometry, table["size"].to_numpy(), [open_unit_map(half)], min_share=0.6)
    assert names[0] == "granite" and shares[0] == pytest.approx(0.75)


def test_a_map_in_another_crs_is_reprojected_to_the_run_grid(maps):
    table = _footprints()
    sizes = table["size"].to_numpy()
    native, _ = tile_units(table.geometry, sizes, [open_unit_map(maps / "units.gpkg")], min_share=0.6)
    # The same polygons given in longitude/latitude: the same unit for every tile, the same scores.
    wgs84_map = open_unit_map(maps / "units_wgs84.geojson")
    assert wgs84_map.crs != open_unit_map(maps / "units.gpkg").crs
    wgs84, _ = tile_units(table.geometry, sizes, [wgs84_map], min_share=0.6)
    assert list(wgs84) == list(native)
    assert _scores(table, wgs84) == _scores(table, native)
    # The raster warped to UTM (resampled once more on the way back): nearly every tile agrees.
    utm, _ = tile_units(table.geometry, sizes, [open_unit_map(maps / "units_utm.tif")], min_share=0.6)
    both = np.array([a is not None and b is not None for a, b in zip(utm, native)])
    assert both.mean() > 0.35 and np.mean([a == b for a, b in zip(utm[both], native[both])]) > 0.98
    utm_ari, native_ari = _scores(table, utm)["k5"]["ari"], _scores(table, native)["k5"]["ari"]
    assert abs(utm_ari - native_ari) < 0.1


def test_several_maps_give_each_tile_the_unit_with_the_largest_share(maps, tmp_path):
    """The demo's truth is one raster per scene: a tile takes the unit of whichever map shows it most clearly."""
    table = _footprints()
    sizes = table["size"].to_numpy()
    classes, transform = _classes()
    left = classes.copy()
    left[:, classes.shape[1] // 2 :] = 0  # this map knows only the western half
    right = classes.copy()
    right[:, : classes.shape[1] // 2] = 0
    _write_raster(tmp_path / "w.tif", left, transform)
    _write_raster(tmp_path / "e.tif", right, transform)
    whole, _ = tile_units(table.geometry, sizes, [open_unit_map(maps / "units.tif")], min_share=0.6)
    halves, _ = tile_units(
        table.geometry, sizes, open_unit_maps([tmp_path / "w.tif", tmp_path / "e.tif"], "unit"), min_share=0.6
    )
    # Tiles clear of the seam read the same from the halves as from the whole map.
    centre_x = table.geometry.centroid.x.to_numpy()
    seam = X0 + SIDE * RES / 2
    away = np.abs(centre_x - seam) > SIZE * RES
    assert [a for a, s in zip(halves, away) if s] == [a for a, s in zip(whole, away) if s]


def test_units_are_read_a_window_at_a_time(maps, monkeypatch):
    """Large maps: each rasterised window is at most WINDOW_PX (plus a tile) a side, however large the area."""
    import outcrop.search.unit_map as unit_map

    seen = []
    real = unit_map.UnitReader.window

    def spy(self, transform, shape):
        seen.append(shape)
        return real(self, transform, shape)

    monkeypatch.setattr(unit_map, "WINDOW_PX", 64)
    monkeypatch.setattr(unit_map.UnitReader, "window", spy)
    table = _footprints()
    small, _ = tile_units(table.geometry, table["size"].to_numpy(), [open_unit_map(maps / "units.gpkg")], min_share=0.6)
    monkeypatch.undo()
    whole, _ = tile_units(table.geometry, table["size"].to_numpy(), [open_unit_map(maps / "units.gpkg")], min_share=0.6)
    assert len(seen) > 4 and max(max(s) for s in seen) <= 64 + SIZE
    assert list(small) == list(whole)


def test_a_map_without_the_named_field_fails_with_one_line(maps):
    with pytest.raises(OutcropError) as err:
        open_unit_map(maps / "other_field.gpkg", "unit")
    message = str(err.value)
    assert message.startswith(
        f"{maps / 'other_field.gpkg'}: the unit map has no field 'unit' (fields: lithology, note)"
    )
    assert "\n" not in message


def test_the_quality_command_refuses_a_map_without_the_field_in_one_line(maps, tmp_path):
    x = str(tmp_path / "x")
    out = tmp_path / "m.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "outcrop.cli",
            "quality",
            "--scenes",
            "x",
            "--index",
            x,
            "--index-table",
            x,
            "--embeddings",
            x,
            "--tiles",
            x,
            "--tables",
            x,
            "--prepared",
            x,
            "--model",
            x,
            "--units",
            str(maps / "other_field.gpkg"),
            "--unit-field",
            "unit",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line == (
        f"outcrop quality: error: {maps / 'other_field.gpkg'}: the unit map has no field 'unit' "
        "(fields: lithology, note); set units.field to the field that names each polygon's unit"
    )
    assert not out.exists()


def _points(path):
    gpd.GeoDataFrame({"unit": ["a"]}, geometry=[box(0, 0, 1, 1).centroid], crs=CRS).to_file(path)


def _float_raster(path):
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=4,
        width=4,
        count=1,
        dtype="float32",
        crs=CRS,
        transform=from_origin(X0, Y0, RES, RES),
    ) as dst:
        dst.write(np.ones((1, 4, 4), dtype=np.float32))


def _no_crs(path):
    with rasterio.open(
        path, "w", driver="GTiff", height=4, width=4, count=1, dtype="uint8", transform=from_origin(0, 4, 1, 1)
    ) as dst:
        dst.write(np.ones((1, 4, 4), dtype=np.uint8))


@pytest.mark.parametrize(
    "name, make, message",
    [
        ("gone.gpkg", None, "unit map not found"),
        ("points.gpkg", _points, "the unit map holds Point geometries; a unit map holds polygons"),
        ("float.tif", _float_raster, "a unit raster holds integer classes; found float32 values"),
        ("nocrs.tif", _no_crs, "the unit map has no CRS (unknown coordinate system)"),
        (
            "junk.dat",
            lambda p: p.write_bytes(b"not a map at all"),
            "not a readable unit map: neither polygons nor a class raster",
        ),
    ],
)
def test_bad_unit_maps_fail_with_one_line_naming_the_file(tmp_path, name, make, message):
    path = tmp_path / name
    if make is not None:
        make(path)
    with pytest.raises(OutcropError) as err:
        open_unit_map(path, "unit")
    assert str(err.value).startswith(f"{path}: {message}") and "\n" not in str(err.value)


def test_a_map_that_covers_no_tile_is_skipped_not_an_error(maps, tmp_path):
    """A map of somewhere else stops nothing: the block says how many tiles got a unit."""
    from outcrop.search.quality import _Run
    from outcrop.search.unit_agreement import map_agreement

    table = _footprints()
    table["geometry"] = table.geometry.translate(500_000.0, 0.0)  # far east of the map
    run = _Run(
        table=table,
        present=["s"],
        rows={},
        emb={},
        tiles={},
        prepared={},
        tables={},
        model=tmp_path / "m.pt",
        weights=(0.15, 0.25),
        seed=0,
        size=SIZE,
    )
    lines = []
    block = map_agreement(run, [open_unit_map(maps / "units.gpkg")], min_share=0.6, ks=[4], cuts=[], log=lines.append)
    assert block["tiles_read"] == 0 and block["tiles_with_unit"] == 0
    assert block["skipped"] == "0 tiles with a clear unit in 0 unit(s); map agreement needs 20 tiles and two units"
    assert any("map agreement skipped" in line for line in lines)


def test_the_quality_command_refuses_a_unit_share_that_is_no_majority(tmp_path):
    """The command line takes the schema's bounds of units.min_share; the function, called from
    Python, refuses it in one line too."""
    from outcrop.search.quality import quality_run

    x = str(tmp_path / "x")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "outcrop.cli",
            "quality",
            "--scenes",
            "x",
            "--index",
            x,
            "--index-table",
            x,
            "--embeddings",
            x,
            "--tiles",
            x,
            "--tables",
            x,
            "--prepared",
            x,
            "--model",
            x,
            "--unit-share",
            "0.3",
            "--out",
            str(tmp_path / "m.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip().splitlines()[-1] == "outcrop quality: error: argument --unit-share: '0.3' is less than 0.5"
    )
    with pytest.raises(OutcropError) as err:
        quality_run(
            ["x"],
            tmp_path / "m.json",
            index=tmp_path / "x",
            index_table=tmp_path / "x",
            embeddings=[tmp_path / "x"],
            tiles=[tmp_path / "x"],
            tables=[tmp_path / "x"],
            prepared=[tmp_path / "x"],
            model=tmp_path / "x",
            unit_share=0.3,
        )
    assert str(err.value) == "quality: the unit share must lie between 0.5 and 1 (a majority), got 0.3"
    assert not (tmp_path / "m.json").exists()
