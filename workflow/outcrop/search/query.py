"""Ad-hoc analogue queries against a finished run, answered in well under a second.

A geologist asks "what else looks like this place?" many times in a session, from the command
line. Most of such a call is Python importing libraries, so this path reads the index table with
pyarrow and shapely and never imports pandas or geopandas (about a second of imports on their
own); only a query by an arbitrary vector file (``--geometry``) needs geopandas to read it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from outcrop.errors import OutcropError
from outcrop.layout import Layout
from outcrop.search.index_table import IndexTable

COLUMNS = ("rank", "score", "scene", "tile_id", "id", "distance_km", "lon", "lat")


def _tile_ids(tile: str, table: IndexTable) -> np.ndarray:
    """Index id of a tile named ``scene:tile_id`` (or ``scene/tile_id``)."""
    sep = max(tile.rfind(":"), tile.rfind("/"))
    if sep <= 0:
        raise OutcropError(f"tile {tile!r}: expected SCENE:TILE_ID")
    scene, num = tile[:sep], tile[sep + 1 :]
    try:
        number = int(num)
    except ValueError:
        raise OutcropError(f"tile {tile!r}: tile id {num!r} is not an integer") from None
    hit = table.tile(scene, number)
    if len(hit) == 0:
        raise OutcropError(f"tile {tile!r} is not in the index")
    return hit


def _check_query_args(lon: float | None, lat: float | None, tile: str | None, geometry: Path | None) -> None:
    """Refuse anything but exactly one query (lon and lat together, a tile or a geometry), and out-of-range degrees."""
    given = [lon is not None or lat is not None, tile is not None, geometry is not None]
    if sum(given) != 1 or (given[0] and (lon is None or lat is None)):
        raise OutcropError("query: give exactly one of --lon/--lat (both), --tile or --geometry")
    if lat is not None and not -90 <= lat <= 90:
        raise OutcropError(f"query: --lat {lat:g}: latitude out of range (-90 to 90 degrees)")
    if lon is not None and not -180 <= lon <= 180:
        raise OutcropError(f"query: --lon {lon:g}: longitude out of range (-180 to 180 degrees)")


def _open_index(run: Layout) -> tuple[IndexTable, Any]:
    """The run's index table (its footer only) and its FAISS index (mapped), refused unless they match.

    Rows are read later by position, tile statistics or row-group bounds, as needed, so opening costs
    the footer and the index header, not the collection.
    """
    from outcrop.search.faiss_file import read_index

    index_path = Path(run.index)
    table_path = Path(run.index_table)
    table = IndexTable.open(table_path)
    if not index_path.exists():
        raise OutcropError(f"{index_path}: file not found")
    index = read_index(index_path, mapped=True)  # its header's claims checked against the file first
    if index.ntotal != table.count:
        raise OutcropError(
            f"{index_path} holds {index.ntotal} vectors but {table_path} has {table.count} rows; "
            "they come from different builds"
        )
    return table, index


def _query_ids(
    table: IndexTable,
    to_run: Any,
    lon: float | None,
    lat: float | None,
    tile: str | None,
    geometry: Path | None,
) -> np.ndarray:
    """The sorted table rows of the query's tiles: the tile named, or those meeting the geometry or the point."""
    import shapely

    if tile is not None:
        ids = _tile_ids(tile, table)
    elif geometry is not None:
        from outcrop.search.analogues import read_deposits

        shapes = read_deposits(geometry, table.crs).geometry.to_numpy()
        ids = table.meeting(shapely.union_all(shapes))
        if len(ids) == 0:
            raise OutcropError(f"{geometry}: meets no indexed tile")
    else:
        x, y = to_run.transform(lon, lat)
        ids = table.meeting(shapely.Point(x, y))
        if len(ids) == 0:
            raise OutcropError(f"lon {lon}, lat {lat}: meets no indexed tile")
    return np.sort(ids)


def mean_query(vectors: np.ndarray, dim: int, where: Any) -> np.ndarray:
    """The unit mean of the query tiles' vectors, (1, dim) float32, refused when ``dim`` is not the index's.

    ``where`` names the embeddings in the error: a dimension mismatch means the index predates them.
    """
    query = vectors.mean(axis=0, keepdims=True)
    if query.shape[1] != dim:
        raise OutcropError(
            f"{where}: embeddings have dimension {query.shape[1]} but the index has {dim}; rebuild the index"
        )
    query /= np.linalg.norm(query) or 1.0
    return np.ascontiguousarray(query, dtype=np.float32)


def _nearest_apart(
    index: Any, query: np.ndarray, near: np.ndarray, top: int, vectors_of: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The ``top`` best (rows, scores) from the index, leaving out the rows in ``near``.

    Asks for ``top + len(near)`` so that the left-out rows cannot shorten the answer. Compressed codes
    rank approximately: their best candidates are re-ranked on exact vectors.
    """
    from outcrop.search.vectors import is_quantised, rerank, rerank_count, unit_rows

    k = int(min(index.ntotal, top + len(near)))
    if is_quantised(index):
        _, candidates = index.search(query, rerank_count(k, index.ntotal))
        score, found = rerank(query, candidates, lambda wanted: unit_rows(vectors_of(wanted)), k)
    else:
        score, found = index.search(query, k)
    keep = (found[0] >= 0) & ~np.isin(found[0], near)
    return found[0][keep][:top], score[0][keep][:top]


def _answer_columns(
    table: IndexTable, found: np.ndarray, score: np.ndarray, origin: Any, to_run: Any
) -> dict[str, np.ndarray]:
    """The answer as columns ``COLUMNS``: rank, score, tile, and each tile's centre (lon/lat, km from the query)."""
    import shapely

    answers = table.rows(found)
    centres = shapely.centroid(answers.footprints)
    cx, cy = shapely.get_x(centres), shapely.get_y(centres)
    centre = shapely.centroid(origin)
    lons, lats = to_run.transform(cx, cy, direction="INVERSE")
    return {
        "rank": np.arange(1, len(found) + 1, dtype=np.int64),
        "score": score.astype(np.float64),
        "scene": answers.scenes,
        "tile_id": answers.tile_ids,
        "id": found.astype(np.int64),
        "distance_km": np.hypot(cx - shapely.get_x(centre), cy - shapely.get_y(centre)) / 1000.0,
        "lon": np.asarray(lons, dtype=np.float64),
        "lat": np.asarray(lats, dtype=np.float64),
    }


def query_columns(
    results_dir: Path,
    *,
    lon: float | None = None,
    lat: float | None = None,
    tile: str | None = None,
    geometry: Path | None = None,
    top: int = 10,
) -> dict[str, np.ndarray]:
    """The tiles most like a place (lon/lat), a tile (``scene:tile_id``) or a geometry file.

    The query is the mean of the selected tiles' vectors; they and the tiles overlapping them are
    left out of the answer. Returns columns ``COLUMNS``, best first.
    """
    import shapely
    from pyproj import Transformer

    _check_query_args(lon, lat, tile, geometry)
    run = Layout(Path(results_dir))
    table_path = Path(run.index_table)
    table, index = _open_index(run)
    to_run = Transformer.from_crs("EPSG:4326", table.crs, always_xy=True)
    ids = _query_ids(table, to_run, lon, lat, tile, geometry)
    chosen = table.rows(ids)

    def vectors_of(wanted: np.ndarray) -> np.ndarray:
        rows = chosen if wanted is ids else table.rows(wanted, geometry=False)
        return _embedding_rows(run, table_path, rows.scenes, rows.tile_ids)

    query = mean_query(vectors_of(ids), index.d, run.embeddings_folder)
    # The query tiles and those sharing ground with them (touching edges is not sharing).
    origin = shapely.union_all(chosen.footprints)
    near = np.union1d(table.meeting(origin, area=True), ids)
    found, score = _nearest_apart(index, query, near, top, vectors_of)
    return _answer_columns(table, found, score, origin, to_run)


def _embedding_rows(run: Layout, table_path: Path, scenes: np.ndarray, tile_ids: np.ndarray) -> np.ndarray:
    """Embeddings (float32, as stored) of rows of ``scenes`` and ``tile_ids``, read from the
    memory-mapped per-scene files."""
    out: np.ndarray | None = None
    for scene in np.unique(scenes):
        path = Path(run.embeddings(str(scene)))
        try:
            emb = np.load(path, mmap_mode="r", allow_pickle=False)
        except (FileNotFoundError, ValueError, OSError) as exc:
            raise OutcropError(f"{path}: cannot read embeddings ({exc})") from None
        where = np.flatnonzero(scenes == scene)
        rows = tile_ids[where]
        if emb.ndim != 2:
            raise OutcropError(f"{path}: embeddings of shape {emb.shape}, expected (tiles, dimension)")
        outside = rows[(rows < 0) | (rows >= len(emb))]
        if len(outside):
            raise OutcropError(
                f"{table_path}: tile_id {int(outside[0])} of scene {str(scene)!r} is outside {path} "
                f"({len(emb)} tiles); the index and the embeddings come from different runs"
            )
        if out is None:
            out = np.empty((len(scenes), emb.shape[1]), dtype=np.float32)
        elif emb.shape[1] != out.shape[1]:
            raise OutcropError(f"{path}: embedding dimension {emb.shape[1]}, other scenes have {out.shape[1]}")
        order = np.argsort(rows, kind="stable")
        out[where[order]] = emb[rows[order]]
    assert out is not None  # never empty here
    return out


def format_table(columns: dict[str, np.ndarray]) -> str:
    """A plain-text table of query results, as the command line prints it."""
    formats = {"score": "{:.4f}", "distance_km": "{:.2f}", "lon": "{:.5f}", "lat": "{:.5f}"}
    cells = [[formats.get(name, "{}").format(v) for v in columns[name]] for name in COLUMNS]
    widths = [max([len(name)] + [len(c) for c in col]) for name, col in zip(COLUMNS, cells)]
    lines = ["  ".join(name.rjust(w) for name, w in zip(COLUMNS, widths))]
    for row in zip(*cells):
        lines.append("  ".join(c.rjust(w) for c, w in zip(row, widths)))
    return "\n".join(lines)


def format_csv(columns: dict[str, np.ndarray]) -> str:
    """Query results as CSV (header ``COLUMNS``), full precision, for spreadsheets and scripts; text
    cells quoted and formula-safe as in every CSV of the project (:mod:`outcrop.csvfile`)."""
    import csv
    import io

    from outcrop.csvfile import csv_cell

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)
    writer.writerow(COLUMNS)
    for row in zip(*(columns[name] for name in COLUMNS)):
        writer.writerow([csv_cell(v.item() if isinstance(v, np.generic) else v) for v in row])
    return buf.getvalue().rstrip("\n")


def format_geojson(columns: dict[str, np.ndarray]) -> str:
    """Query results as a GeoJSON FeatureCollection (RFC 7946: WGS 84 longitude, latitude): one
    point per answer at its tile's centre, the other columns as properties; a GIS opens it as is."""
    features = []
    for i in range(len(columns["rank"])):
        props = {
            name: columns[name][i].item() if isinstance(columns[name][i], np.generic) else columns[name][i]
            for name in COLUMNS
        }
        props["scene"] = str(props["scene"])
        features.append(
            {
                "type": "Feature",
                "properties": props,
                "geometry": {"type": "Point", "coordinates": [props["lon"], props["lat"]]},
            }
        )
    return json.dumps({"type": "FeatureCollection", "features": features}, indent=1)


FORMATS = {"table": format_table, "csv": format_csv, "geojson": format_geojson}


def query_run(
    results_dir: Path,
    *,
    lon: float | None = None,
    lat: float | None = None,
    tile: str | None = None,
    geometry: Path | None = None,
    top: int = 10,
) -> Any:
    """Ad-hoc query against a finished run, as a DataFrame (see :func:`query_columns`).

    Exactly one of (lon and lat in EPSG:4326), ``tile`` (``scene:tile_id``) or ``geometry`` (a
    deposits-style file) selects the query tiles; their mean vector is searched in the run's index.
    The query tiles and tiles overlapping them are left out. Columns: rank, score, scene, tile_id,
    id, distance_km (from the query), lon, lat.
    """
    import pandas as pd

    return pd.DataFrame(query_columns(results_dir, lon=lon, lat=lat, tile=tile, geometry=geometry, top=top))
