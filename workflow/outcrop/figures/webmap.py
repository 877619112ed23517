"""A standalone interactive map of a run (``map.html``) that works with no network at all.

What is on it: each scene's false-colour quicklook, the cluster layer (finest k), the similarity
to the known deposits, the units of a geological map when the run has one (off until switched on),
the known deposits, and the top analogues with popups (rank, score, scene,
tile, matched deposit, distance, lon/lat); a graticule and a coastline; a layer control to toggle
them and a legend. Wherever a map is, the user can place it: the cursor's latitude and longitude
are read out as it moves, and a click on a cluster or similarity pixel shows, scene by scene, its
cluster, its similarity and its lat/lon.

**Geography without a projection library.** The page cannot run PROJ, so
:mod:`outcrop.figures.map_geometry` does it here: a grid of unit vectors over the extent that the
page interpolates for the readout (right across the antimeridian and at a pole), the graticule's
lines projected and densified, and the coastline contoured from the prepared scenes' own surface
masks (water against land, read small from the COGs' overviews). The click popup reads per-scene
value grids embedded at the overlays' size: the cluster labels as uint16, the similarity quantised
to a byte over its own range.

**Offline by construction.** The page is one file with every byte it needs inside it: Leaflet's
JavaScript and CSS are read at run time from the installed ``XStatic-Leaflet`` Python package
(a declared dependency) and inlined, its control icons become data URIs, and the rasters are PNG
data URIs. Nothing is fetched from a CDN, and no copy of Leaflet lives in this repository. There
is no basemap: tiles would need the network, and a field laptop on an Antarctic coast has none.

**Map projection.** The map is drawn in the run's projected CRS (EPSG:3031 for the demo) with
Leaflet's ``L.CRS.Simple``: one map unit is one metre of the run grid, y up. Web-mercator tiles
fit polar scenes badly (EPSG:3857 stops at ±85° and stretches high latitudes enormously), and
reprojecting every raster to lat/lon would resample the cluster cells and bend the tile
footprints. In the run CRS the rasters are shown on exactly their own grid, the footprints stay
square, and the scale bar reads true metres (polar stereographic is conformal, so shapes hold).
Popups and the readout carry lat/lon for use elsewhere.

**Names are text.** Deposit names, scene ids, the cluster level and the title come from a user's
files; a deposit called ``<img src=x onerror=…>`` must show as that name and run nothing. The data
goes into the page as JSON with ``<``, ``>`` and ``&`` escaped (:func:`json_for_script`), and the
page's script puts every value into the document as text (``textContent``, text nodes, style
properties), escaping the few that Leaflet writes as markup (layer names, attribution).
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from outcrop.config import default
from outcrop.errors import OutcropError
from outcrop.io import atomic_path

PREVIEW_MAX = 1024  # px per side of a quicklook on the map
LAYER_NAMES = {
    "quicklooks": "Scene quicklooks (false colour)",
    "clusters": "Clusters",
    "similarity": "Similarity to known deposits",
    "units": "Geological map units",
    "deposits": "Known deposits",
    "analogues": "Top analogues",
    "graticule": "Graticule (lat/lon)",
    "coastline": "Coastline (from the surface masks)",
}
VALUE_NODATA = 255  # the similarity grids' code for "no value" (0..254 span the score range)


def leaflet_assets() -> tuple[str, str]:
    """Leaflet's JavaScript and CSS (with its icons as data URIs) from the installed XStatic-Leaflet."""
    try:
        import xstatic.pkg.leaflet as xleaflet
    except ImportError:
        raise OutcropError(
            "the interactive map needs the XStatic-Leaflet package (pip install XStatic-Leaflet)"
        ) from None
    base = Path(xleaflet.BASE_DIR)
    js = (base / "leaflet.js").read_text(encoding="utf-8")
    css = (base / "leaflet.css").read_text(encoding="utf-8")

    def inline(match: re.Match[str]) -> str:
        image = base / match.group(1)
        if not image.is_file():
            return "none"
        return f"url(data:image/png;base64,{base64.b64encode(image.read_bytes()).decode('ascii')})"

    css = re.sub(r"url\(\s*['\"]?(images/[^)'\"]+)['\"]?\s*\)", inline, css)
    return js, css


def png_uri(rgba: np.ndarray) -> str:
    """(H, W, 3|4) uint8 image as a PNG data URI."""
    import matplotlib.image

    buf = io.BytesIO()
    matplotlib.image.imsave(buf, np.ascontiguousarray(rgba), format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _bounds(transform: Any, width: int, height: int) -> list[list[float]]:
    """Leaflet bounds [[south, west], [north, east]] of a north-up grid, in map units (metres)."""
    x0, y0 = transform.c, transform.f
    x1, y1 = x0 + transform.a * width, y0 + transform.e * height
    return [[min(y0, y1), min(x0, x1)], [max(y0, y1), max(x0, x1)]]


def _read(
    path: Path, max_size: int | None = None
) -> tuple[np.ndarray, Any, Any, Any, dict[int, tuple[int, ...]] | None]:
    """(bands, transform, crs, nodata, colour table or None) of a raster, reduced to ``max_size`` px."""
    import rasterio
    from rasterio.enums import Resampling

    try:
        with rasterio.open(path) as src:
            factor = max(1.0, max(src.width, src.height) / max_size) if max_size else 1.0
            shape = (max(1, round(src.height / factor)), max(1, round(src.width / factor)))
            data = src.read(out_shape=(src.count, *shape), resampling=Resampling.nearest)
            transform = src.transform * src.transform.scale(src.width / shape[1], src.height / shape[0])
            try:
                colormap = src.colormap(1)
            except ValueError:
                colormap = None
            return data, transform, src.crs, src.nodata, colormap
    except rasterio.errors.RasterioIOError as exc:
        raise OutcropError(f"{path}: cannot read raster for the map ({exc})") from None


def _check_crs(path: Path, crs: Any, run_crs: Any) -> None:
    if crs is None or (run_crs is not None and crs != run_crs):
        raise OutcropError(f"{path}: raster CRS {crs} differs from the run CRS {run_crs}; the map needs one CRS")


def quicklook_layer(paths: Sequence[Path], run_crs: Any) -> list[dict[str, Any]]:
    """One RGBA image overlay per quicklook COG (nodata transparent)."""
    out = []
    for path in paths:
        data, transform, crs, nodata, _ = _read(path, PREVIEW_MAX)
        _check_crs(path, crs, run_crs)
        rgb = np.moveaxis(data[:3], 0, -1).astype(np.uint8)
        alpha = np.where((data[:3] == (nodata if nodata is not None else 0)).all(axis=0), 0, 255).astype(np.uint8)
        out.append(
            {
                "scene": Path(path).stem,
                "image": png_uri(np.dstack([rgb, alpha])),
                "bounds": _bounds(transform, data.shape[2], data.shape[1]),
            }
        )
    return out


def cluster_layer(paths: Sequence[Path], run_crs: Any) -> tuple[list[dict[str, Any]], dict[int, str], str]:
    """Cluster label COGs coloured by their own colour table: overlays, legend colours, level name."""
    import rasterio

    out, legend, level = [], {}, ""
    for path in paths:
        data, transform, crs, nodata, colormap = _read(path)
        _check_crs(path, crs, run_crs)
        with rasterio.open(path) as src:
            level = src.tags().get("level", level) or src.descriptions[0] or level
        if colormap is None:
            raise OutcropError(f"{path}: cluster raster has no colour table")
        labels = data[0]
        table = np.zeros((max(int(labels.max()), max(colormap)) + 1, 4), dtype=np.uint8)
        for value, rgba in colormap.items():
            table[value] = rgba
        rgba = table[labels]
        rgba[labels == nodata, 3] = 0
        for value in np.unique(labels[labels != nodata]):
            legend[int(value)] = "#{:02x}{:02x}{:02x}".format(*(int(v) for v in table[value][:3]))
        out.append(
            {
                "scene": Path(path).stem,
                "image": png_uri(rgba),
                "bounds": _bounds(transform, labels.shape[1], labels.shape[0]),
                "values": label_values(labels, nodata),
            }
        )
    return out, dict(sorted(legend.items())), level


def label_values(labels: np.ndarray, nodata: Any) -> dict[str, Any]:
    """A label raster for the click popup: (H, W) uint16 little-endian in base64, 65535 = no label."""
    codes = labels.astype(np.int64)
    codes = np.where((codes < 0) | (codes >= 65535) | (labels == nodata), 65535, codes).astype("<u2")
    return {
        "width": int(labels.shape[1]),
        "height": int(labels.shape[0]),
        "nodata": 65535,
        "data": base64.b64encode(codes.tobytes()).decode("ascii"),
    }


def unit_layer(
    quicklooks: Sequence[Path], run_crs: Any, maps: Sequence[Any]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The unit maps drawn over each scene's quicklook extent, at the quicklook's reduced size:
    overlays (with a click grid of unit numbers) and a legend {unit name: colour}.

    Each map is read through :class:`outcrop.search.unit_map.UnitReader`, as the quality stage reads
    it (polygons rasterised at pixel centres, rasters by nearest neighbour), one quicklook window at a
    time. Where maps overlap, the first that names a unit shows it.
    """
    import rasterio

    from outcrop.search.clusters import palette
    from outcrop.search.unit_map import UnitReader

    names: list[str] = []
    grids = []
    for path in quicklooks:
        with rasterio.open(path) as src:
            factor = max(1.0, max(src.width, src.height) / PREVIEW_MAX)
            shape = (max(1, round(src.height / factor)), max(1, round(src.width / factor)))
            transform = src.transform * src.transform.scale(src.width / shape[1], src.height / shape[0])
            bounds = tuple(src.bounds)
        shown = np.zeros(shape, dtype=np.int64)  # 1 + index into names; 0: no unit
        for umap in maps:
            with UnitReader(umap, run_crs) as reader:
                reader.region(bounds)
                codes = reader.window(transform, shape)
            for value in np.unique(codes[codes > 0]):
                name = umap.name_of(int(value))
                if name not in names:
                    names.append(name)
                shown[(shown == 0) & (codes == value)] = names.index(name) + 1
        grids.append((path, shown, transform))
    colours = palette(max(1, len(names)))
    table = np.concatenate([np.zeros((1, 4), dtype=np.uint8), colours[: len(names)]])
    out = []
    for path, shown, transform in grids:
        rgba = table[shown]
        out.append(
            {
                "scene": Path(path).stem,
                "image": png_uri(rgba),
                "bounds": _bounds(transform, shown.shape[1], shown.shape[0]),
                "values": label_values(shown - 1, -1),
            }
        )
    legend = {name: "#{:02x}{:02x}{:02x}".format(*(int(v) for v in colours[i][:3])) for i, name in enumerate(names)}
    return out, legend


def similarity_values(values: np.ndarray) -> dict[str, Any]:
    """A similarity raster for the click popup: quantised to 0..254 over its own range (255 = NaN),
    one byte a cell in base64; the page reads back ``lo + q / 254 * (hi - lo)``.

    The range is the raster's own minimum and maximum, not the colour scale's (which clips the
    extremes), so every value comes back within half a step: (hi - lo) / 508.
    """
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    scale = max(hi - lo, 1e-9)
    q = np.clip(np.round((values - lo) / scale * 254), 0, 254)
    q = np.where(np.isfinite(values), q, VALUE_NODATA).astype(np.uint8)
    return {
        "width": int(values.shape[1]),
        "height": int(values.shape[0]),
        "nodata": VALUE_NODATA,
        "lo": float(lo),
        "hi": float(hi),
        "data": base64.b64encode(q.tobytes()).decode("ascii"),
    }


def similarity_layer(paths: Sequence[Path], run_crs: Any, lo: float, hi: float) -> list[dict[str, Any]]:
    """Similarity COGs on one viridis scale from ``lo`` to ``hi`` (NaN transparent)."""
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    out = []
    for path in paths:
        data, transform, crs, _, _ = _read(path)
        _check_crs(path, crs, run_crs)
        values = data[0].astype(np.float64)
        rgba = (cmap(np.clip((values - lo) / max(hi - lo, 1e-9), 0, 1)) * 255).round().astype(np.uint8)
        rgba[~np.isfinite(values), 3] = 0
        out.append(
            {
                "scene": Path(path).stem,
                "image": png_uri(rgba),
                "bounds": _bounds(transform, values.shape[1], values.shape[0]),
                "values": similarity_values(values),
            }
        )
    return out


def coastline_layer(paths: Sequence[Path], run_crs: Any) -> list[list[list[float]]]:
    """Water/land boundaries of the prepared scenes' surface masks (last band), read reduced to
    :data:`PREVIEW_MAX` px from the COG's overviews: polylines ``[[y, x], ...]`` in the run CRS."""
    import rasterio
    from rasterio.enums import Resampling

    from outcrop.figures.map_geometry import coastline

    lines: list[list[list[float]]] = []
    for path in paths:
        try:
            with rasterio.open(path) as src:
                bands = [b for b in src.tags().get("bands", "").split(",") if b]
                if len(bands) != src.count - 1:
                    raise OutcropError(f"{path}: not a prepared scene (band list tag does not match {src.count} bands)")
                _check_crs(path, src.crs, run_crs)
                factor = max(1.0, max(src.width, src.height) / PREVIEW_MAX)
                shape = (max(1, round(src.height / factor)), max(1, round(src.width / factor)))
                mask = src.read(src.count, out_shape=shape, resampling=Resampling.nearest)
                transform = src.transform @ src.transform.scale(src.width / shape[1], src.height / shape[0])
        except rasterio.errors.RasterioIOError as exc:
            raise OutcropError(f"{path}: cannot read prepared scene for the map ({exc})") from None
        lines.extend(coastline(mask, transform))
    return lines


def geography(run_crs: Any, bounds: Sequence[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The cursor readout's grid and the graticule over the scenes' extent.

    The readout grid reaches half the extent beyond it on every side, so the readout holds while
    the user pans around the scenes; the graticule spans the extent plus a tenth.
    """
    from outcrop.figures.map_geometry import graticule, padded, readout_grid, union_box

    box = union_box(bounds)
    try:
        return readout_grid(run_crs, padded(box, 0.5)), graticule(run_crs, padded(box, 0.1))
    except ValueError:
        # A run grid near the edge of its CRS's area: the readout covers the scenes only.
        return readout_grid(run_crs, box), graticule(run_crs, box)


def viridis_stops(n: int = 8) -> list[str]:
    """CSS colours along viridis, for the legend's gradient bar."""
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    return [matplotlib.colors.to_hex(cmap(i / (n - 1))) for i in range(n)]


def analogue_features(analogues: Any) -> list[dict[str, Any]]:
    """Marker position (footprint centre, run CRS), footprint ring and popup fields of each analogue."""
    from shapely import get_coordinates

    out = []
    for _, row in analogues.sort_values("rank").iterrows():
        c = row.geometry.centroid
        out.append(
            {
                "rank": int(row["rank"]),
                "score": float(row["score"]),
                "scene": str(row["scene"]),
                "tile_id": int(row["tile_id"]),
                "nearest_positive": str(row["nearest_positive"]),
                "distance_km": float(row["distance_km"]),
                "lon": float(row["lon"]),
                "lat": float(row["lat"]),
                "x": float(c.x),
                "y": float(c.y),
                "ring": [
                    [float(y), float(x)]
                    for x, y in get_coordinates(
                        row.geometry.exterior if row.geometry.geom_type == "Polygon" else row.geometry.envelope.exterior
                    )
                ],
            }
        )
    return out


def deposit_features(deposits: Any) -> list[dict[str, Any]]:
    """Known deposits: points as markers, polygons as outlines (run CRS), with lon/lat of their centres."""
    from shapely import get_coordinates, get_parts

    centres = deposits.geometry.centroid.to_crs("EPSG:4326")
    out = []
    for (_, row), ll in zip(deposits.iterrows(), centres):
        geom = row.geometry
        rings = [
            [[float(y), float(x)] for x, y in get_coordinates(p.exterior)]
            for p in get_parts(geom)
            if p.geom_type == "Polygon"
        ]
        c = geom.centroid
        out.append(
            {
                "name": str(row["name"]),
                "x": float(c.x),
                "y": float(c.y),
                "rings": rings,
                "lon": float(ll.x),
                "lat": float(ll.y),
            }
        )
    return out


def map_data(
    quicklooks: Sequence[Path],
    cluster_rasters: Sequence[Path],
    similarity_rasters: Sequence[Path],
    analogues_path: Path | None,
    deposits_path: Path | None,
    *,
    prepared: Sequence[Path] = (),
    units: Sequence[Path] = (),
    unit_field: str = default("units.field"),
    title: str = "outcrop run",
) -> dict[str, Any]:
    """Everything the map's script draws, as one JSON-ready dict: the layers of a run.

    ``map.html`` embeds it; ``outcrop serve`` builds the same dict once at start and adds its live
    layers beside it, so both pages draw a run through one set of functions. ``units``: unit maps
    (``unit_field`` names the polygons' unit) shown as a layer the user switches on.
    """
    import geopandas as gpd
    import rasterio

    from outcrop.figures.analogue_maps import score_range
    from outcrop.search.analogues import read_deposits
    from outcrop.search.unit_map import open_unit_maps

    if not quicklooks:
        raise OutcropError("map: no scene quicklooks given")
    unit_maps = open_unit_maps(units, unit_field)
    with rasterio.open(quicklooks[0]) as src:
        run_crs = src.crs
    analogues = deposits = None
    if analogues_path is not None:
        try:
            analogues = gpd.read_file(analogues_path, engine="pyogrio")
        except Exception as exc:
            raise OutcropError(f"{analogues_path}: not a readable analogues GeoPackage ({exc})") from None
        if analogues.crs is None:
            raise OutcropError(f"{analogues_path}: analogues have no CRS")
        analogues = analogues.to_crs(run_crs)
    if deposits_path is not None:
        deposits = read_deposits(deposits_path, run_crs)
    lo, hi = score_range(similarity_rasters) if similarity_rasters else (0.0, 1.0)
    clusters, cluster_legend, level = cluster_layer(cluster_rasters, run_crs)
    quicklook_overlays = quicklook_layer(quicklooks, run_crs)
    readout, graticule_lines = geography(run_crs, [o["bounds"] for o in quicklook_overlays])
    similarity = similarity_layer(similarity_rasters, run_crs, lo, hi)
    unit_overlays: list[dict[str, Any]] = []
    unit_legend: dict[str, str] = {}
    if unit_maps:
        unit_overlays, unit_legend = unit_layer(quicklooks, run_crs, unit_maps)
    return {
        "title": title,
        "crs": run_crs.to_string(),
        "layers": LAYER_NAMES | {"clusters": f"Clusters ({level})" if level else "Clusters"},
        "level": level,
        "quicklooks": quicklook_overlays,
        "clusters": clusters,
        "cluster_legend": cluster_legend,
        "similarity": similarity,
        "units": unit_overlays,
        "unit_legend": unit_legend,
        "similarity_range": [lo, hi],
        "similarity_stops": viridis_stops(),
        "deposits": deposit_features(deposits) if deposits is not None else [],
        "analogues": analogue_features(analogues) if analogues is not None else [],
        "readout": readout,
        "graticule": graticule_lines,
        "coastline": coastline_layer(prepared, run_crs),
    }


def render_page(data: dict[str, Any], *, extra_css: str = "", extra_body: str = "", extra_js: str = "") -> str:
    """The map page: Leaflet, the data (:func:`json_for_script`) and the map's script, inline.

    ``outcrop serve`` adds its panel (``extra_body``, markup it writes itself, never data), its
    style sheet and its script after the map's; ``map.html`` adds nothing.
    """
    js, css = leaflet_assets()
    return page_asset("page.html").format(
        title=html.escape(data["title"]),
        leaflet_css=css,
        leaflet_js=_script_safe(js),
        data=json_for_script(data),
        app_css=page_asset("map.css"),
        app_js=page_asset("map.js"),
        extra_css=f"<style>{extra_css}</style>" if extra_css else "",
        extra_body=extra_body,
        extra_js=f"<script>{_script_safe(extra_js)}</script>" if extra_js else "",
    )


def write_webmap(
    quicklooks: Sequence[Path],
    cluster_rasters: Sequence[Path],
    similarity_rasters: Sequence[Path],
    analogues_path: Path | None,
    deposits_path: Path | None,
    out: Path,
    *,
    prepared: Sequence[Path] = (),
    units: Sequence[Path] = (),
    unit_field: str = default("units.field"),
    title: str = "outcrop run",
    log: Callable[[str], Any] = print,
) -> None:
    """Write the standalone offline map of a run.

    A run without deposits has no analogues: ``analogues_path`` and ``deposits_path`` are None and
    ``similarity_rasters`` empty, and the map shows quicklooks and clusters only. The coastline is
    drawn from the ``prepared`` scenes' surface masks (none given: no coastline). ``units``: unit
    maps (``unit_field`` names the polygons' unit) shown as a layer the user switches on.
    """
    data = map_data(
        quicklooks,
        cluster_rasters,
        similarity_rasters,
        analogues_path,
        deposits_path,
        prepared=prepared,
        units=units,
        unit_field=unit_field,
        title=title,
    )
    page = render_page(data)
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    log(
        f"map: wrote {out} ({len(page) / 1e6:.1f} MB; {len(data['quicklooks'])} scenes, "
        f"{len(data['analogues'])} analogues, {len(data['deposits'])} deposits)"
    )


def page_asset(name: str) -> str:
    """The map's own page template, style sheet or script, shipped as package data beside this module.

    They are plain ``.html``, ``.css`` and ``.js`` files so that editors and linters (``node --check``)
    read them; the page template's ``{fields}`` are filled with :meth:`str.format`.
    """
    from importlib.resources import files

    return files("outcrop.figures").joinpath("webmap_assets", name).read_text(encoding="utf-8")


def json_for_script(value: Any) -> str:
    """JSON that can sit inside a ``<script>`` element whatever strings it holds.

    ``<``, ``>`` and ``&`` become ``\\u003c``, ``\\u003e`` and ``\\u0026``: the same characters to
    ``JSON.parse``, but no ``</script>``, ``<!--`` or ``<script`` can appear, so a deposit name or
    scene id cannot end the element early or switch the HTML parser into its escaped script states.
    """
    text = json.dumps(value, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _script_safe(text: str) -> str:
    """Text that cannot close its <script> element early: ``</script`` → ``<\\/script``.

    The escaped form means the same inside JavaScript and JSON strings, and regular expressions.
    """
    return re.sub(r"</(script)", r"<\\/\1", text, flags=re.IGNORECASE)
