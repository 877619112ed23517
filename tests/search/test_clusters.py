"""Clusters stage: seeded spherical k-means, weighted Ward hierarchy, labels, summary, rasters, maps."""

from __future__ import annotations

import faiss
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate
from scipy.cluster.hierarchy import ward
from sklearn.metrics import adjusted_rand_score

from gdal_readback import gdal_bands
from outcrop import OutcropError
from outcrop.figures.cluster_maps import write_cluster_figures
from outcrop.search.clusters import cluster_tiles, cut_hierarchy, spherical_kmeans, weighted_ward
from outcrop.search.index import build_index
from synthetic_run import BANDS, SPECTRA, make_run

faiss.omp_set_num_threads(1)


def _blobs(n=3000, k=6, dim=24, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    truth = rng.integers(k, size=n)
    x = centres[truth] + 0.3 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), truth


def test_kmeans_is_deterministic_for_a_seed_and_finds_the_clusters():
    x, truth = _blobs()
    labels, centroids = spherical_kmeans(x, 6, seed=3)
    again, centroids_again = spherical_kmeans(x, 6, seed=3)
    np.testing.assert_array_equal(labels, again)
    np.testing.assert_array_equal(centroids, centroids_again)
    assert adjusted_rand_score(truth, labels) > 0.95
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)  # spherical
    sizes = np.bincount(labels)
    assert np.all(np.diff(sizes) <= 0)  # numbered by decreasing size
    # Every tile carries the label of its most similar centroid.
    np.testing.assert_array_equal(labels, (x @ centroids.T).argmax(axis=1))


def test_kmeans_refuses_more_clusters_than_tiles():
    x, _ = _blobs(n=5)
    with pytest.raises(OutcropError, match="k=6"):
        spherical_kmeans(x, 6)


def test_weighted_ward_equals_ward_on_replicated_points():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(7, 4))
    sizes = np.array([1, 5, 2, 8, 1, 3, 4])
    weighted = weighted_ward(points, sizes)
    replicated = ward(np.repeat(points, sizes, axis=0))
    # The last k-1 merges of the replicated tree join the weighted points (earlier ones are zero-height).
    np.testing.assert_allclose(weighted[:, 2], replicated[-(len(points) - 1) :, 2], rtol=1e-9)
    np.testing.assert_allclose(weighted_ward(points, np.ones(7)), ward(points), atol=1e-12)


def test_cut_gives_the_requested_number_of_groups():
    rng = np.random.default_rng(2)
    points = np.concatenate([rng.normal(0, 0.1, (4, 3)), rng.normal(5, 0.1, (3, 3))])
    linkage = weighted_ward(points, np.ones(7))
    two = cut_hierarchy(linkage, 7, 2)
    assert two.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert len(np.unique(cut_hierarchy(linkage, 7, 5))) == 5
    with pytest.raises(OutcropError):
        cut_hierarchy(linkage, 7, 8)


def _cluster_run(tmp_path, ks=(4, 8), cuts=(2, 3)):
    run = make_run(tmp_path, ice_scene=True)
    idx = tmp_path / "index"
    build_index(
        run.embeddings,
        run.tables,
        idx / "tiles.faiss",
        idx / "tiles.parquet",
        idx / "info.json",
        min_rock=0.5,
        log=lambda *_: None,
    )
    out = tmp_path / "clusters"
    clustering = cluster_tiles(
        idx / "tiles.parquet",
        run.embeddings,
        run.tiles,
        run.prepared,
        out / "tiles.gpkg",
        out / "tiles.parquet",
        out / "summary.csv",
        out / "rasters",
        ks=ks,
        cuts=cuts,
        seed=0,
        log=lambda *_: None,
    )
    write_cluster_figures(
        clustering, run.prepared, run.tiles, out / "dendrogram.png", out / "maps", out_exemplars=out / "exemplars.png"
    )
    return run, out


def test_cluster_tiles_writes_consistent_labels_summary_rasters_and_maps(tmp_path):
    run, out = _cluster_run(tmp_path)
    labels = gpd.read_parquet(out / "tiles.parquet")
    assert {
        "scene",
        "tile_id",
        "k4",
        "k8",
        "h2",
        "h3",
        "rock",
        "snow_ice",
        "water",
        "cloud",
        "valid",
        "geometry",
    } <= set(labels.columns)
    assert labels.crs.to_epsg() == 3031
    assert len(gpd.read_file(out / "tiles.gpkg")) == len(labels)
    # The hierarchy sits above the finest k: each k8 cluster lies in exactly one h cluster.
    for h in ("h2", "h3"):
        assert (labels.groupby("k8")[h].nunique() == 1).all()
        assert labels[h].nunique() == int(h[1:])
    # k=4 over tiles of four lithologies plus an alteration signature: lithologies are recovered.
    truth = np.concatenate([run.lithology[s][labels.tile_id[labels.scene == s]] for s in ("a", "b")])
    assert adjusted_rand_score(truth, labels["k8"]) > 0.6

    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 4 + 8 + 2 + 3
    assert {"level", "cluster", "size", "share", *(f"mean_{b}" for b in BANDS), "rock", "snow_ice"} <= set(summary)
    for level in ("k4", "k8", "h2", "h3"):
        assert summary.loc[summary.level == level, "size"].sum() == len(labels)
    # The mean spectrum of the largest cluster is that of its dominant lithology.
    k8 = summary[summary.level == "k8"].set_index("cluster")
    lith = pd.Series(truth[labels["k8"].to_numpy() == 0]).mode()[0]
    np.testing.assert_allclose(k8.loc[0, [f"mean_{b}" for b in BANDS]].to_numpy(float), SPECTRA[lith], atol=0.01)

    for scene in ("a", "b", "c"):
        assert (out / "maps" / f"{scene}.png").stat().st_size > 1000
        with rasterio.open(out / "rasters" / f"{scene}.tif") as src:
            assert src.dtypes[0] == "uint8" and src.nodata == 255 and src.count == 1
            assert src.descriptions == ("k8",)  # the finest level
            assert src.colormap(1)[0][3] == 255 and src.colormap(1)[255][3] == 0
            assert src.res == (240.0, 240.0)
            data = src.read()
            transform = src.transform
        sub = labels[labels.scene == scene]
        if scene == "c":  # the all-ice scene has no indexed tile
            assert len(sub) == 0 and (data == 255).all()
            continue
        # Each tile's cell, found from its footprint centre, holds its labels.
        centres = sub.geometry.centroid
        rows, cols = rasterio.transform.rowcol(transform, centres.x, centres.y)
        np.testing.assert_array_equal(data[0][rows, cols], sub["k8"].to_numpy())
        assert (data[0] == 255).sum() == data[0].size - len(sub)
    assert (out / "dendrogram.png").stat().st_size > 1000
    assert (out / "exemplars.png").stat().st_size > 1000


def test_every_level_is_a_raster_whose_classes_gdal_names(tmp_path):
    _, out = _cluster_run(tmp_path)
    labels = gpd.read_parquet(out / "tiles.parquet")
    for scene in ("a", "b"):
        with rasterio.open(out / "rasters" / f"{scene}.tif") as finest:
            k8 = finest.read(1)
        for level in ("k4", "k8", "h2", "h3"):
            path = out / "rasters" / level / f"{scene}.tif"
            valid, errors, _ = cog_validate(path, strict=True, quiet=True)
            assert valid and not errors, (path, errors)
            with rasterio.open(path) as src:
                data = src.read(1)
                assert src.descriptions == (level,) and src.tags()["level"] == level
                assert src.colormap(1)[0][3] == 255
            assert ((data == 255) == (k8 == 255)).all()
            assert set(np.unique(data[data != 255])) == set(labels.loc[labels.scene == scene, level])
            (band,) = gdal_bands(path)
            n = int(level[1:])
            assert band["categories"][:n] == [f"cluster {i}" for i in range(n)]
            assert [r[:2] for r in band["rat_rows"]] == [[str(i), f"cluster {i}"] for i in range(n)]
            # The attribute table carries the colour table's colours (QGIS draws the legend from it).
            assert [c for c, _ in band["rat_columns"]] == ["value", "class", "red", "green", "blue", "alpha"]
        assert gdal_bands(out / "rasters" / f"{scene}.tif")[0]["categories"][7] == "cluster 7"


def test_exemplars_are_the_tiles_nearest_each_centre():
    from outcrop.search.clusters import exemplars

    x, _ = _blobs(n=500, k=4)
    labels, centroids = spherical_kmeans(x, 4, seed=0)
    picks = exemplars(x, labels, centroids, per_cluster=5)
    for c, rows in enumerate(picks):
        assert len(rows) == 5 and (labels[rows] == c).all()
        sims = x[labels == c] @ centroids[c]
        np.testing.assert_allclose(x[rows] @ centroids[c], np.sort(sims)[::-1][:5], rtol=1e-6)


def test_cluster_tiles_rejects_a_cut_above_the_finest_k(tmp_path):
    with pytest.raises(OutcropError, match="cut"):
        _cluster_run(tmp_path, ks=(3,), cuts=(5,))


def test_overlapping_tiles_each_own_one_cell_centred_on_the_tile():
    from rasterio.transform import from_origin

    from outcrop.raster.geo import SceneGrid, infer_layout, tile_raster

    # 8-pixel tiles every 4 pixels, starting 2 pixels into a 40 x 30 pixel scene.
    rows, cols = np.meshgrid(np.arange(2, 30, 4), np.arange(2, 20, 4), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    layout = infer_layout(np.full(len(rows), "s"), rows, cols, np.full(len(rows), 8))
    assert (layout.size, layout.stride) == (8, 4)
    grid = SceneGrid("EPSG:3031", from_origin(1000.0, 5000.0, 30.0, 30.0), width=30, height=40)
    values = np.arange(len(rows))
    raster, transform = tile_raster(grid, layout, rows, cols, values, nodata=-1, dtype=np.int32)
    assert transform.a == 120.0 and raster.shape[0] == 1
    assert (raster >= 0).sum() == len(rows)  # no two tiles share a cell
    # The cell holding a tile's value is the one under the tile's centre.
    cx = 1000.0 + (cols + 4) * 30.0
    cy = 5000.0 - (rows + 4) * 30.0
    r, c = rasterio.transform.rowcol(transform, cx, cy)
    np.testing.assert_array_equal(raster[0][r, c], values)
    # The grid covers the whole scene.
    assert transform.c <= 1000.0 and transform.c + raster.shape[2] * 120.0 >= 1000.0 + 30 * 30.0
