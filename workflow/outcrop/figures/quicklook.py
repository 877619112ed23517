"""Quicklooks of prepared scenes: a COG a GIS opens, and a PNG figure for the report.

The composite is chosen from the bands there are, and named for what it is:

- SWIR2 / SWIR1 / red (Landsat OLI 7-6-4), the usual geological false colour: rock units differ
  most in the shortwave infrared, and snow and ice, bright in the visible but dark in SWIR, come
  out cyan instead of swamping the stretch;
- without SWIR but with NIR: NIR / red / green, the colour-infrared false colour (vegetation red);
- with only visible bands: red / green / blue, true colour (a blue/green/red file shown in file
  order would paint soil purple);
- otherwise the first three bands (or one band as grey), labelled with their names.

Each band is stretched between its 2nd and 98th percentile over valid pixels to 1..255, so that 0
is free to mean nodata.

A quicklook is a preview: scenes larger than ``max_size`` pixels on a side are read from the
prepared COG's overviews at reduced resolution, so a 7000 px Landsat scene costs a few MB.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from outcrop.config import default
from outcrop.errors import OutcropError
from outcrop.figures.map_furniture import furnish, raster_extent
from outcrop.io import PREPARED_NODATA, atomic_path, decode_reflectance, write_cog
from outcrop.raster.surfaces import CLASS_NAMES, CLOUD, NODATA, ROCK, SNOW_ICE, UNKNOWN, VEGETATION, WATER

# (red, green, blue channel bands, name), best first.
COMPOSITES: tuple[tuple[tuple[str, str, str], str], ...] = (
    (("swir2", "swir1", "red"), "false colour"),
    (("nir", "red", "green"), "colour infrared"),
    (("red", "green", "blue"), "true colour"),
)
QUICKLOOK_NODATA = 0
# Colours of surface classes in figures: snow and ice light blue, so that they show on white paper.
# Unknown (bands that cannot tell rock from water or snow) in magenta: plainly not a ground class.
SURFACE_PLOT_COLOURS: dict[int, str] = {
    ROCK: "#8c5a3c",
    SNOW_ICE: "#9ecae1",
    WATER: "#1e468c",
    CLOUD: "#bdbdbd",
    UNKNOWN: "#d660c8",
    VEGETATION: "#3c963c",
}


def composite_bands(bands: Sequence[str]) -> list[int]:
    """Indices of the composite's bands (red, green, blue channels) among ``bands``."""
    for triple, _ in COMPOSITES:
        if set(triple) <= set(bands):
            return [list(bands).index(b) for b in triple]
    if len(bands) < 3:
        return [0] * 3 if bands else []
    return [0, 1, 2]


def composite_name(bands: Sequence[str]) -> str:
    """What the composite of ``bands`` shows, as a figure title says it: ``true colour (red/green/blue)``."""
    picks = composite_bands(bands)
    names = "/".join(dict.fromkeys(bands[i] for i in picks))
    for triple, name in COMPOSITES:
        if set(triple) <= set(bands):
            return f"{name} ({names})"
    return f"{'grey' if len(set(picks)) == 1 else 'bands'} ({names})"


def stretch(values: np.ndarray, valid: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Linear 2–98 % stretch of one band to uint8 1..255 (0 where not ``valid``)."""
    if lo is None or hi is None:
        sample = values[valid & np.isfinite(values)]
        lo, hi = np.percentile(sample, [2, 98]) if sample.size else (0.0, 1.0)
    scaled = (values - lo) / max(float(hi) - float(lo), 1e-6)
    out = (1 + np.clip(np.nan_to_num(scaled), 0.0, 1.0) * 254).round().astype(np.uint8)
    out[~valid] = QUICKLOOK_NODATA
    return out


def false_colour(reflectance: np.ndarray, bands: Sequence[str], valid: np.ndarray) -> np.ndarray:
    """(3, H, W) uint8 false-colour composite of (C, H, W) reflectance, 0 where not ``valid``."""
    picks = composite_bands(bands)
    if not picks:
        raise OutcropError("quicklook: a scene without bands has no composite")
    return np.stack([stretch(reflectance[i], valid) for i in picks])


def read_preview(path: str | os.PathLike[str], max_size: int = 2048) -> dict[str, Any]:
    """Read a prepared scene at most ``max_size`` px on a side (overviews where smaller).

    Returns reflectance (C, h, w) float32 with NaN nodata, mask (h, w) uint8, bands, crs and the
    transform of the (possibly reduced) grid.
    """
    import rasterio
    from rasterio.enums import Resampling

    try:
        with rasterio.open(path) as src:
            bands = [b for b in src.tags().get("bands", "").split(",") if b]
            if len(bands) != src.count - 1:
                raise OutcropError(f"{path}: not a prepared scene (band list tag does not match {src.count} bands)")
            factor = max(1.0, max(src.width, src.height) / max_size)
            shape = (max(1, round(src.height / factor)), max(1, round(src.width / factor)))
            # Nearest keeps DN 0 (nodata) and mask codes exact; a preview needs no better.
            data = src.read(out_shape=(src.count, *shape), resampling=Resampling.nearest)
            transform = src.transform * src.transform.scale(src.width / shape[1], src.height / shape[0])
            crs = src.crs
    except rasterio.errors.RasterioIOError as exc:
        raise OutcropError(f"{path}: cannot read prepared scene ({exc})") from None
    if crs is None:
        raise OutcropError(f"{path}: prepared scene has no CRS")
    mask = data[-1].astype(np.uint8)
    return {
        "reflectance": decode_reflectance(data[:-1]),
        "mask": mask,
        "bands": bands,
        "crs": crs,
        "transform": transform,
        "valid": (mask != NODATA) & (data[:-1] != PREPARED_NODATA).all(axis=0),
    }


def write_quicklook(
    prepared: str | os.PathLike[str],
    out_png: str | os.PathLike[str],
    out_tif: str | os.PathLike[str],
    *,
    scene: str,
    aoi: Any | None = None,
    max_size: int = 2048,
    log: Callable[[str], Any] = print,
) -> None:
    """Write a scene's false-colour COG (RGB uint8, nodata 0) and a PNG with the surface mask and AOI.

    ``aoi`` is a shapely geometry in the scene's CRS (or None: the whole scene was tiled).
    """
    preview = read_preview(prepared, max_size)
    rgb = false_colour(preview["reflectance"], preview["bands"], preview["valid"])
    write_cog(
        out_tif,
        rgb,
        {"crs": preview["crs"], "transform": preview["transform"], "nodata": QUICKLOOK_NODATA},
        band_names=["red_channel", "green_channel", "blue_channel"],
        tags={
            "composite": ",".join(preview["bands"][i] for i in composite_bands(preview["bands"])),
            "composite_name": composite_name(preview["bands"]),
            "scene": scene,
        },
        resampling="average",
    )
    _write_figure(Path(out_png), scene, rgb, preview, aoi)
    log(f"quicklook: wrote {out_tif} and {out_png} ({rgb.shape[2]}x{rgb.shape[1]} px)")


def _write_figure(path: Path, scene: str, rgb: np.ndarray, preview: dict[str, Any], aoi: Any | None) -> None:
    """Two panels: the false colour and the surface mask, each with the AOI outline and the map
    furniture (graticule, north arrow, scale bar, CRS)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Patch

    h, w = rgb.shape[1:]
    t = preview["transform"]
    extent = raster_extent(t, w, h)
    rgba = np.concatenate([np.moveaxis(rgb, 0, -1), np.where(preview["valid"], 255, 0)[..., None]], -1).astype(np.uint8)
    mask_rgba = np.zeros((h, w, 4))
    for code, colour in SURFACE_PLOT_COLOURS.items():
        mask_rgba[preview["mask"] == code] = to_rgba(colour)
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 6.0))
    composite = composite_name(preview["bands"])
    for ax, image, title in ((axes[0], rgba, f"{scene}: {composite}"), (axes[1], mask_rgba, f"{scene}: surface mask")):
        ax.imshow(image, extent=extent, interpolation="nearest")
        ax.set_title(title, fontsize=10, pad=14)
        if aoi is not None:
            _outline(ax, aoi)
        furnish(ax, preview["crs"], extent)
    present = [c for c in SURFACE_PLOT_COLOURS if (preview["mask"] == c).any()]
    handles = [Patch(color=SURFACE_PLOT_COLOURS[c], label=CLASS_NAMES[c].replace("_", "/")) for c in present]
    if aoi is not None:
        handles.append(Patch(facecolor="none", edgecolor="#ffd400", label="area of interest"))
    axes[1].legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.12, 1.0), frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def _outline(ax: Any, geom: Any) -> None:
    """Draw the exterior and interior rings of a (multi)polygon."""
    from shapely import get_parts

    for part in get_parts(geom):
        if part.geom_type != "Polygon":
            continue
        for ring in (part.exterior, *part.interiors):
            x, y = ring.xy
            ax.plot(x, y, color="#ffd400", lw=1.2)


def quicklook_in_aoi(
    prepared: Path,
    out_png: Path,
    out_tif: Path,
    *,
    scene: str,
    aoi: Path | None = None,
    aoi_buffer_km: float = default("aoi.buffer_km"),
    grid: Path | None = None,
    crs: str = default("grid.crs"),
    max_size: int = 2048,
    log: Callable[[str], Any] = print,
) -> None:
    """The ``quicklook`` stage: :func:`write_quicklook` with the AOI file ``aoi`` outlined, brought
    into the run CRS as the ``tile`` stage brings it (:func:`outcrop.raster.aoi.run_aoi`)."""
    from outcrop.raster.aoi import run_aoi

    geometry = run_aoi(aoi, prepared=prepared, buffer_km=aoi_buffer_km, grid=grid, crs=crs)
    write_quicklook(prepared, out_png, out_tif, scene=scene, aoi=geometry, max_size=max_size, log=log)
