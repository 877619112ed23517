"""Label-free quality: leave-one-deposit-out and cross-scene re-identification score what the
vectors hold, and fall to chance when the vectors are shuffled (scores that cannot be faked)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import Point, box

from outcrop.search.quality import best_overlaps, leave_one_out_ranks, rank_summary, reidentification

CRS = "EPSG:3031"


def _grid(n: int = 30, width: float = 960.0, stride: float = 480.0) -> gpd.GeoDataFrame:
    xs = np.arange(n) * stride
    return gpd.GeoDataFrame(
        {"scene": "s", "tile_id": np.arange(n * n)},
        geometry=[box(x, y, x + width, y + width) for y in xs for x in xs],
        crs=CRS,
    )


def _deposits_with_a_signature(seed: int = 0):
    """Six point deposits far apart whose tiles share one signature; other tiles are random."""
    from outcrop.search.analogues import select_positives

    table = _grid()
    rng = np.random.default_rng(seed)
    points = [Point(2000 + 5000 * (i % 3), 2000 + 6000 * (i // 3)) for i in range(6)]
    deposits = gpd.GeoDataFrame({"name": [f"d{i}" for i in range(6)]}, geometry=points, crs=CRS)
    positives = select_positives(table, deposits, buffer_m=100.0)
    vectors = rng.standard_normal((len(table), 16)).astype(np.float32)
    signature = rng.standard_normal(16).astype(np.float32)
    for p in positives:
        vectors[p] = signature + 0.3 * rng.standard_normal((len(p), 16))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return table, deposits, positives, vectors


def test_leave_one_out_finds_each_deposit_from_the_others_and_shuffled_vectors_do_not():
    table, deposits, positives, vectors = _deposits_with_a_signature()
    args = dict(exclusion_m=1000.0, site_overlap=0.25)
    ranks = leave_one_out_ranks(vectors, table, deposits.geometry.to_numpy(), positives, **args)
    assert (ranks == 1).all()
    summary = rank_summary(ranks, [1, 10])
    assert summary["recall@1"] == 1.0 and summary["median_rank"] == 1.0 and summary["ranks"] == [1] * 6
    # Shuffled rows: the deposits' tiles hold random vectors; they come back far down the list.
    shuffled = vectors[np.random.default_rng(1).permutation(len(vectors))]
    ranks = leave_one_out_ranks(shuffled, table, deposits.geometry.to_numpy(), positives, **args)
    # About 200 sites; the best of a deposit's four random tiles lands near place 40 by chance.
    assert rank_summary(ranks, [10])["recall@10"] <= 1 / 6 and np.median(ranks) > 15


def test_leave_one_out_misses_a_deposit_inside_anothers_exclusion_zone():
    table, deposits, positives, vectors = _deposits_with_a_signature()
    # Deposit 0 moved next to deposit 1: its tiles lie in deposit 1's exclusion zone.
    near = deposits.copy()
    near.loc[0, "geometry"] = Point(near.geometry[1].x + 300, near.geometry[1].y)
    from outcrop.search.analogues import select_positives

    pos = select_positives(table, near, buffer_m=100.0)
    ranks = leave_one_out_ranks(vectors, table, near.geometry.to_numpy(), pos, exclusion_m=1000.0, site_overlap=0.25)
    assert np.isinf(ranks[0]) and rank_summary(ranks, [5])["ranks"][0] is None


def test_reidentification_counts_the_overlapping_tiles_and_shuffled_vectors_score_near_chance():
    table = _grid(20)
    gallery_geoms = table.geometry.to_numpy()
    # Queries: the gallery grid shifted by half a stride; each overlaps four gallery tiles most (two at the edge).
    queries_geoms = np.array(
        [
            box(x + 240, y + 240, x + 1200, y + 1200)
            for x, y in zip(table.geometry.bounds.minx[:300], table.geometry.bounds.miny[:300])
        ],
        dtype=object,
    )
    answers = best_overlaps(queries_geoms, gallery_geoms)
    assert {len(a) for a in answers} == {2, 4}
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((len(table), 32)).astype(np.float32)
    # Each query looks like the mean of the tiles it overlaps, plus noise.
    queries = np.stack([gallery[a].mean(axis=0) for a in answers]) + 0.1 * rng.standard_normal((300, 32))
    unit = lambda v: (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    scores = reidentification(unit(gallery), unit(queries), answers)
    assert scores["top1"] > 0.9 and scores["top5"] >= scores["top1"]
    shuffled = reidentification(unit(gallery[rng.permutation(len(gallery))]), unit(queries), answers)
    # Chance: 4 right answers among 400 tiles, so about 1 % at top-1 and 5 % at top-5.
    assert shuffled["top1"] < 0.05 and shuffled["top5"] < 0.12


def test_offset_tiles_are_cut_half_a_stride_off_the_run_grid(tmp_path):
    from rasterio.transform import from_origin

    from outcrop.io import write_prepared
    from outcrop.raster.tiles import cut_offset_tiles

    refl = np.random.default_rng(0).random((3, 64, 64)).astype(np.float32)
    mask = np.ones((64, 64), dtype=np.uint8)  # rock
    path = tmp_path / "p.tif"
    write_prepared(path, refl, mask, CRS, from_origin(3000.0, 6000.0, 30.0, 30.0), ["blue", "green", "red"])
    tiles, geoms = cut_offset_tiles(path, size=16, stride=8, offset=4)
    x0 = np.array([g.bounds[0] for g in geoms])
    # Starts sit 4 px off the global 8 px grid; the pixels are the scene's own.
    assert len(tiles) > 0 and np.allclose(((x0 / 30.0) - 4) % 8, 0)
    col, row = int(round((x0[0] - 3000) / 30)), int(round((6000 - geoms[0].bounds[3]) / 30))
    np.testing.assert_allclose(tiles[0], refl[:, row : row + 16, col : col + 16], atol=1e-4)
    limited, _ = cut_offset_tiles(path, size=16, stride=8, offset=4, limit=3)
    assert len(limited) == 3


def test_queries_under_an_aoi_are_drawn_from_the_indexed_ground_only(tmp_path):
    """Two overlapping scenes tiled under a small AOI: every query lies on indexed ground and has a
    right answer, and as many are drawn as that ground holds (up to REID_QUERIES). Drawn from the
    whole overlap first and filtered after, most of the sample fell outside the AOI and was lost."""
    import geopandas as gpd
    from rasterio.transform import from_origin

    from outcrop.io import write_prepared
    from outcrop.raster.geo import TileLayout
    from outcrop.raster.tiles import cut_offset_tiles, tile_scene
    from outcrop.search.quality import REID_QUERIES, cut_queries, on_indexed_ground

    size, stride, res = 8, 4, 30.0
    rng = np.random.default_rng(0)
    ground = rng.random((3, 480, 640)).astype(np.float32) * 0.3 + 0.05
    frames = {"a": (0, 0, 480, 480), "b": (0, 160, 480, 480)}  # b starts 160 px east of a: 320 px shared
    for name, (r0, c0, h, w) in frames.items():
        write_prepared(
            tmp_path / f"{name}.tif",
            ground[:, r0 : r0 + h, c0 : c0 + w],
            np.ones((h, w), np.uint8),
            CRS,
            from_origin(c0 * res, 0.0, res, res),
            ["blue", "green", "red"],
        )
    aoi = box(240 * res, -280 * res, 400 * res, -120 * res)  # a sixth of the shared ground
    tables = {}
    for name in frames:
        tile_scene(
            tmp_path / f"{name}.tif",
            tmp_path / f"{name}.npy",
            tmp_path / f"{name}.parquet",
            scene_id=name,
            size=size,
            stride=stride,
            min_valid=0.9,
            aoi=aoi,
            log=lambda _: None,
        )
        tables[name] = gpd.read_parquet(tmp_path / f"{name}.parquet").geometry.to_numpy()
    shared = (160 * res, -480 * res, 480 * res, 0.0)
    where = on_indexed_ground(tables["a"], tables["b"])
    args = dict(size=size, stride=stride, bounds=shared, min_valid=0.9, seed=0)
    layout = TileLayout(size, stride, 0.9)

    _, geoms, _ = cut_queries(tmp_path / "b.tif", layout, bounds=shared, seed=0, where=where)
    every = cut_offset_tiles(tmp_path / "b.tif", offset=stride // 2, **args)[1]  # the whole overlap
    on_ground = int(where(np.asarray(every)).sum())
    assert len(every) > 3 * REID_QUERIES and 500 < on_ground < REID_QUERIES
    assert len(geoms) == on_ground  # all of the indexed ground's queries: fewer than the cap
    assert all(len(a) > 0 for a in best_overlaps(np.asarray(geoms), tables["a"]))
    centres = np.array([g.centroid.coords[0] for g in geoms])
    assert all(aoi.buffer(size * res).contains(Point(*c)) for c in centres)
    # The sample drawn before the AOI filter: about a sixth of it survives the filter
    _, before, _ = cut_queries(tmp_path / "b.tif", layout, bounds=shared, seed=0)
    assert where(np.asarray(before)).sum() < 0.5 * on_ground


@pytest.mark.parametrize(
    "content, message",
    [
        ("not json", "not a JSON file of scores (Expecting value"),
        ("[1, 2]", "not a JSON object of scores (found list)"),
    ],
)
def test_quality_refuses_unreadable_demo_scores(tmp_path, content, message):
    import subprocess
    import sys

    path = tmp_path / "scores.json"
    path.write_text(content)
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
            "--demo-scores",
            str(path),
            "--out",
            str(tmp_path / "m.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"outcrop quality: error: {path}: {message}")
    assert not (tmp_path / "m.json").exists()


def _leave_one_out_in_full(vectors, table, geoms, positives, exclude, exclusion_m, site_overlap):
    """The plain definition: for each deposit, the analogue search of all the others, every query scanned."""
    from outcrop.search.analogues import best_scores, excluded_ids, query_vectors, suppress_overlapping

    ranks = np.full(len(positives), np.inf)
    for i in range(len(positives)):
        others = [p for j, p in enumerate(positives) if j != i]
        score, _ = best_scores(vectors, query_vectors(vectors, others))
        zones = np.concatenate([np.delete(geoms, i), exclude])
        masked = np.where(excluded_ids(table, zones, others, exclusion_m), -np.inf, score)
        reachable = positives[i][np.isfinite(masked[positives[i]])]
        if len(reachable):
            target = reachable[np.lexsort((reachable, -masked[reachable]))[0]]
            ids = np.arange(len(masked))
            better = np.flatnonzero((masked > masked[target]) | ((masked == masked[target]) & (ids < target)))
            order = np.concatenate([better[np.lexsort((better, -masked[better]))], [target]])
            ranks[i] = int(suppress_overlapping(table.geometry.values[order], site_overlap).sum())
    return ranks


def test_leave_one_out_of_many_deposits_equals_the_search_of_all_the_others_and_samples_honestly():
    """Computed once for all deposits (top-two scores, the set query less one, zones counted per tile),
    the ranks are those of running the whole search without each deposit in turn; two deposits on
    one tile and a deposit that meets no tile (which still excludes its ground) included."""
    from outcrop.search.analogues import select_positives
    from outcrop.search.quality import hidden_sample

    table, deposits, positives, vectors = _deposits_with_a_signature(seed=2)
    rng = np.random.default_rng(5)
    extra = [Point(500 + 480 * rng.integers(0, 29), 500 + 480 * rng.integers(0, 29)) for _ in range(14)]
    extra.append(Point(deposits.geometry[2].x + 5, deposits.geometry[2].y))  # shares deposit 2's tiles
    many = gpd.GeoDataFrame(
        {"name": [f"e{i}" for i in range(6 + len(extra))]}, geometry=[*deposits.geometry, *extra], crs=CRS
    )
    positives = select_positives(table, many, buffer_m=100.0)
    exclude = np.array([Point(9000.0, 9000.0)], dtype=object)  # a deposit on ground with no indexed tile
    args = dict(exclusion_m=700.0, site_overlap=0.25)
    geoms = many.geometry.to_numpy()
    expected = _leave_one_out_in_full(vectors, table, geoms, positives, exclude, **args)
    lines = []
    ranks = leave_one_out_ranks(
        vectors, table, geoms, positives, exclude=exclude, log=lines.append, name="byol", **args
    )
    np.testing.assert_array_equal(ranks, expected)
    assert np.isinf(expected[2]) and np.isinf(expected[-1])  # each lies on the other's tiles
    assert lines[-1].startswith("quality: leave-one-out: byol: 21 of 21 deposits hidden (") and len(lines) == 11
    hidden = hidden_sample(len(positives), 8, seed=0)
    assert len(hidden) == 8 and np.array_equal(hidden, hidden_sample(len(positives), 8, seed=0))
    sampled = leave_one_out_ranks(vectors, table, geoms, positives, exclude=exclude, hidden=hidden, **args)
    np.testing.assert_array_equal(sampled, expected[hidden])
    assert np.array_equal(hidden_sample(5, 8, seed=0), np.arange(5))
