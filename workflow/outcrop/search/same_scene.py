"""Re-identification within one scene: does an embedding re-find its own ground cut differently?

Cross-scene re-identification needs two scenes that overlap; a run of one scene has none, and
still deserves a figure. So every run also scores one window of one of its scenes against two
copies of it, as ``benchmarks/reidentification_real.py`` does on real windows:

- **shifted**: the window cut on the run grid moved by half a stride in rows and columns (the same
  pixels, framed differently: never pixel-identical to the run's tiles);
- **reprojected**: the window warped (bilinear, at its own ground resolution) to an oblique
  Mercator projection centred on it whose grid is turned :data:`ROTATION_DEG` degrees from the run
  grid, then cut on its own grid. The ground is turned and resampled, as another scene's projection
  would; 30 degrees is no symmetry of the d4 embedding (which averages quarter turns and flips).

The gallery is the run's indexed tiles of the window; a query is right when its best match is one of
the gallery tiles it overlaps most (:func:`outcrop.search.quality.best_overlaps`). The scene is the
one with the most indexed tiles (the first of them in the sheet's order), the window
:data:`WINDOW_PX` px a side centred on the median of its tiles' positions; each query set is a
seeded sample of at most ``REID_QUERIES`` tiles.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

WINDOW_PX = 1024  # side of the window of the scene that is copied, in run pixels
ROTATION_DEG = 30.0  # how far the reprojected copy's grid is turned from the run grid


class Warped(NamedTuple):
    """A window warped to another CRS: its bands, transform, validity and (if given) its classes."""

    image: np.ndarray
    transform: Any
    valid: np.ndarray
    classes: np.ndarray | None


def reprojected(
    image: np.ndarray,
    transform: Any,
    crs: Any,
    dst_crs: Any,
    *,
    classes: np.ndarray | None = None,
    nodata: float | None = None,
) -> Warped:
    """``image`` (C, H, W) warped to ``dst_crs`` at its own ground resolution, bilinear; ``valid`` is
    where the warped grid lies inside the source, ``classes`` (H, W, e.g. a surface mask) follow
    by nearest neighbour (0 outside). ``nodata`` (NaN for prepared reflectance) marks source pixels
    the bilinear kernel must not mix in."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    _, h, w = image.shape
    left, top = transform * (0, 0)
    right, bottom = transform * (w, h)
    dst_transform, dw, dh = calculate_default_transform(
        crs, dst_crs, w, h, min(left, right), min(top, bottom), max(left, right), max(top, bottom)
    )
    common = {"src_transform": transform, "src_crs": crs, "dst_transform": dst_transform, "dst_crs": dst_crs}
    out = np.full((image.shape[0], dh, dw), np.nan if nodata is not None else 0.0, dtype=np.float32)
    extra = {"src_nodata": nodata, "dst_nodata": nodata} if nodata is not None else {}
    reproject(np.asarray(image, dtype=np.float32), out, resampling=Resampling.bilinear, **extra, **common)
    ones = np.zeros((dh, dw), dtype=np.float32)
    reproject(np.ones((h, w), np.float32), ones, resampling=Resampling.nearest, src_nodata=0, dst_nodata=0, **common)
    warped_classes = None
    if classes is not None:
        warped_classes = np.zeros((dh, dw), dtype=np.uint8)
        reproject(
            np.asarray(classes, dtype=np.uint8),
            warped_classes,
            resampling=Resampling.nearest,
            src_nodata=0,
            dst_nodata=0,
            **common,
        )
    return Warped(out, dst_transform, ones > 0, warped_classes)


def grid_angle(crs: Any, dst_crs: Any, x: float, y: float) -> float:
    """Degrees by which ``crs``'s grid north at (x, y) is turned in ``dst_crs``'s grid (clockwise)."""
    from pyproj import Transformer

    to = Transformer.from_crs(crs, dst_crs, always_xy=True)
    x0, y0 = to.transform(x, y)
    x1, y1 = to.transform(x, y + 100.0)
    return math.degrees(math.atan2(x1 - x0, y1 - y0))


def rotated_crs(crs: Any, x: float, y: float, degrees: float = ROTATION_DEG) -> str:
    """A conformal CRS centred on (x, y) of ``crs`` whose grid is turned ``degrees`` from ``crs``'s there.

    An oblique Mercator's rectified grid is turned by its ``gamma`` from the azimuth ``alpha`` of
    its centre line; the run grid's own turn from true north (its convergence) is measured here and
    taken out, so the copy is turned by ``degrees`` whatever the run CRS is (UTM, polar stereographic).
    """
    from pyproj import Transformer

    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
    local = f"+proj=aeqd +lat_0={lat:.8f} +lon_0={lon:.8f} +datum=WGS84 +units=m"
    convergence = grid_angle(crs, local, x, y)  # the run grid's north, from true north
    alpha = 45.0
    gamma = degrees + alpha - convergence
    return (
        f"+proj=omerc +lat_0={lat:.8f} +lonc={lon:.8f} +alpha={alpha} +gamma={gamma:.8f} +k_0=1 "
        "+x_0=0 +y_0=0 +datum=WGS84 +units=m +no_defs"
    )


def pick_window(table: Any, scenes: list[str], prepared: dict[str, Path]) -> tuple[str, Any] | None:
    """(scene, rasterio Window) of the window scored: the scene with most indexed tiles, the window
    centred on the median of their pixel positions; None when no scene has a tile."""
    import rasterio
    from rasterio.windows import Window

    counts = {s: int((table.scene == s).sum()) for s in scenes}
    if not counts or max(counts.values()) == 0:
        return None
    scene = max(counts, key=lambda s: (counts[s], -scenes.index(s)))
    rows = table.loc[table.scene == scene, "row"].to_numpy()
    cols = table.loc[table.scene == scene, "col"].to_numpy()
    with rasterio.open(prepared[scene]) as src:
        height, width = src.height, src.width
    side_r, side_c = min(WINDOW_PX, height), min(WINDOW_PX, width)
    r0 = int(np.clip(np.median(rows) - side_r // 2, 0, height - side_r))
    c0 = int(np.clip(np.median(cols) - side_c // 2, 0, width - side_c))
    return scene, Window(c0, r0, side_c, side_r)


def reprojected_copy(prepared: Path, window: Any, out: Path) -> Any:
    """Write the window of a prepared scene, warped to :func:`rotated_crs` about its centre, as a
    prepared scene at ``out`` (reflectance bilinear, surface mask nearest); its CRS."""
    import rasterio

    from outcrop.io import decode_reflectance, write_prepared

    with rasterio.open(prepared) as src:
        bands = [b for b in src.tags().get("bands", "").split(",") if b] or [f"b{i}" for i in range(1, src.count)]
        refl = decode_reflectance(src.read(list(range(1, src.count)), window=window))
        mask = src.read(src.count, window=window)
        transform, crs = src.window_transform(window), src.crs
    cx, cy = transform * (window.width / 2, window.height / 2)
    dst_crs = rotated_crs(crs, cx, cy)
    warped = reprojected(refl, transform, crs, dst_crs, classes=mask, nodata=np.nan)
    assert warped.classes is not None  # given classes, reprojected warps them too
    classes = np.where(warped.valid & np.isfinite(warped.image).all(axis=0), warped.classes, 0).astype(np.uint8)
    write_prepared(out, warped.image, classes, dst_crs, warped.transform, bands)
    return dst_crs


def same_scene_queries(
    prepared: Path,
    window: Any,
    run_crs: Any,
    *,
    size: int,
    stride: int,
    offset: int,
    min_valid: float,
    seed: int,
    limit: int,
    context: bool,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``{"shifted": ..., "reprojected": ...}``: each (tiles, footprints in the run CRS, block spectra).
    The shifted copy is cut ``offset`` px off the run's grid (the quality stage's query offset)."""
    import geopandas as gpd
    import rasterio

    from outcrop.raster.tiles import cut_offset_tiles

    def cut(path: Path, offset: int, bounds: tuple | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        got = cut_offset_tiles(
            path,
            size=size,
            stride=stride,
            offset=offset,
            bounds=bounds,
            min_valid=min_valid,
            limit=limit,
            seed=seed,
            context=context,
        )
        return got[0], got[1], (got[2] if context else np.zeros((len(got[0]), 0)))

    with rasterio.open(prepared) as src:
        bounds = rasterio.windows.bounds(window, src.transform)
    out = {"shifted": cut(prepared, offset, bounds)}
    with tempfile.TemporaryDirectory(prefix="outcrop-same-scene-") as tmp:
        copy = Path(tmp) / "reprojected.tif"
        dst_crs = reprojected_copy(prepared, window, copy)
        tiles, boxes, blocks = cut(copy, 0, None)
    boxes = gpd.GeoSeries(boxes, crs=dst_crs).to_crs(run_crs).to_numpy()
    out["reprojected"] = (tiles, boxes, blocks)
    return out
