"""A synthetic Antarctic coast with planted truth, so the whole workflow can be judged honestly.

The world is defined by functions of map coordinates (EPSG:3031 metres), not by one big array: a
scene is a window onto it, so overlapping scenes agree pixel for pixel and a new scene can be added
later without touching the others. The ground holds six rock units, two pairs of which share one
mean spectrum and the same texture amplitude (so per-band mean, spread and percentiles cannot tell
them apart) and differ only in the spatial pattern of their texture: bedded versus massive
sandstone, banded gneiss versus schist. Mineral-alteration patches (an iron-oxide/clay signature
with a mottled texture) are planted on rock; every third is published as a known deposit and the
rest kept as hidden truth that only the evaluation reads. No hidden patch lies within
KNOWN_CLEARANCE_M of a known one, so that the analogue search, which reports nothing within its
exclusion radius of a known deposit, can reach every hidden patch.

The coast can be seen on several days (:data:`ACQUISITIONS`): the rock units and the deposits stay
put, while the sun's elevation and azimuth (so the shading of the relief), the haze, the snow line,
the sea ice, the clouds and the scene's gain change. A scene is a (place, day) pair; every day of a
place covers the same pixels of the same ground, so the truth of cross-date re-identification is
exact: a tile of one day is the tile of another day with the same footprint.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from outcrop.config import default
from outcrop.errors import OutcropError
from outcrop.io import write_cog

CRS = "EPSG:3031"
RESOLUTION = 30.0
BANDS = ["coastal", "blue", "green", "red", "nir", "swir1", "swir2"]
# The world's south-west corner; East Antarctic coast, on the 30 m grid.
X0, Y0 = 1_500_000.0, -2_000_010.0
# Landsat Collection 2 Level-2 surface-reflectance scaling, which the demo scenes imitate.
L2_SCALE, L2_OFFSET = 0.0000275, -0.2

# Reflectance spectra over BANDS.
SPECTRA = {
    "snow": [0.88, 0.90, 0.88, 0.85, 0.75, 0.12, 0.09],
    "glacier_ice": [0.62, 0.66, 0.60, 0.52, 0.35, 0.04, 0.03],
    "sea_ice": [0.50, 0.52, 0.48, 0.43, 0.33, 0.05, 0.04],
    "water": [0.07, 0.06, 0.045, 0.025, 0.012, 0.006, 0.004],
    "cloud": [0.72, 0.72, 0.72, 0.72, 0.70, 0.50, 0.38],
    "alteration": [0.09, 0.10, 0.14, 0.27, 0.31, 0.33, 0.17],
}
# Rock units: (name, spectrum key, texture kind). Units 3/4 and 5/6 share their spectrum.
ROCK_SPECTRA = {
    "granite": [0.13, 0.15, 0.19, 0.24, 0.30, 0.36, 0.30],
    "dolerite": [0.05, 0.055, 0.065, 0.075, 0.09, 0.10, 0.085],
    "sandstone": [0.10, 0.12, 0.16, 0.21, 0.26, 0.31, 0.27],
    "gneiss": [0.08, 0.09, 0.11, 0.13, 0.17, 0.21, 0.19],
}
UNITS = [
    ("granite", "granite", "speckled"),
    ("dolerite", "dolerite", "smooth"),
    ("bedded_sandstone", "sandstone", "bedded"),
    ("massive_sandstone", "sandstone", "mottled"),
    ("banded_gneiss", "gneiss", "banded"),
    ("schist", "gneiss", "crinkled"),
]
ALTERATION_CODE = len(UNITS) + 1  # truth code of alteration patches, after the rock units
UNIT_CELL_M = 2000.0  # spacing of the Voronoi seeds that define rock-unit bodies
PATCH_GRID_M = 2400.0  # spacing of candidate alteration-patch centres
# Least distance between a hidden patch's centre and a known deposit: the default exclusion radius
# (1 km, from the deposit's point) plus the largest patch radius and a margin of 720 m, so that a
# default tile (960 m, stride 480 m) covering a good share of the patch lies outside that radius.
KNOWN_CLEARANCE_M = 2200.0


@dataclass(frozen=True)
class DemoLayout:
    """Where the demo scenes sit: scene ``i`` of ``size`` px, overlapping its neighbour by a third."""

    size: int = 512
    seed: int = 7

    @property
    def width_m(self) -> float:
        return self.size * RESOLUTION

    def origin(self, index: int) -> tuple[float, float]:
        """Upper-left corner of scene ``index`` (0-based), snapped to the 30 m grid."""
        step = round(0.65 * self.size) * RESOLUTION
        shift = round(0.15 * self.size) * RESOLUTION if index % 2 else 0.0
        return X0 + index * step, Y0 + self.width_m + shift

    def bounds(self, index: int) -> tuple[float, float, float, float]:
        left, top = self.origin(index)
        return left, top - self.width_m, left + self.width_m, top


@dataclass(frozen=True)
class Acquisition:
    """What a day changes over the same ground; the first day is the single-date demo's look.

    ``sun_elevation``/``sun_azimuth`` (degrees) light the relief: surface reflectance corrects the
    sun's angle over flat ground, not the slopes, so the shading left is cos(incidence)/cos(zenith).
    ``haze`` is the path reflectance added in the coastal band (less towards the infrared).
    ``snow_level`` is the level of the snow field above which land is snow (lower: more snow, the
    snow line moved down); ``ice_edge_m`` moves the ice sheet's edge seaward (positive) or inland.
    ``sea_ice_level`` is the level above which the sea is frozen; ``floes`` seeds where the floes lie.
    """

    date: str
    sun_elevation: float | None = None  # None: no shading (the first day, as the single-date demo)
    sun_azimuth: float = 0.0
    haze: float = 0.0
    snow_level: float = 0.75
    ice_edge_m: float = 0.0
    sea_ice_level: float = 0.5
    floes: int = 0


# The demo's days, late spring to the next summer. Beyond four, days repeat these conditions with
# their own clouds, floes and gains.
ACQUISITIONS = (
    Acquisition("2021-12-14"),
    Acquisition(
        "2022-02-18",
        sun_elevation=24.0,
        sun_azimuth=20.0,
        haze=0.035,
        snow_level=0.45,
        ice_edge_m=900.0,
        sea_ice_level=0.15,
        floes=1,
    ),
    Acquisition(
        "2022-11-05",
        sun_elevation=31.0,
        sun_azimuth=-25.0,
        haze=0.015,
        snow_level=0.3,
        ice_edge_m=1500.0,
        sea_ice_level=-0.4,
        floes=2,
    ),
    Acquisition(
        "2023-01-20",
        sun_elevation=38.0,
        sun_azimuth=5.0,
        haze=0.05,
        snow_level=0.95,
        ice_edge_m=-500.0,
        sea_ice_level=0.9,
        floes=3,
    ),
)
# Path reflectance per band relative to the coastal band's: haze scatters short wavelengths most.
HAZE_SPECTRUM = np.array([1.0, 0.85, 0.62, 0.42, 0.2, 0.05, 0.03])
RELIEF_M = 60.0  # amplitude of the land's relief, which the sun shades


def acquisition(date_index: int) -> Acquisition:
    """The conditions of day ``date_index`` (0-based); days past the table reuse its later rows."""
    if date_index < len(ACQUISITIONS):
        return ACQUISITIONS[date_index]
    base = ACQUISITIONS[1 + (date_index - 1) % (len(ACQUISITIONS) - 1)]
    year = int(base.date[:4]) + (date_index - 1) // (len(ACQUISITIONS) - 1)
    from dataclasses import replace

    return replace(base, date=f"{year}{base.date[4:]}", floes=date_index)


def scene_name(index: int, date_index: int = 0) -> str:
    """Scene ids of the demo: ``demo_1``, ``demo_2``, … for the first day (1-based, as users count);
    ``demo_1_t2``, ``demo_2_t2``, … for the same places on the second day, and so on."""
    return f"demo_{index + 1}" if date_index == 0 else f"demo_{index + 1}_t{date_index + 1}"


def scene_place_and_date(name: str) -> tuple[int, int]:
    """(place index, day index), both 0-based, of a demo scene id."""
    import re

    m = re.fullmatch(r"demo_([1-9]\d*)(?:_t([1-9]\d*))?", name)
    if m is None or m.group(2) == "1":
        raise OutcropError(f"demo scene id {name!r}: expected demo_<n> or demo_<n>_t<day> (day 2 or later)")
    return int(m.group(1)) - 1, int(m.group(2) or 1) - 1


def scene_index(name: str) -> int:
    """The place index (0-based) of a demo scene id."""
    return scene_place_and_date(name)[0]


def scene_names(places: int, dates: int = 1) -> list[str]:
    """Every scene of a demo of ``places`` places seen on ``dates`` days: the first day's places
    first, then the second day's, and so on."""
    return [scene_name(i, d) for d in range(dates) for i in range(places)]


# --- fields evaluable anywhere -------------------------------------------------------------------


def _smooth_field(x: np.ndarray, y: np.ndarray, seed: int, scale_m: float, waves: int = 12) -> np.ndarray:
    """Zero-mean, unit-variance smooth random field: a sum of random plane waves near ``scale_m``."""
    rng = np.random.default_rng(seed)
    out = np.zeros(np.broadcast(x, y).shape, dtype=np.float64)
    for _ in range(waves):
        theta = rng.uniform(0, math.pi)
        wavelength = scale_m * rng.uniform(0.6, 1.6)
        phase = rng.uniform(0, 2 * math.pi)
        out += np.cos(2 * math.pi * (x * math.cos(theta) + y * math.sin(theta)) / wavelength + phase)
    return out * math.sqrt(2.0 / waves)


def _pixel_noise(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Standard-normal-ish noise tied to global pixel indices, identical where scenes overlap."""
    h = (ix.astype(np.uint64) * np.uint64(73856093)) ^ (iy.astype(np.uint64) * np.uint64(19349663))
    h ^= np.uint64(seed * 83492791 + 1)
    h = (h ^ (h >> np.uint64(13))) * np.uint64(0x5BD1E995) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(15)
    u1 = (h & np.uint64(0xFFFF)).astype(np.float64) / 65536.0 + 1e-6
    u2 = (h >> np.uint64(16)).astype(np.float64) / 65536.0
    return np.sqrt(-2 * np.log(u1)) * np.cos(2 * math.pi * u2)


def _coast_y(x: np.ndarray, layout: DemoLayout) -> np.ndarray:
    """Northing of the coastline: land lies north (greater y) of it."""
    base = Y0 + 0.42 * layout.width_m
    return base + 1500 * np.sin(2 * math.pi * (x - X0) / 9000) + 600 * np.sin(2 * math.pi * (x - X0) / 3100 + 1.0)


def _unit_seeds(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Voronoi seeds (jittered grid over a large fixed world) and the unit of each cell."""
    rng = np.random.default_rng(seed + 101)
    gx, gy = np.meshgrid(np.arange(-2, 60), np.arange(-2, 20))
    pts = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float64)
    pts = (pts + rng.uniform(0.1, 0.9, pts.shape)) * UNIT_CELL_M + np.array([X0, Y0])
    units = rng.integers(0, len(UNITS), len(pts))
    return pts, units


@dataclass(frozen=True)
class Patch:
    """A planted alteration patch: centre (map metres), radius (m), id, and whether it is published."""

    pid: int
    x: float
    y: float
    radius: float
    known: bool = False


def planted_patches(layout: DemoLayout) -> list[Patch]:
    """Every alteration patch of the (fixed, large) demo world, on land near the coast.

    Candidates sit on a jittered grid; every third (by id) is a known deposit, and a candidate
    closer than KNOWN_CLEARANCE_M to a known one is not planted at all: it could never be reported
    (it would lie in the known deposit's exclusion zone), nor should its ground count as a miss.
    Roles are fixed for the whole world, so every scene renders the same patches whatever the run.
    """
    candidates = _candidate_patches(layout)
    known = [p for p in candidates if p.known]
    kx, ky = np.array([p.x for p in known]), np.array([p.y for p in known])
    return [
        p for p in candidates if p.known or len(known) == 0 or np.hypot(kx - p.x, ky - p.y).min() >= KNOWN_CLEARANCE_M
    ]


def _candidate_patches(layout: DemoLayout) -> list[Patch]:
    """Seeded candidate patches on a jittered grid in three rows along the coast, off the glaciers."""
    rng = np.random.default_rng(layout.seed + 202)
    patches: list[Patch] = []
    xs = X0 + PATCH_GRID_M * (np.arange(0, 60) + 0.5)
    for row in range(3):
        for x in xs:
            px = x + rng.uniform(-0.3, 0.3) * PATCH_GRID_M
            coast = float(_coast_y(np.array(px), layout))
            py = coast + (row + 0.6) * PATCH_GRID_M * 0.9 + rng.uniform(-0.2, 0.2) * PATCH_GRID_M
            radius = rng.uniform(330, 480)
            px, py = round(px / RESOLUTION) * RESOLUTION, round(py / RESOLUTION) * RESOLUTION
            if _is_glacier(np.array(px), np.array(py), layout, margin=radius + 300):
                continue
            patches.append(Patch(len(patches), px, py, radius, known=len(patches) % 3 == 1))
    return patches


def _is_glacier(x: np.ndarray, y: np.ndarray, layout: DemoLayout, margin: float = 0.0) -> np.ndarray:
    centres = X0 + 9500.0 * (np.arange(0, 12) + 0.3)
    d = np.min(np.abs(np.asarray(x)[..., None] - centres), axis=-1)
    return d < 600 + margin


# --- one scene ------------------------------------------------------------------------------------


def render_scene(
    layout: DemoLayout, index: int, date_index: int = 0
) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Render place ``index`` on day ``date_index``: reflectance (7, H, W), truth units (H, W; 0 = not
    rock, snow or cloud), origin. Day 0 is the single-date demo's scene, pixel for pixel."""
    left, top = layout.origin(index)
    n = layout.size
    ix = np.round(left / RESOLUTION).astype(np.int64) + np.arange(n)
    iy = np.round(top / RESOLUTION).astype(np.int64) - np.arange(n)
    IX, IY = np.meshgrid(ix, iy)
    x = (IX + 0.5) * RESOLUTION
    y = (IY - 0.5) * RESOLUTION
    seed = layout.seed

    day = acquisition(date_index)

    # Surfaces: sea (with floes) south of the coast; glaciers and the ice sheet; snow patches; rock.
    v = y - _coast_y(x, layout)
    land = v > 0
    ice_sheet = v > 0.5 * layout.width_m - day.ice_edge_m + 900 * _smooth_field(x, y, seed + 1, 4000, 6)
    glacier = _is_glacier(x, y, layout) & (v > -900)
    snow = land & (_smooth_field(x, y, seed + 2, 1600) > day.snow_level)
    floes = seed + 3 if day.floes == 0 else seed + 3 + 1000 * day.floes
    sea_ice = ~land & (_smooth_field(x, y, floes, 900) > day.sea_ice_level)

    patches = [p for p in planted_patches(layout) if _near_window(p, left, top, layout.width_m)]
    patch_weight = np.zeros_like(x)
    forced_rock = np.zeros(x.shape, dtype=bool)
    for p in patches:
        r = np.hypot(x - p.x, y - p.y)
        patch_weight = np.maximum(patch_weight, np.clip((p.radius - r) / 90.0 + 0.5, 0, 1))
        forced_rock |= r < p.radius + 250

    # Rock units from the nearest Voronoi seed.
    from scipy.spatial import cKDTree

    pts, cell_units = _unit_seeds(seed)
    _, cell = cKDTree(pts).query(np.stack([x.ravel(), y.ravel()], 1))
    cell = cell.reshape(x.shape)
    unit = cell_units[cell]

    rock = land & ~ice_sheet & ~glacier & ~snow
    rock |= forced_rock & land
    refl = np.empty((len(BANDS), n, n), dtype=np.float64)
    w = _paint_rock(refl, rock, unit, cell, len(pts), patch_weight, x, y, IX, IY, seed)

    def paint(sel: np.ndarray, key: str, texture_amp: float, field_seed: int) -> None:
        if sel.any():
            tex = 1 + texture_amp * _smooth_field(x[sel], y[sel], field_seed, 700)
            refl[:, sel] = np.asarray(SPECTRA[key])[:, None] * tex[None]

    paint(~land & ~sea_ice & ~glacier, "water", 0.05, seed + 4)
    paint(~land & sea_ice & ~glacier, "sea_ice", 0.06, seed + 5)
    paint(land & (ice_sheet | snow) & ~rock & ~glacier, "snow", 0.03, seed + 6)
    paint(glacier, "glacier_ice", 0.04, seed + 7)

    if day.sun_elevation is not None:  # the relief lit from this day's sun
        refl *= _shading(x, y, seed, day)[None]

    # Per-scene illumination: gain and a gentle gradient (sun angle, atmosphere).
    rng = np.random.default_rng(seed * 1000 + index if date_index == 0 else [seed, index, date_index])
    gain = rng.uniform(0.85, 1.15)
    gradient = 1 + 0.05 * ((np.arange(n) - n / 2) / n)[None, :] * rng.choice([-1, 1])
    refl *= gain * gradient[None]

    cloud_alpha = _cloud_alpha(rng, x, y, left, top, layout, patches)
    refl = (1 - cloud_alpha) * refl + cloud_alpha * np.asarray(SPECTRA["cloud"])[:, None, None]

    if day.haze > 0:  # path reflectance, patchy over tens of kilometres; a little light lost on the way
        path = day.haze * (1 + 0.3 * _smooth_field(x, y, seed + 31 + date_index, 6000, 6))
        refl = refl * (1 - 0.5 * day.haze) + HAZE_SPECTRUM[:, None, None] * path[None]

    refl *= 1 + 0.01 * rng.standard_normal(refl.shape)
    truth = np.where(rock & (cloud_alpha < 0.02), unit + 1, 0).astype(np.uint8)
    truth[(truth > 0) & (w >= 0.5)] = ALTERATION_CODE
    return refl.astype(np.float32), truth, (left, top)


def _relief(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Height of the ground (m): ridges a few kilometres apart with smaller spurs on them."""
    return RELIEF_M * (_smooth_field(x, y, seed + 21, 3000, 8) + 0.3 * _smooth_field(x, y, seed + 22, 700, 8))


def _shading(x: np.ndarray, y: np.ndarray, seed: int, day: Acquisition) -> np.ndarray:
    """cos(incidence) / cos(zenith) of the relief under the day's sun: what a flat-terrain correction
    leaves. Slopes come from the relief evaluated half a pixel either side, so overlapping scenes
    shade the same ground alike (no edge effects of a finite difference on the scene's array)."""
    assert day.sun_elevation is not None  # the caller shades only a day with a sun (None: no shading)
    h = RESOLUTION / 2
    dzdx = (_relief(x + h, y, seed) - _relief(x - h, y, seed)) / RESOLUTION
    dzdy = (_relief(x, y + h, seed) - _relief(x, y - h, seed)) / RESOLUTION
    zenith = math.radians(90.0 - float(day.sun_elevation))
    azimuth = math.radians(day.sun_azimuth)  # from grid north, clockwise
    # Unit normal (-dz/dx, -dz/dy, 1)/|.|, sun vector (sin z sin az, sin z cos az, cos z).
    norm = np.sqrt(1 + dzdx**2 + dzdy**2)
    cos_i = (
        -dzdx * math.sin(zenith) * math.sin(azimuth) - dzdy * math.sin(zenith) * math.cos(azimuth) + math.cos(zenith)
    ) / norm
    return np.clip(cos_i / math.cos(zenith), 0.25, 1.8)


def _paint_rock(
    refl: np.ndarray,
    rock: np.ndarray,
    unit: np.ndarray,
    cell: np.ndarray,
    n_cells: int,
    patch_weight: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    IX: np.ndarray,
    IY: np.ndarray,
    seed: int,
) -> np.ndarray:
    """Paint each rock unit's spectrum and texture into ``refl``, then overprint the alteration
    patches on their host rock; returns the alteration weight per pixel (0 off the patches)."""
    cell_rng = np.random.default_rng(seed + 303)
    cell_tint = 1 + 0.03 * cell_rng.standard_normal((n_cells, len(BANDS)))

    for u, (_, spectrum_key, texture) in enumerate(UNITS):
        sel = rock & (unit == u)
        if not sel.any():
            continue
        tex = _texture(texture, x[sel], y[sel], IX[sel], IY[sel], cell[sel], seed)
        base = np.asarray(ROCK_SPECTRA[spectrum_key])[:, None] * cell_tint[cell[sel]].T
        refl[:, sel] = base * tex[None]

    # Alteration overprints its host rock.
    w = np.where(rock, patch_weight, 0.0)
    if w.any():
        sel = w > 0
        mottle = (
            1 + 0.12 * _pixel_noise(IX[sel], IY[sel], seed + 17) + 0.08 * _smooth_field(x[sel], y[sel], seed + 18, 150)
        )
        alt = np.asarray(SPECTRA["alteration"])[:, None] * mottle[None]
        refl[:, sel] = (1 - w[sel]) * refl[:, sel] + w[sel] * alt
    return w


def _cloud_alpha(
    rng: np.random.Generator,
    x: np.ndarray,
    y: np.ndarray,
    left: float,
    top: float,
    layout: DemoLayout,
    patches: list[Patch],
) -> np.ndarray:
    """A little cloud (opacity per pixel), kept off the planted patches so that every patch can be
    seen in some scene. Draws from the scene's ``rng`` in the order the scene's other draws expect."""
    cloud_alpha = np.zeros_like(x)
    for _ in range(int(rng.integers(1, 3))):
        cloud_r = rng.uniform(500, 900)
        for _try in range(50):
            cx = left + rng.uniform(0.1, 0.9) * layout.width_m
            cy = top - rng.uniform(0.1, 0.9) * layout.width_m
            if all(math.hypot(cx - p.x, cy - p.y) > 2.2 * cloud_r + p.radius + 700 for p in patches):
                break
        else:
            continue
        r = np.hypot(x - cx, y - cy) / cloud_r
        puff = np.clip(1.6 - r + 0.4 * _smooth_field(x, y, int(rng.integers(1 << 30)), 400, 6), 0, 1)
        cloud_alpha = np.maximum(cloud_alpha, puff)
    return cloud_alpha


def _near_window(p: Patch, left: float, top: float, width: float) -> bool:
    pad = p.radius + 400
    return left - pad <= p.x <= left + width + pad and top - width - pad <= p.y <= top + pad


def _texture(
    kind: str, x: np.ndarray, y: np.ndarray, ix: np.ndarray, iy: np.ndarray, cell: np.ndarray, seed: int
) -> np.ndarray:
    """Multiplicative texture of a rock unit; paired units share amplitude and marginal shape.

    Bedded/mottled and banded/crinkled are both ``1 + a*sin(2*pi*phase)``: a straight phase ramp
    gives layers, a random smooth phase gives mottling or crinkles, so their per-pixel value
    distributions match and only the spatial pattern differs.
    """
    rng = np.random.default_rng(seed + 404)
    angles = rng.uniform(0, math.pi, cell.max() + 1)
    theta = angles[cell]
    along = x * np.cos(theta) + y * np.sin(theta)
    if kind == "speckled":
        return 1 + 0.10 * _pixel_noise(ix, iy, seed + 11) + 0.05 * _smooth_field(x, y, seed + 12, 300)
    if kind == "smooth":
        return 1 + 0.04 * _smooth_field(x, y, seed + 13, 500) + 0.01 * _pixel_noise(ix, iy, seed + 14)
    if kind == "bedded":
        return 1 + 0.16 * np.sin(2 * math.pi * along / 150.0)
    if kind == "mottled":
        return 1 + 0.16 * np.sin(2 * math.pi * 0.9 * _smooth_field(x, y, seed + 15, 700))
    if kind == "banded":
        return 1 + 0.22 * np.sin(2 * math.pi * along / 240.0)
    if kind == "crinkled":
        return 1 + 0.22 * np.sin(2 * math.pi * 0.9 * _smooth_field(x, y, seed + 16, 260))
    raise ValueError(kind)


# --- writing ----------------------------------------------------------------------------------


def synthesise_scene(
    out_scene: str | Path,
    out_truth: str | Path,
    *,
    index: int,
    size: int = default("demo.size"),
    seed: int = default("demo.seed"),
    date_index: int = 0,
) -> None:
    """Write place ``index`` on day ``date_index`` as a Landsat-L2-style uint16 GeoTIFF stamped with
    its acquisition date (:mod:`outcrop.raster.dates`), and its rock-unit truth."""
    from rasterio.transform import from_origin

    from outcrop.raster.dates import TAG

    layout = DemoLayout(size=size, seed=seed)
    refl, truth, (left, top) = render_scene(layout, index, date_index)
    dn = np.clip(np.round((refl - L2_OFFSET) / L2_SCALE), 1, 65535).astype(np.uint16)
    transform = from_origin(left, top, RESOLUTION, RESOLUTION)
    profile = {"crs": CRS, "transform": transform, "nodata": 0}
    write_cog(
        out_scene,
        dn,
        profile,
        band_names=BANDS,
        tags={
            "sensor": "landsat-c2l2",
            "scene": scene_name(index, date_index),
            "synthetic": "outcrop demo",
            TAG: acquisition(date_index).date,
        },
        resampling="average",
    )
    write_cog(
        out_truth,
        truth,
        profile,
        band_names=["rock_unit"],
        tags={
            "units": ",".join([u[0] for u in UNITS] + ["alteration"]),
            "note": "0 = not rock; n = n-th name of the units tag",
        },
    )


def write_demo_scene(
    out: str | Path,
    truth: str | Path,
    *,
    scene: str,
    size: int = default("demo.size"),
    seed: int = default("demo.seed"),
    log: Callable[[str], None] = print,
) -> None:
    """Write the demo scene named ``scene`` (``demo_<n>`` on the first day, ``demo_<n>_t<day>`` on a
    later one, as the demo's scene sheet names them) and its truth."""
    place, day = scene_place_and_date(scene)
    synthesise_scene(out, truth, index=place, date_index=day, size=size, seed=seed)
    log(f"demo: wrote {out} and {truth}")


def write_deposits(
    out_known: str | Path,
    out_truth: str | Path,
    *,
    scenes: int,
    size: int = default("demo.size"),
    seed: int = default("demo.seed"),
    log: Callable[[str], None] = print,
) -> None:
    """Publish the known patches inside the scenes as deposits; keep the rest hidden.

    Known deposits are points in longitude/latitude, as a user would have them; the hidden truth is
    the patch discs in the run CRS.
    """
    import geopandas as gpd
    from shapely.geometry import Point

    from outcrop.io import write_geodataframe

    layout = DemoLayout(size=size, seed=seed)
    inside = []
    for p in planted_patches(layout):
        for i in range(scenes):
            left, bottom, right, top = layout.bounds(i)
            pad = p.radius + 300
            if left + pad <= p.x <= right - pad and bottom + pad <= p.y <= top - pad:
                inside.append(p)
                break
    known = [p for p in inside if p.known]
    hidden = [p for p in inside if not p.known]
    if not known or not hidden:
        raise OutcropError(
            f"demo: {len(known)} known and {len(hidden)} hidden alteration patches fall inside "
            f"{scenes} scenes; at least one of each is needed"
        )
    known_gdf = gpd.GeoDataFrame(
        {"name": [f"occurrence_{p.pid}" for p in known]},
        geometry=[Point(p.x, p.y) for p in known],
        crs=CRS,
    ).to_crs("EPSG:4326")
    hidden_gdf = gpd.GeoDataFrame(
        {"name": [f"patch_{p.pid}" for p in hidden], "radius_m": [p.radius for p in hidden]},
        geometry=[Point(p.x, p.y).buffer(p.radius) for p in hidden],
        crs=CRS,
    )
    write_geodataframe(out_known, known_gdf, layer="deposits")
    write_geodataframe(out_truth, hidden_gdf, layer="hidden_deposits")
    log(f"demo: wrote {len(known)} known deposits to {out_known} and {len(hidden)} hidden ones to {out_truth}")
