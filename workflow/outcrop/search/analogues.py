"""Analogues of known occurrences: the tiles elsewhere that look most like the tiles at deposits.

Each deposit (a point, buffered by ``buffer_m``, or a polygon) selects the indexed tiles it meets:
its positives. Queries are unit vectors: one per deposit (the mean of its tiles), and one for the set
(the mean of the per-deposit means, so a large polygon does not outweigh a point; optionally pushed
away from the mean of negative tiles). Every tile is scored by its best cosine over the queries with
an exact scan in batches (linear in the number of tiles, and exact where the approximate index
would not be); tiles within ``exclusion_m`` of any deposit's own geometry (and the positives
themselves) are not analogues, since ground next to a known occurrence is not a discovery, and
neither are the tiles of negatives (places known not to be analogues, such as the wrong results
marked in ``outcrop serve``).

The ranked list holds distinct *sites*, not tiles: overlapping tiles (stride under the tile size)
and the same ground cut from two overlapping scenes would otherwise take several places for one
discovery. Greedy non-maximum suppression walks the tiles best first and drops a tile whose
footprint overlaps an already-kept, better tile by more than ``site_overlap`` of its own area
(:func:`suppress_overlapping`); ``site_overlap`` None or 0 ranks every tile.

Deposits files can be large (a national mineral-occurrence database has tens of thousands of
points), so nothing here loops over deposits in Python: positives come from one spatial query,
deposits that select the same tiles share one query vector, scores are computed in blocks whose
memory is bounded whatever the number of queries, and the nearest deposit of each result comes from
one nearest-neighbour query. A file with more than ``limits.deposits`` features is refused before
it is read. ``outcrop serve`` selects the tiles of a place clicked or drawn on its map with the same
spatial matching (:func:`match_shapes`) and ranks with :func:`rank_scored`. A deposit that meets
no indexed tile (outside every scene, or on cloud, water or ground the index left out) cannot be
searched with: it is named in a warning and left out of the queries, but still excludes the ground
around it; only a file none of whose deposits meets a tile is an error.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from outcrop.config import default
from outcrop.csvfile import csv_text
from outcrop.errors import OutcropError
from outcrop.io import atomic_path, read_vector, write_cog, write_geodataframe
from outcrop.limits import refuse_above
from outcrop.raster.geo import scene_rasters
from outcrop.search import analogue_state
from outcrop.search.index import load_index, normalise_rows, scene_of, table_vector_source
from outcrop.search.index_table import table_layout
from outcrop.search.vectors import VectorSource, table_source

SCORE_BATCH = 1 << 16
SCORE_CELLS = 1 << 24  # tile x query similarities held at once (64 MiB of float32), whatever the queries
NAMED = 10  # deposits a warning names before it counts the rest
RESULT_COLUMNS = ["rank", "score", "scene", "tile_id", "id", "nearest_positive", "distance_km", "query", "lon", "lat"]
LON_NAMES = ("lon", "longitude", "long", "x")
LAT_NAMES = ("lat", "latitude", "y")
# share of a tile's area that, overlapped by a better tile, makes it that tile's site
SITE_OVERLAP = default("analogues.site_overlap")


MARK_LAYERS = ("positives", "negatives")  # the layers of a marks file (``outcrop serve``)


def read_deposits(path: str | os.PathLike[str], crs: Any, *, role: str = "positives") -> Any:
    """Read deposits (GeoPackage, GeoJSON, any vector file, or CSV of lon/lat in EPSG:4326, or of
    x/y with a ``crs`` column) in ``crs``.

    A file with both a ``positives`` and a ``negatives`` layer (the marks ``outcrop serve`` saves)
    gives the layer named ``role``: the same file serves as ``deposits:`` and as ``negatives:``.
    Returns a GeoDataFrame with ``name`` (from a ``name`` column, else ``deposit {n}``) and geometry.
    A file of more features (or vertices) than its limits allow is refused (:func:`check_deposits_size`).
    """
    import geopandas as gpd
    import shapely

    path = Path(path)
    check_deposits_size(path, role=role)
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        gdf = _read_deposits_table(path)
    else:
        try:
            gdf = read_vector(path, layer=_marks_layer(path, role))
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else exc
            raise OutcropError(f"{path}: not a readable vector file ({reason})") from None
        if not isinstance(gdf, gpd.GeoDataFrame) or "geometry" not in gdf or gdf.geometry.isna().all():
            raise OutcropError(f"{path}: deposits file has no geometry")
        if gdf.crs is None:
            raise OutcropError(f"{path}: deposits file has no CRS (unknown coordinate system)")
    if len(gdf) == 0:
        raise OutcropError(f"{path}: deposits file has no features")
    missing = gdf.geometry.isna() | gdf.geometry.is_empty
    if missing.any():
        raise OutcropError(f"{path}: features {np.flatnonzero(missing.to_numpy()).tolist()[:10]} have no geometry")
    refuse_above("deposits", len(gdf), str(path), "deposits")
    refuse_above(
        "deposit_vertices",
        int(shapely.get_num_coordinates(gdf.geometry.to_numpy()).sum()),
        str(path),
        "vertices in its geometries",
    )
    names = (
        gdf["name"].astype(str).to_numpy()
        if "name" in gdf.columns
        else np.array([f"deposit {i + 1}" for i in range(len(gdf))])
    )
    out = gpd.GeoDataFrame({"name": names}, geometry=gdf.geometry.values, crs=gdf.crs)
    try:
        return out.to_crs(crs)
    except Exception as exc:
        raise OutcropError(f"{path}: cannot transform deposits to {crs} ({exc})") from None


def check_deposits_size(path: str | os.PathLike[str], *, role: str = "positives") -> None:
    """Refuse a missing deposits file, or one claiming more features than ``limits.deposits``, before
    anything is read or loaded: the stages call it first, so a refusal takes a fraction of a second.
    A marks file (:data:`MARK_LAYERS`) is counted in the layer ``role`` that will be read."""
    path = Path(path)
    if not path.exists():
        raise OutcropError(f"{path}: deposits file not found")
    refuse_above("deposits", _claimed_features(path, role), str(path), "deposits")


def _claimed_features(path: Path, role: str) -> int:
    """How many features a deposits file holds, found without reading them: the lines of a table
    (its header aside), the feature count a vector format records in the layer that will be read
    (0 where it cannot be told: the count is then checked once the file is read)."""
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        lines, last = 0, b"\n"
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                lines += block.count(b"\n")
                last = block[-1:]
        return max(0, lines + (last != b"\n") - 1)
    import pyogrio

    layer = _marks_layer(path, role)
    try:
        return max(0, int(pyogrio.read_info(path, layer=layer, force_feature_count=True).get("features", 0)))
    except Exception:  # unreadable here: reading it says why, in one line
        return 0


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
        raise OutcropError(
            f"{path}: not UTF-8 text (byte {exc.object[exc.start : exc.start + 1]!r} at offset "
            f"{exc.start}); save it as UTF-8"
        ) from None
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
                raise OutcropError(
                    f"{path}: row {rows[0] + 2}: crs: {name!r} is not a known coordinate system (write e.g. EPSG:3031)"
                ) from None
            to_lonlat = Transformer.from_crs(source, "EPSG:4326", always_xy=True)
            x[rows], y[rows] = to_lonlat.transform(x[rows], y[rows])
        bad = ~(np.isfinite(x) & np.isfinite(y))
        if bad.any():
            raise OutcropError(
                f"{path}: rows {(np.flatnonzero(bad) + 2).tolist()[:10]} lie outside the area of their crs"
            )
    else:
        bad = (np.abs(x) > 360) | (np.abs(y) > 90)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise OutcropError(
                f"{path}: rows {(np.flatnonzero(bad) + 2).tolist()[:10]} are not degrees ({lon}={x[first]:g}, "
                f"{lat}={y[first]:g}); a deposits CSV gives lon,lat (or longitude,latitude, or x,y) in EPSG:4326; "
                "for other coordinates add a crs column (e.g. EPSG:3031) or use a GeoPackage or GeoJSON"
            )
    return gpd.GeoDataFrame(frame, geometry=gpd.points_from_xy(x, y), crs="EPSG:4326")


def match_shapes(sindex: Any, geoms: np.ndarray, *, buffer_m: float) -> tuple[list[np.ndarray], np.ndarray]:
    """Row positions of the tiles each geometry meets (points and lines: the tiles within ``buffer_m``
    of them; polygons: the tiles they intersect), for the geometries that meet any, and the
    positions of those that meet none.

    ``geoms`` are shapely geometries in the CRS of the table whose spatial index (``table.sindex``)
    is ``sindex``; in an index table, row position is the FAISS id. One spatial query for all of
    them, whatever their number, measuring distances rather than building a buffer polygon for each
    point. The one way positives are selected: from a deposits file (:func:`match_deposits`) and
    from a place clicked or drawn in ``outcrop serve`` (:func:`positives_of_shapes`).
    """
    import shapely

    geoms = np.asarray(geoms, dtype=object)
    areal = np.isin(shapely.get_type_id(geoms), [3, 6])  # Polygon, MultiPolygon
    if buffer_m > 0:  # points and lines: the tiles within buffer_m of them, without building buffers
        flat = np.flatnonzero(~areal)
        near_of, near = sindex.query(geoms[flat], predicate="dwithin", distance=buffer_m)
        inside_of, inside = sindex.query(geoms[areal], predicate="intersects")
        dep_idx = np.concatenate([flat[near_of], np.flatnonzero(areal)[inside_of]])
        ids = np.concatenate([near, inside])
    else:
        dep_idx, ids = sindex.query(geoms, predicate="intersects")
    order = np.lexsort((ids, dep_idx))  # by geometry, then tile (the query gives each pair once)
    dep_idx, ids = np.asarray(dep_idx, dtype=np.int64)[order], np.asarray(ids, dtype=np.int64)[order]
    matched = np.unique(dep_idx)
    bounds = np.searchsorted(dep_idx, matched)
    positives = np.split(ids, bounds[1:]) if len(matched) else []
    return positives, np.setdiff1d(np.arange(len(geoms)), matched)


def match_deposits(table: Any, deposits: Any, *, buffer_m: float) -> tuple[list[np.ndarray], np.ndarray]:
    """:func:`match_shapes` of a deposits GeoDataFrame (brought to the table's CRS) against ``table``."""
    if deposits.crs is not None and table.crs is not None and deposits.crs != table.crs:
        deposits = deposits.to_crs(table.crs)
    return match_shapes(table.sindex, np.asarray(deposits.geometry.values), buffer_m=buffer_m)


def _label(names: Sequence[Any] | None, i: int) -> str:
    """The ``i``-th of a list of places as messages name it: its name (or number) and feature number."""
    return f"{str(names[i]) if names is not None else i + 1!r} (feature {i + 1})"


def deposit_label(deposits: Any, i: int) -> str:
    """A deposit as messages name it: its name and its feature number in the file."""
    return _label(deposits["name"].to_numpy() if "name" in deposits.columns else None, i)


def unmatched_warning(deposits: Any, unmatched: np.ndarray) -> str:
    """The one-line warning for deposits that meet no indexed tile: the first :data:`NAMED` named."""
    named = ", ".join(deposit_label(deposits, int(i)) for i in unmatched[:NAMED])
    more = f" and {len(unmatched) - NAMED:,} more" if len(unmatched) > NAMED else ""
    return (
        f"warning: {len(unmatched):,} of {len(deposits):,} deposits meet no indexed tile (outside every scene, "
        f"or on cloud, water or other ground the index left out) and are left out of the search: {named}{more}"
    )


def positives_of_shapes(sindex: Any, geoms: np.ndarray, names: Sequence[Any], *, buffer_m: float) -> list[np.ndarray]:
    """The tiles each geometry selects (:func:`match_shapes`), for a search from the map: no data frame
    is built. Raises :class:`OutcropError` naming the first geometry that meets no tile: a place the
    user clicked or drew is one the user asked about, not one of thousands in a file."""
    positives, unmatched = match_shapes(sindex, geoms, buffer_m=buffer_m)
    if len(unmatched):
        raise OutcropError(
            f"deposit {_label(names, int(unmatched[0]))} meets no indexed tile "
            f"(outside every scene, or on ground that was not indexed)"
        )
    return positives


def select_positives(table: Any, deposits: Any, *, buffer_m: float) -> list[np.ndarray]:
    """Row positions of the tiles each deposit meets (points and lines buffered by ``buffer_m``).

    In an index table, row position is the FAISS id. Raises :class:`OutcropError` naming the first
    deposit that meets no tile.
    """
    positives, unmatched = match_deposits(table, deposits, buffer_m=buffer_m)
    if len(unmatched):
        raise OutcropError(
            f"deposit {deposit_label(deposits, int(unmatched[0]))} meets no indexed tile "
            f"(outside every scene, or on ground that was not indexed)"
        )
    return positives


def distinct_groups(positives: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """For each positive group, the index of the first group with the same tiles, and those firsts.

    Deposits that select the same tiles (several occurrences in one tile) have one query vector:
    it is scored once, and a tile it scores best names the first of them, as scoring each would.
    """
    first: dict[bytes, int] = {}
    owner = np.array(
        [first.setdefault(np.asarray(p, dtype=np.int64).tobytes(), i) for i, p in enumerate(positives)], dtype=np.int64
    )
    return owner, np.unique(owner)


def _mean_matrix(count: int, groups: Sequence[np.ndarray]) -> Any:
    """A sparse (groups x tiles) matrix whose product with the vectors is each group's mean vector:
    the means without gathering every group's rows into one array."""
    from scipy.sparse import csr_matrix

    sizes = np.array([len(g) for g in groups], dtype=np.int64)
    rows = np.concatenate(groups).astype(np.int64) if len(groups) else np.zeros(0, dtype=np.int64)
    weights = np.repeat((1.0 / np.maximum(sizes, 1)).astype(np.float32), sizes)
    return csr_matrix((weights, rows, np.concatenate([[0], np.cumsum(sizes)])), shape=(len(groups), count))


def _rows_of(vectors: Any, ids: np.ndarray) -> np.ndarray:
    """The float32 rows ``ids`` of an array, a :class:`VectorSource` or anything indexed by an id array."""
    if isinstance(vectors, VectorSource):
        return vectors.take(ids)
    return np.asarray(vectors[ids], dtype=np.float32)


def _dim(vectors: Any) -> int:
    return vectors.dim if isinstance(vectors, VectorSource) else int(np.shape(vectors)[1])


def _gathered(vectors: Any, groups: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The rows the groups select, and the groups as positions in them: a group's mean needs its own
    rows only, and a coast's vectors are not held at once. The groups keep their order, so their means
    sum the same rows in the same order as over the whole array."""
    if isinstance(vectors, np.ndarray):
        return np.asarray(vectors, dtype=np.float32), list(groups)
    chosen = np.concatenate(groups).astype(np.int64) if len(groups) else np.zeros(0, dtype=np.int64)
    ids, local = np.unique(chosen, return_inverse=True)
    local = np.asarray(local, dtype=np.int64).ravel()
    return _rows_of(vectors, ids), np.split(local, np.cumsum([len(g) for g in groups])[:-1])


def group_means(vectors: Any, positives: Sequence[np.ndarray]) -> np.ndarray:
    """(P, D) unit mean vectors of the positive groups (one sparse product, no loop over groups).

    ``vectors``: an array of every tile's vector, a :class:`VectorSource`, or anything that gives the
    rows of an array of ids (``outcrop serve`` reads them from memory-mapped embeddings on demand);
    then only the rows the groups select are read.
    """
    dense, groups = _gathered(vectors, positives)
    return normalise_rows(_mean_matrix(len(dense), groups) @ dense)


def query_chunks(vectors: Any, groups: Sequence[np.ndarray]) -> Iterator[tuple[int, np.ndarray]]:
    """(first group, unit means of a run of groups), a few thousand groups at a time: the queries of
    tens of thousands of deposits, never all held at once (a run's raw-pixel baseline has 7 000
    dimensions). ``vectors``: see :func:`group_means`."""
    dense, local = _gathered(vectors, groups)
    width = max(1, SCORE_CELLS // max(1, dense.shape[1]) // 4)
    means = _mean_matrix(len(dense), local)
    for start in range(0, len(groups), width):
        yield start, normalise_rows(means[start : start + width] @ dense)


def _less_negatives(
    combined: np.ndarray, vectors: Any, negatives: list[np.ndarray] | None, weight: float
) -> np.ndarray:
    """The set query moved away from the mean of the negatives' tiles (as it is, without negatives)."""
    if not negatives:
        return combined
    neg = normalise_rows(np.concatenate([_rows_of(vectors, n) for n in negatives]).mean(axis=0, keepdims=True))
    return normalise_rows(combined - weight * neg)


def query_vectors(
    vectors: Any, positives: list[np.ndarray], negatives: list[np.ndarray] | None = None, negative_weight: float = 0.5
) -> np.ndarray:
    """(1 + P, D) unit queries: the set query first, then one per positive group (``vectors``: see
    :func:`group_means`)."""
    if not positives:
        raise OutcropError("no positives to search with")
    per = group_means(vectors, positives)
    return np.concatenate([_less_negatives(set_query(per), vectors, negatives, negative_weight), per])


def set_query(per: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """(1, D) unit query for the set: the mean of the per-deposit queries, each deposit counting once
    (``weights``: how many deposits each row stands for)."""
    per = np.asarray(per, dtype=np.float64)
    total = per.sum(axis=0) if weights is None else (per * np.asarray(weights, dtype=np.float64)[:, None]).sum(axis=0)
    return normalise_rows(total[None, :])


def scan_queries(
    vectors: np.ndarray, chunks: Iterable[tuple[int, np.ndarray]], *, second: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every vector's best cosine over queries given chunk by chunk as (index of the first, rows),
    which query gave it (the first of equals, as one argmax over them all would), and with
    ``second`` the best cosine over all the other queries (-inf where there is none). Similarities
    are computed in blocks of at most :data:`SCORE_CELLS`, so memory stays bounded however many
    queries there are."""
    n = len(vectors)
    best = np.full(n, -np.inf, dtype=np.float32)
    which = np.zeros(n, dtype=np.int64)
    runner_up = np.full(n, -np.inf, dtype=np.float32)
    for offset, queries in chunks:
        q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32).T)
        batch = max(1, min(SCORE_BATCH, SCORE_CELLS // max(1, q.shape[1])))
        for start in range(0, n, batch):
            stop = min(n, start + batch)
            sims = np.asarray(vectors[start:stop], dtype=np.float32) @ q
            rows = np.arange(len(sims))
            top = sims.argmax(axis=1)
            found = sims[rows, top]
            held = best[start:stop]
            better = found > held
            if second:
                if q.shape[1] > 1:
                    sims[rows, top] = -np.inf
                    runner_up[start:stop] = np.maximum(runner_up[start:stop], sims.max(axis=1))
                runner_up[start:stop] = np.maximum(runner_up[start:stop], np.where(better, held, found))
            best[start:stop] = np.where(better, found, held)
            which[start:stop] = np.where(better, offset + top, which[start:stop])
    return best, which, runner_up


def best_scores(vectors: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best cosine of every vector over the queries, and which query gave it (exact, in blocks of at
    most :data:`SCORE_CELLS` similarities, so memory stays bounded however many queries there are)."""
    width = max(1, SCORE_CELLS // max(1, queries.shape[1]) // 4)
    score, which, _ = scan_queries(vectors, ((i, queries[i : i + width]) for i in range(0, len(queries), width)))
    return score, which


def exclusion_pairs(
    table: Any, deposits: Sequence[Any] | np.ndarray, exclusion_m: float
) -> tuple[np.ndarray, np.ndarray]:
    """(deposit, tile) pairs: the tiles within ``exclusion_m`` of each deposit's own geometry.

    With ``exclusion_m`` 0 only the tiles that share ground with a deposit count (a footprint merely
    touching a polygon's edge does not).
    """
    import shapely

    geoms = np.asarray(deposits, dtype=object)
    if len(geoms) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if exclusion_m > 0:
        src, near = table.sindex.query(geoms, predicate="dwithin", distance=exclusion_m)
    else:
        src, near = table.sindex.query(geoms, predicate="intersects")
        footprints = np.asarray(table.geometry.values[near])
        areal = shapely.area(geoms[src]) > 0
        # Touching a polygon is not sharing its ground; a point or line inside a footprint is.
        shared = np.where(
            areal,
            shapely.area(shapely.intersection(footprints, geoms[src])) > 0,
            shapely.intersects(footprints, geoms[src]),
        )
        src, near = src[shared], near[shared]
    return np.asarray(src, dtype=np.int64), np.asarray(near, dtype=np.int64)


def excluded_ids(
    table: Any,
    deposits: Sequence[Any] | np.ndarray,
    positives: list[np.ndarray],
    exclusion_m: float,
    negatives: list[np.ndarray] | None = None,
) -> np.ndarray:
    """Boolean mask over the table: tiles within ``exclusion_m`` of any deposit's own geometry, the
    positives, and the negatives' own tiles (a place known not to be an analogue is never reported as one).

    Measured from the deposit itself (its point or polygon), not from the footprints of the tiles
    it selects: those reach up to a tile width past the deposit, and a radius added to them would
    hide ground a tile width farther away than the user asked. With ``exclusion_m`` 0 only the
    tiles that share ground with a deposit go (a footprint merely touching a polygon's edge stays).
    """
    mask = np.zeros(len(table), dtype=bool)
    for groups in (positives, negatives or []):
        if groups:
            mask[np.unique(np.concatenate(groups))] = True
    mask[exclusion_pairs(table, deposits, exclusion_m)[1]] = True
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


def score_tiles(
    vectors: np.ndarray,
    positives: list[np.ndarray],
    negatives: list[np.ndarray] | None = None,
    negative_weight: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Every tile's best cosine over the queries of :func:`query_vectors`, and which query gave it
    (0: the set, ``1 + i``: deposit ``i``), scoring each distinct group of positives once and
    holding a few thousand queries at a time."""
    if not positives:
        raise OutcropError("no positives to search with")
    owner, firsts = distinct_groups(positives)
    groups = [positives[i] for i in firsts]
    weights = np.bincount(np.searchsorted(firsts, owner), minlength=len(firsts)).astype(np.float64)
    total = np.zeros(_dim(vectors), dtype=np.float64)
    for start, per in query_chunks(vectors, groups):
        total += (per.astype(np.float64) * weights[start : start + len(per), None]).sum(axis=0)
    combined = _less_negatives(normalise_rows(total[None, :]), vectors, negatives, negative_weight)
    chunks = itertools.chain([(0, combined)], ((1 + start, per) for start, per in query_chunks(vectors, groups)))
    score, which, _ = scan_queries(vectors, chunks)
    return score, np.where(which == 0, 0, 1 + firsts[np.maximum(which - 1, 0)])


def kept_queries(
    vectors: Any,
    positives: list[np.ndarray],
    negatives: list[np.ndarray] | None = None,
    negative_weight: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """The queries of :func:`score_tiles` held at once, to be kept between runs: (1 + G, D) unit
    rows (the set, then each distinct group of positives) and, for each, the ``which`` it gives
    (0: the set, ``1 + i``: deposit ``i``). ``best_scores`` over them, mapped through the labels,
    scores as :func:`score_tiles` does."""
    if not positives:
        raise OutcropError("no positives to search with")
    owner, firsts = distinct_groups(positives)
    groups = [positives[i] for i in firsts]
    weights = np.bincount(np.searchsorted(firsts, owner), minlength=len(firsts)).astype(np.float64)
    total = np.zeros(_dim(vectors), dtype=np.float64)
    parts = []
    for start, per in query_chunks(vectors, groups):  # summed chunk by chunk, as score_tiles sums them
        total += (per.astype(np.float64) * weights[start : start + len(per), None]).sum(axis=0)
        parts.append(per)
    per = np.concatenate(parts)
    combined = _less_negatives(normalise_rows(total[None, :]), vectors, negatives, negative_weight)
    queries = np.concatenate([combined, per]).astype(np.float32)
    return queries, np.concatenate([[0], 1 + firsts]).astype(np.int64)


def score_kept(vectors: np.ndarray, queries: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best cosine of every vector over queries of :func:`kept_queries`, and the ``which`` it gives:
    scanned in the chunks :func:`score_tiles` scans (the set alone, then runs of groups), so that
    the scores equal its scores bit for bit."""
    width = max(1, SCORE_CELLS // max(1, queries.shape[1]) // 4)
    chunks = itertools.chain(
        [(0, queries[:1])],
        ((1 + start, queries[1 + start : 1 + start + width]) for start in range(0, len(queries) - 1, width)),
    )
    score, which, _ = scan_queries(vectors, chunks)
    return score, labels[which]


def score_source(source: VectorSource, queries: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`score_kept` of every vector of ``source``, one chunk in memory at a time: row by row the
    same products as over the vectors held at once (equal bit for bit in the tests, with chunks far
    smaller than a scene)."""
    score = np.empty(source.count, np.float32)
    which = np.empty(source.count, np.int64)
    for start, block in source.chunks():
        score[start : start + len(block)], which[start : start + len(block)] = score_kept(block, queries, labels)
    return score, which


def rank_analogues(
    vectors: np.ndarray,
    table: Any,
    positives: list[np.ndarray],
    *,
    deposits: Sequence[Any] | np.ndarray,
    exclusion_m: float,
    top: int,
    negatives: list[np.ndarray] | None = None,
    negative_weight: float = 0.5,
    names: Sequence[str] | None = None,
    site_overlap: float | None = SITE_OVERLAP,
    exclude: Sequence[Any] = (),
) -> Any:
    """The ``top`` sites most similar to the positives, outside the exclusion zones, best first.

    A site is the best tile of a group of overlapping ones (see :func:`suppress_overlapping`;
    ``site_overlap`` None or 0 ranks every tile).

    ``vectors`` (M, D) are unit rows aligned with ``table`` rows (index ids); ``positives`` holds the
    ids of each deposit's tiles and ``deposits`` each deposit's own geometry (in the table's CRS),
    from which the exclusion radius and the distances are measured; ``exclude`` the geometries of
    known deposits that select no tile, whose ground is excluded all the same; the tiles of
    ``negatives`` push the set query away and are never ranked. Columns: rank (1 = best), score
    (best cosine over the queries), id, scene, tile_id, query (``set`` or the deposit's name),
    nearest_positive (the nearest deposit), distance_km (tile centre to that deposit's geometry).
    """
    score, which = score_tiles(vectors, positives, negatives, negative_weight)
    return rank_scored(
        score,
        which,
        table,
        positives,
        deposits,
        exclusion_m=exclusion_m,
        top=top,
        names=names,
        site_overlap=site_overlap,
        negatives=negatives,
        exclude=exclude,
    )


def nearest_geometry(points: np.ndarray, geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each point, the position of the nearest geometry (the first of equally near ones) and its
    distance: one nearest-neighbour query on a tree of the geometries, however many there are."""
    import shapely

    n = len(points)
    if n == 0 or len(geoms) == 0:
        return np.zeros(n, dtype=np.int64), np.full(n, np.inf)
    (src, hit), dist = shapely.STRtree(geoms).query_nearest(points, all_matches=True, return_distance=True)
    order = np.lexsort((hit, src))  # by point, then geometry position: the first of equals leads
    src, hit, dist = src[order], hit[order], dist[order]
    lead = np.flatnonzero(np.r_[True, src[1:] != src[:-1]])
    nearest = np.zeros(n, dtype=np.int64)
    distance = np.full(n, np.inf)
    nearest[src[lead]] = hit[lead]
    distance[src[lead]] = dist[lead]
    return nearest, distance


def rank_scored(
    score: np.ndarray,
    which: np.ndarray,
    table: Any,
    positives: list[np.ndarray],
    deposits: Sequence[Any] | np.ndarray,
    *,
    exclusion_m: float,
    top: int,
    names: Sequence[str] | None,
    site_overlap: float | None,
    negatives: list[np.ndarray] | None = None,
    exclude: Sequence[Any] = (),
) -> Any:
    """The ranking of :func:`rank_analogues` from scores already computed (``score``: best cosine of
    every tile, -inf for a tile not scored; ``which``: the query that gave it, 0 = the set).

    ``outcrop serve`` scores only the index's candidates and ranks them here, so that a search from
    the map and ``outcrop analogues`` exclude, suppress and measure distances with the same code.
    """
    names = list(names) if names is not None else [f"deposit {i + 1}" for i in range(len(positives))]
    geoms = np.asarray(deposits, dtype=object)
    if not (len(names) == len(positives) == len(geoms)):
        raise OutcropError(f"{len(names)} names and {len(geoms)} deposits for {len(positives)} positive groups")
    every = np.concatenate([geoms, np.asarray(exclude, dtype=object)]) if len(exclude) else geoms
    masked = np.where(excluded_ids(table, every, positives, exclusion_m, negatives), -np.inf, score)
    return rank_masked(masked, which, table, geoms, names, top=top, site_overlap=site_overlap)


def rank_masked(
    masked: np.ndarray,
    which: np.ndarray,
    table: Any,
    deposits: Sequence[Any] | np.ndarray,
    names: Sequence[str],
    *,
    top: int,
    site_overlap: float | None,
) -> Any:
    """The ranking of scores already masked (-inf: excluded or not scored), as :func:`rank_scored` gives it.

    ``table`` needs only ``geometry.values[ids]``, ``[column].take(ids)`` and the candidates'
    rows: an added scene ranks over a coast's kept scores reading the footprints of the
    candidates alone (:mod:`outcrop.search.analogue_state`).
    """
    import pandas as pd
    import shapely

    geoms = np.asarray(deposits, dtype=object)
    best = top_sites(masked, table, top, site_overlap)
    n = len(best)
    nearest, dist = nearest_geometry(shapely.centroid(np.asarray(table.geometry.values[best])), geoms)
    query_names = np.array(["set", *names], dtype=object)
    return pd.DataFrame(
        {
            "rank": np.arange(1, n + 1, dtype=np.int64),
            "score": masked[best].astype(np.float64),
            "id": best.astype(np.int64),
            # Rows taken before converting: a whole column of a million Arrow strings takes 80 ms to convert.
            "scene": table["scene"].take(best).to_numpy(),
            "tile_id": table["tile_id"].take(best).to_numpy(),
            "nearest_positive": np.array(names, dtype=object)[nearest] if n else np.array([], dtype=object),
            "distance_km": dist / 1000.0,
            "query": query_names[which[best]],
        }
    )


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
    state_dir: Path | None = None,
    log: Callable[[str], Any] = print,
) -> None:
    """Rank analogue sites of the deposits and write them (GeoPackage + CSV) and per-scene similarity COGs.

    ``site_overlap``: see :func:`rank_analogues`; the similarity rasters hold every tile's score.
    Deposits that meet no indexed tile are named in a warning in the log and left out of the
    queries (their ground is still excluded); if none meets a tile, nothing can be searched for.
    A marks file of ``outcrop serve`` may be both ``deposits_path`` (its ``positives`` layer) and
    ``negatives_path`` (its ``negatives`` layer).

    With ``state_dir``, every tile's score, the queries and the similarity rasters are kept there,
    and a later call with the same deposits whose new tiles (an added scene's) select no positive
    or negative scores those alone (:mod:`outcrop.search.analogue_state`).
    """
    check_deposits_size(deposits_path)
    if negatives_path is not None:
        check_deposits_size(negatives_path, role="negatives")
    key = analogue_state.query_key(deposits_path, negatives_path, buffer_m, exclusion_km) if state_dir else None
    inputs = (index_path, table_path, embedding_paths, prepared_paths, deposits_path, negatives_path)
    outs = (Path(out_gpkg), Path(out_csv), Path(similarity_dir))
    ranking = _Ranking(buffer_m, exclusion_km * 1000.0, top, site_overlap)
    if state_dir is not None and _add_scenes(Path(state_dir), key, inputs, outs, ranking, log=log):
        return
    _whole_way(inputs, outs, ranking, None if state_dir is None else Path(state_dir), key, log)


@dataclass(frozen=True)
class _Ranking:
    """How positives are matched and analogues ranked: the find_analogues settings an add reuses."""

    buffer_m: float
    exclusion_m: float
    top: int
    site_overlap: float | None


def _whole_way(
    inputs: tuple[Path, Path, Sequence[Path], Sequence[Path], Path, Path | None],
    outs: tuple[Path, Path, Path],
    ranking: _Ranking,
    state_dir: Path | None,
    key: dict[str, Any] | None,
    log: Callable[[str], Any],
) -> None:
    """Score every indexed tile, rank and write the analogues and similarity rasters; with
    ``state_dir``, keep the scores, queries and rasters there for a later add."""
    index_path, table_path, embedding_paths, prepared_paths, deposits_path, negatives_path = inputs
    similarity_dir = outs[2]
    buffer_m = ranking.buffer_m
    _, table = load_index(index_path, table_path)
    source = table_vector_source(table, embedding_paths)  # a coast's vectors: read a chunk at a time
    deposits = read_deposits(deposits_path, table.crs)
    positives, unmatched = matched_positives(deposits_path, table, deposits, buffer_m, log)
    kept = np.setdiff1d(np.arange(len(deposits)), unmatched)
    log(
        f"{len(kept):,} deposits select {sum(len(p) for p in positives):,} positive tiles "
        f"({len(distinct_groups(positives)[1]):,} distinct sets, one query each)"
    )
    negatives = None
    if negatives_path is not None:
        negatives, _ = matched_positives(
            negatives_path, table, read_deposits(negatives_path, table.crs, role="negatives"), buffer_m, log
        )
    # the queries are held (and kept with ``state_dir``: an added scene's tiles are scored against them as these are)
    queries, labels = kept_queries(source, positives, negatives)
    score, which = score_source(source, queries, labels)
    geometry = deposits.geometry.to_numpy()
    every = np.concatenate([geometry[kept], geometry[unmatched]])
    excluded = excluded_ids(table, every, positives, ranking.exclusion_m, negatives)
    ranked = _rank_and_write(np.where(excluded, -np.inf, score), which, table, deposits, kept, ranking, outs)
    layout = table_layout(table_path, table)  # the grid the tiles were cut on, as the index table records it
    rasters = Path(state_dir) / "similarity" if state_dir is not None else Path(similarity_dir)
    if state_dir is not None:
        import shutil

        shutil.rmtree(rasters, ignore_errors=True)
    write_similarity(prepared_paths, table, layout, score, rasters)
    if state_dir is not None:
        assert key is not None  # made whenever there is a state folder
        analogue_state.save(
            Path(state_dir),
            key,
            table_path,
            embedding_paths,
            queries,
            labels,
            kept,
            score,
            which,
            excluded,
            layout,
            rasters,
            Path(similarity_dir),
            [scene_of(p) for p in prepared_paths],
        )
    log(f"wrote {len(ranked)} analogues; best score {ranked['score'].max() if len(ranked) else float('nan'):.3f}")


def _rank_and_write(
    masked: np.ndarray,
    which: np.ndarray,
    rows: Any,
    deposits: Any,
    matched: np.ndarray,
    ranking: _Ranking,
    outs: tuple[Path, Path, Path],
) -> Any:
    """Rank the sites of ``masked`` scores (:func:`rank_masked`, nearest of the ``matched`` deposits
    named) and write them as GeoPackage and CSV (``outs``), with :func:`analogue_table` of ``rows``."""
    geoms = deposits.geometry.to_numpy()
    names = deposits["name"].to_numpy()[matched].tolist()
    ranked = rank_masked(masked, which, rows, geoms[matched], names, top=ranking.top, site_overlap=ranking.site_overlap)
    ranked = analogue_table(ranked, rows)
    write_geodataframe(outs[0], ranked, layer="analogues")
    with atomic_path(outs[1]) as tmp:
        tmp.write_text(analogues_csv(ranked), encoding="utf-8")
    return ranked


def _add_scenes(
    state_dir: Path,
    key: dict[str, Any] | None,
    inputs: tuple[Path, Path, Sequence[Path], Sequence[Path], Path, Path | None],
    outs: tuple[Path, Path, Path],
    ranking: _Ranking,
    *,
    log: Callable[[str], Any],
) -> bool:
    """Score the tiles of scenes added since the kept scores (:mod:`outcrop.search.analogue_state`)
    and rank over all; False when the kept state does not hold (the caller goes the whole way).

    ``inputs``: the index, its id table, the embeddings and prepared scenes, the deposits and the
    negatives (or None); ``outs``: the analogues GeoPackage and CSV and the similarity folder."""
    index_path, table_path, embedding_paths, prepared_paths, deposits_path, negatives_path = inputs
    similarity_dir = outs[2]
    buffer_m, exclusion_m = ranking.buffer_m, ranking.exclusion_m

    kept = analogue_state.open_kept(state_dir, key, index_path, table_path, embedding_paths)
    if kept is None:
        return False
    new, opened = kept.new, kept.opened
    deposits = read_deposits(deposits_path, opened.crs)
    marks = [deposits] + ([read_deposits(negatives_path, opened.crs, role="negatives")] if negatives_path else [])
    if len(new) and any(_meets(new, m, buffer_m) for m in marks):
        log("analogues: an added scene holds tiles of the deposits or negatives: ranking the whole way")
        return False
    queries, labels, matched = analogue_state.read_queries(state_dir)
    if len(matched) and int(matched.max()) >= len(deposits):
        return False
    unmatched = np.setdiff1d(np.arange(len(deposits)), matched)
    if len(unmatched):
        log(f"{deposits_path}: {unmatched_warning(deposits, unmatched)}")
    geoms = deposits.geometry.to_numpy()
    if len(new):
        source = table_source(
            new["scene"].astype(str).to_numpy(), new["tile_id"].to_numpy(), lambda s: kept.by_scene[s]
        )
        score, which = score_source(source, queries, labels)
        analogue_state.append(state_dir, score, which, excluded_ids(new, geoms, [], exclusion_m))
    arrays = analogue_state.read_scores(state_dir, opened.count)
    masked = np.where(arrays[2].astype(bool), -np.inf, arrays[0])
    rows = analogue_state.CandidateRows(opened)
    ranked = _rank_and_write(masked, arrays[1].astype(np.int64), rows, deposits, matched, ranking, outs)
    drawn = [p for p in prepared_paths if scene_of(p) in set(kept.new_scenes)]
    write_similarity(drawn, new, analogue_state.layout_of(kept), arrays[0][kept.count :], state_dir / "similarity")
    analogue_state.finish(state_dir, key, kept, Path(similarity_dir), prepared_paths)
    log(
        f"analogues: {len(new)} tiles of {len(kept.new_scenes)} added scene(s) scored, {opened.count} ranked from "
        f"kept scores; wrote {len(ranked)} analogues"
    )
    return True


def _meets(table: Any, marks: Any, buffer_m: float) -> bool:
    """Whether any of ``marks`` (deposits or negatives) selects a tile of ``table``, as the positives are matched."""
    positives, _ = match_shapes(table.sindex, np.asarray(marks.geometry.values), buffer_m=buffer_m)
    return bool(positives)


def write_similarity(prepared_paths: Sequence[Path], table: Any, layout: Any, score: np.ndarray, folder: Path) -> None:
    """``folder/{scene}.tif``: each tile's best cosine over the queries at its cell, per scene."""
    for scene, grid, raster, transform in scene_rasters(prepared_paths, table, layout, score, np.nan, np.float32):
        write_cog(
            Path(folder) / f"{scene}.tif",
            raster,
            {"crs": grid.crs, "transform": transform, "nodata": np.nan},
            band_names=["similarity"],
            resampling="average",
        )


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


def matched_positives(
    path: Path, table: Any, deposits: Any, buffer_m: float, log: Callable[[str], Any]
) -> tuple[list[np.ndarray], np.ndarray]:
    """:func:`match_deposits`, with a warning in ``log`` naming the deposits that meet no tile; an
    error naming the file when none does."""
    positives, unmatched = match_deposits(table, deposits, buffer_m=buffer_m)
    if not positives:
        first = f"deposit {deposit_label(deposits, int(unmatched[0]))}"
        raise OutcropError(
            f"{path}: {first} meets no indexed tile (outside every scene, or on ground that was not "
            "indexed)" + (f", nor does any other of its {len(unmatched):,} deposits" if len(unmatched) > 1 else "")
        )
    if len(unmatched):
        log(f"{path}: {unmatched_warning(deposits, unmatched)}")
    return positives, unmatched
