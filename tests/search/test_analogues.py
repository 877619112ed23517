"""Analogues stage: deposits read in any form, positives selected, planted analogues found first,
exclusion honoured, similarity rasters written, ad-hoc queries answered."""

from __future__ import annotations

import faiss
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from shapely.geometry import Point, box

from outcrop import OutcropError
from outcrop.search.analogues import (
    excluded_ids,
    find_analogues,
    query_vectors,
    rank_analogues,
    read_deposits,
    select_positives,
    suppress_overlapping,
)
from outcrop.search.index import build_index, load_index, table_vectors
from outcrop.search.query import query_run
from synthetic_run import CRS, RES, SCENES, SIZE, make_run, tile_number

faiss.omp_set_num_threads(1)
TILE_M = SIZE * RES


@pytest.fixture
def indexed(tmp_path):
    run = make_run(tmp_path / "results", ice_scene=True)
    idx = tmp_path / "results" / "index"
    build_index(
        run.embeddings, run.tables, idx / "tiles.faiss", idx / "tiles.parquet", idx / "info.json", log=lambda *_: None
    )
    _, table = load_index(idx / "tiles.faiss", idx / "tiles.parquet")
    return run, table, table_vectors(table, run.embeddings)


def _ids(table, pairs):
    keys = pd.MultiIndex.from_arrays([table.scene, table.tile_id])
    return np.sort(keys.get_indexer(pd.MultiIndex.from_tuples(pairs)))


def test_read_deposits_in_every_form(tmp_path, indexed):
    run, table, _ = indexed
    from_csv = read_deposits(run.deposits_csv, CRS)
    assert from_csv.crs.to_epsg() == 3031 and from_csv["name"].tolist() == ["known 1", "known 2"]
    np.testing.assert_allclose(from_csv.geometry.x, [xy[0] for xy in run.deposit_xy], atol=0.01)
    geojson = tmp_path / "dep.geojson"
    from_csv.to_crs("EPSG:4326").to_file(geojson, driver="GeoJSON")
    np.testing.assert_allclose(read_deposits(geojson, CRS).geometry.y, from_csv.geometry.y, atol=0.01)
    # A polygon deposit without a name column in a GeoPackage in the run CRS.
    gpkg = tmp_path / "poly.gpkg"
    gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)], crs=CRS).to_file(gpkg)
    assert read_deposits(gpkg, CRS)["name"].tolist() == ["deposit 1"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("missing", "not found"),
        ("garbage", "not a readable"),
        ("nocrs", "no CRS"),
        ("nolonlat", "lon and lat"),
        ("badrow", "no valid lon/lat"),
    ],
)
def test_read_deposits_errors_are_clear(tmp_path, content, message):
    path = tmp_path / ("dep.csv" if content in ("nolonlat", "badrow") else "dep.gpkg")
    if content == "garbage":
        path.write_bytes(b"this is not a geopackage" * 10)
    elif content == "nocrs":
        gpd.GeoDataFrame({"name": ["x"]}, geometry=[Point(1, 2)]).to_file(path)
    elif content == "nolonlat":
        path.write_text("name,easting,northing\nx,1,2\n")
    elif content == "badrow":
        path.write_text("name,lon,lat\nx,10,-70\ny,,-71\n")
    with pytest.raises(OutcropError, match=message) as err:
        read_deposits(path, CRS)
    assert str(path) in str(err.value)


def test_select_positives_buffers_points_and_names_a_deposit_outside_every_tile(indexed):
    run, table, _ = indexed
    x, y = run.deposit_xy[0]  # the centre of tile (4, 4) of scene a
    deposits = gpd.GeoDataFrame({"name": ["centre"]}, geometry=[Point(x, y)], crs=CRS)
    (one,) = select_positives(table, deposits, buffer_m=0.0)
    assert one.tolist() == _ids(table, [("a", tile_number("a", 4, 4))]).tolist()
    # A buffer reaching past the tile edges (half a tile away) takes in the four edge neighbours,
    # one reaching past the corners the whole ring.
    (five,) = select_positives(table, deposits, buffer_m=TILE_M / 2 + 10)
    assert len(five) == 5 and one[0] in five
    (nine,) = select_positives(table, deposits, buffer_m=TILE_M / 2 * np.sqrt(2) + 10)
    assert len(nine) == 9 and set(five) <= set(nine)
    outside = gpd.GeoDataFrame({"name": ["centre", "Far Away Lode"]}, geometry=[Point(x, y), Point(0.0, 0.0)], crs=CRS)
    with pytest.raises(OutcropError, match="Far Away Lode"):
        select_positives(table, outside, buffer_m=100.0)


def test_planted_analogues_rank_first_and_exclusion_is_honoured(indexed):
    run, table, vectors = indexed
    deposits = read_deposits(run.deposits_csv, CRS)
    positives = select_positives(table, deposits, buffer_m=10.0)
    hidden = set(_ids(table, run.hidden).tolist())
    halo = set(_ids(table, run.halo).tolist())
    exclusion_m = 1.5 * TILE_M
    known = deposits.geometry.to_numpy()
    ranked = rank_analogues(
        vectors, table, positives, deposits=known, exclusion_m=exclusion_m, top=20, names=deposits["name"].tolist()
    )
    assert set(ranked["id"][: len(hidden)]) == hidden
    assert ranked["rank"].tolist() == list(range(1, 21))
    assert ranked["score"].is_monotonic_decreasing
    assert ranked["score"].iloc[len(hidden) - 1] > 0.9 > ranked["score"].iloc[len(hidden)]
    # No result lies within the exclusion radius of a deposit.
    assert (table.geometry.values[ranked["id"].to_numpy()].distance(deposits.union_all()) > exclusion_m).all()
    assert not halo & set(ranked["id"])
    # The far hidden tile of scene a lies near neither deposit; distances are to the nearest one.
    far = ranked[(ranked.scene == "a") & (ranked.tile_id == tile_number("a", 17, 17))].iloc[0]
    assert far.nearest_positive == "known 2"
    expected = np.hypot(12 * TILE_M, 2 * TILE_M) / 1000  # from tile (15, 5) to (17, 17)
    assert far.distance_km == pytest.approx(expected, rel=1e-6)
    assert set(ranked["query"]) <= {"set", "known 1", "known 2"}
    # Without the exclusion the planted halo around the deposits crowds in.
    unexcluded = rank_analogues(vectors, table, positives, deposits=known, exclusion_m=0.0, top=20)
    assert len(halo & set(unexcluded["id"][:20])) >= 10
    assert not set(np.concatenate(positives)) & set(unexcluded["id"])


def _tile_grid(n: int, width: float, stride: float) -> gpd.GeoDataFrame:
    """Square footprints ``width`` wide every ``stride`` metres over an n x n grid from the origin."""
    xs = np.arange(n) * stride
    return gpd.GeoDataFrame(
        {"scene": "s", "tile_id": np.arange(n * n)},
        geometry=[box(x, y, x + width, y + width) for y in xs for x in xs],
        crs=CRS,
    )


def test_exclusion_is_measured_from_the_deposit_not_from_its_tiles():
    table = _tile_grid(24, 960.0, 480.0)  # the demo's tiles: 960 m every 480 m
    point = Point(5000.0, 5000.0)
    positives = select_positives(table, gpd.GeoDataFrame({"name": ["d"]}, geometry=[point], crs=CRS), buffer_m=100.0)
    mask = excluded_ids(table, [point], positives, 1000.0)
    footprints = table.geometry.values
    # Exactly the tiles within 1 km of the deposit itself go (its positives among them).
    assert (mask == (footprints.distance(point) <= 1000.0)).all() and mask[positives[0]].all()
    # The tile starting at (6240, 4800) is 1.24 km from the deposit, though only 480 m from its
    # positive tiles' footprints: it is reported.
    beyond = int(np.flatnonzero((footprints.bounds[:, 0] == 6240.0) & (footprints.bounds[:, 1] == 4800.0))[0])
    assert footprints[beyond].distance(point) == pytest.approx(1240.0)
    assert footprints[positives[0]].union_all().distance(footprints[beyond]) == pytest.approx(480.0)
    assert not mask[beyond]
    # A polygon, no radius: only the tile sharing its ground goes, not the ones touching its edge.
    square = box(0.0, 0.0, 480.0, 480.0)
    assert np.flatnonzero(excluded_ids(table, [square], [], 0.0)).tolist() == [0]
    # A radius is measured from the polygon's edge.
    assert (excluded_ids(table, [square], [], 500.0) == (footprints.distance(square) <= 500.0)).all()


def test_negatives_push_the_set_query_away(indexed):
    run, table, vectors = indexed
    positives = [np.arange(0, 40)]
    negatives = [np.arange(40, 80)]
    plain = query_vectors(vectors, positives)[0]
    pushed = query_vectors(vectors, positives, negatives, negative_weight=0.8)[0]
    neg_mean = vectors[negatives[0]].mean(axis=0)
    assert pushed @ neg_mean < plain @ neg_mean
    np.testing.assert_allclose(np.linalg.norm(pushed), 1.0, atol=1e-5)


def test_find_analogues_writes_ranked_tables_and_similarity_rasters(tmp_path, indexed):
    run, table, _ = indexed
    res = tmp_path / "results"
    out = tmp_path / "analogues"
    find_analogues(
        res / "index" / "tiles.faiss",
        res / "index" / "tiles.parquet",
        run.embeddings,
        run.deposits_csv,
        run.prepared,
        out / "analogues.gpkg",
        out / "analogues.csv",
        out / "similarity",
        buffer_m=10.0,
        exclusion_km=0.5,
        top=15,
        log=lambda *_: None,
    )
    csv = pd.read_csv(out / "analogues.csv")
    assert list(csv.columns) == [
        "rank",
        "score",
        "scene",
        "tile_id",
        "id",
        "nearest_positive",
        "distance_km",
        "query",
        "lon",
        "lat",
    ]
    assert len(csv) == 15
    assert set(zip(csv.scene[:3], csv.tile_id[:3])) == set(run.hidden)
    assert csv.lat.between(-90, -60).all()  # Antarctic coast in EPSG:4326
    gpkg = gpd.read_file(out / "analogues.gpkg")
    assert len(gpkg) == 15 and gpkg.crs.to_epsg() == 3031
    assert gpkg.geometry.area.round().eq(TILE_M**2).all()
    for scene in SCENES:
        with rasterio.open(out / "similarity" / f"{scene}.tif") as src:
            sim = src.read(1)
            assert src.dtypes[0] == "float32" and np.isnan(src.nodata)
        if scene == "c":  # indexed too (min_rock 0): every cell has a value
            assert np.isfinite(sim).all()
    # The raster cell of a hidden analogue holds its score.
    best = csv.iloc[0]
    centre = table.geometry.values[int(best.id)].centroid
    with rasterio.open(out / "similarity" / f"{best.scene}.tif") as src:
        r, c = src.index(centre.x, centre.y)
        assert src.read(1)[r, c] == pytest.approx(best.score, abs=1e-5)


def test_query_run_answers_from_a_point_or_a_tile(indexed):
    run, table, _ = indexed
    res = run.root
    scene, tile_id = run.hidden[1]
    by_tile = query_run(res, tile=f"{scene}:{tile_id}", top=5)
    assert list(by_tile.columns) == ["rank", "score", "scene", "tile_id", "id", "distance_km", "lon", "lat"]
    planted = set(run.hidden) | set(run.halo)
    assert all(key in planted for key in zip(by_tile.scene, by_tile.tile_id))
    assert (scene, tile_id) not in set(zip(by_tile.scene, by_tile.tile_id))  # the query itself is left out
    # The same place given as lon/lat gives the same answer.
    centre = gpd.GeoSeries([table.geometry.values[_ids(table, [(scene, tile_id)])[0]].centroid], crs=CRS)
    lonlat = centre.to_crs("EPSG:4326").iloc[0]
    by_point = query_run(res, lon=lonlat.x, lat=lonlat.y, top=5)
    assert by_point["id"].tolist() == by_tile["id"].tolist()
    with pytest.raises(OutcropError, match="exactly one"):
        query_run(res, lon=lonlat.x, top=5)
    with pytest.raises(OutcropError, match="not in the index"):
        query_run(res, tile="a:99999")
    with pytest.raises(OutcropError, match="meets no indexed tile"):
        query_run(res, lon=0.0, lat=-60.0)


def test_find_analogues_names_the_file_of_a_deposit_outside_every_scene(tmp_path, indexed):
    run, _, _ = indexed
    res = run.root
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"name": ["Nowhere Ridge"], "lon": [10.0], "lat": [-60.0]}).to_csv(bad, index=False)
    out = tmp_path / "analogues"
    with pytest.raises(OutcropError, match=r"bad\.csv.*Nowhere Ridge"):
        find_analogues(
            res / "index" / "tiles.faiss",
            res / "index" / "tiles.parquet",
            run.embeddings,
            bad,
            run.prepared,
            out / "a.gpkg",
            out / "a.csv",
            out / "similarity",
            buffer_m=10.0,
            exclusion_km=0.5,
            top=5,
            log=lambda *_: None,
        )
    assert not out.exists() or not any(out.rglob("*.*"))


def test_suppression_keeps_the_best_of_overlapping_footprints_and_chains_fairly():
    # Tiles 8 m wide at a stride of 4 m along a row, given best first, and one far away.
    geoms = np.array([box(x, 0, x + 8, 8) for x in (0, 4, 8, 12)] + [box(100, 0, 108, 8)], dtype=object)
    keep = suppress_overlapping(geoms, 0.25)
    # 4 overlaps 0 by half: gone. 8 overlaps only the dropped 4 by more than a quarter: kept.
    assert keep.tolist() == [True, False, True, False, True]
    # The threshold is strict: tiles overlapping by exactly half stay at 0.5.
    assert suppress_overlapping(geoms, 0.5).all()
    # Order is what counts: best first decides which tile of a pair stays.
    assert suppress_overlapping(geoms[::-1], 0.25).tolist() == [True, True, False, True, False]
    assert suppress_overlapping(geoms[:1], 0.25).tolist() == [True]


def test_overlapping_scenes_and_tiles_collapse_to_one_site_each(indexed):
    run, table, vectors = indexed
    # The same ground cut again from a second scene shifted by a quarter tile, looking nearly the same.
    copy = table.copy()
    copy["scene"] = copy["scene"] + "2"
    copy["geometry"] = copy.geometry.translate(TILE_M / 4, TILE_M / 4)
    both = gpd.GeoDataFrame(pd.concat([table, copy], ignore_index=True), geometry="geometry", crs=CRS)
    rng = np.random.default_rng(3)
    twin = vectors + 1e-3 * rng.standard_normal(vectors.shape).astype(np.float32)
    both_vec = np.concatenate([vectors, twin / np.linalg.norm(twin, axis=1, keepdims=True)])
    deposits = read_deposits(run.deposits_csv, CRS)
    positives = select_positives(both, deposits, buffer_m=10.0)
    hidden = set(_ids(table, run.hidden).tolist())
    n_hidden = len(hidden)
    kwargs = dict(deposits=deposits.geometry.to_numpy(), exclusion_m=1.5 * TILE_M, top=12)
    tiles = rank_analogues(both_vec, both, positives, site_overlap=None, **kwargs)
    sites = rank_analogues(both_vec, both, positives, **kwargs)
    # Every hidden analogue takes two places as tiles, one as a site.
    assert {i % len(table) for i in tiles["id"][: 2 * n_hidden]} == hidden
    assert {i % len(table) for i in sites["id"][:n_hidden]} == hidden
    assert sites["score"].iloc[n_hidden - 1] > 0.9 > sites["score"].iloc[n_hidden]
    assert sites["rank"].tolist() == list(range(1, 13)) and sites["score"].is_monotonic_decreasing
    # No kept site overlaps a better one by more than a quarter of its area.
    geoms = both.geometry.values[sites["id"].to_numpy()]
    for i in range(1, len(geoms)):
        shared = geoms[:i].intersection(geoms[i]).area.max() / geoms[i].area
        assert shared <= 0.25
    # A site is the better tile of its pair: it ranks above its twin among the tiles.
    tile_rank = {t: r for r, t in enumerate(tiles["id"])}
    for i in sites["id"][:n_hidden]:
        twin_id = (i + len(table)) % (2 * len(table))
        assert tile_rank[i] < tile_rank[twin_id]


def test_query_command_prints_the_answer_without_importing_pandas(indexed):
    """The command line's query path stays light: no pandas or geopandas imports (about 1 s)."""
    import subprocess
    import sys

    run, table, _ = indexed
    res = run.root
    scene, tile_id = table.scene.iloc[0], int(table.tile_id.iloc[0])
    code = (
        "import sys; from outcrop.cli import main; "
        f"rc = main(['query', '--results', {str(res)!r}, '--tile', '{scene}:{tile_id}', '--top', '3']); "
        "print('IMPORTED', 'pandas' in sys.modules, 'geopandas' in sys.modules); sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split() == ["rank", "score", "scene", "tile_id", "id", "distance_km", "lon", "lat"]
    assert len(lines) == 1 + 3 + 1 and lines[-1] == "IMPORTED False False"
    expected = query_run(res, tile=f"{scene}:{tile_id}", top=3)
    assert [int(line.split()[4]) for line in lines[1:4]] == list(expected["id"])


# --- many deposits, and deposits that meet no tile ---------------------------------------------------


def _scattered_deposits(table, count: int, seed: int = 0, far: int = 0):
    """``count`` points inside the table's footprints, several in one tile, and ``far`` points far off."""
    rng = np.random.default_rng(seed)
    centres = table.geometry.values[rng.integers(0, len(table), count)].centroid
    xy = np.c_[centres.x, centres.y] + rng.uniform(-TILE_M / 3, TILE_M / 3, (count, 2))
    xy = np.r_[xy, np.c_[np.full(far, 5e6), np.arange(far) * 1e4]]
    return gpd.GeoDataFrame(
        {"name": [f"d{i}" for i in range(count + far)]}, geometry=gpd.points_from_xy(xy[:, 0], xy[:, 1]), crs=CRS
    )


def test_many_deposits_score_and_rank_as_scoring_each_in_turn_would(indexed):
    """Deposits sharing tiles share one query, scores come in bounded blocks and the nearest deposit
    from one tree query: the results are those of one query per deposit, scanned in full."""
    from outcrop.search import analogues
    from outcrop.search.analogues import best_scores, distinct_groups, nearest_geometry, score_tiles

    _, table, vectors = indexed
    deposits = _scattered_deposits(table, 300)
    positives = select_positives(table, deposits, buffer_m=10.0)
    assert len(distinct_groups(positives)[1]) < len(positives)  # some deposits share their tiles
    full = query_vectors(vectors, positives)
    sims = vectors @ full.T
    score, which = score_tiles(vectors, positives)
    np.testing.assert_allclose(score, sims.max(axis=1), atol=1e-6)
    assert (np.take_along_axis(sims, which[:, None], axis=1)[:, 0] >= sims.max(axis=1) - 1e-6).all()
    small = analogues.SCORE_CELLS
    try:
        analogues.SCORE_CELLS = 1000  # a few tiles per block
        np.testing.assert_allclose(best_scores(vectors, full)[0], sims.max(axis=1), atol=1e-6)
    finally:
        analogues.SCORE_CELLS = small
    centres = np.asarray(table.geometry.values[:50].centroid)
    geoms = deposits.geometry.to_numpy()
    nearest, dist = nearest_geometry(centres, geoms)
    brute = np.array([[c.distance(g) for g in geoms] for c in centres])
    assert (nearest == brute.argmin(axis=1)).all()
    np.testing.assert_allclose(dist, brute.min(axis=1))


def test_a_deposit_that_meets_no_tile_is_a_warning_and_the_others_still_rank(tmp_path, indexed):
    """A deposit on an all-cloud scene (or outside every scene) stopped the analogue stage, and with
    it the summary and the map: it is named in a warning and left out, the others rank."""
    run, table, _ = indexed
    res = tmp_path / "results"
    deposits = read_deposits(run.deposits_csv, CRS)
    with_far = gpd.GeoDataFrame(
        {"name": [*deposits["name"], "Cloudy Bluff"]}, geometry=[*deposits.geometry, Point(5e6, 5e6)], crs=CRS
    )
    path = tmp_path / "with_far.gpkg"
    with_far.to_file(path)
    out, lines = tmp_path / "analogues", []
    find_analogues(
        res / "index" / "tiles.faiss",
        res / "index" / "tiles.parquet",
        run.embeddings,
        path,
        run.prepared,
        out / "a.gpkg",
        out / "a.csv",
        out / "similarity",
        buffer_m=10.0,
        exclusion_km=0.5,
        top=15,
        log=lines.append,
    )
    warning = [line for line in lines if "warning" in line]
    assert warning == [
        f"{path}: warning: 1 of 3 deposits meet no indexed tile (outside every scene, or on cloud, "
        "water or other ground the index left out) and are left out of the search: "
        "'Cloudy Bluff' (feature 3)"
    ]
    csv = pd.read_csv(out / "a.csv")
    assert set(zip(csv.scene[:3], csv.tile_id[:3])) == set(run.hidden)
    assert set(csv["nearest_positive"]) <= {"known 1", "known 2"}


def test_deposits_files_past_the_limits_are_refused_before_they_are_read(tmp_path, monkeypatch):
    """The count a file claims is checked before its features are read; a polygon's vertices after."""
    csv = tmp_path / "many.csv"
    csv.write_text("name,lon,lat\n" + "".join(f"d{i},142.{i},-67.2\n" for i in range(11)))
    gpkg = tmp_path / "many.gpkg"
    gpd.GeoDataFrame(
        {"name": [f"d{i}" for i in range(11)]}, geometry=[Point(i, i) for i in range(11)], crs=CRS
    ).to_file(gpkg)
    monkeypatch.setenv("OUTCROP_LIMITS", '{"deposits": 11}')
    assert len(read_deposits(csv, CRS)) == len(read_deposits(gpkg, CRS)) == 11
    monkeypatch.setenv("OUTCROP_LIMITS", '{"deposits": 10}')
    for path in (csv, gpkg):
        with pytest.raises(OutcropError) as err:
            read_deposits(path, CRS)
        assert str(err.value) == (
            f"{path}: 11 deposits, and limits.deposits in the config (or OUTCROP_LIMITS="
            "'{\"deposits\": N}' for a command run by hand) allows at most 10; check the file, "
            "or raise the limit"
        )
    poly = tmp_path / "poly.gpkg"
    gpd.GeoDataFrame({"name": ["big"]}, geometry=[Point(0, 0).buffer(100, quad_segs=64)], crs=CRS).to_file(poly)
    monkeypatch.setenv("OUTCROP_LIMITS", '{"deposit_vertices": 100}')
    with pytest.raises(OutcropError, match=r"poly\.gpkg: 257 vertices in its geometries, and limits\.deposit_vertices"):
        read_deposits(poly, CRS)


# Text a spreadsheet runs as a formula (OWASP "CSV injection"), a name that a ';'-separated
# spreadsheet would split into a formula, and a quote that must survive reading back.
FORMULAS = ['=cmd|" /C calc"!A0', "+1+1", "-1+1", "@SUM(1)", "\t=1+1", "\r=1+1", "'=already quoted", "a;=1+1"]


@pytest.mark.parametrize("names", [FORMULAS[i : i + 2] for i in range(0, len(FORMULAS), 2)], ids=repr)
def test_deposit_names_reach_the_analogues_csv_as_text_a_spreadsheet_never_runs(tmp_path, indexed, names):
    """Deposit names reach ``nearest_positive`` and ``query`` of analogues.csv: no cell that is not a
    number starts with a formula character, every text cell is quoted; the GeoPackage keeps the
    names as they are, and the project's reader gives them back unchanged."""
    import csv
    import io

    from outcrop.csvfile import FORMULA_START, read_csv

    run, _, _ = indexed
    res = tmp_path / "results"
    deposits = pd.read_csv(run.deposits_csv)
    deposits["name"] = names
    deposits.to_csv(tmp_path / "formulas.csv", index=False, quoting=csv.QUOTE_NONNUMERIC)  # keeps a "\r" whole
    out = tmp_path / "analogues"
    find_analogues(
        res / "index" / "tiles.faiss",
        res / "index" / "tiles.parquet",
        run.embeddings,
        tmp_path / "formulas.csv",
        run.prepared,
        out / "analogues.gpkg",
        out / "analogues.csv",
        out / "similarity",
        buffer_m=10.0,
        exclusion_km=0.5,
        top=15,
        log=lambda *_: None,
    )
    gpkg = gpd.read_file(out / "analogues.gpkg")
    assert set(gpkg["nearest_positive"]) == set(names)  # the GeoPackage: the names as given
    assert set(gpkg["query"]) == {"set", *names}
    with open(out / "analogues.csv", newline="") as fh:
        text = fh.read()
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len(rows) == len(gpkg) + 1
    for row in rows:
        for cell in row:
            try:
                float(cell)
            except ValueError:  # text, not a number
                assert not cell.startswith(FORMULA_START), cell
                assert '"' + cell.replace('"', '""') + '"' in text, cell  # quoted: one cell, whatever the separator
    back = read_csv(out / "analogues.csv")
    assert back["nearest_positive"].tolist() == gpkg["nearest_positive"].tolist()
    assert back["query"].tolist() == gpkg["query"].tolist()


def test_a_negative_s_own_tiles_are_never_analogues(indexed):
    run, table, vectors = indexed
    deposits = read_deposits(run.deposits_csv, CRS)
    positives = select_positives(table, deposits, buffer_m=10.0)
    known = deposits.geometry.to_numpy()
    ranked = rank_analogues(vectors, table, positives, deposits=known, exclusion_m=1.5 * TILE_M, top=10)
    wrong = ranked["id"].to_numpy()[:2]  # the two best, said to be wrong
    again = rank_analogues(
        vectors, table, positives, deposits=known, exclusion_m=1.5 * TILE_M, top=10, negatives=[wrong[:1], wrong[1:]]
    )
    assert not set(wrong) & set(again["id"])
    assert again["id"].tolist()[:8] == ranked["id"].tolist()[2:]  # the rest move up, in order


def test_a_marks_file_gives_its_positives_as_deposits_and_its_negatives_as_negatives(tmp_path):
    path = tmp_path / "marks.gpkg"
    right = gpd.GeoDataFrame({"name": ["right 1", "right 2"]}, geometry=[Point(1, 2), box(0, 0, 5, 5)], crs=CRS)
    wrong = gpd.GeoDataFrame({"name": ["wrong 1"]}, geometry=[Point(7, 8)], crs=CRS)
    right.to_file(path, layer="positives", driver="GPKG")
    wrong.to_file(path, layer="negatives", driver="GPKG")
    assert read_deposits(path, CRS)["name"].tolist() == ["right 1", "right 2"]
    assert read_deposits(path, CRS, role="negatives")["name"].tolist() == ["wrong 1"]
    # Any other GeoPackage of several layers is read as before: its first layer, whatever the role.
    other = tmp_path / "other.gpkg"
    right.to_file(other, layer="occurrences", driver="GPKG")
    wrong.to_file(other, layer="negatives", driver="GPKG")
    assert read_deposits(other, CRS, role="negatives")["name"].tolist() == ["right 1", "right 2"]


def test_a_marks_file_is_counted_against_the_limit_in_the_layer_it_is_read_for(tmp_path, monkeypatch):
    """The feature count checked before reading is that of the layer read: eleven positives past a
    limit of ten refuse the file as deposits, while its one negative may still be read as negatives."""
    from outcrop.search.analogues import check_deposits_size

    path = tmp_path / "marks.gpkg"
    gpd.GeoDataFrame(
        {"name": [f"right {i}" for i in range(11)]}, geometry=[Point(i, i) for i in range(11)], crs=CRS
    ).to_file(path, layer="positives", driver="GPKG")
    gpd.GeoDataFrame({"name": ["wrong 1"]}, geometry=[Point(50, 50)], crs=CRS).to_file(
        path, layer="negatives", driver="GPKG"
    )
    monkeypatch.setenv("OUTCROP_LIMITS", '{"deposits": 10}')
    with pytest.raises(OutcropError, match=r"marks\.gpkg: 11 deposits, and limits\.deposits"):
        check_deposits_size(path)
    check_deposits_size(path, role="negatives")
    assert read_deposits(path, CRS, role="negatives")["name"].tolist() == ["wrong 1"]


def test_a_place_from_the_map_selects_the_tiles_a_deposit_at_that_place_selects():
    """``outcrop serve`` and a deposits file select positives with one spatial match: a point within
    ``buffer_m`` of a tile's corner (by distance, not by a polygon approximating the circle, whose
    chords pass inside it) selects that tile either way; a point farther off selects none."""
    from outcrop.search.analogues import match_deposits, positives_of_shapes

    table = gpd.GeoDataFrame({"id": [0, 1]}, geometry=[box(0, 0, 100, 100), box(300, 0, 400, 100)], crs=CRS)
    angle = np.radians(45 + 90 / 32)  # between two vertices of a 16-segment quarter circle
    near = Point(100 + 49.99 * np.cos(angle), 100 + 49.99 * np.sin(angle))  # 49.99 m from the corner
    inside = box(310, 10, 320, 20)
    shapes = np.array([near, inside], dtype=object)
    served = positives_of_shapes(table.sindex, shapes, ["click", "drawn"], buffer_m=50.0)
    from_file, unmatched = match_deposits(
        table, gpd.GeoDataFrame({"name": ["a", "b"]}, geometry=list(shapes), crs=CRS), buffer_m=50.0
    )
    assert [p.tolist() for p in served] == [p.tolist() for p in from_file] == [[0], [1]]
    assert len(unmatched) == 0
    far = Point(100 + 50.01 * np.cos(angle), 100 + 50.01 * np.sin(angle))
    with pytest.raises(OutcropError, match=r"^deposit 'far' \(feature 1\) meets no indexed tile"):
        positives_of_shapes(table.sindex, np.array([far], dtype=object), ["far"], buffer_m=50.0)


def test_queries_from_rows_read_on_demand_equal_those_from_the_whole_array(indexed):
    """``outcrop serve`` hands the query builder an object that reads the rows of the ids it is given
    (memory-mapped embeddings), not an array of every tile: its queries are the same."""
    run, table, vectors = indexed

    class Rows:
        def __getitem__(self, ids):
            return vectors[np.asarray(ids)]

    positives = select_positives(table, read_deposits(run.deposits_csv, CRS), buffer_m=10.0)
    negatives = [np.array([3, 4]), np.array([9])]
    np.testing.assert_allclose(
        query_vectors(Rows(), positives, negatives), query_vectors(vectors, positives, negatives), atol=1e-6
    )


def test_a_coast_s_vectors_read_a_chunk_at_a_time_score_as_the_whole_array_does(indexed, monkeypatch):
    """The analogues' whole way reads the index's vectors from the embeddings a chunk at a time (ten
    million tiles do not fit in memory together): queries, scores and which query gave each are
    those of the vectors held at once, bit for bit, with chunks far smaller than a scene."""
    from outcrop.search import vectors as vectors_module
    from outcrop.search.analogues import kept_queries, score_kept, score_source, score_tiles
    from outcrop.search.index import table_vector_source

    run, table, vectors = indexed
    monkeypatch.setattr(vectors_module, "CHUNK", 7)
    source = table_vector_source(table, run.embeddings)
    assert len(source.arrays) == len(SCENES) and max(len(r) for r in source.rows) > 7  # several scenes, many chunks
    deposits = _scattered_deposits(table, 40)
    positives = select_positives(table, deposits, buffer_m=10.0)
    negatives = [np.array([3, 4]), np.array([9])]
    queries, labels = kept_queries(source, positives, negatives)
    held_queries, held_labels = kept_queries(vectors, positives, negatives)
    np.testing.assert_array_equal(queries, held_queries)
    np.testing.assert_array_equal(labels, held_labels)
    score, which = score_source(source, queries, labels)
    held_score, held_which = score_kept(vectors, held_queries, held_labels)
    np.testing.assert_array_equal(score, held_score)
    np.testing.assert_array_equal(which, held_which)
    np.testing.assert_array_equal(score, score_tiles(vectors, positives, negatives)[0])
