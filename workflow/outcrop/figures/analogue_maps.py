"""Maps of similarity to the known deposits, per scene, with the deposits and the top analogues on them.

The similarity raster (best cosine of each tile to the deposit queries) is drawn on a colour scale
shared by all scenes, so that a bright scene is a scene with better analogues, not just a different
stretch. Known deposits are red triangles (polygons outlined); analogues are white-edged circles,
the best ``label_top`` of the run numbered by rank. Given the prepared scenes, similarity is drawn
only where the ground is not open water (by the dominant surface class of each similarity cell):
a tile of sea can score high on a dark deposit, and it is not a place to look. Each map carries a
graticule, north arrow, scale bar and its CRS (:mod:`outcrop.figures.map_furniture`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from outcrop.errors import OutcropError
from outcrop.figures.map_furniture import furnish, raster_extent
from outcrop.io import atomic_path
from outcrop.raster.surfaces import NODATA, WATER


def read_similarity(path: Path) -> tuple[np.ndarray, Any, Any]:
    """(values float32 with NaN nodata, transform, crs) of a similarity COG."""
    import rasterio

    try:
        with rasterio.open(path) as src:
            values = src.read(1, masked=True).astype(np.float32).filled(np.nan)
            return values, src.transform, src.crs
    except rasterio.errors.RasterioIOError as exc:
        raise OutcropError(f"{path}: cannot read similarity raster ({exc})") from None


def land_cells(prepared: Path, shape: tuple[int, int], transform: Any, crs: Any) -> np.ndarray:
    """True for the cells of a (rows, cols) grid whose dominant surface class in the prepared scene's
    mask band is neither water nor nodata."""
    import rasterio
    from rasterio.warp import Resampling, reproject

    dominant = np.full(shape, NODATA, dtype=np.uint8)
    try:
        with rasterio.open(prepared) as src:
            reproject(
                rasterio.band(src, src.count),
                dominant,
                dst_transform=transform,
                dst_crs=crs,
                dst_nodata=NODATA,
                resampling=Resampling.mode,
            )
    except rasterio.errors.RasterioIOError as exc:
        raise OutcropError(f"{prepared}: cannot read prepared scene ({exc})") from None
    return (dominant != WATER) & (dominant != NODATA)


LAND_CELLS_VERSION = 1  # raise when land_cells changes what it computes: kept cells are then computed again


def kept_land_cells(
    prepared: Path, shape: tuple[int, int], transform: Any, crs: Any, folder: Path | None
) -> np.ndarray:
    """:func:`land_cells`, kept in ``folder`` (one file a scene) while the prepared scene (size,
    mtime) and the grid are the same: reading and resampling a scene's whole mask band is most of
    the cost of drawing its map, and an add draws again the maps of scenes whose analogues changed."""
    if folder is None:
        return land_cells(prepared, shape, transform, crs)
    st = os.stat(prepared)
    key = hashlib.sha256(
        repr((LAND_CELLS_VERSION, st.st_size, st.st_mtime_ns, tuple(shape), tuple(transform)[:6], str(crs))).encode()
    ).hexdigest()
    path = Path(folder) / f"{Path(prepared).stem}.npz"
    try:
        with np.load(path, allow_pickle=False) as kept:
            if str(kept["key"]) == key and kept["land"].shape == tuple(shape):
                return kept["land"].astype(bool)
    except Exception:  # noqa: BLE001 - a missing, stale or damaged file (a cut zip too) is drawn again
        pass
    land = land_cells(prepared, shape, transform, crs)
    Path(folder).mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, key=np.array(key), land=land)
    return land


def score_range(paths: Sequence[Path]) -> tuple[float, float]:
    """2nd and 99.5th percentile of similarity over all scenes: one colour scale for every map."""
    values = [v[np.isfinite(v)] for v, _, _ in (read_similarity(p) for p in paths)]
    allv = np.concatenate(values) if values else np.zeros(0)
    if allv.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(allv, [2, 99.5])
    return float(lo), float(max(hi, lo + 1e-3))


def _read_analogues(analogues_path: Path, crs: Any) -> Any:
    """The analogues GeoPackage in the maps' CRS, refused in one line when it cannot be read."""
    import geopandas as gpd

    try:
        return gpd.read_file(analogues_path, engine="pyogrio").to_crs(crs)
    except Exception as exc:
        raise OutcropError(f"{analogues_path}: not a readable analogues GeoPackage ({exc})") from None


def _draw_analogues(ax: Any, here: Any, label_top: int) -> None:
    """The scene's analogues as open white rings, the best ``label_top`` numbered by rank."""
    centres = here.geometry.centroid
    ax.scatter(centres.x, centres.y, s=28, facecolor="none", edgecolor="white", linewidths=1.2, zorder=3)
    for (_, row), c in zip(here.iterrows(), centres):
        if int(row["rank"]) <= label_top:
            ax.annotate(
                str(int(row["rank"])),
                (c.x, c.y),
                xytext=(3, 3),
                textcoords="offset points",
                color="white",
                fontsize=7,
                fontweight="bold",
                zorder=4,
            )


def _draw_deposits(ax: Any, deposits: Any, extent: Any) -> None:
    """The deposits within the map's extent: outlines for areas, red triangles for the rest.

    Drawn in two calls, not one per deposit: a file can hold tens of thousands.
    """
    near = deposits.cx[min(extent[:2]) : max(extent[:2]), min(extent[2:]) : max(extent[2:])]
    areal = near.geom_type.isin(["Polygon", "MultiPolygon"]).to_numpy()
    if areal.any():
        near[areal].boundary.plot(ax=ax, color="red", lw=1.2, zorder=4)
    points = near[~areal].geometry.centroid
    if len(points):
        ax.scatter(points.x, points.y, marker="^", s=60, color="red", edgecolor="black", linewidths=0.6, zorder=5)


def _add_legend(ax: Any, label_top: int) -> None:
    """The legend for the two marker kinds; the colour bar explains the similarity itself."""
    from matplotlib.lines import Line2D

    ax.legend(
        handles=[
            Line2D([], [], marker="^", ls="", color="red", markeredgecolor="black", label="known deposit"),
            Line2D(
                [],
                [],
                marker="o",
                ls="",
                markerfacecolor="none",
                markeredgecolor="0.3",
                label=f"analogue (top {label_top} numbered)",
            ),
        ],
        fontsize=8,
        loc="lower right",
        framealpha=0.85,
    )


def write_analogue_maps(
    similarity_paths: Sequence[Path],
    analogues_path: Path,
    deposits_path: Path,
    out_dir: Path,
    *,
    label_top: int = 10,
    prepared_paths: Sequence[Path] | None = None,
    state_dir: Path | None = None,
    log: Callable[[str], Any] = print,
) -> None:
    """Write ``out_dir/{scene}.png`` for each similarity raster; with ``prepared_paths`` (aligned
    with ``similarity_paths``), similarity over open water is left out.

    With ``state_dir`` the maps are kept there and linked into ``out_dir``, and a map is drawn again
    only when what it shows changed (:func:`map_content`): its similarity raster, the analogues in
    its scene and their numbers, the deposits, the colour scale. The colour scale is kept with the
    maps while the deposits stay the same, so that an added scene does not redraw every other map.
    """
    from outcrop.search.analogues import read_deposits

    if not similarity_paths:
        raise OutcropError("analogue maps: no similarity rasters given")
    if prepared_paths and len(prepared_paths) != len(similarity_paths):
        raise OutcropError(
            f"analogue maps: {len(prepared_paths)} prepared scenes given for "
            f"{len(similarity_paths)} similarity rasters; give one per scene, in the same order"
        )
    _, _, crs = read_similarity(similarity_paths[0])
    analogues = _read_analogues(analogues_path, crs)
    deposits = read_deposits(deposits_path, crs)
    kept = _kept_maps(state_dir, deposits_path, label_top)
    lo, hi = kept["scale"] if kept.get("scale") else score_range(similarity_paths)
    target = Path(state_dir) / "maps" if state_dir is not None else Path(out_dir)
    contents: dict[str, str] = {}
    land = Path(state_dir) / "land" if state_dir is not None else None  # each scene's land cells, kept
    drawn = 0
    for i, path in enumerate(similarity_paths):
        scene = Path(path).stem
        here = analogues[analogues["scene"] == scene]
        contents[scene] = map_content(path, here, label_top, prepared_paths[i] if prepared_paths is not None else None)
        if (
            state_dir is not None
            and kept.get("maps", {}).get(scene) == contents[scene]
            and (target / f"{scene}.png").is_file()
        ):
            continue
        drawn += 1
        prepared = Path(prepared_paths[i]) if prepared_paths else None
        _draw_map(target / f"{scene}.png", Path(path), prepared, here, deposits, crs, (lo, hi), label_top, land)
    if state_dir is not None:
        from outcrop.io import write_json
        from outcrop.search.cluster_outputs import link_tree

        write_json(Path(state_dir) / "maps.json", {**kept, "scale": [lo, hi], "maps": contents})
        link_tree(target, Path(out_dir), list(contents))
    log(
        f"analogue maps: drew {drawn} of {len(similarity_paths)} maps into {out_dir}, the others unchanged "
        f"(colour scale {lo:.3f}–{hi:.3f})"
    )


def _draw_map(
    out: Path,
    similarity: Path,
    prepared: Path | None,
    here: Any,
    deposits: Any,
    crs: Any,
    scale: tuple[float, float],
    label_top: int,
    land_dir: Path | None = None,
) -> None:
    """One scene's map: its similarity on the shared colour ``scale`` (open water left out with
    ``prepared``; its land cells kept in ``land_dir``), the deposits on it and its analogues, the top
    ``label_top`` numbered."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values, t, scene_crs = read_similarity(similarity)
    h, w = values.shape
    if prepared is not None:
        values[~kept_land_cells(prepared, (h, w), t, scene_crs, land_dir)] = np.nan
    extent = raster_extent(t, w, h)
    fig, ax = plt.subplots(figsize=(8.0, 7.0))
    ax.set_facecolor("#dfe7ee")  # left out (sea, nodata): a pale grey-blue, unlike any score
    im = ax.imshow(
        np.ma.masked_invalid(values),
        extent=extent,
        cmap="viridis",
        vmin=scale[0],
        vmax=scale[1],
        interpolation="nearest",
    )
    fig.colorbar(im, ax=ax, shrink=0.8, pad=0.08, label="cosine similarity to the known deposits")
    _draw_analogues(ax, here, label_top)
    _draw_deposits(ax, deposits, extent)
    furnish(ax, crs, extent)
    note = ", open water left out" if prepared is not None else ""
    ax.set_title(
        f"{similarity.stem}: similarity, known deposits and top analogues ({len(here)} here{note})", fontsize=10, pad=14
    )
    _add_legend(ax, label_top)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def map_content(similarity: Path, here: Any, label_top: int, prepared: Path | None) -> str:
    """A digest of what a scene's map shows: its similarity raster and prepared scene (by size and
    mtime: both are written once per scene), the footprints of its analogues with the numbers shown."""
    import hashlib
    import json
    import os

    marks = sorted(
        (row.geometry.wkb_hex, int(row["rank"]) if int(row["rank"]) <= label_top else None)
        for _, row in here.iterrows()
    )
    files = [[os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in (similarity, prepared) if p is not None]
    return hashlib.sha256(json.dumps([files, marks]).encode()).hexdigest()


def _kept_maps(state_dir: Path | None, deposits_path: Path, label_top: int) -> dict[str, Any]:
    """The kept maps' record (colour scale, content digest per scene) while the deposits and the
    numbering are the same; else a fresh record that redraws every map."""
    import json

    from outcrop.search.incremental import file_digest

    if state_dir is None:
        return {}
    fresh = {"deposits": file_digest(deposits_path), "label_top": label_top}
    try:
        kept = json.loads((Path(state_dir) / "maps.json").read_text())
    except (OSError, ValueError):
        return fresh
    if not isinstance(kept, dict) or {k: kept.get(k) for k in fresh} != fresh:
        return fresh
    return kept
