"""What makes a map figure placeable: a latitude/longitude graticule with labels, a north arrow, a
scale bar and the CRS, drawn on a matplotlib axes whose data coordinates are a projected CRS.

Why: a run's maps are in a projected CRS (polar stereographic by default), where "up" may be
roughly south and raw metres tell a reader nothing. The graticule is computed by projecting lines
of constant longitude and latitude (pyproj), so it is right in any projected CRS, meridians
converging on the pole included; north is measured at the map centre, where the arrow stands.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# Steps (degrees) a graticule may use: the first that gives at most ~6 lines over the extent.
_STEPS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 45.0, 90.0)
_FONT = 8


def _transformers(crs: Any) -> tuple[Any, Any]:
    from pyproj import CRS, Transformer

    crs = CRS.from_user_input(crs)
    return (
        Transformer.from_crs(crs, "EPSG:4326", always_xy=True),
        Transformer.from_crs("EPSG:4326", crs, always_xy=True),
    )


def nice_step(span: float, lines: int = 5) -> float:
    """The smallest graticule step (degrees) that draws at most about ``lines`` lines over ``span``."""
    for step in _STEPS:
        if span / step <= lines:
            return step
    return _STEPS[-1]


def _frame_lonlat(extent: tuple[float, float, float, float], to_geo: Any, n: int = 41) -> tuple[np.ndarray, np.ndarray]:
    """Longitudes (unwrapped across the antimeridian) and latitudes over a grid spanning ``extent``."""
    x0, x1, y0, y1 = extent
    xs, ys = np.meshgrid(np.linspace(x0, x1, n), np.linspace(y0, y1, n))
    lon, lat = to_geo.transform(xs.ravel(), ys.ravel())
    lon, lat = np.asarray(lon), np.asarray(lat)
    if lon.max() - lon.min() > 180:  # crosses the antimeridian: count east of 180 on
        lon = np.where(lon < 0, lon + 360, lon)
    return lon, lat


def _label_lon(lon: float) -> str:
    lon = (lon + 180) % 360 - 180
    if abs(lon) < 1e-9 or abs(abs(lon) - 180) < 1e-9:
        return f"{abs(lon):g}°"
    return f"{abs(lon):g}°{'E' if lon > 0 else 'W'}"


def _label_lat(lat: float) -> str:
    return "0°" if abs(lat) < 1e-9 else f"{abs(lat):g}°{'N' if lat > 0 else 'S'}"


def _edge_crossings(
    xs: np.ndarray, ys: np.ndarray, extent: tuple[float, float, float, float]
) -> list[tuple[str, float, float]]:
    """Where a projected polyline crosses the frame's edges: (edge, x, y) for each crossing."""
    x0, x1, y0, y1 = extent
    out = []
    for edge, values, level, other, lo, hi in (
        ("bottom", ys, y0, xs, x0, x1),
        ("top", ys, y1, xs, x0, x1),
        ("left", xs, x0, ys, y0, y1),
        ("right", xs, x1, ys, y0, y1),
    ):
        d = values - level
        for i in np.nonzero(np.sign(d[:-1]) * np.sign(d[1:]) < 0)[0]:
            t = d[i] / (d[i] - d[i + 1])
            pos = other[i] + t * (other[i + 1] - other[i])
            if lo <= pos <= hi:
                out.append((edge, pos, level) if edge in ("bottom", "top") else (edge, level, pos))
    return out


def _preferred(crossings: list[tuple[str, float, float]], edges: tuple[str, str]) -> list[tuple[str, float, float]]:
    """Crossings on ``edges`` first (meridians label best at the bottom and top, parallels at the
    sides), then the others: near a pole a line may meet only the other edges."""
    return [c for c in crossings if c[0] in edges] + [c for c in crossings if c[0] not in edges]


_OFFSETS = {
    "bottom": ((0, -4), "center", "top"),
    "top": ((0, 4), "center", "bottom"),
    "left": ((-4, 0), "right", "center"),
    "right": ((4, 0), "left", "center"),
}


def _edge_label(ax: Any, text: str, edge: str, x: float, y: float, style: dict[str, Any]) -> None:
    offset, ha, va = _OFFSETS[edge]
    ax.annotate(text, (x, y), xytext=offset, textcoords="offset points", ha=ha, va=va, **style)


def add_graticule(ax: Any, crs: Any, extent: tuple[float, float, float, float]) -> dict[str, list[float]]:
    """Draw meridians and parallels over ``extent`` (x0, x1, y0, y1 in ``crs``), labelled where they
    meet the frame (meridians on the bottom/top, parallels on the left/right, whichever they reach).
    Returns the longitudes and latitudes drawn."""
    to_geo, to_map = _transformers(crs)
    lon, lat = _frame_lonlat(extent, to_geo)
    lon_step = nice_step(float(lon.max() - lon.min()))
    lat_step = nice_step(float(lat.max() - lat.min()))
    lons = np.arange(math.floor(lon.min() / lon_step) * lon_step, lon.max() + lon_step, lon_step)
    lats = np.arange(math.floor(lat.min() / lat_step) * lat_step, lat.max() + lat_step, lat_step)
    lats = lats[(lats >= -90) & (lats <= 90)]
    from matplotlib import patheffects

    # White lines with a dark edge: visible over snow and over dark sea alike.
    style = {
        "color": "white",
        "lw": 0.7,
        "ls": (0, (5, 3)),
        "zorder": 6,
        "path_effects": [patheffects.withStroke(linewidth=1.6, foreground="0.2", alpha=0.6)],
    }
    label = {"fontsize": _FONT, "color": "0.1", "clip_on": False}
    drawn: dict[str, list[float]] = {"lon": [], "lat": []}
    lat_lo, lat_hi = max(float(lat.min()) - lat_step, -90), min(float(lat.max()) + lat_step, 90)
    for value in lons:
        ts = np.linspace(lat_lo, lat_hi, 400)
        xs, ys = (np.asarray(v) for v in to_map.transform(np.full_like(ts, value), ts))
        crossings = _preferred(_edge_crossings(xs, ys, extent), ("bottom", "top"))
        ax.plot(xs, ys, **style)
        if crossings:
            drawn["lon"].append(float(value))
        for edge, x, y in crossings[:1]:
            _edge_label(ax, _label_lon(float(value)), edge, x, y, label)
    lon_lo, lon_hi = float(lon.min()) - lon_step, float(lon.max()) + lon_step
    for value in lats:
        ts = np.linspace(lon_lo, lon_hi, 400)
        xs, ys = (np.asarray(v) for v in to_map.transform(ts, np.full_like(ts, value)))
        crossings = _preferred(_edge_crossings(xs, ys, extent), ("left", "right"))
        ax.plot(xs, ys, **style)
        if crossings:
            drawn["lat"].append(float(value))
        for edge, x, y in crossings[:1]:
            _edge_label(ax, _label_lat(float(value)), edge, x, y, label)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xticks([])
    ax.set_yticks([])
    return drawn


def north_angle(crs: Any, extent: tuple[float, float, float, float]) -> float:
    """Direction of true north at the centre of ``extent``, in degrees counter-clockwise from the
    map's up (0: north is up; 180: north is down)."""
    to_geo, to_map = _transformers(crs)
    cx, cy = (extent[0] + extent[1]) / 2, (extent[2] + extent[3]) / 2
    lon, lat = to_geo.transform(cx, cy)
    dlat = 0.01 if lat < 89.99 else -0.01
    nx, ny = to_map.transform(lon, lat + dlat)
    dx, dy = (nx - cx, ny - cy) if dlat > 0 else (cx - nx, cy - ny)
    return math.degrees(math.atan2(-dx, dy))


def add_north_arrow(ax: Any, crs: Any, extent: tuple[float, float, float, float]) -> float:
    """An arrow in the top-right corner pointing to true north at the map centre; returns its angle."""
    angle = north_angle(crs, extent)
    cx, cy, length = 0.90, 0.86, 0.07
    dx, dy = -math.sin(math.radians(angle)) * length, math.cos(math.radians(angle)) * length
    ax.annotate(
        "",
        xy=(cx + dx, cy + dy),
        xytext=(cx - dx, cy - dy),
        xycoords="axes fraction",
        arrowprops={"arrowstyle": "-|>,head_width=0.35,head_length=0.7", "color": "black", "lw": 1.6},
        zorder=8,
    )
    ax.text(
        cx + 1.55 * dx,
        cy + 1.55 * dy,
        "N",
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=_FONT + 2,
        fontweight="bold",
        zorder=8,
        bbox={"boxstyle": "circle,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
    )
    return angle


def nice_length(width_m: float) -> float:
    """A 1, 2 or 5 × 10^n metre length of about a quarter of ``width_m``."""
    target = max(width_m / 4, 1e-9)
    power = 10 ** math.floor(math.log10(target))
    return max(m * power for m in (1, 2, 5) if m * power <= target)


def add_scale_bar(ax: Any, crs: Any, extent: tuple[float, float, float, float]) -> float:
    """A scale bar in the bottom-left corner, in metres of the projected CRS; returns its length.

    The CRS's unit length is used as is: on a polar stereographic map it is true at the standard
    parallel (71° S for EPSG:3031) and off by a few percent elsewhere, which the label cannot fix.
    """
    from pyproj import CRS

    factor = CRS.from_user_input(crs).axis_info[0].unit_conversion_factor or 1.0
    x0, x1, y0, y1 = extent
    length_m = nice_length(abs(x1 - x0) * factor)
    length = length_m / factor
    bx, by = x0 + 0.05 * (x1 - x0), y0 + 0.06 * (y1 - y0)
    tick = 0.012 * (y1 - y0)
    from matplotlib import patheffects

    halo = [patheffects.withStroke(linewidth=5, foreground="white")]  # readable over dark ground too
    ax.plot([bx, bx + length], [by, by], color="black", lw=3, solid_capstyle="butt", zorder=8, path_effects=halo)
    ax.plot([bx, bx + length / 2], [by, by], color="white", lw=1.4, solid_capstyle="butt", zorder=9)
    for x in (bx, bx + length):
        ax.plot([x, x], [by - tick, by + tick], color="black", lw=1, zorder=8)
    text = f"{length_m / 1000:g} km" if length_m >= 1000 else f"{length_m:g} m"
    ax.text(
        bx + length / 2,
        by + 1.8 * tick,
        text,
        ha="center",
        va="bottom",
        fontsize=_FONT,
        zorder=9,
        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.75},
    )
    return length_m


def crs_label(crs: Any) -> str:
    """``EPSG:3031 (WGS 84 / Antarctic Polar Stereographic)``, or the CRS's name without a code."""
    from pyproj import CRS

    crs = CRS.from_user_input(crs)
    code = crs.to_epsg()
    return f"EPSG:{code} ({crs.name})" if code else crs.name


def furnish(ax: Any, crs: Any, extent: tuple[float, float, float, float]) -> None:
    """Graticule, north arrow, scale bar and the CRS (under the map) on one map axes."""
    add_graticule(ax, crs, extent)
    add_north_arrow(ax, crs, extent)
    add_scale_bar(ax, crs, extent)
    ax.text(1.0, -0.06, crs_label(crs), transform=ax.transAxes, ha="right", va="top", fontsize=_FONT - 1, color="0.3")


def raster_extent(transform: Any, width: int, height: int) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) of a north-up raster, as matplotlib's ``imshow(extent=...)`` takes it."""
    return (transform.c, transform.c + transform.a * width, transform.f + transform.e * height, transform.f)
