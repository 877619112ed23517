"""The index's id table (``index/tiles.parquet``), written so that a query reads a few row groups.

At coast scale the table holds ten million rows, one footprint each; decoding them all takes
seconds, while one query needs a handful: the query tile, the tiles sharing ground with it and the
k answers. So the table is written in row groups of ``ROW_GROUP`` rows, and its footer carries,
under the key ``outcrop_index``, each row group's first id, row count and footprint bounds. A
reader then finds:

- the rows of given ids by position (ids are row numbers);
- the rows of a tile ``scene:tile_id`` through Parquet's own min/max statistics of ``scene`` and
  ``tile_id`` (each scene's rows are contiguous, its tile ids ascending);
- the rows meeting a shape through the row groups' bounds,

and decodes footprints of those rows only. The footer also records the tile grid the tiles were cut on
(``tile_grid``: size, stride and clear fraction, copied from the tile tables), which the per-tile
rasters of the clusters and analogues are laid on. The file stays plain GeoParquet: every other
reader (geopandas) reads it whole as before. A table without the key (an older run) is still read
correctly, only without the spatial shortcut, and its tile grid inferred from the tiles' offsets.

Adding a scene appends its rows in place (:func:`append_index_table`, :mod:`outcrop.parquet_append`):
the new rows follow in new row groups with their bounds, and the kept rows are not read or written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from outcrop.errors import OutcropError
from outcrop.limits import check_scene_ids
from outcrop.raster.geo import TileLayout

ROW_GROUP = 16_384
META_KEY = b"outcrop_index"
COLUMNS = ("id", "scene", "tile_id", "geometry")


def _arrow(table: Any) -> Any:
    """A GeoDataFrame as an Arrow table with its GeoParquet metadata (as ``to_parquet`` writes it)."""
    from geopandas.io.arrow import _geopandas_to_arrow

    return _geopandas_to_arrow(table, index=False)


def _group_bounds(geometry: Any, start: int, row_group: int) -> list[list[float]]:
    """[first id, rows, xmin, ymin, xmax, ymax] of each ``row_group`` slice of ``geometry``."""
    import shapely

    bounds = shapely.bounds(np.asarray(geometry))
    out = []
    for lo in range(0, len(bounds), row_group):
        b = bounds[lo : lo + row_group]
        out.append(
            [
                start + lo,
                len(b),
                float(np.nanmin(b[:, 0])),
                float(np.nanmin(b[:, 1])),
                float(np.nanmax(b[:, 2])),
                float(np.nanmax(b[:, 3])),
            ]
        )
    return out


def write_index_table(
    path: Path, new: Any, *, kept: Path | None = None, row_group: int = ROW_GROUP, tile_grid: TileLayout | None = None
) -> None:
    """Write the id table ``path``: ``kept``'s rows (an earlier table of this index), then ``new``'s.

    ``new`` is a GeoDataFrame whose ids continue ``kept``'s. Written atomically; the footer records
    every row group's ids and bounds, and ``tile_grid`` (module docstring).
    """
    import pyarrow.parquet as pq

    from outcrop.io import atomic_path

    groups: list[list[float]] = []
    schema = None
    old = None
    if kept is not None:
        old = pq.ParquetFile(kept)
        groups = IndexTable.open(Path(kept)).groups_meta()
    start = int(groups[-1][0] + groups[-1][1]) if groups else 0
    if len(new) and int(new["id"].iloc[0]) != start:
        raise ValueError(f"new ids start at {int(new['id'].iloc[0])}, the kept table ends at {start}")
    table = _arrow(new)
    groups = groups + _group_bounds(new.geometry.to_numpy(), start, row_group)
    meta = dict(table.schema.metadata or {})
    if old is not None:
        geo_new = json.loads(meta[b"geo"])
        geo_old = json.loads(old.schema_arrow.metadata[b"geo"])
        a = geo_old["columns"]["geometry"].get("bbox")
        b = geo_new["columns"]["geometry"].get("bbox")
        if a and b:
            merged = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
            geo_new["columns"]["geometry"]["bbox"] = merged
        meta[b"geo"] = json.dumps(geo_new).encode()
    record: dict[str, Any] = {"row_groups": groups}
    if tile_grid is not None:
        record["tile_grid"] = tile_grid.record()
    meta[META_KEY] = json.dumps(record).encode()
    schema = table.schema.with_metadata(meta)
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        if old is not None:
            for i in range(old.num_row_groups):
                writer.write_table(old.read_row_group(i).cast(schema), row_group_size=row_group)
        if len(new):
            writer.write_table(table.cast(schema), row_group_size=row_group)


def append_index_table(
    path: Path, new: Any, *, row_group: int = ROW_GROUP, tile_grid: TileLayout | None = None
) -> None:
    """Append ``new`` (a GeoDataFrame whose ids continue the table's) to the id table ``path`` in place.

    The footer's row-group records and GeoParquet bounding box are extended, and ``tile_grid``
    recorded as :func:`write_index_table` does; the kept rows' bytes stay as they are. The undo
    record is kept until :func:`outcrop.parquet_append.commit`.
    """
    import pyarrow.parquet as pq

    from outcrop.parquet_append import append_table

    kept = IndexTable.open(Path(path))
    groups = kept.groups_meta()
    start = int(groups[-1][0] + groups[-1][1]) if groups else 0
    if len(new) and int(new["id"].iloc[0]) != start:
        raise ValueError(f"new ids start at {int(new['id'].iloc[0])}, the kept table ends at {start}")
    if not len(new):
        return
    table = _arrow(new)
    old_schema = pq.ParquetFile(path).schema_arrow
    meta = dict(old_schema.metadata or {})
    geo = json.loads(meta[b"geo"])
    box = json.loads(table.schema.metadata[b"geo"])["columns"]["geometry"].get("bbox")
    old_box = geo["columns"]["geometry"].get("bbox")
    if box and old_box:
        geo["columns"]["geometry"]["bbox"] = [
            min(old_box[0], box[0]),
            min(old_box[1], box[1]),
            max(old_box[2], box[2]),
            max(old_box[3], box[3]),
        ]
    meta[b"geo"] = json.dumps(geo).encode()
    record: dict[str, Any] = {"row_groups": groups + _group_bounds(new.geometry.to_numpy(), start, row_group)}
    if tile_grid is not None:
        record["tile_grid"] = tile_grid.record()
    meta[META_KEY] = json.dumps(record).encode()
    schema = old_schema.with_metadata(meta)
    append_table(path, table.select(schema.names).cast(schema), row_group_size=row_group, keep_tail=True)


@dataclass
class Rows:
    """Some rows of an index table: their ids, scenes, tile ids and footprints (shapely)."""

    ids: np.ndarray
    scenes: np.ndarray
    tile_ids: np.ndarray
    footprints: np.ndarray


class IndexTable:
    """An index table opened for reading a few rows: its footer only, until rows are asked for."""

    def __init__(
        self, path: Path, file: Any, crs: Any, groups: list[list[float]] | None, tile_grid: TileLayout | None = None
    ) -> None:
        self.path = path
        self.tile_grid = tile_grid  # as the tile tables recorded it; None in an older table
        self.file = file
        self.crs = crs
        self.count = int(file.metadata.num_rows)
        sizes = [file.metadata.row_group(i).num_rows for i in range(file.num_row_groups)]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        if groups is not None and [int(g[1]) for g in groups] == sizes:
            self.bounds: np.ndarray | None = np.array([g[2:6] for g in groups], dtype=np.float64).reshape(-1, 4)
            self._groups: list[list[float]] | None = groups
        else:
            self.bounds, self._groups = None, None

    @classmethod
    def open(cls, path: Path) -> IndexTable:
        """Open ``path`` and check its columns, CRS and types from the footer alone."""
        import pyarrow as pa
        import pyarrow.parquet as pq
        from pyproj import CRS

        try:
            # ParquetFile, not read_table: the latter loads pyarrow.dataset, which imports pandas.
            file = pq.ParquetFile(path)
            schema = file.schema_arrow
        except FileNotFoundError:
            raise OutcropError(f"{path}: file not found") from None
        except Exception as exc:  # pyarrow raises many kinds
            raise OutcropError(f"{path}: not a readable index table ({exc})") from None
        missing = [c for c in COLUMNS if c not in schema.names]
        if missing:
            raise OutcropError(
                f"{path}: not an index table: no {', '.join(missing)} column "
                f"(it has {', '.join(schema.names) or 'none'})"
            )
        metadata = schema.metadata or {}
        try:
            geo = json.loads(metadata.get(b"geo", b"{}"))
        except ValueError:
            raise OutcropError(f"{path}: index table's GeoParquet metadata is not JSON") from None
        crs_json = geo.get("columns", {}).get("geometry", {}).get("crs") if isinstance(geo, dict) else None
        if crs_json is None:
            raise OutcropError(f"{path}: index table has no CRS")
        if not pa.types.is_integer(schema.field("tile_id").type):
            raise OutcropError(f"{path}: tile_id is not a column of whole numbers")
        try:
            crs = CRS.from_json_dict(crs_json)
        except Exception as exc:  # pyproj raises its own kinds
            raise OutcropError(f"{path}: not a readable index table ({_first_line(exc)})") from None
        try:
            record = json.loads(metadata[META_KEY])
            groups = record["row_groups"]
        except (KeyError, ValueError, TypeError):
            record, groups = {}, None  # an older table: read, only without the spatial shortcut
        grid = record.get("tile_grid") if isinstance(record, dict) else None
        tile_grid = TileLayout.from_record(grid, str(path)) if grid is not None else None
        return cls(Path(path), file, crs, groups if isinstance(groups, list) else None, tile_grid)

    def groups_meta(self) -> list[list[float]]:
        """Row-group records for a table appended to this one (bounds recomputed if the footer lacks them)."""
        if self._groups is not None:
            return [list(g) for g in self._groups]
        out = []
        for i in range(self.file.num_row_groups):
            rows = self._read_group(i, ("geometry",), None)
            out.extend(_group_bounds(rows.footprints, int(self.starts[i]), len(rows.footprints) or 1))
        return out

    def _read_group(self, group: int, columns: tuple[str, ...], take: np.ndarray | None) -> Rows:
        """Rows ``take`` (positions within the group; all when None) of one row group."""
        import shapely

        try:
            part = self.file.read_row_group(group, columns=list(columns))
            if take is not None:
                import pyarrow as pa

                # From a buffer: pa.array and take of a numpy array import pandas.
                where = np.ascontiguousarray(take, dtype=np.int64)
                part = part.take(pa.Array.from_buffers(pa.int64(), len(where), [None, pa.py_buffer(where)]))
            n = part.num_rows
            ids = _ints(part.column("id")) if "id" in columns else np.empty(0, np.int64)
            tiles = _ints(part.column("tile_id")) if "tile_id" in columns else np.empty(0, np.int64)
            scenes = (
                np.array(part.column("scene").to_pylist(), dtype=object).astype(str)
                if "scene" in columns
                else np.empty(0, str)
            )
            feet = (
                shapely.from_wkb(np.array(part.column("geometry").to_pylist(), dtype=object))
                if "geometry" in columns
                else np.empty(0, object)
            )
        except OutcropError:
            raise
        except Exception as exc:  # pyarrow and shapely raise their own kinds
            raise OutcropError(f"{self.path}: not a readable index table ({_first_line(exc)})") from None
        if "scene" in columns:  # ids become paths (embeddings/{scene}.npy): never one outside the run
            check_scene_ids(np.unique(scenes), str(self.path))
        if "id" in columns:
            first = int(self.starts[group])
            expected = first + (np.arange(n) if take is None else np.asarray(take, dtype=np.int64))
            if not np.array_equal(ids, expected):
                raise OutcropError(f"{self.path}: ids are not 0..{self.count - 1} in order")
        return Rows(ids, scenes, tiles, feet)

    def rows(self, ids: np.ndarray, *, geometry: bool = True) -> Rows:
        """The rows of index ids ``ids`` (any order, repeats allowed), in that order; footprints
        only with ``geometry`` (vectors need the scene and tile id alone)."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) and (ids.min() < 0 or ids.max() >= self.count):
            raise OutcropError(f"{self.path}: has {self.count} rows, id {int(ids.max())} asked for")
        group = np.searchsorted(self.starts, ids, side="right") - 1
        out = Rows(
            np.empty(len(ids), np.int64),
            np.empty(len(ids), object),
            np.empty(len(ids), np.int64),
            np.empty(len(ids), object),
        )
        for g in np.unique(group):
            where = np.flatnonzero(group == g)
            local = np.unique(ids[where] - self.starts[g])
            part = self._read_group(int(g), COLUMNS if geometry else COLUMNS[:3], local)
            pos = np.searchsorted(local, ids[where] - self.starts[g])
            out.ids[where], out.scenes[where] = part.ids[pos], part.scenes[pos]
            out.tile_ids[where] = part.tile_ids[pos]
            if geometry:
                out.footprints[where] = part.footprints[pos]
        out.scenes = out.scenes.astype(str)
        return out

    def tile(self, scene: str, number: int) -> np.ndarray:
        """Ids of the rows of tile ``number`` of ``scene`` (row groups pruned by their statistics)."""
        hits = []
        for g in range(self.file.num_row_groups):
            if not (self._may_hold(g, "scene", scene) and self._may_hold(g, "tile_id", number)):
                continue
            part = self._read_group(g, ("id", "scene", "tile_id"), None)
            hits.append(part.ids[(part.scenes == scene) & (part.tile_ids == number)])
        return np.concatenate(hits) if hits else np.empty(0, np.int64)

    def _may_hold(self, group: int, column: str, value: Any) -> bool:
        """False only when the row group's min/max statistics rule ``value`` out."""
        meta = self.file.metadata.row_group(group)
        for j in range(meta.num_columns):
            col = meta.column(j)
            if col.path_in_schema != column:
                continue
            stats = col.statistics
            if stats is None or not stats.has_min_max:
                return True
            try:
                return bool(stats.min <= value <= stats.max)
            except TypeError:
                return True
        return True

    def meeting(self, shape: Any, *, area: bool = False) -> np.ndarray:
        """Ids of the rows whose footprint meets ``shape`` (shares ground with it when ``area``)."""
        import shapely

        xmin, ymin, xmax, ymax = shapely.bounds(shape)
        groups: Sequence[int] | np.ndarray = range(self.file.num_row_groups)
        if self.bounds is not None:
            b = self.bounds
            groups = np.flatnonzero((b[:, 0] <= xmax) & (b[:, 2] >= xmin) & (b[:, 1] <= ymax) & (b[:, 3] >= ymin))
        hits = []
        for g in groups:
            part = self._read_group(int(g), ("id", "geometry"), None)
            if area:
                hit = shapely.area(shapely.intersection(part.footprints, shape)) > 0
            else:
                hit = shapely.intersects(part.footprints, shape)
            hits.append(part.ids[hit])
        return np.concatenate(hits) if hits else np.empty(0, np.int64)


def _ints(column: Any) -> np.ndarray:
    """An integer column as int64 numpy, without pyarrow's ``to_numpy`` (which imports pandas)."""
    import pyarrow as pa

    array = column.combine_chunks()
    if pa.types.is_integer(array.type) and array.null_count == 0:
        width = array.type.bit_width // 8
        kind = "i" if pa.types.is_signed_integer(array.type) else "u"
        return np.frombuffer(
            array.buffers()[1], dtype=f"<{kind}{width}", count=len(array), offset=array.offset * width
        ).astype(np.int64)
    return np.array(array.to_pylist(), dtype=np.int64)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def table_layout(path: Path, table: Any) -> TileLayout:
    """The tile grid of an index table: as recorded in its footer, or (a table of an older run, which
    recorded none) inferred from its tiles' pixel offsets."""
    from outcrop.raster.geo import infer_layout

    recorded = IndexTable.open(Path(path)).tile_grid
    if recorded is not None:
        return recorded
    return infer_layout(
        table["scene"].to_numpy(), table["row"].to_numpy(), table["col"].to_numpy(), table["size"].to_numpy()
    )
