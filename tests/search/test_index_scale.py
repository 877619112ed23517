"""Coast scale: a memory budget that picks IVF-PQ with exact re-ranking, and scenes that are added,
not rebuilt (index and clusters), with drift measured and retraining when it passes the threshold."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct

import faiss
import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

from outcrop import OutcropError
from outcrop.io import load_npy, save_npy, write_geodataframe
from outcrop.search.clusters import cluster_tiles
from outcrop.search.faiss_file import check_index_file, read_index
from outcrop.search.index import build_index, choose_kind, load_index, recall_at_k
from outcrop.search.query import query_columns
from outcrop.search.vectors import VectorSource, exact_top_k, rerank
from synthetic_run import make_run

faiss.omp_set_num_threads(1)
QUIET = dict(log=lambda *_: None)


def _outputs(root, name="index"):
    return root / name / "tiles.faiss", root / name / "tiles.parquet", root / name / "info.json"


def _scene(root, name, n, *, dim=32, clusters=40, seed=0, shift=0.0, x0=0.0):
    """A scene of n tiles whose embeddings form tight clusters (shared centres across seeds)."""
    centres = np.random.default_rng(99).normal(size=(clusters, dim))
    rng = np.random.default_rng(seed)
    vec = centres[rng.integers(clusters, size=n)] + 0.6 * rng.normal(size=(n, dim))
    if shift:
        vec = rng.normal(size=(n, dim)) * shift  # far from every centre: drifted data
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    r, c = np.divmod(np.arange(n), 100)
    table = gpd.GeoDataFrame(
        {
            "tile_id": np.arange(n),
            "scene": name,
            "row": r * 8,
            "col": c * 8,
            "size": 8,
            "valid": 1.0,
            "rock": 1.0,
            "snow_ice": 0.0,
            "water": 0.0,
            "cloud": 0.0,
        },
        geometry=[box(x0 + x * 240.0, -(y + 1) * 240.0, x0 + (x + 1) * 240.0, -y * 240.0) for y, x in zip(r, c)],
        crs="EPSG:3031",
    )
    (root / "embeddings").mkdir(parents=True, exist_ok=True)
    (root / "tiles").mkdir(parents=True, exist_ok=True)
    save_npy(root / "embeddings" / f"{name}.npy", vec.astype(np.float32))
    write_geodataframe(root / "tiles" / f"{name}.parquet", table)
    return root / "embeddings" / f"{name}.npy", root / "tiles" / f"{name}.parquet"


def test_memory_budget_picks_flat_then_ivf_flat_then_ivf_pq():
    assert choose_kind(1000, 128, exact_max=1000, memory_gb=16) == "flat"
    assert choose_kind(10_000_000, 128, exact_max=200_000, memory_gb=16) == "ivf_flat"  # 5.2 GB in 8
    assert choose_kind(10_000_000, 128, exact_max=200_000, memory_gb=8) == "ivf_pq"


def test_the_default_budget_holds_a_coast_of_default_vectors_under_8_gib():
    """10 million tiles of the shipped 198-float vectors (128 learned + two spectra of 7 bands)."""
    from outcrop.config import default
    from outcrop.search.index import index_bytes

    budget = default("index.memory_gb")
    kind = choose_kind(10_000_000, 198, exact_max=default("index.exact_max"), memory_gb=budget)
    assert kind == "ivf_pq"
    assert index_bytes(10_000_000, 198, kind) < 1 << 30
    assert choose_kind(1_000_000, 198, exact_max=default("index.exact_max"), memory_gb=budget) == "ivf_flat"


def _rss_file_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssFile:"))


def test_a_streamed_pass_leaves_no_scene_resident(tmp_path):
    """Mapped pages read by a pass over every chunk are dropped from the resident set after each file."""
    paths = []
    for i in range(2):
        save_npy(tmp_path / f"s{i}.npy", np.random.default_rng(i).normal(size=(60_000, 128)).astype(np.float32))
        paths.append(tmp_path / f"s{i}.npy")  # 31 MB each
    source = VectorSource([load_npy(p) for p in paths], [np.arange(60_000)] * 2, [str(p) for p in paths])
    before = _rss_file_kib()
    total = sum(len(block) for _, block in source.chunks(size=10_000))
    assert total == 120_000
    assert _rss_file_kib() - before < 8 * 1024  # without the release: ~61 MiB stay mapped
    before = _rss_file_kib()
    _, sample = source.sample(12_000, seed=0)  # 10 % of the rows: nearly every page is touched
    assert len(sample) == 12_000 and _rss_file_kib() - before < 8 * 1024


def test_ivf_pq_index_is_reranked_to_its_measured_recall(tmp_path):
    emb, table = _scene(tmp_path, "big", 12_000)
    build_index([emb], [table], *_outputs(tmp_path), exact_max=1000, memory_gb=0.002, recall_floor=0.9, **QUIET)
    index, _ = load_index(*_outputs(tmp_path)[:2])  # the header walk knows IVF-PQ
    info = json.loads(_outputs(tmp_path)[2].read_text())
    assert info["kind"] == "ivf_pq" and isinstance(index, faiss.IndexIVFPQ)
    assert info["params"]["m"] == 8 and index.pq.M == 8 and index.nprobe == info["params"]["nprobe"]
    assert info["recall_at_10"] >= 0.9 and info["rerank"] == 100
    assert info["bytes"] < 12_000 * 32 * 4 / 4  # codes, not vectors
    # Fresh queries: the PQ ranking alone misses neighbours that re-ranking on exact vectors finds.
    vec = load_npy(emb)
    source = VectorSource.from_array(vec)
    queries = vec[np.random.default_rng(5).choice(len(vec), 200, replace=False)]
    exact_s, exact_i = exact_top_k(source, queries, 10)
    _, cand = index.search(queries, 100)
    re_s, re_i = rerank(queries, cand, source.take, 10)
    assert recall_at_k(exact_s, re_s, re_i, 10) >= 0.9
    np.testing.assert_allclose(re_s[:, 0], exact_s[:, 0], atol=1e-5)  # exact scores, not PQ estimates


def test_query_reranks_on_exact_vectors_when_the_index_is_quantised(tmp_path):
    run = make_run(tmp_path)
    flat = tmp_path / "flat"
    (flat / "index").mkdir(parents=True)
    build_index(run.embeddings, run.tables, *_outputs(flat), **QUIET)
    (flat / "embeddings").symlink_to(tmp_path / "embeddings")
    build_index(
        run.embeddings, run.tables, *_outputs(tmp_path), exact_max=100, memory_gb=1e-5, recall_floor=0.5, **QUIET
    )
    assert json.loads(_outputs(tmp_path)[2].read_text())["kind"] == "ivf_pq"
    exact = query_columns(flat, tile="a:5", top=10)
    approx = query_columns(tmp_path, tile="a:5", top=10)
    np.testing.assert_allclose(approx["score"], exact["score"], atol=1e-5)  # exact scores, same order
    assert recall_at_k(exact["score"][None], approx["score"][None], approx["id"][None], 10) == 1.0


def test_the_header_walk_checks_ivf_pq_files(tmp_path):
    x = np.random.default_rng(0).normal(size=(12_000, 16)).astype(np.float32)
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(16), 16, 8, 4, 8, faiss.METRIC_INNER_PRODUCT)
    index.train(x)
    index.add(x)
    good = tmp_path / "pq.faiss"
    faiss.write_index(index, str(good))
    check_index_file(good)
    assert read_index(good).ntotal == 12_000
    data = bytearray(good.read_bytes())
    pq_header = data.index(struct.pack("<QQQ", 16, 4, 8))  # the product quantizer's d, M, nbits
    bad = tmp_path / "bad.faiss"
    for offset, value, why in ((8, 1 << 40, "sub-vectors"), (16, 32, "bits"), (24, 1 << 40, "centroid")):
        broken = bytearray(data)
        broken[pq_header + offset : pq_header + offset + 8] = struct.pack("<Q", value)
        bad.write_bytes(bytes(broken))
        with pytest.raises(OutcropError, match=f"bad.faiss: not a readable FAISS index.*{why}"):
            read_index(bad)
    bad.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(OutcropError, match="not a readable FAISS index"):
        read_index(bad)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "kind,exact_max,memory_gb", [("flat", 100_000, 16), ("ivf_flat", 1000, 16), ("ivf_pq", 1000, 0.002)]
)
def test_adding_a_scene_adds_to_the_kept_index(tmp_path, kind, exact_max, memory_gb):
    old = _scene(tmp_path, "a", 12_000, seed=1)
    new = _scene(tmp_path, "b", 600, seed=2, x0=1e6)
    state = tmp_path / "index" / "state"
    opts = dict(exact_max=exact_max, memory_gb=memory_gb, state_dir=state)
    build_index([old[0]], [old[1]], *_outputs(tmp_path), **opts, **QUIET)
    assert json.loads(_outputs(tmp_path)[2].read_text())["kind"] == kind
    trained = _sha(state / "trained.faiss") if kind != "flat" else None
    for path in _outputs(tmp_path):
        path.unlink()  # as Snakemake does before it reruns a job
    lines: list[str] = []
    build_index([old[0], new[0]], [old[1], new[1]], *_outputs(tmp_path), **opts, log=lines.append)
    info = json.loads(_outputs(tmp_path)[2].read_text())
    assert info["built"] == "added" and info["added"] == ["b"]
    assert any(line.startswith("added 1 scene") for line in lines)
    assert not any("train" in line for line in lines), lines
    if kind != "flat":
        assert _sha(state / "trained.faiss") == trained  # the trained part is the same bytes
        assert 0 < info["drift"] < 1.5 and info["recall_at_10"] >= 0.9
    index, table = load_index(*_outputs(tmp_path)[:2])
    assert table.scene.tolist() == ["a"] * 12_000 + ["b"] * 600 and index.ntotal == 12_600
    # A full rebuild gives the same answers on the old tiles (exactly so for the exact index).
    build_index(
        [old[0], new[0]],
        [old[1], new[1]],
        *_outputs(tmp_path, "full"),
        exact_max=exact_max,
        memory_gb=memory_gb,
        **QUIET,
    )
    full, _ = load_index(*_outputs(tmp_path, "full")[:2])
    vec = np.concatenate([load_npy(old[0]), load_npy(new[0])])
    source = VectorSource.from_array(vec)
    queries = vec[np.random.default_rng(3).choice(12_000, 100, replace=False)]
    exact_s, _ = exact_top_k(source, queries, 10)
    from outcrop.search.index import search_exact

    for idx in (index, full):
        s, i = search_exact(idx, queries, 10, source)
        assert recall_at_k(exact_s, s, i, 10) >= (1.0 if kind == "flat" else 0.9)
    if kind == "flat":
        np.testing.assert_array_equal(
            search_exact(index, queries, 10, source)[1], search_exact(full, queries, 10, source)[1]
        )
    # The new tiles are searchable: each finds itself.
    s, i = search_exact(index, vec[[12_000, 12_599]], 1, source)
    assert i[:, 0].tolist() == [12_000, 12_599]


def _rewrite_keeping_size_and_mtime(path, data):
    st = path.stat()
    assert len(data) == st.st_size
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("memory_gb", [16, 0.002])  # ivf_flat, ivf_pq
def test_an_add_reads_no_kept_scene_again(tmp_path, memory_gb):
    """A kept scene whose files keep their size and mtime is neither checksummed nor read: its tile
    table made garbage and its embeddings replaced by other vectors go unnoticed by an add."""
    old = _scene(tmp_path, "a", 12_000, seed=1)
    new = _scene(tmp_path, "b", 600, seed=2, x0=1e6)
    state = tmp_path / "index" / "state"
    opts = dict(exact_max=1000, memory_gb=memory_gb, state_dir=state)
    build_index([old[0]], [old[1]], *_outputs(tmp_path), **opts, **QUIET)
    before = gpd.read_parquet(_outputs(tmp_path)[1])
    _rewrite_keeping_size_and_mtime(old[1], os.urandom(old[1].stat().st_size))
    other = io.BytesIO()
    # Same header and size, every float's last bit flipped: other bytes, the same vectors to within
    # 1e-7 (the bounded recall check samples kept vectors, so they must stay vectors).
    np.save(other, (np.array(load_npy(old[0])).view(np.uint32) ^ 1).view(np.float32))
    _rewrite_keeping_size_and_mtime(old[0], other.getvalue())
    for path in _outputs(tmp_path):
        path.unlink()  # as Snakemake does before it reruns a job
    lines: list[str] = []
    build_index([old[0], new[0]], [old[1], new[1]], *_outputs(tmp_path), **opts, log=lines.append)
    info = json.loads(_outputs(tmp_path)[2].read_text())
    assert info["built"] == "added" and info["added"] == ["b"], lines
    assert info["scenes"] == {"a": 12_000, "b": 600} and info["recall_queries"] == 1000
    index, table = load_index(*_outputs(tmp_path)[:2])  # the kept rows, then the new ones appended
    assert index.ntotal == len(table) == 12_600 and table["id"].tolist() == list(range(12_600))
    assert table.scene.tolist() == ["a"] * 12_000 + ["b"] * 600
    assert table.iloc[:12_000].geom_equals(before.geometry).all()
    assert (table.iloc[:12_000]["tile_id"].to_numpy() == before["tile_id"].to_numpy()).all()


def test_an_added_scene_in_another_crs_is_refused(tmp_path):
    old = _scene(tmp_path, "a", 2000, seed=1)
    new = _scene(tmp_path, "b", 300, seed=2, x0=1e6)
    write_geodataframe(new[1], gpd.read_parquet(new[1]).set_crs("EPSG:3413", allow_override=True))
    opts = dict(exact_max=1000, state_dir=tmp_path / "index" / "state", **QUIET)
    build_index([old[0]], [old[1]], *_outputs(tmp_path), **opts)
    for path in _outputs(tmp_path):
        path.unlink()
    with pytest.raises(OutcropError, match=r"tiles/b.parquet: CRS EPSG:3413 differs from the run's EPSG:3031"):
        build_index([old[0], new[0]], [old[1], new[1]], *_outputs(tmp_path), **opts)
    assert not any(path.exists() for path in _outputs(tmp_path))  # no partial output


def test_drift_or_a_changed_scene_retrains(tmp_path):
    old = _scene(tmp_path, "a", 12_000, seed=1)
    far = _scene(tmp_path, "z", 3000, seed=2, shift=1.0, x0=1e6)
    state = tmp_path / "index" / "state"
    opts = dict(exact_max=1000, state_dir=state, recall_floor=0.5)
    build_index([old[0]], [old[1]], *_outputs(tmp_path), **opts, **QUIET)
    lines: list[str] = []
    build_index([old[0], far[0]], [old[1], far[1]], *_outputs(tmp_path), drift_max=1.05, **opts, log=lines.append)
    assert any("drift" in line and "retraining" in line for line in lines), lines
    assert json.loads(_outputs(tmp_path)[2].read_text())["built"] == "trained"
    save_npy(old[0], load_npy(old[0])[::-1].copy())  # same scene, other vectors
    lines.clear()
    build_index([old[0], far[0]], [old[1], far[1]], *_outputs(tmp_path), **opts, log=lines.append)
    assert any("'a' changed" in line for line in lines), lines
    lines.clear()
    build_index([old[0], far[0]], [old[1], far[1]], *_outputs(tmp_path), retrain=True, **opts, log=lines.append)
    assert any("retraining, as asked" in line for line in lines)


def _cluster(run, idx, out, scenes, **kw):
    return cluster_tiles(
        idx / "tiles.parquet",
        [run.embeddings[i] for i in scenes],
        [run.tiles[i] for i in scenes],
        [run.prepared[i] for i in scenes],
        out / "tiles.gpkg",
        out / "tiles.parquet",
        out / "summary.csv",
        out / "rasters",
        ks=(4, 8),
        cuts=(2,),
        seed=0,
        **kw,
    )


def test_a_new_scene_is_assigned_to_the_kept_centroids(tmp_path):
    run = make_run(tmp_path)
    idx, out, state = tmp_path / "index", tmp_path / "clusters", tmp_path / "clusters" / "state"
    build_index(run.embeddings[:1], run.tables[:1], *_outputs(tmp_path), state_dir=idx / "state", **QUIET)
    _cluster(run, idx, out, [0], state_dir=state, **QUIET)
    before = gpd.read_parquet(out / "tiles.parquet")
    centroids = {k: _sha(state / f"centroids_k{k}.npy") for k in (4, 8)}
    build_index(run.embeddings, run.tables, *_outputs(tmp_path), state_dir=idx / "state", **QUIET)
    lines: list[str] = []
    _cluster(run, idx, out, [0, 1], state_dir=state, log=lines.append)
    after = gpd.read_parquet(out / "tiles.parquet")
    assert any("252 tiles of 1 added scene(s) assigned to the kept centroids (b)" in line for line in lines), lines
    assert {k: _sha(state / f"centroids_k{k}.npy") for k in (4, 8)} == centroids
    old = after[after.scene == "a"]
    np.testing.assert_array_equal(old[["tile_id", "k4", "k8"]].to_numpy(), before[["tile_id", "k4", "k8"]].to_numpy())
    assert set(after.loc[after.scene == "b", "k8"]) <= set(range(8)) and (after.scene == "b").sum() > 0
    # Retraining on request gives a fresh clustering of every tile.
    lines.clear()
    _cluster(run, idx, out, [0, 1], state_dir=state, retrain=True, log=lines.append)
    assert any("retraining the centroids" in line for line in lines)


def test_an_added_scene_is_clustered_without_reading_the_kept_embeddings_again(tmp_path):
    """The clusters stage, like the index, trusts a kept scene's size and mtime: embeddings rewritten
    with other bytes of the same size and mtime keep the centroids; a real change (mtime) retrains."""
    run = make_run(tmp_path)
    idx, out, state = tmp_path / "index", tmp_path / "clusters", tmp_path / "clusters" / "state"
    build_index(run.embeddings[:1], run.tables[:1], *_outputs(tmp_path), state_dir=idx / "state", **QUIET)
    _cluster(run, idx, out, [0], state_dir=state, **QUIET)
    other = io.BytesIO()
    np.save(other, (np.array(load_npy(run.embeddings[0])).view(np.uint32) ^ 1).view(np.float32))
    _rewrite_keeping_size_and_mtime(run.embeddings[0], other.getvalue())
    build_index(run.embeddings, run.tables, *_outputs(tmp_path), state_dir=idx / "state", **QUIET)
    lines: list[str] = []
    _cluster(run, idx, out, [0, 1], state_dir=state, log=lines.append)
    assert any("assigned to the kept centroids" in line for line in lines), lines
    os.utime(run.embeddings[0])  # touched: checksummed again, and its bytes differ
    lines.clear()
    _cluster(run, idx, out, [0, 1], state_dir=state, log=lines.append)
    assert any("'a' is gone or changed" in line for line in lines), lines


def test_an_added_scene_writes_only_its_own_cluster_outputs(tmp_path):
    """Adding a scene appends its rows to the kept labels (table and GeoPackage), writes its own
    rasters and leaves every kept file as it was (bytes, inode, mtime); the result is what the whole
    way gives with the kept centroids and hierarchy, and the summary adds the new tiles' share."""
    import pandas as pd
    import pyogrio

    from outcrop.search.clusters import cut_hierarchy

    run = make_run(tmp_path)
    idx, out, state = tmp_path / "index", tmp_path / "clusters", tmp_path / "clusters" / "state"
    build_index(run.embeddings[:1], run.tables[:1], *_outputs(tmp_path), state_dir=idx / "state", **QUIET)
    first = _cluster(run, idx, out, [0], state_dir=state, **QUIET)
    kept = sorted(p for p in (out / "rasters").rglob("*") if p.is_file())
    assert kept and all(p.name.startswith("a.") for p in kept)
    seen = {p: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in kept}
    table_bytes = (out / "tiles.parquet").read_bytes()
    table_inode, gpkg_inode = (out / "tiles.parquet").stat().st_ino, (out / "tiles.gpkg").stat().st_ino
    shutil.rmtree(out / "rasters")  # as Snakemake does with a job's outputs before it runs it
    for name in ("tiles.parquet", "tiles.gpkg", "summary.csv"):
        (out / name).unlink()
    build_index(run.embeddings, run.tables, *_outputs(tmp_path), state_dir=idx / "state", **QUIET)
    _cluster(run, idx, out, [0, 1], state_dir=state, **QUIET)
    for p, (inode, mtime, data) in seen.items():
        assert (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) == (inode, mtime, data), p
    assert (out / "rasters" / "b.tif").is_file() and (out / "rasters" / "k4" / "b.tif").is_file()
    assert (out / "tiles.parquet").stat().st_ino == table_inode and (out / "tiles.gpkg").stat().st_ino == gpkg_inode
    footer = int.from_bytes(table_bytes[-8:-4], "little")
    assert (out / "tiles.parquet").read_bytes()[: len(table_bytes) - 8 - footer] == table_bytes[: -8 - footer]
    labels = gpd.read_parquet(out / "tiles.parquet")
    index = gpd.read_parquet(idx / "tiles.parquet")
    assert labels.id.tolist() == index.id.tolist() and labels.scene.tolist() == index.scene.tolist()
    assert pyogrio.read_info(out / "tiles.gpkg", layer="clusters")["features"] == len(labels)
    b = labels[labels.scene == "b"]
    vectors = np.asarray(load_npy(run.embeddings[1]))[b.tile_id.to_numpy()]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for k in (4, 8):
        nearest = np.argmax(vectors @ np.load(state / f"centroids_k{k}.npy").T, axis=1)
        np.testing.assert_array_equal(b[f"k{k}"].to_numpy(), nearest)
    np.testing.assert_array_equal(b.h2.to_numpy(), cut_hierarchy(first.linkage, 8, 2)[b.k8.to_numpy()])
    summary = pd.read_csv(out / "summary.csv")
    for level in ("k4", "k8", "h2"):
        rows = summary[summary.level == level]
        np.testing.assert_array_equal(rows["size"], np.bincount(labels[level], minlength=len(rows)))
        np.testing.assert_allclose(
            rows["water"], labels.groupby(level)["water"].mean().reindex(rows.cluster), atol=1e-6
        )
        np.testing.assert_array_equal(rows["scenes"], labels.groupby(level)["scene"].nunique().reindex(rows.cluster))


def test_centroids_are_trained_on_a_sample_and_every_tile_assigned(tmp_path):
    run = make_run(tmp_path)
    idx, out = tmp_path / "index", tmp_path / "clusters"
    build_index(run.embeddings, run.tables, *_outputs(tmp_path), **QUIET)
    _cluster(run, idx, out, [0, 1], sample=100, **QUIET)
    labels = gpd.read_parquet(out / "tiles.parquet")
    assert len(labels) == 652 and labels["k8"].nunique() == 8
    with pytest.raises(OutcropError, match="sampled tiles"):
        _cluster(run, idx, out, [0, 1], sample=5, **QUIET)


def test_cluster_band_means_read_only_a_bounded_sample_of_tiles(tmp_path):
    """At coast scale the summary's band means come from a seeded sample of ``clusters.sample``
    tiles: every other tile's pixels are made NaN here, and no mean turns NaN."""
    import pandas as pd

    run = make_run(tmp_path)
    idx, out = tmp_path / "index", tmp_path / "clusters"
    build_index(run.embeddings, run.tables, *_outputs(tmp_path), **QUIET)
    table = gpd.read_parquet(idx / "tiles.parquet")
    picked = np.sort(np.random.default_rng(0).choice(len(table), 100, replace=False))
    means = np.full((len(table), 4), np.nan)
    for i, scene in enumerate(("a", "b")):
        tiles = np.array(load_npy(run.tiles[i]))
        mine = picked[table.scene.to_numpy()[picked] == scene]
        ids = table.tile_id.to_numpy()[mine]
        means[mine] = tiles[ids].mean(axis=(2, 3))
        unread = np.ones(len(tiles), bool)
        unread[ids] = False
        tiles[unread] = np.nan
        save_npy(run.tiles[i], tiles)
    _cluster(run, idx, out, [0, 1], sample=100, **QUIET)
    labels = gpd.read_parquet(out / "tiles.parquet")
    summary = pd.read_csv(out / "summary.csv")
    assert summary.loc[summary.level == "k8", "size"].sum() == len(table) == 652  # sizes count every tile
    k8 = summary[summary.level == "k8"].sort_values("cluster")
    expected = np.stack(
        [np.nanmean(np.where((labels.k8.to_numpy() == c)[:, None], means, np.nan), axis=0) for c in range(8)]
    )
    got = k8[[c for c in summary if c.startswith("mean_")]].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_an_add_reads_its_sampled_recall_against_the_same_figure_at_training(tmp_path, monkeypatch):
    """An add measures recall within a bounded sample; within a sample far smaller than the index
    a query's ten nearest are farther apart than its true ten, and an IVF index that finds 0.95 of
    the true ones finds fewer there. Read as the index's recall, that figure sent every add of a
    ten-million-tile coast back to a full training. Read against the same figure taken when the
    index was trained, the recall an add reports stays near what an exact scan of every vector finds."""
    from outcrop.search import index as index_module

    monkeypatch.setattr(index_module, "RECALL_SAMPLE", 2000)  # a small share of the index, as 100 000 of ten million
    old = _scene(tmp_path, "a", 60_000, seed=1)
    new = _scene(tmp_path, "b", 1_000, seed=2, x0=1e6)
    state = tmp_path / "index" / "state"
    opts = dict(exact_max=1000, memory_gb=16, state_dir=state)
    build_index([old[0]], [old[1]], *_outputs(tmp_path), **opts, **QUIET)
    basis = json.loads((state / "state.json").read_text())["recall_basis"]
    assert basis["sampled"] < basis["recall"] - 0.03, basis  # the sample's figure alone reads low
    floor = basis["sampled"] + 0.02  # under the index's recall, over the sample's figure
    for path in _outputs(tmp_path):
        path.unlink()
    lines: list[str] = []
    build_index([old[0], new[0]], [old[1], new[1]], *_outputs(tmp_path), **opts, recall_floor=floor, log=lines.append)
    info = json.loads(_outputs(tmp_path)[2].read_text())
    assert info["built"] == "added", lines
    index, _ = load_index(*_outputs(tmp_path)[:2])
    vec = np.concatenate([load_npy(old[0]), load_npy(new[0])])
    source = VectorSource.from_array(vec)
    queries = vec[np.random.default_rng(5).choice(len(vec), 500, replace=False)]
    from outcrop.search.index import search_exact

    exact_s, _ = exact_top_k(source, queries, 10)
    s, i = search_exact(index, queries, 10, source)
    truth = recall_at_k(exact_s, s, i, 10)
    assert abs(info["recall_at_10"] - truth) < 0.03, (info["recall_at_10"], truth, basis)
