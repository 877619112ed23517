"""Geographic helpers for the offline map: the cursor's lat/lon, a graticule and a coastline.

The map page (``map.html``) draws in the run's projected CRS and carries no projection library, so
everything geographic is computed here, with pyproj, and handed to the page as plain numbers:

- **Cursor readout.** A grid of nodes over the map's extent holds the unit vector of each node's
  position on the sphere, ``(cos lat cos lon, cos lat sin lon, sin lat)``. The page interpolates it
  bilinearly and turns the (renormalised) vector back into lat/lon. Interpolating the vector rather
  than lat/lon themselves is what keeps the readout right where longitude jumps (the antimeridian)
  or is undefined (a pole inside a polar stereographic extent): the vector field is smooth there.
  :func:`interpolate_lonlat` is the same computation in Python, so tests can hold it to pyproj.
- **Graticule.** Lines of constant latitude and longitude at a round spacing chosen from the extent,
  densified in lat/lon and projected, cut where they leave the extent.
- **Coastline.** The water/land boundary of a surface mask (``outcrop.raster.surfaces``) as contour
  lines in projected coordinates; nodata and cloud are left open, so no line follows a scene edge or
  a cloud's outline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from outcrop.raster.surfaces import CLOUD, NODATA, WATER

READOUT_NODES = 33  # grid nodes per side of the readout's lat/lon grid
SPACINGS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # graticule spacings, degrees (30: whole circles)
MAX_LINES = 10  # at most about this many lines of each family across the extent

Box = tuple[float, float, float, float]  # (west, south, east, north) in projected metres


def _to_lonlat(crs: Any) -> Any:
    from pyproj import CRS, Transformer

    return Transformer.from_crs(CRS.from_user_input(crs), "EPSG:4326", always_xy=True)


def _from_lonlat(crs: Any) -> Any:
    from pyproj import CRS, Transformer

    return Transformer.from_crs("EPSG:4326", CRS.from_user_input(crs), always_xy=True)


def unit_vectors(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """(..., 3) unit vectors on the sphere of lon/lat in degrees."""
    lo, la = np.radians(lon), np.radians(lat)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


def lonlat_of(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """lon/lat in degrees of (..., 3) vectors (any length but zero)."""
    x, y, z = vectors[..., 0], vectors[..., 1], vectors[..., 2]
    return np.degrees(np.arctan2(y, x)), np.degrees(np.arctan2(z, np.hypot(x, y)))


def padded(box: Box, fraction: float) -> Box:
    """``box`` grown by ``fraction`` of its width and height on every side."""
    w, s, e, n = box
    dx, dy = (e - w) * fraction, (n - s) * fraction
    return (w - dx, s - dy, e + dx, n + dy)


def readout_grid(crs: Any, box: Box, nodes: int = READOUT_NODES) -> dict[str, Any]:
    """The cursor readout's grid: ``box``, ``nodes`` per side and the unit vectors, row 0 at the south.

    ``vectors`` is a flat list, node (i, j) (row i from the south, column j from the west) at
    ``3 * (i * nodes + j)``, rounded to 7 decimals (about 6 mm on the ground: the page's JSON stays
    small and the readout is exact to far better than its 4 shown decimals).
    """
    w, s, e, n = box
    if not (e > w and n > s) or not all(map(math.isfinite, box)):
        raise ValueError(f"empty or invalid map extent {box}")
    xs, ys = np.linspace(w, e, nodes), np.linspace(s, n, nodes)
    gx, gy = np.meshgrid(xs, ys)
    lon, lat = _to_lonlat(crs).transform(gx, gy)
    vectors = unit_vectors(np.asarray(lon), np.asarray(lat))
    if not np.isfinite(vectors).all():
        raise ValueError(f"the map extent {box} reaches outside the area of {crs}")
    return {"box": [float(v) for v in box], "nodes": nodes, "vectors": np.round(vectors, 7).ravel().tolist()}


def interpolate_lonlat(grid: dict[str, Any], x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """lon/lat of projected points from a :func:`readout_grid`, as the page computes them.

    Bilinear in the cell that holds the point (the edge cells, continued, outside the grid), then
    renormalised. map.js does exactly this; the tests compare both with pyproj.
    """
    w, s, e, n = grid["box"]
    nodes = grid["nodes"]
    v = np.asarray(grid["vectors"], dtype=np.float64).reshape(nodes, nodes, 3)
    fx = (np.asarray(x, dtype=np.float64) - w) / (e - w) * (nodes - 1)
    fy = (np.asarray(y, dtype=np.float64) - s) / (n - s) * (nodes - 1)
    j = np.clip(np.floor(fx).astype(int), 0, nodes - 2)
    i = np.clip(np.floor(fy).astype(int), 0, nodes - 2)
    tx, ty = (fx - j)[..., None], (fy - i)[..., None]
    out = (1 - ty) * ((1 - tx) * v[i, j] + tx * v[i, j + 1]) + ty * ((1 - tx) * v[i + 1, j] + tx * v[i + 1, j + 1])
    return lonlat_of(out)


def nice_spacing(span: float, max_lines: int = MAX_LINES) -> float:
    """The finest of :data:`SPACINGS` (degrees) that puts at most ``max_lines`` lines across ``span``."""
    for step in SPACINGS:
        if span / step <= max_lines:
            return step
    return SPACINGS[-1]


def _lon_interval(lons: np.ndarray) -> tuple[float, float]:
    """The shortest interval of longitude (start in [-180, 180), end after it, maybe past 180) that
    holds every one of ``lons``: the complement of the widest gap between them around the circle."""
    ordered = np.sort(np.mod(lons, 360.0))
    gaps = np.diff(np.concatenate([ordered, [ordered[0] + 360.0]]))
    k = int(np.argmax(gaps))
    start, end = (ordered[0], ordered[-1]) if k == len(ordered) - 1 else (ordered[k + 1], ordered[k] + 360.0)
    shift = (start + 180.0) % 360.0 - 180.0 - start
    return float(start + shift), float(end + shift)


def geographic_extent(crs: Any, box: Box, nodes: int = READOUT_NODES) -> tuple[float, float, float, float]:
    """(lon0, lon1, lat0, lat1) that cover ``box``: lon1 may pass 180 (antimeridian); a pole inside
    the box makes longitude whole (-180, 180) and latitude reach that pole."""
    w, s, e, n = box
    gx, gy = np.meshgrid(np.linspace(w, e, nodes), np.linspace(s, n, nodes))
    lon, lat = (np.asarray(a) for a in _to_lonlat(crs).transform(gx, gy))
    lat0, lat1 = float(lat.min()), float(lat.max())
    lon0, lon1 = _lon_interval(lon.ravel())
    for pole in (90.0, -90.0):
        px, py = _from_lonlat(crs).transform(0.0, pole)
        if np.isfinite(px) and np.isfinite(py) and w <= px <= e and s <= py <= n:
            lon0, lon1 = -180.0, 180.0
            lat0, lat1 = min(lat0, pole), max(lat1, pole)
    return lon0, lon1, lat0, lat1


def _inside_runs(x: np.ndarray, y: np.ndarray, box: Box) -> list[np.ndarray]:
    """Index runs of consecutive points inside ``box`` (finite), two points at least."""
    w, s, e, n = box
    inside = np.isfinite(x) & np.isfinite(y) & (x >= w) & (x <= e) & (y >= s) & (y <= n)
    runs, start = [], None
    for k, flag in enumerate(np.append(inside, False)):
        if flag and start is None:
            start = k
        elif not flag and start is not None:
            if k - start >= 2:
                runs.append(np.arange(start, k))
            start = None
    return runs


def _label(value: float, positive: str, negative: str) -> str:
    text = f"{abs(value):.2f}".rstrip("0").rstrip(".")
    return f"{text}°{positive if value > 0 else negative if value < 0 else ''}"


def graticule(crs: Any, box: Box, samples: int = 256) -> dict[str, Any]:
    """Lines of constant latitude and longitude across ``box`` in projected coordinates.

    Returns ``{"lat_step", "lon_step", "lines": [{"kind": "lat"|"lon", "value", "label",
    "points": [[y, x], ...]}, ...]}`` (points in Leaflet's order). Each line is densified with
    ``samples`` points over the extent's lat/lon range, so it bends as the projection bends it, and
    cut into pieces where it leaves the box.
    """
    lon0, lon1, lat0, lat1 = geographic_extent(crs, box)
    lat_step = nice_spacing(lat1 - lat0)
    lon_step = nice_spacing(lon1 - lon0)
    forward = _from_lonlat(crs)
    lines: list[dict[str, Any]] = []

    def add(kind: str, value: float, lon: np.ndarray, lat: np.ndarray) -> None:
        x, y = (np.asarray(a, dtype=np.float64) for a in forward.transform(lon, lat))
        wrapped = (value + 180.0) % 360.0 - 180.0 if kind == "lon" else value
        label = _label(wrapped, "E", "W") if kind == "lon" else _label(value, "N", "S")
        if kind == "lon" and abs(abs(wrapped) - 180.0) < 1e-9:
            label = "180°"
        for run in _inside_runs(x, y, box):
            lines.append(
                {
                    "kind": kind,
                    "value": float(wrapped),
                    "label": label,
                    "points": [[round(float(y[k]), 2), round(float(x[k]), 2)] for k in run],
                }
            )

    lat_values = np.arange(math.ceil(lat0 / lat_step) * lat_step, lat1 + 1e-9, lat_step)
    lon_span = np.linspace(lon0, lon1, samples)
    for lat in lat_values:
        if abs(lat) < 90.0 - 1e-9:
            add("lat", round(float(lat), 6), lon_span, np.full(samples, lat))
    lon_values = np.arange(math.ceil(lon0 / lon_step) * lon_step, lon1 + 1e-9, lon_step)
    if lon1 - lon0 >= 360.0 - 1e-9:
        lon_values = lon_values[lon_values < lon0 + 360.0 - 1e-9]  # -180 and 180 are one meridian
    lat_span = np.linspace(max(lat0, -89.999), min(lat1, 89.999), samples)
    for lon in lon_values:
        add("lon", round(float(lon), 6), np.full(samples, lon), lat_span)
    return {"lat_step": lat_step, "lon_step": lon_step, "lines": lines}


def coastline(mask: np.ndarray, transform: Any, tolerance_px: float = 1.0) -> list[list[list[float]]]:
    """The water/land boundary of a surface mask as polylines ``[[y, x], ...]`` in projected metres.

    ``mask`` holds surface codes (``outcrop.raster.surfaces``), ``transform`` its affine (north-up).
    Water is 1 and every other ground 0; nodata and cloud are masked, so the contour at 0.5 runs
    between water and land only. Lines are simplified to ``tolerance_px`` pixels (Douglas-Peucker).
    """
    import contourpy
    from shapely.geometry import LineString

    field = np.ma.masked_array((mask == WATER).astype(np.float64), mask=(mask == NODATA) | (mask == CLOUD))
    if field.count() == 0 or not ((field == 1).any() and (field == 0).any()):
        return []
    height, width = mask.shape
    xs = transform.c + transform.a * (np.arange(width) + 0.5)
    ys = transform.f + transform.e * (np.arange(height) + 0.5)
    gen = contourpy.contour_generator(xs, ys, field, line_type=contourpy.LineType.Separate)
    tolerance = tolerance_px * abs(transform.a)
    out = []
    # LineType.Separate: a list of (N, 2) arrays; contourpy's stub types lines() for every line type.
    for line in cast(list[np.ndarray], gen.lines(0.5)):
        if len(line) < 2:
            continue
        simple = np.asarray(LineString(line).simplify(tolerance).coords)
        out.append([[round(float(y), 2), round(float(x), 2)] for x, y in simple])
    return out


def union_box(bounds: Sequence[Sequence[Sequence[float]]]) -> Box:
    """(west, south, east, north) of Leaflet bounds ``[[south, west], [north, east]]``."""
    return (
        min(b[0][1] for b in bounds),
        min(b[0][0] for b in bounds),
        max(b[1][1] for b in bounds),
        max(b[1][0] for b in bounds),
    )
