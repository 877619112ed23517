"""The run grid: which CRS, resolution and pixel alignment every scene is prepared onto.

A run's scenes must share one grid so that their tiles line up where they overlap. With
``grid.crs: auto`` the grid is the UTM zone (or, beyond ±60° latitude, the polar stereographic
projection: EPSG:3031 south, EPSG:3413 north) that covers most of the scenes; a scene already in a
UTM CRS of that zone keeps its own CRS (Landsat ships southern scenes in the northern zone codes
with negative northings, and a national UTM datum such as SIRGAS 2000 is the same projection), so
that it needs no reprojection. That holds beyond ±60° too, as long as the scene's area scale factor
on its own zone stays within :data:`AREA_SCALE_LIMIT` and it lies inside UTM's domain (80° S to 84° N):
UTM's distortion grows with the distance from the zone's central meridian, not with latitude, so a
scene in its own zone is within 0.1 % of true area at any latitude, while polar stereographic is 9 %
off at 60° (:func:`proposal`). A polar coast whose scenes lie in several UTM zones still gets the
polar grid: a zone kept beyond ±60° must fit every scene of the run (:func:`choose_grid`). With
``grid.resolution: auto`` the resolution is the finest pixel among the bands the run uses.

The pixel alignment (``origin``: the grid's pixel edges are at ``origin + k * resolution``) is
chosen once per run: the pixel-corner phase shared by most scenes that are already in the grid's
CRS at its resolution. Those scenes are then copied onto the grid pixel for pixel, not resampled;
scenes on another pixel grid (another phase, CRS or resolution) are resampled onto the run's.

Only headers are read (:func:`outcrop.raster.scenes.read_scene_header`), so choosing the grid is
quick even for remote scenes. The choice, its reasons and any scene the grid distorts badly are
written to ``grid.json`` (:func:`write_grid`), which prepare, tiles and quicklook read
(:func:`load_grid`).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from outcrop.config import check_grid_crs, default
from outcrop.errors import OutcropError
from outcrop.io import atomic_path

AUTO = "auto"
# Beyond this latitude (degrees) the grid is polar stereographic: UTM zones narrow towards the
# poles, and a polar coast crosses many of them. A scene already in its own UTM zone keeps it beyond
# (see proposal), within UTM's domain.
POLAR_LATITUDE = 60.0
UTM_NORTH = 84.0  # UTM is defined from 80° S to 84° N; beyond, the polar grid
UTM_SOUTH = -80.0
# A scene is warned about when the grid's area scale factor at its centre or corners departs from
# 1 by more than this (UTM stays within 0.3 % over a zone, polar stereographic within 9 % down to
# 60°; a Peru scene on EPSG:3031 is at 2.8).
AREA_SCALE_LIMIT = 1.1
# ... when more than this share of its block on the grid lies outside its footprint: a scene turned
# or bent by the projection, so that its prepared raster holds that much nodata and every pixel is
# resampled (a square turned by 5° leaves 15 % of its block outside, by 12° 29 %: a scene of zone 6 at
# 60° N on EPSG:3413) ...
OUTSIDE_LIMIT = 0.15
# ... or when each of its finest pixels becomes more than this many grid pixels (a 30 m scene on
# a 10 m grid is 9: the run's tiles would see interpolated, not measured, texture).
UPSAMPLING_LIMIT = 4.0
_EPS = 1e-6


@dataclass(frozen=True)
class BandHeader:
    """One band file's georeferencing, as its header gives it."""

    path: str
    crs: Any  # rasterio CRS
    transform: Any  # affine.Affine
    width: int
    height: int


@dataclass(frozen=True)
class SceneHeader:
    """The georeferencing of the band files one scene's run bands come from."""

    scene: str
    bands: tuple[BandHeader, ...]


@dataclass(frozen=True)
class RunGrid:
    """The grid every scene of a run is prepared onto: pixel edges at ``origin + k * resolution``."""

    crs: str
    resolution: float
    origin: tuple[float, float] = (0.0, 0.0)


def _polar_crs(lat: float) -> str:
    return "EPSG:3031" if lat < 0 else "EPSG:3413"


def _centre_lonlat(band: BandHeader) -> tuple[float, float]:
    from rasterio.warp import transform

    x, y = band.transform @ (band.width / 2, band.height / 2)
    xs, ys = transform(band.crs, "EPSG:4326", [x], [y])
    return float(xs[0]), float(ys[0])


def utm_zone(lon: float) -> int:
    """The UTM zone number (1-60) of a longitude."""
    return int(math.floor(((lon + 180.0) % 360.0) / 6.0)) + 1


def zone_crs(lon: float, lat: float) -> str:
    """The CRS covering a point: polar stereographic beyond ±60°, else its WGS 84 UTM zone."""
    if lat <= -POLAR_LATITUDE:
        return "EPSG:3031"
    if lat >= POLAR_LATITUDE:
        return "EPSG:3413"
    return f"EPSG:{(32700 if lat < 0 else 32600) + utm_zone(lon)}"


def _native_utm_zone(crs: Any) -> int | None:
    """The zone number of a UTM CRS (any datum, either hemisphere code), else None."""
    from pyproj import CRS

    try:
        zone = CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs).utm_zone
    except Exception:
        return None
    return int(zone[:-1]) if zone else None


@dataclass(frozen=True)
class Proposal:
    """The grid CRS one scene alone would choose, and, beyond ±60°, why it keeps or leaves its UTM zone."""

    crs: str
    latitude: float
    note: str = ""  # beyond ±60° only: the numbers behind the choice


def proposal(header: SceneHeader) -> Proposal:
    """The grid CRS this scene alone would choose: its own CRS when it is a UTM CRS of the zone
    that covers it (no reprojection at all), else that zone's CRS, or the polar one beyond ±60°.

    Beyond ±60° a scene in its own UTM zone keeps it while its area scale factor there (worst of
    centre and corners) is within :data:`AREA_SCALE_LIMIT` and it lies in UTM's domain: reprojecting
    a scene that is already on a good grid costs a resampling and, at 60°, a 9 % area error of the
    polar grid besides. The note gives both grids' area scale factors.
    """
    band = header.bands[0]
    lon, lat = _centre_lonlat(band)
    wanted = zone_crs(lon, lat)
    own_zone = _native_utm_zone(band.crs) == utm_zone(lon)
    if wanted.startswith(("EPSG:326", "EPSG:327")) and own_zone:
        return Proposal(_crs_text(band.crs), lat)
    if wanted not in ("EPSG:3031", "EPSG:3413") or not own_zone:
        return Proposal(wanted, lat)
    own = _crs_text(band.crs)
    pixel = pixel_size_on(band, own)
    utm_scale = _distortion(header, RunGrid(own, pixel))["area_scale"]
    polar_scale = _distortion(header, RunGrid(wanted, pixel_size_on(band, wanted)))["area_scale"]
    where = f"{header.scene} at {abs(lat):.1f}° {'S' if lat < 0 else 'N'}"
    scales = f"area scale {utm_scale:.4f} on its own UTM zone {own}, {polar_scale:.4f} on {wanted}"
    if not UTM_SOUTH <= lat <= UTM_NORTH:
        return Proposal(wanted, lat, f"{where}: beyond UTM's domain (80° S to 84° N), so {wanted} ({scales})")
    if not 1 / AREA_SCALE_LIMIT <= utm_scale <= AREA_SCALE_LIMIT:
        return Proposal(
            wanted,
            lat,
            f"{where}: its own UTM zone passes the area-scale limit {AREA_SCALE_LIMIT:g}, so {wanted} ({scales})",
        )
    return Proposal(
        own, lat, f"{where}: keeps its own UTM zone {own}, within the area-scale limit {AREA_SCALE_LIMIT:g} ({scales})"
    )


def proposed_crs(header: SceneHeader) -> str:
    """The grid CRS this scene alone would choose (:func:`proposal`)."""
    return proposal(header).crs


def _crs_text(crs: Any) -> str:
    """A CRS as ``EPSG:n`` when it has an EPSG code, else as WKT."""
    epsg = crs.to_epsg() if hasattr(crs, "to_epsg") else None
    return f"EPSG:{epsg}" if epsg else (crs.to_wkt() if hasattr(crs, "to_wkt") else str(crs))


def _same_crs(a: Any, b: Any) -> bool:
    from rasterio.crs import CRS

    return CRS.from_user_input(a) == CRS.from_user_input(b)


def pixel_size_on(band: BandHeader, crs: str) -> float:
    """Side (grid CRS units) of the square of equal area to one of the band's pixels at its centre."""
    from rasterio.warp import transform

    if _same_crs(band.crs, crs):
        return math.sqrt(abs(band.transform.a * band.transform.e - band.transform.b * band.transform.d))
    c, r = band.width / 2, band.height / 2
    pts = [band.transform @ (c, r), band.transform @ (c + 1, r), band.transform @ (c, r + 1)]
    xs, ys = transform(band.crs, crs, [p[0] for p in pts], [p[1] for p in pts])
    ux, uy, vx, vy = xs[1] - xs[0], ys[1] - ys[0], xs[2] - xs[0], ys[2] - ys[0]
    return math.sqrt(abs(ux * vy - uy * vx))


def _nice(size: float) -> float:
    """A reprojected pixel size rounded to two significant figures (30.6 m -> 31 m, 9.98 -> 10)."""
    if size <= 0 or not math.isfinite(size):
        return size
    digits = 1 - int(math.floor(math.log10(size)))
    return round(size, digits)


def _phase(band: BandHeader, resolution: float) -> tuple[float, float]:
    return (round(band.transform.c % resolution, 6) % resolution, round(band.transform.f % resolution, 6) % resolution)


def _on_grid_kind(band: BandHeader, crs: str, resolution: float) -> bool:
    """Whether the band is north-up in ``crs`` with square pixels of ``resolution``."""
    t = band.transform
    return (
        _same_crs(band.crs, crs)
        and t.b == 0
        and t.d == 0
        and abs(t.a - resolution) <= _EPS * resolution
        and abs(-t.e - resolution) <= _EPS * resolution
    )


def _distortion(header: SceneHeader, grid: RunGrid) -> dict[str, float]:
    """How the grid treats a scene: area scale factor (worst of centre and corners), the share of
    its block on the grid outside its footprint, and the grid pixels per finest source pixel."""
    from pyproj import CRS, Proj
    from rasterio.warp import transform
    from shapely.geometry import Polygon

    band = min(header.bands, key=lambda b: pixel_size_on(b, grid.crs))
    w, h = band.width, band.height
    ring = (
        [(w * i / 16, 0) for i in range(16)]
        + [(w, h * i / 16) for i in range(16)]
        + [(w * (16 - i) / 16, h) for i in range(16)]
        + [(0, h * (16 - i) / 16) for i in range(16)]
    )
    pts = [band.transform @ p for p in ring]
    xs, ys = transform(band.crs, grid.crs, [p[0] for p in pts], [p[1] for p in pts])
    # how far the grid turns the scene: the direction of its top edge, folded into ±45° (a quarter
    # turn leaves a rectangle's block as full as no turn)
    turned = (math.degrees(math.atan2(ys[16] - ys[0], xs[16] - xs[0])) + 45.0) % 90.0 - 45.0
    poly = Polygon(zip(xs, ys))
    box = poly.envelope.area
    outside = max(0.0, 1.0 - poly.area / box) if box > 0 else 0.0
    scale = 1.0
    try:
        proj = Proj(CRS.from_user_input(grid.crs))
        corners = [band.transform @ p for p in ((w / 2, h / 2), (0, 0), (w, 0), (w, h), (0, h))]
        lons, lats = transform(band.crs, "EPSG:4326", [p[0] for p in corners], [p[1] for p in corners])
        factors = [proj.get_factors(lon, lat).areal_scale for lon, lat in zip(lons, lats)]
        scale = max(factors, key=lambda f: max(f, 1 / f) if f > 0 else math.inf)
    except Exception:  # a geographic grid CRS, or points the projection cannot take
        pass
    upsampling = (pixel_size_on(band, grid.crs) / grid.resolution) ** 2
    return {
        "area_scale": round(float(scale), 4),
        "outside": round(float(outside), 4),
        "turned_deg": round(float(turned), 1),
        "upsampling": round(float(upsampling), 3),
    }


def _warnings(scene: str, d: dict[str, float], grid: RunGrid) -> list[str]:
    found = []
    scale = d["area_scale"]
    if not (1 / AREA_SCALE_LIMIT <= scale <= AREA_SCALE_LIMIT):
        found.append(
            f"{scene}: the grid {grid.crs} distorts this scene: area scale factor {scale:.2f} "
            f"(limit {AREA_SCALE_LIMIT:g}); give grid.crs a CRS that fits it, or run it apart"
        )
    if d["outside"] > OUTSIDE_LIMIT:
        turned = f", the grid turns it by {abs(d['turned_deg']):.0f}°" if "turned_deg" in d else ""
        found.append(
            f"{scene}: {d['outside']:.0%} of its block on the grid {grid.crs} lies outside the scene "
            f"(limit {OUTSIDE_LIMIT:.0%}{turned}): that much of its prepared raster is nodata and every "
            f"pixel is resampled; give grid.crs a CRS that fits it, such as its own"
        )
    if d["upsampling"] > UPSAMPLING_LIMIT:
        found.append(
            f"{scene}: each of its pixels becomes {d['upsampling']:.1f} grid pixels at "
            f"{grid.resolution:g} m (upsampled); give grid.resolution a coarser value or run it apart"
        )
    return found


def _grid_crs(headers: Sequence[SceneHeader], crs: str, resolution: float | str) -> tuple[str, dict[str, str]]:
    """The run CRS and why (``crs_reason``, and ``polar_reason`` when a polar CRS was chosen).

    ``"auto"`` chooses from the headers; a given CRS is checked (known to PROJ, suited to the grid) and kept.
    """
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    record: dict[str, str] = {}
    if str(crs) == AUTO:
        chosen, record["crs_reason"], polar = _auto_crs(headers)
        if polar:
            record["polar_reason"] = polar
        return chosen, record
    check_grid_crs(str(crs), "grid: run CRS", resolution)
    try:
        CRS.from_user_input(crs)
    except CRSError:
        raise OutcropError(f"grid: unknown run CRS {crs!r}") from None
    record["crs_reason"] = "given in the config (grid.crs)"
    return str(crs), record


def _grid_resolution(headers: Sequence[SceneHeader], chosen: str, resolution: float | str) -> tuple[float, str]:
    """The run resolution in metres and why: the finest band pixel for ``"auto"``, else the checked given value.

    A finest band in another CRS is measured on the chosen one and rounded to a nice size, since its
    pixels are resampled anyway; one already in the chosen CRS keeps its size so it can be copied.
    """
    if str(resolution) == AUTO:
        sizes = [(pixel_size_on(b, chosen), h.scene, b) for h in headers for b in h.bands]
        size, scene, band = min(sizes, key=lambda t: (t[0], t[1], t[2].path))
        if _same_crs(band.crs, chosen):
            res = round(size, 6)
            return res, f"auto: the finest band pixel, {Path(band.path).name} of {scene} ({res:g} m)"
        res = _nice(size)
        own = pixel_size_on(band, band.crs)
        return res, (
            f"auto: the finest band pixel, {Path(band.path).name} of {scene}: {own:g} m in its own CRS, "
            f"{size:.2f} m on {chosen} (the side of a square of its area there), rounded to {res:g} m"
        )
    try:
        res = float(resolution)
    except (TypeError, ValueError):
        raise OutcropError(f"grid: resolution must be a positive number or auto, not {resolution!r}") from None
    if not (math.isfinite(res) and res > 0):
        raise OutcropError(f"grid: resolution must be a positive number or auto, not {resolution!r}")
    return res, "given in the config (grid.resolution)"


def _grid_origin(headers: Sequence[SceneHeader], chosen: str, res: float) -> tuple[tuple[float, float], str]:
    """The pixel-corner phase most scenes share on the run grid (first seen wins a tie), and why.

    Aligning to the commonest phase lets the most scenes be copied rather than resampled; with no
    scene in the grid CRS at its resolution, edges fall at multiples of the resolution.
    """
    phases: Counter[tuple[float, float]] = Counter()
    first: dict[tuple[float, float], str] = {}
    for h in headers:
        for p in dict.fromkeys(_phase(b, res) for b in h.bands if _on_grid_kind(b, chosen, res)):
            phases[p] += 1
            first.setdefault(p, h.scene)
    if not phases:
        return (0.0, 0.0), (
            "no scene is in the grid CRS at its resolution: pixel edges at multiples "
            "of the resolution; every scene is resampled"
        )
    best = max(phases.values())
    origin = next(p for p in first if phases[p] == best)
    return origin, (
        f"pixel corners of {first[origin]}, shared by {best} of {len(headers)} "
        f"scene(s): scenes on this pixel grid are copied, others resampled"
    )


def _scene_fit(headers: Sequence[SceneHeader], grid: RunGrid, res: float) -> tuple[dict[str, Any], list[str]]:
    """Each scene's distortion on the grid and whether it is copied as is, and the warnings they raise."""
    scenes: dict[str, Any] = {}
    warnings: list[str] = []
    for h in headers:
        d = _distortion(h, grid)
        d["copied"] = any(_on_grid_kind(b, grid.crs, res) and _phase(b, res) == grid.origin for b in h.bands)
        scenes[h.scene] = d
        warnings += _warnings(h.scene, d, grid)
    return scenes, warnings


def choose_grid(
    headers: Sequence[SceneHeader],
    crs: str = default("grid.crs"),
    resolution: float | str = default("grid.resolution"),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The run grid for these scenes, with why, per-scene distortion and warnings (grid.json).

    ``crs`` and ``resolution`` given (not ``"auto"``) are kept as given; the alignment is always
    read from the headers, so that scenes already on the grid are copied, not resampled.
    """
    if not headers:
        raise OutcropError("grid: no scenes to choose the grid from")
    chosen, record = _grid_crs(headers, crs, resolution)
    res, record["resolution_reason"] = _grid_resolution(headers, chosen, resolution)
    origin, record["alignment_reason"] = _grid_origin(headers, chosen, res)
    grid = RunGrid(chosen, float(res), (float(origin[0]), float(origin[1])))
    scenes, warnings = _scene_fit(headers, grid, res)
    out = {
        "crs": grid.crs,
        "resolution": grid.resolution,
        "origin": list(grid.origin),
        **record,
        "scenes": scenes,
        "warnings": warnings,
    }
    log(
        f"grid: {grid.crs} ({record['crs_reason']}), {grid.resolution:g} m ({record['resolution_reason']}), "
        f"origin {grid.origin} ({record['alignment_reason']})"
    )
    for line in warnings:
        log(f"grid: warning: {line}")
    return out


def _auto_crs(headers: Sequence[SceneHeader]) -> tuple[str, str, str]:
    """The ``auto`` grid CRS of these scenes, why (grid.json's ``crs_reason``), and what decided
    between UTM and the polar grid beyond ±60° (``polar_reason``, "" when no scene lies beyond).

    Each scene proposes a CRS (:func:`proposal`); the one most scenes propose wins (ties: the first
    scene's). A UTM zone wins beyond ±60° only when every scene beyond ±60° proposes it: scenes of a
    polar coast spread over several zones would be turned by the zone's convergence, so they get the
    polar grid of the hemisphere most of them lie in, as every scene beyond ±60° would alone.
    """
    props = [proposal(h) for h in headers]
    counts = Counter(p.crs for p in props)
    best = max(counts.values())
    chosen = next(p.crs for p in props if counts[p.crs] == best)
    reason = f"auto: {chosen} covers {best} of {len(headers)} scene(s)" + (
        f" (others: {', '.join(f'{c} {n}' for c, n in counts.items() if c != chosen)})" if len(counts) > 1 else ""
    )
    beyond = [(h, p) for h, p in zip(headers, props) if abs(p.latitude) >= POLAR_LATITUDE]
    notes = [p.note for _, p in beyond if p.note]
    if beyond and chosen not in ("EPSG:3031", "EPSG:3413") and any(p.crs != chosen for _, p in beyond):
        south = sum(p.latitude < 0 for _, p in beyond)
        polar = _polar_crs(-1.0 if 2 * south > len(beyond) else 1.0)
        others = sorted({h.scene for h, p in beyond if p.crs != chosen})
        reason = (
            f"auto: {polar}, polar stereographic: {len(beyond)} scene(s) lie beyond ±{POLAR_LATITUDE:g}° "
            f"and not all in the UTM zone {chosen} ({', '.join(others[:5])}{' …' if len(others) > 5 else ''} "
            f"{'is' if len(others) == 1 else 'are'} not)"
        )
        notes.append(
            f"the UTM zone {chosen} kept beyond ±{POLAR_LATITUDE:g}° must cover every scene there; "
            f"it does not, so {polar}"
        )
        chosen = polar
    elif beyond and chosen not in ("EPSG:3031", "EPSG:3413"):
        reason += f", kept beyond ±{POLAR_LATITUDE:g}° (see polar)"
    return chosen, reason, "; ".join(notes)


def write_grid(path: str | Path, choice: dict[str, Any]) -> None:
    """Write ``grid.json`` atomically."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(choice, indent=2) + "\n")


def load_grid(path: str | Path) -> RunGrid:
    """The run grid from ``grid.json``; one clear error for a missing, broken or hostile file."""
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise OutcropError(f"{path}: cannot read the run grid ({type(exc).__name__})") from None
    try:
        crs, res, origin = str(data["crs"]), float(data["resolution"]), data["origin"]
        x0, y0 = float(origin[0]), float(origin[1])
    except (KeyError, TypeError, ValueError, IndexError):
        raise OutcropError(f"{path}: not a run grid (needs crs, resolution and origin [x, y])") from None
    if not (math.isfinite(res) and res > 0 and math.isfinite(x0) and math.isfinite(y0)):
        raise OutcropError(f"{path}: resolution must be positive and the origin finite")
    try:
        CRS.from_user_input(crs)
    except CRSError:
        raise OutcropError(f"{path}: unknown run CRS {crs!r}") from None
    check_grid_crs(crs, f"{path}: crs")
    return RunGrid(crs, res, (x0 % res, y0 % res))


def grid_record(path: str | Path) -> dict[str, Any]:
    """The run grid of ``grid.json`` as outputs that depend on it record it (the index's info.json):
    CRS, resolution and origin, checked as :func:`load_grid` checks them, and how each was chosen.
    Only strings are taken for the reasons, so a hostile file cannot put anything else there."""
    grid = load_grid(path)
    data = json.loads(Path(path).read_text())
    reasons = {k: data.get(k) for k in ("crs_reason", "resolution_reason", "alignment_reason")}
    return {
        "crs": grid.crs,
        "resolution": grid.resolution,
        "origin": list(grid.origin),
        **{k: v if isinstance(v, str) else "" for k, v in reasons.items()},
        "source": str(path),
    }


def grid_lines(path: str | Path) -> list[str]:
    """``grid.json`` in a few lines, for ``outcrop info`` and the summary."""
    data = json.loads(Path(path).read_text())
    lines = [
        f"grid: {data.get('crs')} at {data.get('resolution')} m, origin {data.get('origin')}",
        f"  crs: {data.get('crs_reason', '')}",
    ]
    if data.get("polar_reason"):
        lines.append(f"  polar: {data['polar_reason']}")
    lines += [f"  resolution: {data.get('resolution_reason', '')}", f"  alignment: {data.get('alignment_reason', '')}"]
    return lines + [f"  warning: {w}" for w in data.get("warnings", [])]


__all__ = [
    "AUTO",
    "RunGrid",
    "SceneHeader",
    "BandHeader",
    "Proposal",
    "choose_grid",
    "write_grid",
    "load_grid",
    "grid_record",
    "grid_lines",
    "zone_crs",
    "utm_zone",
    "proposal",
    "proposed_crs",
]
