"""The geological unit under each tile, from a unit map the user already has.

A unit map is either **polygons** with a unit field (GeoPackage, Shapefile, GeoJSON, FlatGeobuf) or
a **class raster** (a GeoTIFF of integer classes). It may be in any CRS: it is brought onto the run
grid window by window, polygons reprojected and rasterised at pixel centres, a raster warped with
nearest-neighbour resampling, so that both read the unit at the centre of each run pixel and a map
given both ways gives the same tiles the same unit.

**Which unit a tile gets.** The majority unit of the run pixels under its footprint, when that unit
covers at least ``units.min_share`` of them (default 0.6); a tile without such a unit (a contact
running through it, ground the map leaves blank) is left out of every score. With several maps
(the demo: one truth raster per scene), each is read and the tile takes the unit with the largest
share.

**Unit names.** Polygons: the field's values, as text. A raster: the GDAL category names in the
``.aux.xml`` beside it (what QGIS and ``gdal_translate`` keep), else a ``units`` dataset tag of
comma-separated names (value n is the n-th name, the demo's truth rasters), else the value itself.
Value 0, negative values and the raster's nodata value are no unit; so are empty field values.

**Memory.** The map is never rasterised whole: tiles are grouped into windows of at most
:data:`WINDOW_PX` run pixels a side (plus one tile), and each window is rasterised on its own;
polygons are read region by region (:data:`REGION_WINDOWS` windows a side), through the file's
spatial filter.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from outcrop.errors import OutcropError

WINDOW_PX = 2048  # run pixels per side of the window a map is rasterised in, at most (plus one tile)
REGION_WINDOWS = 8  # windows per side of a region whose polygons are read at once
VECTOR_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".gml", ".kml", ".sqlite")
POLYGONAL = ("Polygon", "MultiPolygon", "Polygon Z", "MultiPolygon Z", "Unknown", "Geometry")


@dataclass
class UnitMap:
    """An opened unit map: where it is, what it is, its CRS and how its values are named."""

    path: Path
    kind: str  # "polygons" or "raster"
    crs: Any
    bounds: tuple[float, float, float, float]  # in its own CRS
    field: str | None = None
    names: dict[int, str] = dataclasses.field(default_factory=dict)  # raster value (or polygon code) -> unit name
    codes: dict[str, int] = dataclasses.field(default_factory=dict)  # polygons: unit name -> the code it is burnt as

    def name_of(self, value: int) -> str:
        """The unit name of a raster value or polygon code."""
        return self.names.get(int(value), str(int(value)))

    def code_of(self, name: str) -> int:
        """The code a polygon's unit is burnt as (1, 2, ... in the order names are met)."""
        if name not in self.codes:
            self.codes[name] = len(self.codes) + 1
            self.names[self.codes[name]] = name
        return self.codes[name]


def open_unit_map(path: str | os.PathLike[str], field: str = "unit") -> UnitMap:
    """Open a unit map and check it: readable, with a CRS, polygons with ``field`` or integer classes.

    Raises :class:`OutcropError` with one line naming the file (and the field) otherwise.
    """
    path = Path(path)
    if not path.exists():
        raise OutcropError(f"{path}: unit map not found")
    if path.suffix.lower() in VECTOR_SUFFIXES:
        return _open_polygons(path, field)
    try:
        return _open_raster(path)
    except _NotRaster as exc:
        try:
            return _open_polygons(path, field)
        except _NotVector:
            raise OutcropError(
                f"{path}: not a readable unit map: neither polygons nor a class raster ({exc})"
            ) from None


class _NotRaster(Exception):
    pass


class _NotVector(Exception):
    pass


def _open_polygons(path: Path, field: str) -> UnitMap:
    import pyogrio

    try:
        info = pyogrio.read_info(str(path), force_total_bounds=True)
    except Exception as exc:
        if path.suffix.lower() in VECTOR_SUFFIXES:
            raise OutcropError(f"{path}: not a readable unit map ({_one_line(exc)})") from None
        raise _NotVector(str(exc)) from None
    fields = [str(f) for f in info.get("fields", [])]
    if field not in fields:
        raise OutcropError(
            f"{path}: the unit map has no field '{field}' (fields: {', '.join(fields) or 'none'}); "
            "set units.field to the field that names each polygon's unit"
        )
    if info.get("crs") is None:
        raise OutcropError(f"{path}: the unit map has no CRS (unknown coordinate system)")
    geometry = str(info.get("geometry_type") or "Unknown")
    if geometry not in POLYGONAL:
        raise OutcropError(f"{path}: the unit map holds {geometry} geometries; a unit map holds polygons")
    bounds = info.get("total_bounds")
    bounds = tuple(float(v) for v in bounds) if bounds is not None else (-np.inf, -np.inf, np.inf, np.inf)
    return UnitMap(path, "polygons", info["crs"], bounds, field=field)


def _open_raster(path: Path) -> UnitMap:
    import rasterio

    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise _NotRaster(_one_line(exc)) from None
    with src:
        if src.crs is None:
            raise OutcropError(f"{path}: the unit map has no CRS (unknown coordinate system)")
        if src.count < 1:
            raise OutcropError(f"{path}: the unit raster has no band")
        dtype = np.dtype(src.dtypes[0])
        if dtype.kind not in "iu":
            raise OutcropError(f"{path}: a unit raster holds integer classes; found {dtype.name} values")
        names = _raster_names(path, src.tags())
        return UnitMap(path, "raster", src.crs, tuple(src.bounds), names=names)


def _raster_names(path: Path, tags: dict[str, str]) -> dict[int, str]:
    """Value -> unit name: GDAL category names, else the ``units`` tag (value n is the n-th name)."""
    from outcrop.io import read_categories

    named = read_categories(path).get(1, {})
    if named:
        return {int(v): str(n) for v, n in named.items()}
    listed = [n.strip() for n in tags.get("units", "").split(",")]
    return {i: n for i, n in enumerate(listed, start=1) if n}


def _one_line(exc: BaseException) -> str:
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__


def extent_in(umap: UnitMap, crs: Any) -> tuple[float, float, float, float]:
    """The map's bounding box in ``crs`` (densified edges; infinite when the file gives none)."""
    from rasterio.warp import transform_bounds

    if not np.all(np.isfinite(umap.bounds)):
        return (-np.inf, -np.inf, np.inf, np.inf)
    try:
        return tuple(transform_bounds(umap.crs, crs, *umap.bounds, densify_pts=21))
    except Exception:  # a map reaching where the run CRS is undefined: filter nothing
        return (-np.inf, -np.inf, np.inf, np.inf)


@dataclass
class UnitReader:
    """Rasterises one map into run-grid windows; polygons are read a region at a time."""

    umap: UnitMap
    run_crs: Any
    _src: Any = None
    _region: tuple[float, ...] | None = None
    _polygons: Any = None

    def __enter__(self) -> UnitReader:
        if self.umap.kind == "raster":
            import rasterio

            self._src = rasterio.open(self.umap.path)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._src is not None:
            self._src.close()

    def region(self, box: tuple[float, float, float, float]) -> None:
        """Read the polygons that reach into ``box`` (run CRS), reprojected to the run CRS."""
        if self.umap.kind != "polygons":
            return
        from rasterio.warp import transform_bounds

        try:
            bbox = tuple(transform_bounds(self.run_crs, self.umap.crs, *box, densify_pts=21))
        except Exception as exc:
            raise OutcropError(
                f"{self.umap.path}: the run's area cannot be expressed in the unit map's CRS ({_one_line(exc)})"
            ) from None
        self._polygons = _read_polygons(self.umap, bbox, self.run_crs)
        self._region = box

    def window(self, transform: Any, shape: tuple[int, int]) -> np.ndarray:
        """Codes (int64, 0 = no unit) of the map on a run-grid window."""
        if self.umap.kind == "raster":
            return _warped(self._src, transform, shape, self.run_crs)
        return _burnt(self.umap, self._polygons, transform, shape)


def _read_polygons(umap: UnitMap, bbox: tuple[float, ...], run_crs: Any) -> Any:
    """(geometries in the run CRS, codes) of the map's polygons in ``bbox`` (the map's CRS)."""
    import pyogrio

    try:
        if ";" in os.fspath(umap.path):  # pyogrio reads such a name as a URL: read the bytes
            frame = pyogrio.read_dataframe(umap.path.read_bytes(), columns=[umap.field], bbox=bbox)
        else:
            frame = pyogrio.read_dataframe(str(umap.path), columns=[umap.field], bbox=bbox)
    except Exception as exc:
        raise OutcropError(f"{umap.path}: not a readable unit map ({_one_line(exc)})") from None
    if frame.crs is None:
        frame = frame.set_crs(umap.crs)
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    values = frame[umap.field]
    keep = values.notna().to_numpy() & (values.astype(str).str.strip() != "").to_numpy()
    frame = frame[keep]
    if frame.empty:
        return [], np.zeros(0, dtype=np.int64)
    frame = frame.to_crs(run_crs)
    names = [_value_name(v) for v in frame[umap.field]]
    codes = np.array([umap.code_of(n) for n in names], dtype=np.int64)
    return frame.geometry.to_numpy(), codes


def _value_name(value: Any) -> str:
    """A field value as a unit name: whole numbers without a decimal point (3.0 and 3 name one unit)."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def _burnt(umap: UnitMap, polygons: Any, transform: Any, shape: tuple[int, int]) -> np.ndarray:
    """Polygons burnt into a window at pixel centres (a later polygon wins where they overlap)."""
    import shapely
    from rasterio.features import rasterize

    geoms, codes = polygons if polygons is not None else ([], np.zeros(0, dtype=np.int64))
    out = np.zeros(shape, dtype=np.int64)
    if len(codes) == 0:
        return out
    x0, y0 = transform.c, transform.f
    box = shapely.box(x0, y0 + transform.e * shape[0], x0 + transform.a * shape[1], y0)
    hit = np.flatnonzero(shapely.intersects(geoms, box))
    if len(hit) == 0:
        return out
    return rasterize(
        ((geoms[i], int(codes[i])) for i in hit), out_shape=shape, transform=transform, fill=0, dtype="int32"
    ).astype(np.int64)


def _warped(src: Any, transform: Any, shape: tuple[int, int], run_crs: Any) -> np.ndarray:
    """A class raster warped onto a window, nearest neighbour (the class at each pixel centre)."""
    import rasterio
    from rasterio.warp import Resampling, reproject

    out = np.zeros(shape, dtype=np.float64)
    nodata = src.nodata if src.nodata is not None else 0
    try:
        reproject(
            rasterio.band(src, 1),
            out,
            dst_transform=transform,
            dst_crs=run_crs,
            resampling=Resampling.nearest,
            src_nodata=nodata,
            dst_nodata=0,
            init_dest_nodata=True,
        )
    except Exception as exc:
        raise OutcropError(f"{src.name}: cannot read the unit raster onto the run grid ({_one_line(exc)})") from None
    codes = out.astype(np.int64)
    codes[(codes < 0) | (codes == nodata)] = 0
    return codes


def _windows(boxes: np.ndarray, res: float) -> Iterator[tuple[tuple[int, int], np.ndarray]]:
    """Tiles grouped into windows of WINDOW_PX run pixels (by their top-left corner): (key, rows)."""
    span = WINDOW_PX * res
    keys = np.column_stack([np.floor(boxes[:, 0] / span), np.floor(-boxes[:, 3] / span)]).astype(np.int64)
    order = np.lexsort((keys[:, 1], keys[:, 0]))
    ordered = keys[order]
    starts = np.flatnonzero(np.r_[True, (ordered[1:] != ordered[:-1]).any(axis=1)])
    for a, b in zip(starts, np.r_[starts[1:], len(order)]):
        yield (int(ordered[a, 0]), int(ordered[a, 1])), order[a:b]


def tile_units(
    footprints: Any,
    sizes: np.ndarray,
    maps: Sequence[UnitMap],
    *,
    min_share: float,
    log: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each tile's unit name (None where no unit covers ``min_share`` of it) and that unit's share.

    ``footprints``: a GeoSeries of tile footprints on the run grid (its CRS is the run CRS);
    ``sizes``: each tile's size in pixels (the run pixel is a footprint's width over it).
    """
    boxes = np.asarray(footprints.bounds.to_numpy(), dtype=np.float64).reshape(-1, 4)
    sizes = np.asarray(sizes, dtype=np.int64)
    names = np.full(len(boxes), None, dtype=object)
    shares = np.zeros(len(boxes))
    if len(boxes) == 0:
        return names, shares
    res = float((boxes[0, 2] - boxes[0, 0]) / sizes[0])
    run_crs = footprints.crs
    windows = list(_windows(boxes, res))
    regions: dict[tuple[int, int], list[tuple[tuple[int, int], np.ndarray]]] = {}
    for key, rows in windows:
        regions.setdefault((key[0] // REGION_WINDOWS, key[1] // REGION_WINDOWS), []).append((key, rows))
    for umap in maps:
        with UnitReader(umap, run_crs) as reader:
            for region in regions.values():
                rows_all = np.concatenate([rows for _, rows in region])
                b = boxes[rows_all]
                reader.region((b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()))
                for _, rows in region:
                    _score_window(reader, umap, boxes, sizes, rows, res, names, shares, min_share)
        if log is not None:
            labelled = sum(n is not None for n in names)
            log(
                f"units: {umap.path.name}: {labelled} of {len(boxes)} tiles with a unit covering "
                f"{min_share:.0%} of them or more"
            )
    return names, shares


def _score_window(
    reader: UnitReader,
    umap: UnitMap,
    boxes: np.ndarray,
    sizes: np.ndarray,
    rows: np.ndarray,
    res: float,
    names: np.ndarray,
    shares: np.ndarray,
    min_share: float,
) -> None:
    """Rasterise the map on the window around ``rows``' tiles; keep each tile's best unit so far."""
    from rasterio.transform import from_origin

    b = boxes[rows]
    left, top = b[:, 0].min(), b[:, 3].max()
    width = int(round((b[:, 2].max() - left) / res))
    height = int(round((top - b[:, 1].min()) / res))
    codes = reader.window(from_origin(left, top, res, res), (height, width))
    for i, (x0, _, _, y1) in zip(rows, b):
        c, r, s = int(round((x0 - left) / res)), int(round((top - y1) / res)), int(sizes[i])
        cell = codes[r : r + s, c : c + s]
        values, counts = np.unique(cell[cell > 0], return_counts=True)
        if len(values) == 0:
            continue
        best = int(np.argmax(counts))
        share = counts[best] / float(s * s)
        if share >= min_share and share > shares[i]:
            names[i], shares[i] = umap.name_of(int(values[best])), share


def open_unit_maps(paths: Sequence[str | os.PathLike[str]], field: str) -> list[UnitMap]:
    """:func:`open_unit_map` of each path, in order (all checked before any is read)."""
    return [open_unit_map(p, field) for p in paths]
