"""Benchmark: the index and k-means at coast scale, streamed from disk, and adding one scene.

``build``: ``--n`` (10 000 000) synthetic clustered vectors of ``--dim`` (198: the shipped
embedding of a 7-band run, 128 learned + two spectra of 35) are written to ``--dir`` (/tmp) as
``--scenes`` .npy files in chunks (never all in memory), laid out as a run (``embeddings/``,
``index/``); then indexed by :func:`outcrop.search.index.index_vectors` from memory maps under
``--memory-gb`` (the product's ``index.memory_gb`` unless given; the kind it picks is reported),
and clustered as the clusters stage does (k-means at each of ``clusters.k`` on ``clusters.sample``
tiles, streamed assignment, Ward on the centroids). Reported: build time, peak RSS of the process
(``ru_maxrss``), recall@10 of the build's held-out queries and of fresh queries against an exact
streamed scan of every vector, single-query latency in process (index search + exact re-ranking).
Then the run's id table is written (in a child process) and ``outcrop query`` is timed in a fresh
process, as ``query`` does.

``add``: ``--n`` (1 000 000) tiles in ``--scenes`` scenes through :func:`build_index` with a state
folder, then one scene more: the time to add it against a full rebuild of all of them. With
``--stages index,clusters,analogues,pages`` every whole-run stage an added scene reruns is timed as
its job runs it (its outputs deleted first, as Snakemake does; state folders kept): the index, the
clusters with their figures, the analogues, and the pages that grow with the run (analogue maps,
projection, cluster table), first for ``--scenes`` scenes, then with the scene added, then rebuilt
from scratch (``retrain``, no kept scores). Each scene also gets the header of a prepared scene
(sparse: the stages read its grid and band names) and a tile array of 7 bands of 4 x 4 px (the
clusters' band means and exemplars read it; 448 bytes a tile, not the 14 KB of a real one).
``--no-rebuild`` stops after the add; ``--reuse-first`` keeps a copy of the first build beside the
data and starts a later run from it (at ten million tiles the first build is 26 minutes);
``--profile`` prints where the add's time went (``cProfile``, by cumulative time).

``query``: a finished run of ``--n`` (2 000 000) tiles in ``--scenes`` scenes written quickly (index
table, embeddings, an IVF-PQ index), then ``outcrop query`` in a fresh process, by tile and by
place, ``--runs`` times each: the wall time a user at a terminal sees. Beside it, a fresh process
that only reads the whole table and decodes every footprint (what the query did before it read
just the rows it needs).

    python benchmarks/index_coast.py build --n 10000000
    python benchmarks/index_coast.py add --n 1000000
    OPENBLAS_NUM_THREADS=1 python benchmarks/index_coast.py add --n 1000000 --stages index,clusters,analogues,pages
    OPENBLAS_NUM_THREADS=1 python benchmarks/index_coast.py add --n 10000000 --scenes 200 \
        --stages index,clusters,analogues,pages --no-rebuild --reuse-first
    python benchmarks/index_coast.py query --n 2000000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def synthetic(n: int, dim: int, scenes: int, folder: Path, seed: int = 0, chunk: int = 500_000) -> list[Path]:
    """Clustered unit vectors (2 000 clusters of Zipf-like sizes, 60 families) written in chunks."""
    rng = np.random.default_rng(seed)
    families = rng.normal(size=(60, dim))
    centres = families[rng.integers(60, size=2000)] + 0.7 * rng.normal(size=(2000, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = 1.0 / np.arange(1, 2001) ** 0.7
    weights /= weights.sum()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    per = -(-n // scenes)
    for s in range(scenes):
        path = folder / f"s{s:04d}.npy"
        rows = min(per, n - s * per)
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, dim))
        for start in range(0, rows, chunk):
            m = min(chunk, rows - start)
            v = centres[rng.choice(2000, m, p=weights)] + 0.35 * rng.normal(size=(m, dim)) / np.sqrt(dim) * 4
            out[start : start + m] = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
        out.flush()
        del out
        paths.append(path)
    return paths


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)


def cmd_build(args: argparse.Namespace) -> None:
    import faiss

    from outcrop.search.clusters import assign_stream, train_centroids, weighted_ward
    from outcrop.search.index import index_vectors, recall_at_k, search_exact
    from outcrop.search.vectors import VectorSource, exact_top_k

    faiss.omp_set_num_threads(args.threads)
    root = Path(args.dir) / f"outcrop_index_coast_{args.n}x{args.dim}"
    t = time.perf_counter()
    paths = sorted((root / "embeddings").glob("s*.npy")) if (root / "done").exists() else []
    if not paths:
        paths = synthetic(args.n, args.dim, args.scenes, root / "embeddings")
        (root / "done").write_text("")
    print(
        f"data: {args.n} x {args.dim} in {len(paths)} files in {time.perf_counter() - t:.0f} s, "
        f"RSS {rss_gib():.2f} GiB",
        flush=True,
    )
    arrays = [np.load(p, mmap_mode="r") for p in paths]
    source = VectorSource(arrays, [np.arange(len(a)) for a in arrays], [str(p) for p in paths])
    t = time.perf_counter()
    built = index_vectors(
        source, exact_max=args.exact_max, memory_gb=args.memory_gb, seed=0, log=lambda m: print("  " + m, flush=True)
    )
    build_s = time.perf_counter() - t
    print(
        f"index (memory_gb {args.memory_gb}): {built.kind} {built.params} built in {build_s:.0f} s, "
        f"recall@10 {built.recall:.3f} (held-out), peak RSS {rss_gib():.2f} GiB",
        flush=True,
    )
    (root / "index").mkdir(exist_ok=True)
    faiss.write_index(built.index, str(root / "index" / "tiles.faiss"))
    ids = np.random.default_rng(11).choice(source.count, args.queries, replace=False)
    noise = np.random.default_rng(12).normal(size=(args.queries, args.dim)).astype(np.float32)
    queries = source.take(ids) + 0.02 * noise
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    t = time.perf_counter()
    exact_s, _ = exact_top_k(source, queries, 10)
    exact_time = time.perf_counter() - t
    s, i = search_exact(built.index, queries, 10, source)
    fresh_recall = recall_at_k(exact_s, s, i, 10)
    single = []
    for q in queries[:50]:
        t = time.perf_counter()
        search_exact(built.index, q[None], 10, source)
        single.append(time.perf_counter() - t)
    print(
        f"fresh queries: recall@10 {fresh_recall:.3f} against an exact scan of all {source.count} "
        f"({exact_time / len(queries) * 1e3:.0f} ms/query); single query {np.median(single) * 1e3:.1f} ms "
        f"median in process (search + re-ranking); peak RSS {rss_gib():.2f} GiB",
        flush=True,
    )
    t = time.perf_counter()
    _, sample = source.sample(args.sample, 0)
    print(f"k-means sample of {args.sample}: {time.perf_counter() - t:.0f} s", flush=True)
    for k in args.k:
        t = time.perf_counter()
        centroids = train_centroids(sample, k, seed=0)
        train_s = time.perf_counter() - t
        t = time.perf_counter()
        labels, _ = assign_stream(source, centroids)
        print(
            f"k-means k={k}: trained on the sample in {train_s:.1f} s; streamed assignment of {len(labels)}: "
            f"{time.perf_counter() - t:.0f} s; peak RSS {rss_gib():.2f} GiB",
            flush=True,
        )
    t = time.perf_counter()
    weighted_ward(centroids, np.bincount(labels, minlength=len(centroids)))
    print(f"Ward on the {len(centroids)} centroids: {time.perf_counter() - t:.3f} s", flush=True)
    del sample
    del labels, arrays, source, built
    subprocess.run([sys.executable, __file__, "table", "--dir", str(root), "--dim", str(args.dim)], check=True)
    time_queries(root, args.n, len(paths), args.runs)


def _table(args: argparse.Namespace) -> None:
    """Write the id table of a run's embeddings (a child process: its memory is not the build's)."""
    root = Path(args.dir)
    t = time.perf_counter()
    write_table(root, sorted((root / "embeddings").glob("s*.npy")))
    print(
        f"index table of the run written in {time.perf_counter() - t:.0f} s "
        f"({(root / 'index' / 'tiles.parquet').stat().st_size / 1e6:.0f} MB)",
        flush=True,
    )


def _scene_files(root: Path, name: str, vec: np.ndarray, s: int = 0) -> tuple[Path, Path]:
    """Scene ``s``'s embeddings and tile table: 1000 tiles of 960 m a row, from :func:`_origin` (scenes
    side by side, none overlapping another)."""
    import geopandas as gpd
    import shapely

    from outcrop.io import save_npy, write_geodataframe

    n = len(vec)
    r, c = np.divmod(np.arange(n), 1000)
    x0, y0 = _origin(s)
    table = gpd.GeoDataFrame(
        {
            "tile_id": np.arange(n),
            "scene": name,
            "row": r * 32,
            "col": c * 32,
            "size": 32,
            "valid": 1.0,
            "rock": 1.0,
            "snow_ice": 0.0,
            "water": 0.0,
            "cloud": 0.0,
        },
        geometry=shapely.box(x0 + c * 960.0, y0 - (r + 1) * 960.0, x0 + (c + 1) * 960.0, y0 - r * 960.0),
        crs="EPSG:3031",
    )
    save_npy(root / f"{name}.npy", vec)
    write_geodataframe(root / f"{name}.parquet", table)
    return root / f"{name}.npy", root / f"{name}.parquet"


def _prepared_header(root: Path, name: str, n: int, s: int) -> Path:
    """A prepared scene's header for ``n`` tiles of 1000 a row (32 px, 30 m): the clusters and
    analogues stages read only its grid and band names; its pixels are left sparse (unwritten)."""
    import rasterio
    from rasterio.transform import from_origin

    path = root / "prepared" / f"{name}.tif"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = -(-n // 1000)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=32_000,
        height=rows * 32,
        count=1,
        dtype="uint16",
        crs="EPSG:3031",
        transform=from_origin(*_origin(s), 30.0, 30.0),
        tiled=True,
        SPARSE_OK=True,
    ) as dst:
        dst.update_tags(bands=",".join(BANDS))
    return path


BANDS = ["coastal", "blue", "green", "red", "nir", "swir1", "swir2"]
TILE_SIDE = 4  # the synthetic tile arrays: 7 bands of 4 x 4 px, float32 (448 bytes a tile)


def _tiles_array(root: Path, name: str, n: int, seed: int) -> Path:
    """A tile array for the clusters' band means and exemplars: (n, 7, 4, 4) float32 reflectance
    (tiles of earlier runs' format, read as they are), 448 bytes a tile instead of 14 KB."""
    path = root / "tiles" / f"{name}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, len(BANDS), TILE_SIDE, TILE_SIDE))
    rng = np.random.default_rng(seed)
    for start in range(0, n, 200_000):
        m = min(200_000, n - start)
        out[start : start + m] = rng.uniform(0.0, 0.6, (m, len(BANDS), TILE_SIDE, TILE_SIDE)).astype(np.float32)
    out.flush()
    return path


def _deposits(root: Path) -> Path:
    """Three deposit points on tiles of the first scene."""
    import geopandas as gpd
    import shapely

    path = root / "deposits.gpkg"
    if path.exists():  # written once: its bytes are what the kept scores and maps depend on
        return path
    x0, y0 = _origin(0)
    xy = [
        (x0 + 960.0 * 100.5, y0 - 960.0 * 2.5),
        (x0 + 960.0 * 400.5, y0 - 960.0 * 5.5),
        (x0 + 960.0 * 700.5, y0 - 960.0 * 8.5),
    ]
    gpd.GeoDataFrame({"name": ["d1", "d2", "d3"]}, geometry=shapely.points(xy), crs="EPSG:3031").to_file(path)
    return path


def _stages(
    root: Path,
    emb: list[Path],
    tables: list[Path],
    tiles: list[Path],
    prepared: list[Path],
    stages: list[str],
    memory_gb: float,
    exact_max: int,
    retrain: bool,
) -> dict[str, float]:
    """Run the whole-run stages the workflow reruns after an add, as their jobs do (each job's
    outputs deleted first, as Snakemake deletes them); seconds per stage."""
    import shutil

    from outcrop.figures.cluster_maps import write_cluster_figures
    from outcrop.search.analogues import find_analogues
    from outcrop.search.clusters import cluster_tiles
    from outcrop.search.index import build_index

    out = root / "out"
    times = {}
    quiet = lambda m: None  # noqa: E731
    if "index" in stages:
        idx = [out / "tiles.faiss", out / "tiles.parquet", out / "info.json"]
        for p in idx:
            p.unlink(missing_ok=True)
        t = time.perf_counter()
        build_index(
            emb,
            tables,
            *idx,
            log=quiet,
            state_dir=out / "state",
            memory_gb=memory_gb,
            exact_max=exact_max,
            retrain=retrain,
        )
        times["index"] = time.perf_counter() - t
    if "clusters" in stages:
        c = out / "clusters"
        for p in ("labels.gpkg", "labels.parquet", "summary.csv", "dendrogram.png", "exemplars.png"):
            (c / p).unlink(missing_ok=True)
        for d in ("maps", "rasters"):
            shutil.rmtree(c / d, ignore_errors=True)
        t = time.perf_counter()
        clustering = cluster_tiles(
            out / "tiles.parquet",
            emb,
            tiles,
            prepared,
            c / "labels.gpkg",
            c / "labels.parquet",
            c / "summary.csv",
            c / "rasters",
            ks=[4, 8, 12],
            cuts=[3, 6],
            state_dir=c / "state",
            retrain=retrain,
            log=quiet,
        )
        write_cluster_figures(
            clustering, prepared, tiles, c / "dendrogram.png", c / "maps", c / "exemplars.png", state_dir=c / "state"
        )
        times["clusters"] = time.perf_counter() - t
    if "analogues" in stages:
        a = out / "analogues"
        for p in ("analogues.gpkg", "analogues.csv"):
            (a / p).unlink(missing_ok=True)
        shutil.rmtree(a / "similarity", ignore_errors=True)
        t = time.perf_counter()
        find_analogues(
            out / "tiles.faiss",
            out / "tiles.parquet",
            emb,
            _deposits(root),
            prepared,
            a / "analogues.gpkg",
            a / "analogues.csv",
            a / "similarity",
            buffer_m=0.0,
            exclusion_km=5.0,
            top=100,
            state_dir=None if retrain else a / "state",
            log=quiet,
        )
        times["analogues"] = time.perf_counter() - t
    if "pages" in stages:  # the pages drawn over the whole run that scale with it
        from outcrop.figures.analogue_maps import write_analogue_maps
        from outcrop.figures.cluster_table import write_cluster_table
        from outcrop.figures.projection import write_projection

        a, c = out / "analogues", out / "clusters"
        shutil.rmtree(a / "maps", ignore_errors=True)
        t = time.perf_counter()
        write_analogue_maps(
            [a / "similarity" / f"{p.stem}.tif" for p in prepared],
            a / "analogues.gpkg",
            _deposits(root),
            a / "maps",
            prepared_paths=prepared,
            state_dir=a / "state" / "maps",
            log=lambda m: print("  " + m, flush=True),
        )
        times["analogue maps"] = time.perf_counter() - t
        t = time.perf_counter()
        write_projection(
            c / "labels.parquet", emb, c / "projection_clusters.png", c / "projection_surfaces.png", log=quiet
        )
        times["projection"] = time.perf_counter() - t
        t = time.perf_counter()
        write_cluster_table(c / "labels.parquet", c / "summary.csv", emb, tiles, c / "summary.html", log=quiet)
        times["cluster table"] = time.perf_counter() - t
    return times


def cmd_add(args: argparse.Namespace) -> None:
    import faiss

    from outcrop.search.index import build_index

    faiss.omp_set_num_threads(args.threads)
    root = Path(args.dir) / f"outcrop_index_add_{args.n}"
    per = args.n // args.scenes
    names = [f"s{i:04d}" for i in range(args.scenes + 1)]
    if not (root / "done").exists():
        vec_paths = synthetic(args.n + per, args.dim, args.scenes + 1, root / "raw")
        for i, p in enumerate(vec_paths):
            _scene_files(root, f"s{i:04d}", np.load(p, mmap_mode="r"), i)
            p.unlink()
        (root / "done").write_text("")
    elif not (root / "placed").exists():  # tables of an earlier version put every scene in one place
        for i, n in enumerate(names):
            _scene_files(root, n, np.load(root / f"{n}.npy", mmap_mode="r"), i)
            (root / "prepared" / f"{n}.tif").unlink(missing_ok=True)
    (root / "placed").write_text("")
    emb, tables = [root / f"{n}.npy" for n in names], [root / f"{n}.parquet" for n in names]
    if args.stages != "index":
        tiles = [root / "tiles" / f"{n}.npy" for n in names]
        prepared = [root / "prepared" / f"{n}.tif" for n in names]
        for i, n in enumerate(names):
            count = len(np.load(emb[i], mmap_mode="r"))
            if not tiles[i].exists():
                _tiles_array(root, n, count, i)
            if not prepared[i].exists():
                _prepared_header(root, n, count, i)
        stages = args.stages.split(",")
        import shutil
        import subprocess

        shutil.rmtree(root / "out", ignore_errors=True)
        opts = dict(memory_gb=args.memory_gb, exact_max=args.exact_max)
        kept = root / (  # one copy per set of arguments that shape the first build
            f"first_{'_'.join(stages)}_s{args.scenes}_d{args.dim}_m{args.memory_gb:g}_x{args.exact_max}"
        )
        if args.reuse_first and (kept / "done").exists():
            subprocess.run(["cp", "-a", str(kept / "out"), str(root / "out")], check=True)
            print(f"first build of {args.scenes} scenes restored from {kept}", flush=True)
        else:
            first = _stages(root, emb[:-1], tables[:-1], tiles[:-1], prepared[:-1], stages, retrain=False, **opts)
            print(
                f"first build, {args.scenes} scenes: " + ", ".join(f"{k} {v:.1f} s" for k, v in first.items()),
                flush=True,
            )
            if args.reuse_first:  # kept for the next run's add (the add changes the kept state in place)
                shutil.rmtree(kept, ignore_errors=True)
                kept.mkdir()
                subprocess.run(["cp", "-a", str(root / "out"), str(kept / "out")], check=True)
                (kept / "done").write_text("")
        if args.profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            added = profiler.runcall(_stages, root, emb, tables, tiles, prepared, stages, retrain=False, **opts)
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(45)
        else:
            added = _stages(root, emb, tables, tiles, prepared, stages, retrain=False, **opts)
        info = json.loads((root / "out" / "info.json").read_text())
        print(
            f"add 1 scene ({per} tiles; index built={info['built']}, drift {info['drift']}): "
            + ", ".join(f"{k} {v:.1f} s" for k, v in added.items())
            + f"; total {sum(added.values()):.1f} s",
            flush=True,
        )
        if args.no_rebuild:
            print(f"peak RSS {rss_gib():.2f} GiB", flush=True)
            return
        full = _stages(root, emb, tables, tiles, prepared, stages, retrain=True, **opts)
        print(
            f"full rebuild, {args.scenes + 1} scenes: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in full.items())
            + f"; total {sum(full.values()):.1f} s",
            flush=True,
        )
        print(
            "rebuild / add: "
            + ", ".join(f"{k} {full[k] / added[k]:.1f}x" for k in added)
            + f"; all stages {sum(full.values()) / sum(added.values()):.1f}x; peak RSS {rss_gib():.2f} GiB",
            flush=True,
        )
        return
    out = [root / "out" / "tiles.faiss", root / "out" / "tiles.parquet", root / "out" / "info.json"]
    state = root / "out" / "state"
    quiet = dict(log=lambda m: None, state_dir=state, memory_gb=args.memory_gb, exact_max=args.exact_max)
    t = time.perf_counter()
    build_index(emb[:-1], tables[:-1], *out, **quiet)
    first = time.perf_counter() - t
    t = time.perf_counter()
    build_index(emb, tables, *out, **{**quiet, "log": lambda m: print("  " + m)})
    added = time.perf_counter() - t
    info = json.loads(out[2].read_text())
    t = time.perf_counter()
    build_index(emb, tables, *out, **{**quiet, "retrain": True})
    full = time.perf_counter() - t
    print(
        f"{info['count']} tiles, {info['kind']}: first build of {args.scenes} scenes {first:.0f} s; "
        f"adding 1 scene ({len(np.load(emb[-1], mmap_mode='r'))} tiles) {added:.1f} s "
        f"(built={info['built']}, drift {info['drift']}, recall@10 {info['recall_at_10']}); "
        f"full rebuild {full:.0f} s; RSS {rss_gib():.2f} GiB"
    )


WHOLE_TABLE = """
import sys, time
t0 = time.perf_counter()
import numpy as np, pyarrow.parquet as pq, shapely
table = pq.ParquetFile(sys.argv[1]).read(columns=["id", "scene", "tile_id", "geometry"])
feet = shapely.from_wkb(np.array(table.column("geometry").to_pylist(), dtype=object))
print(f"{time.perf_counter() - t0:.2f}")
"""


def _origin(s: int) -> tuple[float, float]:
    """Upper-left corner of synthetic scene ``s`` (EPSG:3031): 4 scenes a row, rows 400 km apart."""
    return -2.0e6 + (s % 4) * 1.0e6, 2.0e6 - (s // 4) * 0.4e6


def write_table(root: Path, paths: list[Path]) -> None:
    """The run's ``index/tiles.parquet``: every tile of every scene, 1000 tiles a row of 960 m tiles."""
    import geopandas as gpd
    import pandas as pd
    import shapely

    from outcrop.search.index import FRACTIONS
    from outcrop.search.index_table import write_index_table

    frames, start = [], 0
    for s, path in enumerate(paths):
        n = len(np.load(path, mmap_mode="r"))
        r, c = np.divmod(np.arange(n), 1000)
        x0, y0 = _origin(s)
        frame = {
            "id": np.arange(start, start + n),
            "scene": path.stem,
            "tile_id": np.arange(n),
            "row": r * 32,
            "col": c * 32,
            "size": 32,
            **{f: 1.0 if f in ("valid", "rock") else 0.0 for f in FRACTIONS},
        }
        frames.append(
            gpd.GeoDataFrame(
                frame,
                geometry=shapely.box(x0 + c * 960.0, y0 - (r + 1) * 960.0, x0 + (c + 1) * 960.0, y0 - r * 960.0),
                crs="EPSG:3031",
            )
        )
        start += n
    table = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs="EPSG:3031")
    del frames
    (root / "index").mkdir(parents=True, exist_ok=True)
    write_index_table(root / "index" / "tiles.parquet", table)


def time_queries(root: Path, n: int, scenes: int, runs: int) -> None:
    """``outcrop query`` by tile and by place in a fresh process, ``runs`` times each, beside a bare
    python start and a process that reads the whole table and decodes every footprint."""
    import statistics

    from pyproj import Transformer

    outcrop = str(Path(sys.executable).parent / "outcrop")
    s = min(7, scenes - 1)  # a tile in the middle of a scene
    mid = -(-n // scenes) // 1000 // 2
    scene, tile = f"s{s:04d}", mid * 1000 + 500
    x0, y0 = _origin(s)
    lon, lat = Transformer.from_crs("EPSG:3031", "EPSG:4326", always_xy=True).transform(
        x0 + 500.5 * 960.0, y0 - (mid + 0.5) * 960.0
    )
    calls = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "whole table read + decode": [sys.executable, "-c", WHOLE_TABLE, str(root / "index" / "tiles.parquet")],
        f"outcrop query --tile {scene}:{tile}": [
            outcrop,
            "query",
            "--results",
            str(root),
            "--tile",
            f"{scene}:{tile}",
            "--top",
            "10",
        ],
        f"outcrop query --lon {lon:.5f} --lat {lat:.5f}": [
            outcrop,
            "query",
            "--results",
            str(root),
            "--lon",
            str(lon),
            "--lat",
            str(lat),
            "--top",
            "10",
        ],
    }
    for name, cmd in calls.items():
        walls = []
        for _ in range(runs):
            t = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            walls.append(time.perf_counter() - t)
            if proc.returncode != 0:
                raise SystemExit(f"{name}: {proc.stderr.strip()}")
        print(
            f"{name}: median {statistics.median(walls):.2f} s (runs: {', '.join(f'{w:.2f}' for w in walls)})",
            flush=True,
        )


def cmd_query(args: argparse.Namespace) -> None:
    import faiss

    from outcrop.search.index import pq_params
    from outcrop.search.vectors import VectorSource

    faiss.omp_set_num_threads(args.threads)
    root = Path(args.dir) / "outcrop_query_coast"
    t = time.perf_counter()
    if not (root / "done").exists():
        paths = synthetic(args.n, args.dim, args.scenes, root / "embeddings")
        write_table(root, paths)
        arrays = [np.load(p, mmap_mode="r") for p in paths]
        source = VectorSource(arrays, [np.arange(len(a)) for a in arrays], [str(p) for p in paths])
        _, train = source.sample(40_000, 0)
        index = faiss.IndexIVFPQ(
            faiss.IndexFlatIP(args.dim), args.dim, 1024, pq_params(args.n, args.dim)["m"], 8, faiss.METRIC_INNER_PRODUCT
        )
        index.train(train)
        for _, block in source.chunks():
            index.add(block)
        index.nprobe = 16
        faiss.write_index(index, str(root / "index" / "tiles.faiss"))
        (root / "done").write_text("")
    print(
        f"run of {args.n} tiles in {args.scenes} scenes ready in {time.perf_counter() - t:.0f} s; "
        f"index table {(root / 'index' / 'tiles.parquet').stat().st_size / 1e6:.0f} MB",
        flush=True,
    )
    time_queries(root, args.n, args.scenes, args.runs)


def main() -> None:
    from outcrop.config import default

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, n, scenes, dim in (
        ("build", 10_000_000, 100, 198),
        ("add", 1_000_000, 20, 198),
        ("query", 2_000_000, 20, 198),
        ("table", 0, 0, 198),
    ):
        p = sub.add_parser(name)
        p.add_argument("--n", type=int, default=n)
        p.add_argument("--scenes", type=int, default=scenes)
        p.add_argument("--dim", type=int, default=dim)
        p.add_argument("--memory-gb", type=float, default=default("index.memory_gb"))
        p.add_argument("--dir", default="/tmp")
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--queries", type=int, default=200)
        p.add_argument("--k", type=int, nargs="+", default=default("clusters.k"))
        p.add_argument("--sample", type=int, default=default("clusters.sample"))
        p.add_argument("--exact-max", type=int, default=default("index.exact_max"))
        p.add_argument("--runs", type=int, default=5)
        p.add_argument(
            "--stages",
            default="index",
            help="add: the whole-run stages to time, e.g. "
            "index,clusters,analogues (index alone: the earlier measurement)",
        )
        p.add_argument(
            "--no-rebuild",
            action="store_true",
            help="add: time the first build and the add only (a full rebuild costs the first build "
            "and the added scene's share: at 10 000 000 tiles, an hour saved)",
        )
        p.add_argument(
            "--reuse-first",
            action="store_true",
            help="add: keep a copy of the first build (beside the data) and start from it when it is there",
        )
        p.add_argument("--profile", action="store_true", help="add: profile the add and print where it went")
    args = parser.parse_args()
    {"build": cmd_build, "add": cmd_add, "query": cmd_query, "table": _table}[args.cmd](args)


if __name__ == "__main__":
    main()
