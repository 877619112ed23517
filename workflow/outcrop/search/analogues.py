"""Analogues of known occurrences: the tiles elsewhere that look most like the tiles at deposits.

Each deposit (a point, buffered by ``buffer_m``, or a polygon) selects the indexed tiles it meets:
its positives. Queries are unit vectors: one per deposit (the mean of its tiles), and one for the set
(the mean of the per-deposit means, so a large polygon does not outweigh a point; optionally pushed
away from the mean of negative tiles). Every tile is scored by its best cosine over the queries with
an exact scan in batches (linear in the number of tiles, and exact where the approximate index
would not be); tiles within ``exclusion_m`` of any deposit's own geometry (and the positives
themselves) are not analogues, since ground next to a known occurrence is not a discovery.

The ranked list holds distinct *sites*, not tiles: overlapping tiles (stride under the tile size)
and the same ground cut from two overlapping scenes would otherwise take several places for one
discovery. Greedy non-maximum suppression walks the tiles best first and drops a tile whose
footprint overlaps an already-kept, better tile by more than ``site_overlap`` of its own area
(:func:`suppress_overlapping`); ``site_overlap`` None or 0 ranks every tile.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from outcrop import OutcropError
from outcrop.config import default
from outcrop.raster.geo import scene_rasters
from outcrop.search.index import load_index, normalise_rows, table_vectors
from outcrop.search.index_table import table_layout
from outcrop.io import atomic_path, read_vector, write_cog, write_geodataframe
from outcrop.csvfile import csv_text

SCORE_BATCH = 1 << 16
RESULT_COLUMNS = ["rank", "score", "scene", "tile_id", "id", "nearest_positive", "distance_km", "query", "lon", "lat"]
LON_NAMES = ("lon", "longitude", "long", "x")
LAT_NAMES = ("lat", "latitude", "y")
SITE_OVERLAP = default("analogues.site_overlap")  # share of a tile's area that, overlapped by a better tile, makes it that tile's site


MARK_LAYERS = ("positives", "negatives")  # the layers of a marks file (``outcrop serve``)


def read_deposits(path: str | os.PathLike[str], crs: Any, *, role: str = "positives") -> Any:
    """Read deposits (GeoPackage, GeoJSON, any vector file, or CSV of lon/lat in EPSG:4326, or of
    x/y with a ``crs`` column) in ``crs``.

    A file with both a ``positives`` and a ``negatives`` layer (the marks ``outcrop serve`` saves)
    gives the layer named ``role``: the same file serves as ``deposits:`` and as ``negatives:``.
    Returns a GeoDataFrame with ``name`` (from a ``name`` column, else ``deposit {n}``) and geometry.
    """
    import geopandas as gpd

    path = Path(path)
    if not path.exists():
        raise OutcropError(f"{path}: deposits file not found")
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        gdf = _read_deposits_table(path)
    else:
        try:
            gdf = read_vector(path, layer=_marks_layer(path, role))
        except Exception as exc:
            raise OutcropError(f"{path}: not a readable vector file ({str(exc).splitlines()[0] if str(exc) else exc})") from None
        if not isinstance(gdf, gpd.GeoDataFrame) or "geometry" not in gdf or gdf.geometry.isna().all():
            raise OutcropError(f"{path}: deposits file has no geometry")
        if gdf.crs is None:
            raise OutcropError(f"{path}: deposits file has no CRS (unknown coordinate system)")
    if len(gdf) == 0:
        raise OutcropError(f"{path}: deposits file has no features")
    missing = gdf.geometry.isna() | gdf.geometry.is_empty
    if missing.any():
        raise OutcropError(f"{path}: features {np.flatnonzero(missing.to_numpy()).tolist()[:10]} have no geometry")
    names = (gdf["name"].astype(str).to_numpy() if "name" in gdf.columns
             else np.array([f"deposit {i + 1}" for i in range(len(gdf))]))
    out = gpd.GeoDataFrame({"name": names}, geometry=gdf.geometry.values, crs=gdf.crs)
    try:
        return out.to_crs(crs)
    except Exception as exc:
        raise OutcropError(f"{path}: cannot transform deposits to {crs} ({exc})") from None


def _marks_layer(path: Path, role: str) -> str | None:
    """``role``'s layer of a marks file (layers ``positives`` and ``negatives``); None for any other file."""
    import pyogrio

    if role not in MARK_LAYERS:
        raise ValueError(f"role {role!r} is not one of {MARK_LAYERS}")
    try:
        layers = {str(name) for name, _ in pyogrio.list_layers(path)}
    except Exception:
        return None  # not a vector file: read_vector says so
    return role if set(MARK_LAYERS) <= layers else None


def _read_deposits_table(path: Path) -> Any:
    """Points of a deposits CSV/TSV: lon,lat (or longitude,latitude, or x,y) in degrees (EPSG:4326),
    or x,y in the coordinate system named by a ``crs`` column (``EPSG:3031``, one per row).

    Coordinates far outside lon/lat ranges are metres or feet taken for degrees: refused, saying
    how to name their CRS, rather than read as points nowhere near any scene.
    """
    import geopandas as gpd
    import pandas as pd
    from pyproj import CRS, Transformer

    try:
        frame = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise OutcropError(f"{path}: not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} at offset "
                           f"{exc.start}); save it as UTF-8") from None
    except Exception as exc:
        raise OutcropError(f"{path}: not a readable CSV ({exc})") from None
    cols = {str(c).lower().strip(): c for c in frame.columns}
    lon = next((cols[n] for n in LON_NAMES if n in cols), None)
    lat = next((cols[n] for n in LAT_NAMES if n in cols), None)
    if lon is None or lat is None:
        raise OutcropError(f"{path}: a deposits CSV needs lon and lat columns (EPSG:4326), found {list(frame.columns)}")
    x = np.array(pd.to_numeric(frame[lon], errors="coerce"), dtype=float)
    y = np.array(pd.to_numeric(frame[lat], errors="coerce"), dtype=float)
    bad = ~(np.isfinite(x) & np.isfinite(y))
    if bad.any():
        raise OutcropError(f"{path}: rows {(np.flatnonzero(bad) + 2).tolist()[:10]} have no valid lon/lat")
    if "crs" in cols:
        names = frame[cols["crs"]].fillna("").astype(str).str.strip().to_numpy()
        for name in np.unique(names):
            rows = np.flatnonzero(names == name)
            try:
                source = CRS.from_user_input(name)
            except Exception:
                raise OutcropError(f"{path}: row {rows[0] + 2}: crs: {name!r} is not a known coordinate system "
                                   "(write e.g. EPSG:3031)") from None
            to_lonlat = Transformer.from_crs(source, "EPSG:4326", always_xy=True)
            x[rows], y[rows] = to_lonlat.transform(x[rows], y[rows])
        bad = ~(np.isfinite(x) & np.isfinite(y))
        if bad.any():
            raise OutcropError(f"{path}: rows {(np.flatnonzero(bad) + 2).tolist()[:10]} lie outside the area "
                               "of their crs")
    else:
        bad = (np.abs(x) > 360) | (np.abs(y) > 90)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise OutcropError(
                f"{path}: rows {(np.flatnonzero(bad) + 2).tolist()[:10]} are not degrees ({lon}={x[first]:g}, "
                f"{lat}={y[first]:g}); a deposits CSV gives lon,lat (or longitude,latitude, or x,y) in EPSG:4326; "
                "for other coordinates add a crs column (e.g. EPSG:3031) or use a GeoPackage or GeoJSON")
    return gpd.GeoDataFrame(frame, geometry=gpd.points_from_xy(x, y), crs="EPSG:4326")


def select_positives(table: Any, deposits: Any, *, buffer_m: float) -> list[np.ndarray]:
    """Row positions of the tiles each deposit meets (points and lines buffered by ``buffer_m``).

    In an index table, row position is the FAISS id. Raises :class:`OutcropError` naming the first deposit that meets no tile.
    """
    if deposits.crs is not None and table.crs is not None and deposits.crs != table.crs:
        deposits = deposits.to_crs(table.crs)
    names = deposits["name"].to_numpy() if "name" in deposits.columns else np.arange(1, len(deposits) + 1)
    return positives_of_shapes(table.sindex, np.asarray(deposits.geometry.values), names, buffer_m=buffer_m)


def positives_of_shapes(sindex: Any, geoms: np.ndarray, names: Sequence[Any], *, buffer_m: float) -> list[np.ndarray]:
    """:func:`select_positives` of shapely geometries already in the table's CRS, through the
    table's spatial index (``table.sindex``): no data frame is built, for a search from the map."""
    import shapely

    geoms = np.asarray(geoms, dtype=object)
    areal = np.isin(shapely.get_type_id(geoms), [3, 6])  # Polygon, MultiPolygon
    if buffer_m > 0:
        geoms = np.where(areal, geoms, shapely.buffer(geoms, buffer_m, quad_segs=16))  # as GeoSeries.buffer
    dep_idx, ids = sindex.query(geoms, predicate="intersects")
    order = np.argsort(dep_idx, kind="stable")
    dep_idx, ids = dep_idx[order], ids[order]
    bounds = np.searchsorted(dep_idx, np.arange(len(geoms) + 1))
    out = []
    for i in range(len(geoms)):
        sel = np.unique(ids[bounds[i] : bounds[i + 1]])
        if len(sel) == 0:
            raise OutcropError(f"deposit {names[i]!r} (feature {i + 1}) meets no indexed tile "
                               f"(outside every scene, or on ground that was not indexed)")
        out.append(sel.astype(np.int64))
    return out


def query_vectors(vectors: np.ndarray, positives: list[np.ndarray], negatives: list[np.ndarray] | None = None,
                  negative_weight: float = 0.5) -> np.ndarray:
    """(1 + P, D) unit queries: the set query first, then one per positive group."""
    if not positives:
        raise OutcropError("no positives to search with")
    per = normalise_rows(np.stack([vectors[p].mean(axis=0) for p in positives]))
    combined = normalise_rows(per.mean(axis=0, keepdims=True))
    if negatives:
        neg = normalise_rows(np.concatenate([vectors[n] for n in negatives]).mean(axis=0, keepdims=True))
        combined = normalise_rows(combined - negative_weight * neg)
    return np.concatenate([combined, per])


def best_scores(vectors: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best cosine of every vector over the queries, and which query gave it (exact, in batches)."""
    score = np.empty(len(vectors), dtype=np.float32)
    which = np.empty(len(vectors), dtype=np.int64)
    q = np.ascontiguousarray(queries.T, dtype=np.float32)
    for start in range(0, len(vectors), SCORE_BATCH):
        sims = np.asarray(vectors[start : start + SCORE_BATCH], dtype=np.float32) @ q
        which[start : start + SCORE_BATCH] = sims.argmax(axis=1)
        score[start : start + SCORE_BATCH] = sims.max(axis=1)
    return score, which


def excluded_ids(table: Any, deposits: Sequence[Any], positives: list[np.ndarray], exclusion_m: float,
                 negatives: list[np.ndarray] | None = None) -> np.ndarray:
    """Boolean mask over the table: tiles within ``exclusion_m`` of any deposit's own geometry, the
    positives, and the negatives' own tiles (a place known not to be an analogue is never reported as one).

    Measured from the deposit itself (its point or polygon), not from the footprints of the tiles
    it selects: those reach up to a tile width past the deposit, and a radius added to them would
    hide ground a tile width farther away than the user asked. With ``exclusion_m`` 0 only the
    tiles that share ground with a deposit go (a footprint merely touching a polygon's edge stays).
    """
    import shapely

    geoms = np.asarray(deposits, dtype=object)
    mask = np.zeros(len(table), dtype=bool)
    for groups in (positives, negatives or []):
        if groups:
            mask[np.unique(np.concatenate(groups))] = True
    if len(geoms) == 0:
        return mask
    if exclusion_m > 0:
        _, near = table.sindex.query(geoms, predicate="dwithin", distance=exclusion_m)
    else:
        src, near = table.sindex.query(geoms, predicate="intersects")
        footprints = np.asarray(table.geometry.values[near])
        areal = shapely.area(geoms[src]) > 0
        # Touching a polygon is not sharing its ground; a point or line inside a footprint is.
        shared = np.where(areal, shapely.area(shapely.intersection(footprints, geoms[src])) > 0,
                          shapely.intersects(footprints, geoms[src]))
        near = near[shared]
    mask[near] = True
    return mask


def suppress_overlapping(geoms: np.ndarray, max_overlap: float) -> np.ndarray:
    """Greedy non-maximum suppression of footprints given best first: a boolean mask of the kept ones.

    Footprint ``i`` is dropped when it overlaps a kept footprint ``j < i`` by more than
    ``max_overlap`` of its own area; a dropped footprint suppresses nothing, so a chain of
    overlapping tiles keeps every other one rather than only the first. The overlapping pairs come
    from one STRtree query and vectorised intersection areas; the greedy pass is linear in the pairs.
    """
    import shapely

    geoms = np.asarray(geoms, dtype=object)
    n = len(geoms)
    keep = np.ones(n, dtype=bool)
    if n < 2:
        return keep
    tree = shapely.STRtree(geoms)
    later, earlier = tree.query(geoms, predicate="intersects")
    better = earlier < later
    later, earlier = later[better], earlier[better]
    if len(later) == 0:
        return keep
    share = shapely.area(shapely.intersection(geoms[later], geoms[earlier])) / shapely.area(geoms[later])
    hit = share > max_overlap
    later, earlier = later[hit], earlier[hit]
    order = np.argsort(later, kind="stable")
    later, earlier = later[order], earlier[order]
    bounds = np.searchsorted(later, np.arange(n + 1))
    for i in np.unique(later):
        keep[i] = not keep[earlier[bounds[i] : bounds[i + 1]]].any()
    return keep


def top_sites(masked: np.ndarray, table: Any, top: int, site_overlap: float | None) -> np.ndarray:
    """Ids of the ``top`` best finite scores, best first (ties by id), one per site when ``site_overlap``.

    The suppression of a tile depends only on better tiles, so it runs on a growing prefix of the
    ranking (four times ``top`` to start, doubling) until ``top`` sites are found or no tile is left.
    """
    # Partitioned among the finite scores only: a search from the map scores a few thousand
    # candidates of a million tiles, and partitioning the million took most of its time.
    ids = np.flatnonzero(np.isfinite(masked))
    finite = len(ids)
    scores = masked[ids]
    want = min(top, finite) if not site_overlap else min(4 * top, finite)
    while True:
        best = ids[np.argpartition(-scores, want - 1)[:want]] if want > 0 else np.zeros(0, dtype=np.int64)
        best = best[np.lexsort((best, -masked[best]))]
        if not site_overlap:
            return best
        kept = best[suppress_overlapping(table.geometry.values[best], site_overlap)]
        if len(kept) >= top or want == finite:
            return kept[:top]
        want = min(2 * want, finite)


def rank_analogues(
    vectors: np.ndarray,
    table: Any,
    positives: list[np.ndarray],
    *,
    deposits: Sequence[Any],
    exclusion_m: float,
    top: int,
    negatives: list[np.ndarray] | None = None,
    negative_weight: float = 0.5,
    names: Sequence[str] | None = None,
    site_overlap: float | None = SITE_OVERLAP,
) -> Any:
    """The ``top`` sites most similar to the positives, outside the exclusion zones, best first.

    A site is the best tile of a group of overlapping ones (see :func:`suppress_overlapping`;
    ``site_overlap=None`` ranks every tile).

    ``vectors`` (M, D) are unit rows aligned with ``table`` rows (index ids); ``positives`` holds the
    ids of each deposit's tiles and ``deposits`` each deposit's own geometry (in the table's CRS),
    from which the exclusion radius and the distances are measured. Columns: rank (1 = best), score
    (best cosine over the queries), id, scene, tile_id, query (``set`` or the deposit's name),
    nearest_positive (the nearest deposit), distance_km (tile centre to that deposit's geometry).
    """
    queries = query_vectors(vectors, positives, negatives, negative_weight)
    score, which = best_scores(vectors, queries)
    return rank_scored(score, which, table, positives, deposits, exclusion_m=exclusion_m, top=top, names=names,
                       site_overlap=site_overlap, negatives=negatives)


def rank_scored(score: np.ndarray, which: np.ndarray, table: Any, positives: list[np.ndarray],
                deposits: Sequence[Any], *, exclusion_m: float, top: int, names: Sequence[str] | None,
                site_overlap: float | None, negatives: list[np.ndarray] | None = None) -> Any:
    """The ranking of :func:`rank_analogues` from scores already computed (``score``: best cosine of
    every tile, -inf for a tile not scored; ``which``: the query that gave it, 0 = the set).

    ``outcrop serve`` scores only the index's candidates and ranks them here, so that a search from
    the map and ``outcrop analogues`` exclude, suppress and measure distances with the same code.
    """
    import pandas as pd
    import shapely

    names = list(names) if names is not None else [f"deposit {i + 1}" for i in range(len(positives))]
    geoms = np.asarray(deposits, dtype=object)
    if not (len(names) == len(positives) == len(geoms)):
        raise OutcropError(f"{len(names)} names and {len(geoms)} deposits for {len(positives)} positive groups")
    masked = np.where(excluded_ids(table, geoms, positives, exclusion_m, negatives), -np.inf, score)
    best = top_sites(masked, table, top, site_overlap)
    n = len(best)
    centres = np.asarray(table.geometry.values[best].centroid)
    dist = np.full(n, np.inf)
    nearest = np.zeros(n, dtype=np.int64)
    for j, geom in enumerate(geoms):  # one vectorised distance per deposit: deposits are few
        d = shapely.distance(centres, geom) if n else np.zeros(0)
        closer = d < dist
        dist[closer] = d[closer]
        nearest[closer] = j
    query_names = np.array(["set", *names], dtype=object)
    return pd.DataFrame({
        "rank": np.arange(1, n + 1, dtype=np.int64),
        "score": score[best].astype(np.float64),
        "id": best.astype(np.int64),
        # Rows taken before converting: a whole column of a million Arrow strings takes 80 ms to convert.
        "scene": table["scene"].take(best).to_numpy(),
        "tile_id": table["tile_id"].take(best).to_numpy(),
        "nearest_positive": np.array(names, dtype=object)[nearest] if n else np.array([], dtype=object),
        "distance_km": dist / 1000.0,
        "query": query_names[which[best]],
    })


def find_analogues(
    index_path: Path,
    table_path: Path,
    embedding_paths: Sequence[Path],
    deposits_path: Path,
    prepared_paths: Sequence[Path],
    out_gpkg: Path,
    out_csv: Path,
    similarity_dir: Path,
    *,
    buffer_m: float,
    exclusion_km: float,
    top: int,
    negatives_path: Path | None = None,
    site_overlap: float | None = SITE_OVERLAP,
    log: Callable[[str], Any] = print,
) -> None:
    """Rank analogue sites of the deposits and write them (GeoPackage + CSV) and per-scene similarity COGs.

    ``site_overlap``: see :func:`rank_analogues`; the similarity rasters hold every tile's score.
    """
    _, table = load_index(index_path, table_path)
    vectors = table_vectors(table, embedding_paths)
    deposits = read_deposits(deposits_path, table.crs)
    positives = _positives_of(deposits_path, table, deposits, buffer_m)
    log(f"{len(deposits)} deposits select {sum(len(p) for p in positives)} positive tiles")
    negatives = None
    if negatives_path is not None:
        negatives = _positives_of(negatives_path, table, read_deposits(negatives_path, table.crs, role="negatives"),
                                  buffer_m)
    queries = query_vectors(vectors, positives, negatives)
    score, which = best_scores(vectors, queries)
    ranked = rank_scored(score, which, table, positives, deposits.geometry.to_numpy(), exclusion_m=exclusion_km * 1000.0,
                         top=top, names=deposits["name"].tolist(), site_overlap=site_overlap, negatives=negatives)
    ranked = analogue_table(ranked, table)
    write_geodataframe(out_gpkg, ranked, layer="analogues")
    with atomic_path(out_csv) as tmp:
        tmp.write_text(analogues_csv(ranked), encoding="utf-8")
    layout = table_layout(table_path, table)  # the grid the tiles were cut on, as the index table records it
    for scene, grid, raster, transform in scene_rasters(prepared_paths, table, layout, score, np.nan, np.float32):
        write_cog(Path(similarity_dir) / f"{scene}.tif", raster, {"crs": grid.crs, "transform": transform,
                  "nodata": np.nan}, band_names=["similarity"], resampling="average")
    log(f"wrote {len(ranked)} analogues; best score {ranked['score'].max() if len(ranked) else float('nan'):.3f}")


def analogue_table(ranked: Any, table: Any, to_lonlat: Any = None) -> Any:
    """Ranked analogues as written to ``analogues.gpkg``: :data:`RESULT_COLUMNS` (lon/lat of each
    tile's centre added) and the tile footprints, in the table's CRS. ``to_lonlat``: a pyproj
    transformer from the table's CRS to EPSG:4326, made here when not given."""
    import geopandas as gpd
    import shapely
    from pyproj import Transformer

    geoms = table.geometry.values[ranked["id"].to_numpy()]
    centres = shapely.centroid(np.asarray(geoms))
    to_lonlat = to_lonlat or Transformer.from_crs(table.crs, "EPSG:4326", always_xy=True)
    lon, lat = to_lonlat.transform(shapely.get_x(centres), shapely.get_y(centres))
    ranked = ranked.assign(lon=np.asarray(lon, dtype=np.float64), lat=np.asarray(lat, dtype=np.float64))
    return gpd.GeoDataFrame(ranked[RESULT_COLUMNS], geometry=geoms, crs=table.crs)


def analogues_csv(ranked: Any) -> str:
    """The analogues as CSV text (:data:`RESULT_COLUMNS`, no geometry): the one writer of analogue
    tables as CSV, for the run's ``analogues.csv`` and ``outcrop serve``'s export; deposit names
    are made formula-safe for spreadsheets (:mod:`outcrop.csvfile`)."""
    return csv_text(ranked[RESULT_COLUMNS], float_format="%.6f")


def _positives_of(path: Path, table: Any, deposits: Any, buffer_m: float) -> list[np.ndarray]:
    """:func:`select_positives` with the file named in its error."""
    try:
        return select_positives(table, deposits, buffer_m=buffer_m)
    except OutcropError as exc:
        raise OutcropError(f"{path}: {exc}") from None
