"""Index stage: kind chosen by size, recall measured and enforced, id table aligned, bad pairs refused."""

from __future__ import annotations

import json

import faiss
import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

from outcrop import OutcropError
from outcrop.io import load_npy, save_npy, write_geodataframe
from outcrop.search.index import build_index, gather_vectors, ivf_params, load_index, recall_at_k, tune_nprobe
from synthetic_run import make_run

faiss.omp_set_num_threads(1)


def _outputs(root, name="index"):
    return root / name / "tiles.faiss", root / name / "tiles.parquet", root / name / "info.json"


def _big_scene(root, n_side=90, dim=32, clusters=40, seed=0):
    """One scene of n_side² tiles whose embeddings form many tight clusters (realistic for IVF)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    vec = centres[rng.integers(clusters, size=n_side * n_side)] + 0.6 * rng.normal(size=(n_side * n_side, dim))
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    r, c = np.divmod(np.arange(n_side * n_side), n_side)
    table = gpd.GeoDataFrame(
        {
            "tile_id": np.arange(len(r)),
            "scene": "big",
            "row": r * 8,
            "col": c * 8,
            "size": 8,
            "valid": 1.0,
            "rock": 1.0,
            "snow_ice": 0.0,
            "water": 0.0,
            "cloud": 0.0,
        },
        geometry=[box(x * 240.0, -(y + 1) * 240.0, (x + 1) * 240.0, -y * 240.0) for y, x in zip(r, c)],
        crs="EPSG:3031",
    )
    save_npy(root / "big.npy", vec.astype(np.float32))
    write_geodataframe(root / "big.parquet", table)
    return [root / "big.npy"], [root / "big.parquet"], vec


def test_small_collection_gets_exact_index_aligned_with_table(tmp_path):
    run = make_run(tmp_path)
    build_index(run.embeddings, run.tables, *_outputs(tmp_path), log=lambda *_: None)
    index, table = load_index(*_outputs(tmp_path)[:2])
    info = json.loads(_outputs(tmp_path)[2].read_text())
    assert isinstance(index, faiss.IndexFlatIP)
    assert info["kind"] == "flat" and info["count"] == len(table) == 400 + 252 and info["dim"] == 16
    assert info["recall_at_10"] == 1.0
    assert table["id"].tolist() == list(range(len(table)))
    # FAISS id i holds the embedding of table row i's (scene, tile).
    stored = index.reconstruct_n(0, index.ntotal)
    for i in (0, 399, 400, len(table) - 1):
        emb = load_npy(tmp_path / "embeddings" / f"{table.scene[i]}.npy")
        np.testing.assert_allclose(stored[i], emb[table.tile_id[i]], atol=1e-6)
    # Searching with a tile's own vector finds that tile first.
    _, ids = index.search(stored[[5, 500]], 1)
    assert ids[:, 0].tolist() == [5, 500]


def test_min_rock_indexes_only_rock_tiles(tmp_path):
    run = make_run(tmp_path, ice_scene=True)
    vectors, table = gather_vectors(run.embeddings, run.tables, min_rock=0.5)
    assert (table["rock"] >= 0.5).all()
    assert "c" not in set(table["scene"])  # the all-ice scene contributes nothing
    expected = sum(int((gpd.read_parquet(t)["rock"] >= 0.5).sum()) for t in run.tables)
    assert len(table) == len(vectors) == expected
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert {
        "id",
        "scene",
        "tile_id",
        "row",
        "col",
        "size",
        "rock",
        "snow_ice",
        "water",
        "cloud",
        "valid",
        "geometry",
    } <= set(table.columns)
    with pytest.raises(OutcropError, match="nothing to index"):
        gather_vectors(run.embeddings, run.tables, min_rock=0.95)


def test_large_collection_gets_ivf_with_measured_recall(tmp_path):
    emb, tables, vec = _big_scene(tmp_path)
    build_index(emb, tables, *_outputs(tmp_path), exact_max=5000, recall_floor=0.9, log=lambda *_: None)
    index, table = load_index(*_outputs(tmp_path)[:2])
    info = json.loads(_outputs(tmp_path)[2].read_text())
    assert info["kind"] == "ivf_flat" and isinstance(index, faiss.IndexIVFFlat)
    assert info["count"] == index.ntotal == len(vec) == len(table)
    nlist, nprobe = info["params"]["nlist"], info["params"]["nprobe"]
    assert index.nlist == nlist and index.nprobe == nprobe  # tuned nprobe is stored in the file
    assert nlist & (nlist - 1) == 0 and 39 * nlist <= len(vec)
    assert info["recall_at_10"] >= 0.95  # tuned to the target, above the floor
    assert info["recall_at_10"] >= 0.9 and info["recall_queries"] > 100
    # The recall claimed holds on fresh queries against an exact scan.
    queries = vec[np.random.default_rng(7).choice(len(vec), 200, replace=False)].astype(np.float32)
    exact = faiss.IndexFlatIP(vec.shape[1])
    exact.add(vec.astype(np.float32))
    es, _ = exact.search(queries, 10)
    a_s, a_i = index.search(queries, 10)
    assert recall_at_k(es, a_s, a_i, 10) >= 0.85


def test_recall_floor_is_enforced_and_nothing_written(tmp_path):
    emb, tables, _ = _big_scene(tmp_path, n_side=40)
    with pytest.raises(OutcropError, match="recall@10"):
        build_index(emb, tables, *_outputs(tmp_path), exact_max=100, recall_floor=1.01, log=lambda *_: None)
    assert not any(p.exists() for p in _outputs(tmp_path))


def test_ivf_params_follow_the_guidelines():
    for count in (10_000, 300_000, 5_000_000):
        p = ivf_params(count)
        assert np.sqrt(count) / 1.5 <= p["nlist"] <= 1.5 * np.sqrt(count)  # balances quantizer and lists
        assert 39 * p["nlist"] <= p["train_size"] <= 64 * p["nlist"]
        assert 1 <= p["nprobe"] < p["nlist"]


def test_recall_is_tie_aware():
    exact = np.array([[1.0, 0.9, 0.9]])
    # A different tile with the same similarity as the third exact one is not a miss.
    assert recall_at_k(exact, np.array([[1.0, 0.9, 0.9]]), np.array([[0, 2, 7]]), 3) == 1.0
    assert recall_at_k(exact, np.array([[1.0, 0.9, 0.5]]), np.array([[0, 2, 7]]), 3) == pytest.approx(2 / 3)


def test_load_index_refuses_mismatched_or_corrupt_files(tmp_path):
    run = make_run(tmp_path)
    build_index(run.embeddings, run.tables, *_outputs(tmp_path, "all"), log=lambda *_: None)
    build_index(run.embeddings, run.tables, *_outputs(tmp_path, "rock"), min_rock=0.5, log=lambda *_: None)
    with pytest.raises(OutcropError, match="different builds"):
        load_index(_outputs(tmp_path, "all")[0], _outputs(tmp_path, "rock")[1])
    corrupt = tmp_path / "corrupt.faiss"
    corrupt.write_bytes(b"\x00not an index" * 20)
    with pytest.raises(OutcropError, match="not a readable FAISS index"):
        load_index(corrupt, _outputs(tmp_path, "all")[1])
    with pytest.raises(OutcropError, match="not found"):
        load_index(tmp_path / "missing.faiss", _outputs(tmp_path, "all")[1])


def test_embeddings_must_match_their_tile_table(tmp_path):
    run = make_run(tmp_path)
    save_npy(run.embeddings[1], load_npy(run.embeddings[1])[:-3])
    with pytest.raises(OutcropError, match="embeddings for"):
        gather_vectors(run.embeddings, run.tables)
    with pytest.raises(OutcropError, match="tile tables"):
        gather_vectors(run.embeddings, run.tables[:1])


def test_table_and_embeddings_must_be_of_the_same_scene(tmp_path):
    run = make_run(tmp_path)
    with pytest.raises(OutcropError, match="tile table is for scene"):
        gather_vectors(run.embeddings, run.tables[::-1])
    with pytest.raises(OutcropError, match="given twice"):
        gather_vectors(run.embeddings[:1] * 2, run.tables[:1] * 2)


def test_a_scene_without_tiles_adds_nothing(tmp_path):
    run = make_run(tmp_path)
    empty = gpd.read_parquet(run.tables[1]).iloc[:0]
    write_geodataframe(tmp_path / "empty.parquet", empty.assign(scene="empty"))
    save_npy(tmp_path / "empty.npy", np.zeros((0, 16), np.float32))
    vectors, table = gather_vectors(
        [*run.embeddings, tmp_path / "empty.npy"], [*run.tables, tmp_path / "empty.parquet"]
    )
    assert len(vectors) == len(table) == 652


def test_nprobe_tuning_finds_the_smallest_that_reaches_the_target():
    # A recall curve that rises with nprobe and first reaches 0.95 at 37.
    calls = []

    def recall_at(nprobe):
        calls.append(nprobe)
        return min(1.0, 0.5 + 0.45 * nprobe / 37)

    nprobe, recall = tune_nprobe(recall_at, 4, 256, 0.95)
    assert recall >= 0.95 and 37 <= nprobe <= 37 + 37 // 8 + 1
    assert len(calls) <= 8  # doubling to 64, then a few bisections
    # Unreachable target: the whole list count, with the recall it reached.
    assert tune_nprobe(lambda n: 0.5 + 0.4 * n / 64, 1, 64, 0.95) == (64, pytest.approx(0.9))
    # Reached at the start: bisected down to the smallest that still reaches it.
    assert tune_nprobe(lambda n: 0.99, 8, 64, 0.95) == (1, 0.99)
    assert tune_nprobe(lambda n: 0.9 + 0.01 * n, 8, 64, 0.95)[0] in (5, 6)
    # A ceiling under the target (product quantisation): stop where doubling stops adding recall.
    assert tune_nprobe(lambda n: min(0.92, 0.8 + 0.01 * n), 4, 4096, 0.95, ceiling=True) == (16, pytest.approx(0.92))
    # Without a quantiser's ceiling (IVF-Flat reaches 1.0 at nlist) a flat step does not stop it.
    assert tune_nprobe(lambda n: 0.9 if n < 64 else 0.97, 8, 256, 0.95)[1] >= 0.95


def test_product_quantiser_codes_at_most_four_dimensions_a_byte():
    from outcrop.search.index import pq_params

    assert pq_params(10_000_000, 128)["m"] == 32
    assert pq_params(10_000_000, 198)["m"] == 66  # the shipped 7-band vectors
    assert pq_params(10_000_000, 131)["m"] == 131  # a prime size: one dimension a byte


def _grid_json(path, **over):
    grid = {
        "crs": "EPSG:32621",
        "resolution": 30.0,
        "origin": [15.0, 15.0],
        "crs_reason": "auto: EPSG:32621 covers 2 of 2 scene(s)",
        "resolution_reason": "auto: finest band, 30 m",
        "alignment_reason": "scene a's pixel corners",
        "scenes": {},
        "warnings": [],
    }
    path.write_text(json.dumps({**grid, **over}))
    return path


def test_info_records_the_run_grid(tmp_path):
    run = make_run(tmp_path)
    grid = _grid_json(tmp_path / "grid.json", crs_reason={"not": "a string"})
    build_index(run.embeddings, run.tables, *_outputs(tmp_path), grid=grid, log=lambda *_: None)
    info = json.loads(_outputs(tmp_path)[2].read_text())
    assert info["grid"] == {
        "crs": "EPSG:32621",
        "resolution": 30.0,
        "origin": [15.0, 15.0],
        "crs_reason": "",
        "resolution_reason": "auto: finest band, 30 m",
        "alignment_reason": "scene a's pixel corners",
        "source": str(grid),
    }
    build_index(run.embeddings, run.tables, *_outputs(tmp_path, "nogrid"), log=lambda *_: None)
    assert "grid" not in json.loads(_outputs(tmp_path, "nogrid")[2].read_text())


def test_a_broken_grid_file_fails_the_index_before_writing(tmp_path):
    run = make_run(tmp_path)
    grid = _grid_json(tmp_path / "grid.json", resolution=-30)
    with pytest.raises(OutcropError, match=r"grid.json: resolution must be positive and the origin finite$"):
        build_index(run.embeddings, run.tables, *_outputs(tmp_path), grid=grid, log=lambda *_: None)
    assert not (tmp_path / "index").exists()


def _sparse_scene(root, name, layout, rock_every=2):
    """A scene whose tiles lie every 8 px (stride 8) but only every other one is rock: indexed with
    index.min_rock, the indexed tiles sit 16 px apart."""
    from outcrop.raster.tiles import write_tile_table

    n = 12
    r, c = np.divmod(np.arange(n * n), n)
    rock = np.where((r % rock_every == 0) & (c % rock_every == 0), 0.9, 0.0)
    table = gpd.GeoDataFrame(
        {
            "tile_id": np.arange(n * n),
            "scene": name,
            "row": r * 8,
            "col": c * 8,
            "size": 16,
            "valid": 1.0,
            "rock": rock,
            "snow_ice": 1.0 - rock,
            "water": 0.0,
            "cloud": 0.0,
        },
        geometry=[
            box(x * 240.0, -(y + 2) * 240.0, (x + 2) * 240.0, -y * 240.0) for y, x in zip(r * 8 // 8, c * 8 // 8)
        ],
        crs="EPSG:3031",
    )
    vec = np.random.default_rng(0).normal(size=(n * n, 8)).astype(np.float32)
    save_npy(root / f"{name}.npy", vec / np.linalg.norm(vec, axis=1, keepdims=True))
    if layout is None:
        write_geodataframe(root / f"{name}.parquet", table)
    else:
        write_tile_table(root / f"{name}.parquet", table, layout)
    return root / f"{name}.npy", root / f"{name}.parquet"


def test_the_index_table_carries_the_tile_grid_the_tables_record(tmp_path):
    """The clusters' and analogues' per-tile rasters are laid on the index table's tile grid: the one
    recorded with the tiles, not one guessed from the indexed tiles' offsets (here every other tile
    is indexed, and the offsets alone say 16 px)."""
    from outcrop.raster.geo import TileLayout
    from outcrop.search.index_table import IndexTable, table_layout

    emb, table = _sparse_scene(tmp_path, "s", TileLayout(16, 8, 0.9))
    build_index([emb], [table], *_outputs(tmp_path), min_rock=0.5, log=lambda *_: None)
    _, indexed = load_index(*_outputs(tmp_path)[:2])
    assert IndexTable.open(_outputs(tmp_path)[1]).tile_grid == TileLayout(16, 8, 0.9)
    assert table_layout(_outputs(tmp_path)[1], indexed) == TileLayout(16, 8, 0.9)
    # A run whose tile tables record no grid (older) keeps the inference, and says nothing else.
    emb, table = _sparse_scene(tmp_path, "old", None)
    build_index([emb], [table], *_outputs(tmp_path, "old"), min_rock=0.5, log=lambda *_: None)
    _, indexed = load_index(*_outputs(tmp_path, "old")[:2])
    assert IndexTable.open(_outputs(tmp_path, "old")[1]).tile_grid is None
    assert table_layout(_outputs(tmp_path, "old")[1], indexed) == TileLayout(16, 16)


def test_tile_tables_of_two_grids_are_not_indexed_together(tmp_path):
    from outcrop.raster.geo import TileLayout

    a = _sparse_scene(tmp_path, "a", TileLayout(16, 8, 0.9))
    b = _sparse_scene(tmp_path, "b", TileLayout(16, 16, 0.9))
    with pytest.raises(
        OutcropError,
        match=r"b\.parquet: tiles of 16 px at a stride of 16, but .*a\.parquet holds "
        r"tiles of 16 px at 8",
    ):
        build_index([a[0], b[0]], [a[1], b[1]], *_outputs(tmp_path), log=lambda *_: None)
    assert not _outputs(tmp_path)[0].exists()
