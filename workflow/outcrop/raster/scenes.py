"""The ``prepare`` stage: one scene, in whatever layout its producer ships, onto the run grid.

A scene arrives as a single multi-band GeoTIFF, a product folder with one file per band (Landsat
``*_B4.TIF`` + ``*_QA_PIXEL.TIF`` + ``*_MTL.txt``, Sentinel-2 ``*_B04.jp2`` at 10/20/60 m + ``SCL``),
a remote COG read by HTTP range requests, or a STAC item whose assets are the per-band files,
local or remote (:mod:`outcrop.raster.stac`). :func:`prepare_scene` finds the requested bands,
reprojects each onto the run grid (run CRS, resolution, pixel edges at integer multiples of the
resolution from the CRS origin so that overlapping scenes line up pixel for pixel), turns stored
numbers into reflectance with the sensor's rescaling (:mod:`outcrop.raster.sensors`), classifies surfaces
and writes the prepared COG. Every check runs before anything is written.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from outcrop.config import check_grid_crs, default
from outcrop.errors import OutcropError
from outcrop.io import prepared_writer
from outcrop.limits import LIMITS, limit, setting
from outcrop.raster.dates import TAG as DATE_TAG
from outcrop.raster.dates import product_date
from outcrop.raster.geo import SceneGrid
from outcrop.raster.grid_choice import BandHeader, SceneHeader, choose_grid
from outcrop.raster.sensors import (
    QUALITY_FILL,
    S2_ZERO_DN,
    VISIBLE_BANDS,
    QualityMasks,
    Sensor,
    bqa_layout,
    canonical_name,
    check_band_names,
    decode_quality,
    flatten_mtl_json,
    get_sensor,
    landsat_acquisition_date,
    modelled_sun_elevation,
    mtl_reflectance,
    normalise_token,
    parse_mtl_text,
    percentile_rescale,
    sentinel2_offset,
    sentinel2_offset_from_values,
)
from outcrop.raster.sheets import REMOTE_PREFIXES
from outcrop.raster.surfaces import (
    CLASS_LABELS,
    NODATA,
    ROCK,
    SNOW_ICE,
    UNKNOWN,
    VEGETATION,
    WATER,
    Thresholds,
    classify_surfaces,
)

# Settings for remote reads: never list the remote "directory", read only the bytes asked for.
_GDAL_ENV = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF,.jp2,.JP2",
    "GDAL_HTTP_MAX_RETRY": "2",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_HTTP_TIMEOUT": "60",
    "GDAL_HTTP_CONNECTTIMEOUT": "15",
}

# A scene is read, rescaled, classified and written in windows of about this many pixels (256-px
# multiples, the COG's blocks): with 7 bands, a window's float32 arrays and their temporaries stay
# within a few hundred MB whatever the scene's size.
WINDOW_PIXELS = 1 << 22
# Largest run-grid block one scene may cover: 2 Gpx is 45000 px on a side, four Landsat scenes
# wide; a header claiming more (a sparse file of 200000 x 200000 px) is refused before any work.
# The default of limits.scene_pixels (outcrop.limits); `outcrop prepare --max-pixels` overrides it.
MAX_SCENE_PIXELS = LIMITS["scene_pixels"].default


@dataclass(frozen=True)
class BandFile:
    """One requested band: canonical ``name``, the file it is in, its 1-based ``index`` there."""

    name: str
    path: str
    index: int = 1
    token: str = ""  # producer token (``B4``), for MTL lookups


@dataclass
class SceneFiles:
    """Everything a scene's source holds that :func:`prepare_scene` needs."""

    bands: list[BandFile]
    quality: tuple[str, str] | None = None  # (kind, path)
    mtl: dict[str, str] | None = None
    metadata_text: str | None = None  # Sentinel-2 MTD_MSI*.xml
    product_name: str = ""
    rescaling: tuple[np.ndarray, np.ndarray, str] | None = None  # per band, declared by the source
    checks: list[str] = field(default_factory=list)
    stamped: str | None = None  # a date the source states itself (its ACQUISITION_DATE tag, a STAC datetime)


def is_remote(source: str) -> bool:
    """Whether ``source`` is read over the network (GDAL ``/vsicurl/``) rather than from disk."""
    return str(source).startswith(REMOTE_PREFIXES)


def _gdal_path(source: str) -> str:
    if str(source).startswith(("http://", "https://")):
        return "/vsicurl/" + str(source)
    return str(source)


@contextmanager
def open_raster(path: str) -> Iterator[Any]:
    """Open a raster with rasterio, turning any failure into an :class:`OutcropError` naming it."""
    import rasterio
    from rasterio.errors import RasterioError

    try:
        with rasterio.Env(**_GDAL_ENV), rasterio.open(_gdal_path(path)) as src:
            yield src
    except RasterioError as exc:
        raise OutcropError(f"{path}: cannot read raster ({_short(exc)})") from None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


# --- finding the bands ----------------------------------------------------------------------

_BAND_FILE = re.compile(
    r"(?:^|_)(?:SR_|TOA_)?(B\d{1,2}A?|QA_PIXEL|BQA|SCL)(?:_(\d{2})m)?\.(?:tif|tiff|jp2)$", re.IGNORECASE
)


def find_scene_files(
    source: str, sensor: Sensor, bands: Sequence[str], declared_bands: Sequence[str] | None = None
) -> SceneFiles:
    """Locate each requested band (and the quality band and metadata) in ``source``.

    A folder is searched recursively for the producers' band file names; a single file (local or
    remote) holds all bands, named by ``declared_bands`` or else by its band descriptions; a STAC
    item (``stac:`` + path or URL, or a ``.json`` path or URL) names one asset per band.
    """
    from outcrop.raster.stac import is_stac_source

    if is_stac_source(source):
        return _stac_item(source, sensor, bands)
    if is_remote(source):
        return _single_file(source, sensor, bands, declared_bands)
    path = Path(source)
    if path.is_dir():
        return _product_folder(path, sensor, bands)
    if path.is_file():
        return _single_file(str(path), sensor, bands, declared_bands)
    if path.exists():  # GDAL would read /dev/zero without end, or wait on a pipe for a writer
        raise OutcropError(
            f"{source}: not a regular file or folder (a device, pipe or socket), so not a raster; "
            "give a raster file, a product folder, a URL or a STAC item"
        )
    raise OutcropError(f"{source}: no such file or folder")


def _single_file(source: str, sensor: Sensor, bands: Sequence[str], declared_bands: Sequence[str] | None) -> SceneFiles:
    with open_raster(source) as src:
        count = src.count
        descriptions = list(src.descriptions)
        stamped = src.tags().get(DATE_TAG)
    if count == 0:
        raise OutcropError(f"{source}: the file has no bands")
    if declared_bands is not None:
        labels = list(declared_bands)
        if len(labels) != count:
            raise OutcropError(f"{source}: {len(labels)} declared band names for a file of {count} bands")
        where = "declared band"
    else:
        if not all(descriptions):
            raise OutcropError(
                f"{source}: the file's bands have no descriptions; declare its band names "
                f"({count} bands, in file order)"
            )
        labels = [str(d) for d in descriptions]
        where = "band description"
    names: list[str] = []
    for label in labels:
        name = canonical_name(sensor, label)
        if name is None:
            raise OutcropError(f"{source}: unknown {where} {label!r} for sensor {sensor.name}")
        names.append(name)
    if len(set(names)) != len(names):
        raise OutcropError(f"{source}: band names {names} name a band twice")
    found = []
    for band in bands:
        if band not in names:
            raise OutcropError(f"{source}: band {band!r} is not in the file (it has {', '.join(names)})")
        index = names.index(band)
        found.append(BandFile(band, source, index + 1, normalise_token(labels[index])))
    return SceneFiles(found, product_name=Path(source).name, stamped=stamped)


def _stac_item(source: str, sensor: Sensor, bands: Sequence[str]) -> SceneFiles:
    """A STAC item's assets as band files; its MTL asset and declared rescaling when it has them."""
    from outcrop.raster.stac import fetch_text, item_bands, item_sensor, load_item

    item = load_item(source)
    detected = item_sensor(item)
    if detected.split("-")[0] != sensor.name.split("-")[0]:
        raise OutcropError(f"{item.where}: item {item.id!r} is a {detected} scene, not {sensor.name}")
    assets = item_bands(item, sensor.name)
    found = []
    for band in bands:
        if band not in assets.bands:
            raise OutcropError(
                f"{item.where}: item {item.id!r} has no asset for band {band!r} (it has {', '.join(assets.bands)})"
            )
        href, token = assets.bands[band]
        found.append(BandFile(band, href, 1, token))
    files = SceneFiles(found, assets.quality, product_name=assets.product_name, stamped=item.properties.get("datetime"))
    if sensor.radiometry == "mtl" and assets.mtl is not None:
        text = fetch_text(assets.mtl)
        try:
            if assets.mtl.lower().endswith(".json"):
                import json

                files.mtl = flatten_mtl_json(json.loads(text))
            else:
                files.mtl = parse_mtl_text(text)
        except ValueError as exc:
            raise OutcropError(f"{assets.mtl}: cannot read metadata ({_short(exc)})") from None
    if sensor.radiometry in ("fixed", "sentinel2") and all(b in assets.rescaling for b in bands):
        pairs = [assets.rescaling[b] for b in bands]
        files.rescaling = (
            np.array([p[0] for p in pairs]),
            np.array([p[1] for p in pairs]),
            "STAC raster:bands scale/offset of the item's assets",
        )
    return files


def _product_folder(folder: Path, sensor: Sensor, bands: Sequence[str]) -> SceneFiles:
    candidates: dict[str, list[tuple[int, Path]]] = {}
    for path in sorted(folder.rglob("*")):
        m = _BAND_FILE.search(path.name)
        if not m or not path.is_file():
            continue
        token = normalise_token(m.group(1))
        res = int(m.group(2)) if m.group(2) else 0
        candidates.setdefault(token, []).append((res, path))

    def pick(token: str) -> Path | None:
        options = sorted(candidates.get(token, []), key=lambda rp: rp[0])
        if not options:
            return None
        if len(options) > 1 and options[0][0] == options[1][0]:
            raise OutcropError(f"{folder}: more than one file for {token}: {options[0][1].name}, {options[1][1].name}")
        return options[0][1]  # finest resolution first

    by_name = {name: token for token, name in sensor.band_tokens.items()}
    found = []
    for band in bands:
        if band not in by_name:
            raise OutcropError(
                f"{folder}: sensor {sensor.name} has no band {band!r} (it has {', '.join(sensor.band_tokens.values())})"
            )
        token = by_name[band]
        picked = pick(token)
        if picked is None:
            raise OutcropError(f"{folder}: band {band!r} ({token}) is missing: no *_{token} file in the folder")
        found.append(BandFile(band, str(picked), 1, token))
    quality = None
    for kind in sensor.quality:
        picked = pick(kind)
        if picked is not None:
            quality = (kind, str(picked))
            break
    files = SceneFiles(found, quality, product_name=folder.name)
    mtl = sorted(folder.rglob("*_MTL.txt")) + sorted(folder.rglob("*_MTL.json"))
    if mtl:
        try:
            if mtl[0].suffix == ".json":
                import json

                files.mtl = flatten_mtl_json(json.loads(mtl[0].read_text()))
            else:
                files.mtl = parse_mtl_text(mtl[0].read_text())
        except (OSError, ValueError) as exc:
            raise OutcropError(f"{mtl[0]}: cannot read metadata ({_short(exc)})") from None
    mtd = sorted(folder.rglob("MTD_MSI*.xml"))
    if mtd:
        files.metadata_text = mtd[0].read_text(errors="replace")
    return files


# --- the run grid ---------------------------------------------------------------------------

_EPS = 1e-6


def snap_bounds(
    bounds: tuple[float, float, float, float], resolution: float, origin: tuple[float, float] = (0.0, 0.0)
) -> tuple[float, float, float, float]:
    """Grow ``bounds`` outwards to the run grid's pixel edges, ``origin + k * resolution``."""
    left, bottom, right, top = bounds
    x0, y0 = origin
    return (
        math.floor((left - x0) / resolution + _EPS) * resolution + x0,
        math.floor((bottom - y0) / resolution + _EPS) * resolution + y0,
        math.ceil((right - x0) / resolution - _EPS) * resolution + x0,
        math.ceil((top - y0) / resolution - _EPS) * resolution + y0,
    )


def grid_for(
    footprints: Sequence[tuple[Any, tuple[float, float, float, float]]],
    crs: str,
    resolution: float,
    origin: tuple[float, float] = (0.0, 0.0),
) -> SceneGrid:
    """The smallest block of the run grid (pixel edges at ``origin + k * resolution``) that covers
    every (source CRS, bounds) footprint."""
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.warp import transform_bounds

    dst_crs = CRS.from_user_input(crs)
    boxes = []
    for src_crs, bounds in footprints:
        if CRS.from_user_input(src_crs) == dst_crs:
            boxes.append(tuple(bounds))
        else:
            boxes.append(transform_bounds(src_crs, dst_crs, *bounds, densify_pts=51))
    left = min(b[0] for b in boxes)
    bottom = min(b[1] for b in boxes)
    right = max(b[2] for b in boxes)
    top = max(b[3] for b in boxes)
    left, bottom, right, top = snap_bounds((left, bottom, right, top), resolution, origin)
    width = int(round((right - left) / resolution))
    height = int(round((top - bottom) / resolution))
    return SceneGrid(dst_crs, Affine(resolution, 0.0, left, 0.0, -resolution, top), width, height)


def _aligned_window(src: Any, grid: SceneGrid) -> tuple[int, int] | None:
    """(row, col) offset of the grid in ``src`` when both share CRS, resolution and pixel edges."""
    st, gt = src.transform, grid.transform
    if src.crs != grid.crs or st.b != 0 or st.d != 0:
        return None
    if abs(st.a - gt.a) > _EPS * gt.a or abs(st.e - gt.e) > _EPS * gt.a:
        return None
    col = (gt.c - st.c) / st.a
    row = (gt.f - st.f) / st.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return int(round(row)), int(round(col))


def _source_pixel_size(src: Any, grid: SceneGrid) -> float:
    """Approximate size of a source pixel measured in the grid's CRS units."""
    from rasterio.warp import transform_bounds

    left, bottom, right, top = transform_bounds(src.crs, grid.crs, *src.bounds, densify_pts=21)
    return math.sqrt(abs((right - left) * (top - bottom)) / (src.width * src.height))


def read_onto_grid(
    src: Any,
    index: int,
    grid: SceneGrid,
    *,
    nodata: float | None,
    categorical: bool = False,
    fill: float = np.nan,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Band ``index`` of ``src`` on ``grid`` as float32, ``fill`` outside the footprint and at nodata.

    Continuous bands are resampled bilinearly, or by area average where the grid is coarser than
    the source; categorical bands (quality flags) by nearest neighbour. A source already on the
    grid is read directly, so its values come through untouched. ``out`` (float32, the grid's
    shape) is written in place when given, which spares a scene-sized copy per band.
    """
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import reproject
    from rasterio.windows import Window

    if out is None:
        out = np.empty((grid.height, grid.width), dtype=np.float32)
    offset = _aligned_window(src, grid)
    if offset is not None:
        row, col = offset
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + grid.height, src.height), min(col + grid.width, src.width)
        window = Window(c0, r0, c1 - c0, r1 - r0)
        whole = (r0 - row, c0 - col, r1 - r0, c1 - c0) == (0, 0, grid.height, grid.width)
        dtype = np.dtype(src.dtypes[index - 1])
        if r1 > r0 and c1 > c0 and (dtype.kind == "f" or dtype.itemsize > 2):
            # wide integers do not survive float32 exactly: compare nodata in the stored type
            out.fill(fill)
            data = src.read(index, window=window)
            block = data.astype(np.float32)
            if nodata is not None:
                block[(data == nodata) | (np.isnan(nodata) & np.isnan(block))] = fill
            out[r0 - row : r1 - row, c0 - col : c1 - col] = block
            return out
        if r1 > r0 and c1 > c0 and whole:
            src.read(index, window=window, out=out)  # GDAL converts to float32 as it reads
        else:
            out.fill(fill)
            if r1 > r0 and c1 > c0:
                out[r0 - row : r1 - row, c0 - col : c1 - col] = src.read(index, window=window, out_dtype=np.float32)
        if nodata is not None and r1 > r0 and c1 > c0:
            inner = out[r0 - row : r1 - row, c0 - col : c1 - col]
            inner[np.isnan(inner) if np.isnan(nodata) else inner == np.float32(nodata)] = fill
        return out
    out.fill(fill)
    if categorical:
        resampling = Resampling.nearest
    elif _source_pixel_size(src, grid) < grid.transform.a * 0.95:
        resampling = Resampling.average
    else:
        resampling = Resampling.bilinear
    reproject(
        source=rasterio.band(src, index),
        destination=out,
        src_nodata=nodata,
        dst_transform=grid.transform,
        dst_crs=grid.crs,
        dst_nodata=fill,
        resampling=resampling,
        init_dest_nodata=True,
    )
    return out


# --- radiometry -----------------------------------------------------------------------------


def _rescaling(
    sensor: Sensor,
    files: SceneFiles,
    whole_scene: Callable[[], np.ndarray],
    dtypes: list[str],
    scale: float | None,
    offset: float | None,
    centre: tuple[float, float] | None = None,
    sample: Callable[[], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Per-band (scale, offset) turning stored numbers into reflectance, and a note saying how.

    ``centre`` is the scene centre (lon, lat), for the modelled sun elevation of Landsat Level-1
    products that come without their MTL file. ``whole_scene`` returns the scene's stored numbers
    (C, H, W), NaN where invalid; it is called only by the percentile rule, the one rule that needs
    every pixel at once. ``sample`` returns the same on a coarse grid (a few hundred pixels a side),
    for the Sentinel-2 baseline test of a product that does not state its baseline.
    """
    c = len(files.bands)
    o: float | None  # the offset, once a rule below finds it
    if scale is not None or offset is not None:
        s = sensor.scale if scale is None else scale
        o = (0.0 if sensor.radiometry == "auto" else sensor.offset) if offset is None else offset
        return np.full(c, s), np.full(c, o), f"given scale {s} offset {o}"
    if files.rescaling is not None:
        return files.rescaling
    if sensor.radiometry == "fixed":
        return (
            np.full(c, sensor.scale),
            np.full(c, sensor.offset),
            f"{sensor.name} scale {sensor.scale} offset {sensor.offset}",
        )
    if sensor.radiometry == "sentinel2":
        o = sentinel2_offset(files.metadata_text, files.product_name)
        how = "from product metadata"
        visible = [i for i, b in enumerate(files.bands) if b.name in VISIBLE_BANDS]
        if o is None and visible and sample is not None:
            o, share = sentinel2_offset_from_values(sample()[visible])
            how = f"no metadata: {share:.0%} of visible values below DN {S2_ZERO_DN}, " + (
                "so no offset (baseline before 04.00)" if o == 0.0 else "baseline >= 04.00"
            )
        elif o is None:
            o, how = sensor.offset, "baseline >= 04.00 assumed"
        return np.full(c, sensor.scale), np.full(c, o), f"Sentinel-2 scale {sensor.scale} offset {o} ({how})"
    if sensor.radiometry == "mtl":
        if files.mtl is not None:
            pairs = [mtl_reflectance(files.mtl, b.token) for b in files.bands]
            missing = [b.name for b, p in zip(files.bands, pairs) if p is None]
            if missing:
                raise OutcropError(f"{files.product_name}: MTL has no reflectance rescaling for {', '.join(missing)}")
            rescaled = [p for p in pairs if p is not None]  # every band's, none missing
            return (
                np.array([p[0] for p in rescaled]),
                np.array([p[1] for p in rescaled]),
                "MTL REFLECTANCE_MULT/ADD with sun elevation",
            )
        date = landsat_acquisition_date(files.product_name + " " + Path(files.bands[0].path).name)
        if date is not None and centre is not None:
            elevation = modelled_sun_elevation(centre[1], centre[0], date)
            if elevation > 1.0:
                sin_el = math.sin(math.radians(elevation))
                return (
                    np.full(c, sensor.scale / sin_el),
                    np.full(c, sensor.offset / sin_el),
                    f"no MTL: OLI rescaling {sensor.scale} {sensor.offset}, modelled sun elevation "
                    f"{elevation:.1f} deg on {date}",
                )
        scales, offsets = percentile_rescale(whole_scene())
        return scales, offsets, "no MTL nor acquisition date: dark-object subtraction and shared gain (percentile rule)"
    # generic file: floats are taken as reflectance, integers need the percentile rule
    if all(np.dtype(d).kind == "f" for d in dtypes):
        return np.ones(c), np.zeros(c), "float data taken as reflectance"
    scales, offsets = percentile_rescale(whole_scene())
    return scales, offsets, "integer data without scale: dark-object subtraction and shared gain (percentile rule)"


# --- surfaces -------------------------------------------------------------------------------


def scene_surfaces(
    reflectance: np.ndarray, bands: Sequence[str], thresholds: Thresholds, quality: QualityMasks | None
) -> np.ndarray:
    """Surface mask of a prepared scene: the spectral rules with the quality band's cloud, then,
    for Sentinel-2 SCL, its own water and snow classes on the pixels it does not call cloud, and its
    vegetation on the ground the bands could not test (no red or NIR)."""
    mask = classify_surfaces(reflectance, list(bands), thresholds, cloud=quality.cloud if quality is not None else None)
    if quality is not None and quality.water is not None and quality.snow is not None:
        # SCL tells water, snow and vegetation apart whatever the bands: what it leaves is ground
        unknown = mask == UNKNOWN
        mask[unknown] = ROCK
        keep = (mask != NODATA) & ~quality.cloud
        if quality.vegetation is not None:
            mask[keep & unknown & quality.vegetation] = VEGETATION
        mask[keep & quality.water] = WATER
        mask[keep & quality.snow] = SNOW_ICE
    return mask


def _centre_lonlat(meta: dict[str, Any]) -> tuple[float, float] | None:
    from rasterio.warp import transform

    b = meta["bounds"]
    try:
        xs, ys = transform(meta["crs"], "EPSG:4326", [(b[0] + b[2]) / 2], [(b[1] + b[3]) / 2])
    except Exception:  # a CRS without a geographic counterpart
        return None
    return float(xs[0]), float(ys[0])


# --- the stage ------------------------------------------------------------------------------


def _check_consistent(files: SceneFiles, meta: dict[str, dict[str, Any]], source: str) -> None:
    """Bands of one product must share a CRS; at one resolution, exactly one grid; across
    resolutions, the same extent to within a coarse pixel."""
    paths = list(meta)
    if len(paths) < 2:
        return
    first = meta[paths[0]]
    for p in paths[1:]:
        m = meta[p]
        if m["crs"] != first["crs"]:
            raise OutcropError(f"{source}: {Path(p).name} is in {m['crs']} but {Path(paths[0]).name} in {first['crs']}")
    for i, p in enumerate(paths):
        for q in paths[i + 1 :]:
            a, b = meta[p], meta[q]
            same_res = abs(a["res"] - b["res"]) <= _EPS * a["res"]
            if same_res and (a["shape"] != b["shape"] or not a["transform"].almost_equals(b["transform"])):
                raise OutcropError(
                    f"{source}: bands of mismatched extent or size: {Path(p).name} is "
                    f"{a['shape'][1]}x{a['shape'][0]} px at {tuple(a['bounds'])}, "
                    f"{Path(q).name} is {b['shape'][1]}x{b['shape'][0]} px at {tuple(b['bounds'])}"
                )
            if not same_res:
                tol = max(a["res"], b["res"]) * 1.01
                if any(abs(x - y) > tol for x, y in zip(a["bounds"], b["bounds"])):
                    raise OutcropError(
                        f"{source}: bands of mismatched extent: {Path(p).name} covers "
                        f"{tuple(a['bounds'])}, {Path(q).name} covers {tuple(b['bounds'])}"
                    )


def _acquisition_date(files: SceneFiles, source: str, date: str | None) -> tuple[str | None, str]:
    """The scene's acquisition date and where it came from: the sheet's, else the product's metadata or name."""
    return product_date(
        sheet=date,
        mtl=files.mtl,
        mtd=files.metadata_text,
        stamped=files.stamped,
        names=[files.product_name, source, *(b.path for b in files.bands)],
    )


def _checked_headers(files: SceneFiles, source: str) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The scene's distinct raster paths (bands, then quality) and their headers, checked to agree.

    Every header is read and checked before any pixel, so a bad scene fails before anything is written.
    """
    paths = list(dict.fromkeys([b.path for b in files.bands] + ([files.quality[1]] if files.quality else [])))
    meta = _raster_headers(paths)
    _check_consistent(files, meta, source)
    return paths, meta


def _scene_rescaling(
    reader: _BlockReader,
    layout: str | None,
    grid: SceneGrid,
    spec: Sensor,
    files: SceneFiles,
    meta: dict[str, dict[str, Any]],
    source: str,
    given: tuple[float | None, float | None],
) -> tuple[Any, Any, str]:
    """Per-band (scale, offset) and how they were found (:func:`_rescaling`), ``given`` (scale, offset) first.

    The whole scene is read only for the rules that need all its numbers, and after a memory check;
    the others see a coarse grid, or nothing.
    """

    def whole_scene() -> np.ndarray:
        """The scene's stored numbers at once, for the rescaling rules that need all of them."""
        check_memory(
            len(reader.bands) * grid.height * grid.width * 4,
            source,
            "to rescale it from its own statistics (give scale and offset to avoid this)",
        )
        dn, _, _ = reader.read(grid, layout)
        return dn

    def coarse_scene() -> np.ndarray:
        """The scene's stored numbers on a grid at most SAMPLE_SIDE px a side (area averages)."""
        return reader.read(coarse_grid(grid), layout)[0]

    scale, offset = given
    return _rescaling(
        spec,
        files,
        whole_scene,
        [meta[b.path]["dtype"] for b in files.bands],
        scale,
        offset,
        _centre_lonlat(meta[files.bands[0].path]),
        coarse_scene,
    )


def rescale_in_place(dn: np.ndarray, scale: Sequence[float], offset: Sequence[float]) -> np.ndarray:
    """``dn`` (bands, rows, cols) as reflectance, ``dn * scale + offset`` per band, in place: no second window."""
    for i in range(len(dn)):
        dn[i] *= np.float32(scale[i])
        dn[i] += np.float32(offset[i])
    return dn


@dataclass(frozen=True)
class _WindowJob:
    """What each window of a scene needs: the open reader, its quality layout, the bands, rescaling, thresholds."""

    reader: _BlockReader
    layout: str | None
    bands: list[str]
    rescaling: tuple[Any, Any]
    thresholds: Thresholds


def _write_windows(
    job: _WindowJob, grid: SceneGrid, out_path: str | Path, tags: dict[str, str], window_pixels: int, source: str
) -> tuple[int, int]:
    """Read, rescale, classify and write the scene window by window; return (negative values, valid pixels).

    Memory is bounded by a window. An all-nodata scene is refused inside the writer, so nothing is left.
    """
    s, o = job.rescaling
    valid_pixels = negatives = 0
    with prepared_writer(
        out_path, grid.crs, grid.transform, job.bands, (grid.height, grid.width), tags, CLASS_LABELS
    ) as write:
        for row, col, block in grid_windows(grid, window_pixels):
            dn, quality, invalid = job.reader.read(block, job.layout)
            reflectance = rescale_in_place(dn, s, o)
            # invalid pixels are NaN in every band, and NaN compares false: count without a masked copy
            negatives += int(np.count_nonzero(reflectance < -0.05))
            valid_pixels += int(invalid.size - np.count_nonzero(invalid))
            write(row, col, reflectance, scene_surfaces(reflectance, job.bands, job.thresholds, quality))
        if valid_pixels == 0:
            raise OutcropError(f"{source}: empty scene: every pixel is nodata")
        job.reader.log_times()
    return negatives, valid_pixels


def _warn_negative_reflectance(scene_id: str, negatives: int, values: int, log: Callable[[str], None]) -> None:
    """Warn when over 1% of the valid values are below -0.05: the sign of a wrong offset, not of dark ground."""
    negative = negatives / max(1, values)
    if negative > 0.01:
        log(
            f"{scene_id}: warning: {negative:.1%} of values below -0.05 reflectance; "
            f"check the sensor's offset (give offset=… if the product predates its baseline)"
        )


def prepare_scene(
    source: str,
    sensor: str,
    out_path: str | Path,
    *,
    scene_id: str,
    bands: Sequence[str],
    crs: str = default("grid.crs"),
    resolution: float = default("grid.resolution"),
    thresholds: Thresholds = Thresholds(),
    declared_bands: Sequence[str] | None = None,
    scale: float | None = None,
    offset: float | None = None,
    max_pixels: int = MAX_SCENE_PIXELS,
    window_pixels: int = WINDOW_PIXELS,
    collar: bool = True,
    origin: tuple[float, float] = (0.0, 0.0),
    date: str | None = None,
    log: Callable[[str], None] = print,
) -> None:
    """Prepare one scene: its ``bands`` as reflectance on the run grid, plus the surface mask.

    ``source`` is a multi-band GeoTIFF/COG (local path or http(s) URL), a product folder, or a
    STAC item (``stac:`` + path or URL, or a path or URL ending ``.json``) with one asset per band;
    ``sensor`` names a row of :data:`outcrop.raster.sensors.SENSORS`. ``scale``/``offset`` override the
    sensor's rescaling (``reflectance = stored * scale + offset``). The output, written atomically
    with :func:`outcrop.io.write_prepared`, has exactly ``bands`` in that order, reprojected to
    ``crs`` at ``resolution`` with pixel edges at ``origin + k * resolution`` (the run's alignment,
    :mod:`outcrop.raster.grid_choice`): a band already on that pixel grid is copied, not resampled.
    ``crs`` or ``resolution`` ``"auto"`` choose them from this scene alone, as a one-scene run would.
    ``collar`` masks a constant border without a nodata tag as nodata (:mod:`outcrop.raster.collar`).
    The acquisition date, ``date`` (the scene sheet's) or the product's own, is written as the
    ``ACQUISITION_DATE`` tag (:mod:`outcrop.raster.dates`), and left out when unknown. Raises
    :class:`OutcropError` (and writes nothing) on any bad input, and on a scene larger than
    ``max_pixels`` on the run grid. The scene is read, rescaled, classified and written in windows
    (:func:`grid_windows`), so memory is bounded by a window, not by the scene.
    """
    t_start = time.perf_counter()
    source = str(source)
    bands = list(bands)
    spec = get_sensor(sensor)
    crs, resolution, origin = _checked_run_grid(
        scene_id, source, sensor, bands, declared_bands, crs, resolution, origin, log
    )

    files = find_scene_files(source, spec, bands, declared_bands)
    acquired, acquired_from = _acquisition_date(files, source, date)
    paths, meta = _checked_headers(files, source)
    grid = grid_for([(m["crs"], m["bounds"]) for m in meta.values()], crs, resolution, origin)
    log(
        f"{scene_id}: {len(bands)} band(s) from {source} onto a {grid.width}x{grid.height} grid "
        f"at {resolution:g} m in {crs}"
    )

    check_scene_size(grid, source, max_pixels)
    with ExitStack() as stack:
        sources = {p: stack.enter_context(open_raster(p)) for p in paths}
        reader = _BlockReader(files, sources, spec, bands, scene_id, log)
        if collar:
            reader.find_collars()
        layout = reader.quality_layout(grid)
        s, o, how = _scene_rescaling(reader, layout, grid, spec, files, meta, source, (scale, offset))
        log(f"{scene_id}: radiometry: {how}")
        log(
            f"{scene_id}: acquired {acquired} (from {acquired_from})"
            if acquired
            else f"{scene_id}: acquisition date unknown (no sheet date, product metadata or dated name)"
        )
        t0 = time.perf_counter()
        tags = {"scene": scene_id, "sensor": spec.name, "radiometry": how}
        if acquired:
            tags[DATE_TAG] = acquired
        window = _WindowJob(reader, layout, bands, (s, o), thresholds)
        negatives, valid_pixels = _write_windows(window, grid, out_path, tags, window_pixels, source)
    _warn_negative_reflectance(scene_id, negatives, len(bands) * valid_pixels, log)
    log(f"{scene_id}: wrote {out_path} in {time.perf_counter() - t0:.1f}s (total {time.perf_counter() - t_start:.1f}s)")


def _checked_run_grid(
    scene_id: str,
    source: str,
    sensor: str,
    bands: Sequence[str],
    declared_bands: Sequence[str] | None,
    crs: str,
    resolution: float | str,
    origin: tuple[float, float],
    log: Callable[[str], None],
) -> tuple[str, float, tuple[float, float]]:
    """The run's (CRS, resolution, origin), refused before any band of the scene is read.

    ``"auto"`` for the CRS or the resolution chooses them from this scene's headers alone
    (:mod:`outcrop.raster.grid_choice`), as a one-scene run would.
    """
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    check_band_names(bands, source)
    if str(crs) != "auto":
        check_grid_crs(str(crs), f"{source}: run CRS", resolution)
    if str(crs) == "auto" or str(resolution) == "auto":
        chosen = choose_grid(
            [read_scene_header(scene_id, source, sensor, bands, declared_bands)], crs, resolution, log=log
        )
        crs, resolution, origin = chosen["crs"], chosen["resolution"], tuple(chosen["origin"])
    if not resolution or resolution <= 0:  # type: ignore[operator]
        raise OutcropError(f"{source}: resolution must be positive, not {resolution}")
    try:
        CRS.from_user_input(crs)
    except CRSError:
        raise OutcropError(f"{source}: unknown run CRS {crs!r}") from None
    return crs, resolution, origin  # type: ignore[return-value]


# No satellite pixel is smaller than this on the ground; a geotransform that says so is broken
# (GDAL then fails with "Attempt to create 0x0 dataset is illegal").
MIN_PIXEL_METRES = 0.01
# Metres in a degree of latitude, for the pixel size of a raster in a geographic CRS.
METRES_PER_DEGREE = 111_320.0


def check_geotransform(path: str, src: Any) -> None:
    """Refuse a raster whose geotransform outcrop cannot lay onto a grid, in one line naming it:
    stored south-up or mirrored, pixels of no area, or pixels smaller than :data:`MIN_PIXEL_METRES`.

    A rotated north-up raster is fine (it is resampled like any other).
    """
    t = src.transform
    det = t.a * t.e - t.b * t.d
    if not all(math.isfinite(v) for v in (t.a, t.b, t.c, t.d, t.e, t.f)) or det == 0:
        raise OutcropError(
            f"{path}: the raster's geotransform is degenerate (pixel size {t.a:g} by {t.e:g}, "
            f"rotation {t.b:g}, {t.d:g}): its pixels have no area; fix its georeferencing"
        )
    if t.b == 0 and t.d == 0 and t.e > 0:
        raise OutcropError(
            f"{path}: the raster is stored south-up (its geotransform's y pixel size is +{t.e:g}, "
            "where a north-up raster's is negative); write it north-up first, e.g. "
            f"gdalwarp {Path(path).name} north_up.tif"
        )
    if det > 0:
        raise OutcropError(
            f"{path}: the raster is stored mirrored (geotransform pixel size {t.a:g} by {t.e:g}, "
            f"rotation {t.b:g}, {t.d:g}); write it north-up first, e.g. "
            f"gdalwarp {Path(path).name} north_up.tif"
        )
    side = math.sqrt(abs(det))
    if src.crs.is_geographic:
        unit, metres = "degree", side * METRES_PER_DEGREE
    else:
        try:
            unit, factor = src.crs.linear_units_factor
        except Exception:  # noqa: BLE001 - a CRS without linear units: take them as metres
            unit, factor = "unit", 1.0
        metres = side * factor
    if metres < MIN_PIXEL_METRES:
        size = f"{side:g} m" if unit == "metre" else f"{side:g} {unit} (about {metres:.2g} m)"
        raise OutcropError(
            f"{path}: its geotransform gives pixels of {size}, smaller than "
            f"{MIN_PIXEL_METRES * 100:g} cm, which no satellite scene has: its georeferencing is wrong; "
            "fix it (e.g. gdal_edit.py -a_ullr with the real corners)"
        )


def read_scene_header(
    scene: str, source: str, sensor: str, bands: Sequence[str], declared_bands: Sequence[str] | None = None
) -> SceneHeader:
    """The headers of the files that hold ``bands`` of a scene (found as ``prepare`` finds them)."""
    check_band_names(list(bands), source)
    files = find_scene_files(source, get_sensor(sensor), list(bands), declared_bands)
    headers = []
    for path in dict.fromkeys(b.path for b in files.bands):
        with open_raster(path) as src:
            if src.crs is None:
                raise OutcropError(f"{path}: the raster has no CRS")
            check_geotransform(path, src)
            headers.append(BandHeader(path, src.crs, src.transform, src.width, src.height))
    return SceneHeader(scene, tuple(headers))


def choose_run_grid(
    scenes_json: str,
    out: str | Path,
    *,
    bands: Sequence[str],
    crs: str = default("grid.crs"),
    resolution: float | str = default("grid.resolution"),
    log: Callable[[str], None] = print,
) -> None:
    """The ``grid`` stage: choose the run grid from the headers of the scenes in ``scenes_json`` (a
    JSON list of ``{scene, source, sensor[, bands]}``, as the workflow's rule writes it) and write
    ``grid.json`` (:mod:`outcrop.raster.grid_choice`)."""
    import json

    from outcrop.raster.grid_choice import write_grid

    try:
        rows = json.loads(scenes_json)
        assert isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows)
        scenes = [(str(r["scene"]), str(r["source"]), str(r["sensor"]), str(r.get("bands") or "")) for r in rows]
    except (ValueError, AssertionError, KeyError):
        raise OutcropError(
            "grid: --scenes-json must be a non-empty JSON list of {scene, source, sensor[, bands]}"
        ) from None
    headers = [
        read_scene_header(scene, source, sensor, bands, [b.strip() for b in declared.split(",") if b.strip()] or None)
        for scene, source, sensor, declared in scenes
    ]
    write_grid(out, choose_grid(headers, crs, resolution, log=log))


def prepare_on_grid(
    source: str,
    sensor: str,
    out: str | Path,
    *,
    scene: str,
    bands: Sequence[str],
    grid: Path | None = None,
    crs: str = default("grid.crs"),
    resolution: float | str = default("grid.resolution"),
    surfaces: Mapping[str, float] | None = None,
    declared_bands: Sequence[str] | None = None,
    scale: float | None = None,
    offset: float | None = None,
    collar: str | None = None,
    max_pixels: int | None = None,
    date: str | None = None,
    log: Callable[[str], None] = print,
) -> None:
    """The ``prepare`` stage: :func:`prepare_scene` onto the run grid of ``grid`` (``grid.json``: CRS,
    resolution and pixel alignment), or else onto ``crs`` and ``resolution``; ``surfaces`` are the
    surface-rule thresholds by name (config: surfaces), ``collar`` ``auto`` (or None) or ``off``;
    ``max_pixels`` None: the run's ``limits.scene_pixels`` (:func:`outcrop.limits.limit`); ``date``
    the scene sheet's acquisition date (None or empty: the product's own)."""
    if max_pixels is None:
        max_pixels = limit("scene_pixels")
    origin = (0.0, 0.0)
    if grid is not None:
        from outcrop.raster.grid_choice import load_grid

        run_grid = load_grid(grid)
        crs, resolution, origin = run_grid.crs, run_grid.resolution, run_grid.origin
    prepare_scene(
        source,
        sensor,
        out,
        scene_id=scene,
        bands=bands,
        crs=crs,
        resolution=resolution,  # type: ignore[arg-type]
        origin=origin,
        thresholds=Thresholds(**(surfaces or {})),
        declared_bands=declared_bands or None,
        scale=scale,
        offset=offset,
        collar=collar != "off",
        max_pixels=max_pixels,
        date=date or None,
        log=log,
    )


def _raster_headers(paths: Sequence[str]) -> dict[str, dict[str, Any]]:
    """CRS, pixel size, shape, transform, bounds, data type and nodata of each file (headers only)."""
    meta: dict[str, dict[str, Any]] = {}
    for p in paths:
        with open_raster(p) as src:
            if src.crs is None:
                raise OutcropError(f"{p}: the raster has no CRS")
            check_geotransform(p, src)
            meta[p] = {
                "crs": src.crs,
                "res": abs(src.transform.a),
                "shape": (src.height, src.width),
                "transform": src.transform,
                "bounds": src.bounds,
                "dtype": src.dtypes[0],
                "nodata": src.nodata,
            }
    return meta


# --- windows and budgets --------------------------------------------------------------------


def grid_windows(grid: SceneGrid, window_pixels: int = WINDOW_PIXELS) -> Iterator[tuple[int, int, SceneGrid]]:
    """(row, col, sub-grid) of the windows that tile ``grid``, row-major, 256-px aligned."""
    from affine import Affine

    side = max(256, int(math.sqrt(window_pixels)) // 256 * 256)
    cols = min(grid.width, max(side, (window_pixels // max(1, min(grid.height, side))) // 256 * 256))
    rows = min(grid.height, max(256, (window_pixels // cols) // 256 * 256))
    for r in range(0, grid.height, rows):
        for c in range(0, grid.width, cols):
            h, w = min(rows, grid.height - r), min(cols, grid.width - c)
            yield r, c, SceneGrid(grid.crs, grid.transform @ Affine.translation(c, r), w, h)


SAMPLE_SIDE = 512


def coarse_grid(grid: SceneGrid, side: int = SAMPLE_SIDE) -> SceneGrid:
    """``grid`` coarsened by a whole factor to at most ``side`` px a side, same footprint: a cheap
    sample of a scene's values for statistics that need no full resolution."""
    from affine import Affine

    factor = max(1, math.ceil(max(grid.width, grid.height) / side))
    return SceneGrid(
        grid.crs, grid.transform @ Affine.scale(factor), math.ceil(grid.width / factor), math.ceil(grid.height / factor)
    )


def check_scene_size(grid: SceneGrid, source: str, max_pixels: int = MAX_SCENE_PIXELS) -> None:
    """Refuse a scene whose run-grid block is larger than ``max_pixels`` (its files' claim)."""
    pixels = grid.width * grid.height
    if pixels > max_pixels:
        raise OutcropError(
            f"{source}: the scene covers {grid.width}x{grid.height} px of the run grid "
            f"({pixels / 1e9:.1f} Gpx), more than the {max_pixels / 1e9:.1f} Gpx a scene may have "
            f"(--max-pixels, or {setting('scene_pixels')})"
        )


def available_memory() -> int | None:
    """Bytes of memory the system can still give (``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_memory(nbytes: int, source: str, why: str) -> None:
    """Refuse, naming ``source``, an allocation of ``nbytes`` that the system cannot give."""
    free = available_memory()
    if free is not None and nbytes > free:
        raise OutcropError(
            f"{source}: needs {nbytes / 2**30:.1f} GiB of memory {why}; {free / 2**30:.1f} GiB are available"
        )


class _BlockReader:
    """Reads windows of a scene's bands (and quality band) onto the run grid from open files."""

    def __init__(
        self,
        files: SceneFiles,
        sources: dict[str, Any],
        spec: Sensor,
        bands: Sequence[str],
        scene_id: str,
        log: Callable[[str], None],
    ) -> None:
        self.files, self.sources, self.spec, self.bands = files, sources, spec, list(bands)
        self.scene_id, self.log = scene_id, log
        self.seconds = [0.0] * (len(self.files.bands) + 1)
        self.collars: dict[str, float] = {}  # band file -> collar value read as nodata

    def find_collars(self) -> None:
        """Untagged collars (:mod:`outcrop.raster.collar`) of band files without a nodata value, for
        sensors without a fill convention of their own (products that have one mark their fill)."""
        from outcrop.raster.collar import detect_collar

        if self.spec.nodata is not None:
            return
        for band in self.files.bands:
            src = self.sources[band.path]
            if src.nodata is not None or band.path in self.collars:
                continue
            collar = detect_collar(src, band.index)
            if collar is not None and collar.value != self.spec.nodata:
                self.collars[band.path] = collar.value
                self.log(
                    f"{self.scene_id}: {Path(band.path).name}: a border of value {collar.value:g} connected "
                    f"to the edge covers {collar.share:.1%} of the file and has no nodata tag: masked as "
                    f"nodata (collar=off in the scene sheet keeps it)"
                )

    def _quality(self, block: SceneGrid) -> np.ndarray:
        kind, qpath = self.files.quality  # type: ignore[misc]
        fill = QUALITY_FILL[kind]
        try:
            return read_onto_grid(self.sources[qpath], 1, block, nodata=fill, categorical=True, fill=fill)
        except Exception as exc:
            raise OutcropError(f"{qpath}: cannot read quality band ({_short(exc)})") from None

    def quality_layout(self, grid: SceneGrid) -> str | None:
        """The bit layout of a BQA band, which only the whole band tells (a pass over it)."""
        if self.files.quality is None or self.files.quality[0] != "BQA":
            return None
        for _, _, block in grid_windows(grid):
            qa = self._quality(block)
            fill = decode_quality("BQA", qa, layout="collection1").fill
            if bqa_layout(qa[~fill].astype(np.int64)) == "pre-collection":
                return "pre-collection"
        return "collection1"

    def read(self, block: SceneGrid, layout: str | None) -> tuple[np.ndarray, QualityMasks | None, np.ndarray]:
        """(stored numbers (C, h, w) float32 with NaN where invalid, quality masks, invalid mask)."""
        dn = np.empty((len(self.bands), block.height, block.width), dtype=np.float32)
        for i, band in enumerate(self.files.bands):
            t0 = time.perf_counter()
            src = self.sources[band.path]
            nodata = src.nodata if src.nodata is not None else self.collars.get(band.path, self.spec.nodata)
            try:
                read_onto_grid(src, band.index, block, nodata=nodata, out=dn[i])
            except OutcropError:
                raise
            except Exception as exc:  # GDAL read errors of truncated or corrupt files
                raise OutcropError(f"{band.path}: cannot read band {band.index} ({_short(exc)})") from None
            self.seconds[i] += time.perf_counter() - t0
        quality = None
        if self.files.quality is not None:
            t0 = time.perf_counter()
            qa = self._quality(block)
            quality = decode_quality(self.files.quality[0], qa.astype(np.int64), layout=layout)
            self.seconds[-1] += time.perf_counter() - t0
        invalid = ~np.all(np.isfinite(dn), axis=0)
        if quality is not None:
            invalid |= quality.fill
        dn[:, invalid] = np.nan
        return dn, quality, invalid

    def log_times(self) -> None:
        for band, seconds in zip(self.files.bands, self.seconds):
            self.log(f"{self.scene_id}: {band.name} <- {Path(band.path).name}[{band.index}] {seconds:.1f}s")
        if self.files.quality is not None:
            kind, qpath = self.files.quality
            self.log(f"{self.scene_id}: {kind} quality band <- {Path(qpath).name} {self.seconds[-1]:.1f}s")


__all__ = [
    "prepare_scene",
    "find_scene_files",
    "grid_for",
    "snap_bounds",
    "read_onto_grid",
    "open_raster",
    "is_remote",
    "BandFile",
    "SceneFiles",
    "SceneGrid",
]
