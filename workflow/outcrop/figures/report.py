"""A self-contained HTML summary of a run, and a plain-text overview for ``outcrop info``.

Figures are embedded as data URIs so that the page survives being copied, mailed or opened on a
field laptop without the results folder beside it.
"""

from __future__ import annotations

import base64
import html
import json
import os
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from outcrop.csvfile import read_csv
from outcrop.errors import OutcropError, check_one_per_scene
from outcrop.io import atomic_path
from outcrop.layout import Layout, in_folder


def _img(path: Path, alt: str) -> str:
    if not path.exists():
        return f"<p><em>missing: {html.escape(str(path))}</em></p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(alt)}</figcaption></figure>"
    )


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{_text(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_text(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _text(value: Any) -> str:
    """A value read from a run's files, as HTML text: files are hostile, markup in them stays text."""
    return html.escape(_fmt(value))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


def _metrics_section(metrics: dict[str, Any]) -> str:
    sets = [
        k
        for k in ("byol", "random_joined", "spectral_parts", "raw_spectral", "band_statistics", "random_encoder")
        if isinstance(metrics.get(k), dict) and "knn_accuracy" in metrics[k]
    ]
    rows = []
    for name in sets:
        m = metrics[name]
        row = {
            "features": name,
            "cluster ARI": m["ari"],
            "cluster NMI": m["nmi"],
            "kNN accuracy": m["knn_accuracy"],
            "linear probe": m["linear_probe_accuracy"],
        }
        for mode, rec in m["deposit_recall"].items():
            for k, v in rec.items():
                row[f"{mode} {k}"] = v
        rows.append(row)
    columns = list(rows[0]) if rows else []
    return (
        "<h2>Scores against the demo's planted truth</h2>"
        f"<p>{_text(metrics['rock_unit_tiles'])} tiles dominated by one planted rock unit; "
        f"{_text(metrics['known_deposits'])} known deposits, {_text(metrics['hidden_deposits'])} hidden.</p>"
        + _table(rows, columns)
    )


# random_joined: the untrained encoder joined with the same spectral and block parts as the run's
# vectors; spectral_parts: those parts alone, no network. The better of the two is what training has
# to beat (outcrop.search.training_gain).
QUALITY_SETS = (
    "byol",
    "random_joined",
    "spectral_parts",
    "band_statistics",
    "raw_spectral",
    "random_encoder",
    "raw_pixels",
)


def _set_rows(block: dict[str, Any], columns: Sequence[str]) -> list[dict[str, Any]]:
    """One row per feature set that ``block`` scored, with the ``columns`` of its scores."""
    return [
        {"features": name, **{c: block[name].get(c) for c in columns}}
        for name in QUALITY_SETS
        if isinstance(block.get(name), dict)
    ]


def _quality_section(metrics: dict[str, Any]) -> str:
    """Quality on the run's own ground, one row per feature set: what training added, leave-one-deposit-out,
    cross-scene re-identification (and by acquisition dates), same-scene re-identification, map agreement."""
    parts = ["<h2>Quality on this run's ground</h2>"]
    gain = metrics.get("training_gain")
    if isinstance(gain, dict):
        parts.append(_gain_html(gain))
    for key, title, cols in (
        ("leave_one_out", "Leave-one-deposit-out", None),
        ("reidentification", "Cross-scene re-identification", ("top1", "top5")),
    ):
        block = metrics.get(key)
        if not isinstance(block, dict):
            continue
        seconds = f" ({_fmt(block.get('seconds'))} s)"
        warning = without_tiles_line(block) if key == "leave_one_out" else ""
        if warning:
            parts.append(f"<p><strong>{html.escape(warning)}</strong></p>")
        if "skipped" in block:
            parts.append(f"<h3>{title}{html.escape(seconds)}</h3><p>skipped: {_text(block['skipped'])}</p>")
            continue
        rows = []
        for name in QUALITY_SETS:
            scores = block.get(name)
            if isinstance(scores, dict):
                keys = cols or [k for k in scores if k.startswith("recall@")] + ["median_rank"]
                rows.append({"features": name, **{k: scores.get(k) for k in keys}})
        if key == "leave_one_out":
            note = f"{_text(block.get('deposits'))} known deposits, each hidden in turn"
            if isinstance(block.get("hidden"), int) and block["hidden"] < (block.get("deposits") or 0):
                note = (
                    f"{_text(block['hidden'])} of {_text(block.get('deposits'))} known deposits (a seeded sample), "
                    "each hidden in turn and searched for from all the others"
                )
        else:
            note = (
                f"{_text(block.get('queries'))} query tiles cut {_text(block.get('offset_px'))} px off the "
                "run's grid, matched against an overlapping scene's tiles"
            )
        parts.append(
            f"<h3>{title}{html.escape(seconds)}</h3><p>{note}</p>" + _table(rows, list(rows[0]) if rows else [])
        )
        if key == "reidentification" and isinstance(block.get("by_dates"), dict):
            parts.append(_by_dates_html(block["by_dates"]))
    same = metrics.get("same_scene")
    if isinstance(same, dict):
        parts.append(_same_scene_html(same))
    agree = metrics.get("map_agreement")
    if isinstance(agree, dict):
        parts.append(_map_agreement_html(agree))
    return "".join(parts)


def without_tiles_line(loo: Any) -> str:
    """The warning for known deposits that meet no indexed tile (``without_tiles`` of the
    leave-one-out block of ``metrics.json``), or "" when every deposit meets one."""
    found = loo.get("without_tiles") if isinstance(loo, dict) else None
    if not isinstance(found, dict) or not found.get("count"):
        return ""
    named = [str(n) for n in found.get("named") or []]
    more = int(found["count"]) - len(named)
    return (
        "warning: known deposits that meet no indexed tile (outside every scene, or on cloud, water or other "
        "ground the index left out), left out of the analogue search: "
        + ", ".join(named)
        + (f" and {more:,} more" if more > 0 else "")
    )


DATE_TITLES = {
    "same_date": "pairs of one acquisition date",
    "different_dates": "pairs of different dates",
    "unknown": "pairs whose dates are not known",
}


def _by_dates_html(by_dates: dict[str, Any]) -> str:
    """Re-identification pooled by how the two scenes' acquisition dates relate."""
    rows = []
    for relation in ("same_date", "different_dates", "unknown"):
        block = by_dates.get(relation)
        if not isinstance(block, dict):
            continue
        row: dict[str, Any] = {
            "scene pairs": DATE_TITLES[relation],
            "pairs": block.get("pairs"),
            "queries": block.get("queries"),
        }
        for name in QUALITY_SETS:
            if isinstance(block.get(name), dict):
                row[f"{name} top-1"] = block[name].get("top1")
        rows.append(row)
    if not rows:
        return ""
    return (
        "<p>By acquisition date (the scenes' ACQUISITION_DATE tags): re-finding ground on another day is "
        "where training has to earn its keep.</p>" + _table(rows, list(rows[0]))
    )


def _same_scene_html(block: dict[str, Any]) -> str:
    title = f"Same-scene re-identification ({_fmt(block.get('seconds'))} s)"
    if "skipped" in block:
        return f"<h3>{html.escape(title)}</h3><p>skipped: {_text(block['skipped'])}</p>"
    rows = []
    for kind in ("shifted", "reprojected"):
        scores = block.get(kind)
        if isinstance(scores, dict):
            rows += [{"copy": kind, "queries": scores.get("queries"), **r} for r in _set_rows(scores, ("top1", "top5"))]
    note = (
        f"A window of {_text(block.get('scene'))} against its own tiles cut {_text(block.get('offset_px'))} px "
        f"off the run's grid (shifted) and against a copy warped to a grid turned "
        f"{_text(block.get('rotation_deg'))}° (reprojected); {_text(block.get('gallery'))} gallery tiles."
    )
    return f"<h3>{html.escape(title)}</h3><p>{note}</p>" + _table(rows, ["copy", "queries", "features", "top1", "top5"])


def _gain_html(gain: dict[str, Any]) -> str:
    """What training added: the sentence first, then shipped against the better untrained counterpart."""
    rows = [
        {
            "measure": m,
            "shipped": r.get("shipped"),
            "better counterpart": r.get("reference"),
            "its score": r.get("reference_value"),
            "gain": r.get("gain"),
        }
        for m, r in (gain.get("measures") or {}).items()
        if isinstance(r, dict)
    ]
    return (
        "<h3>What training added</h3>"
        f"<p class='verdict'><strong>{_text(gain.get('verdict'))}</strong></p>"
        "<p>Gain: the trained embedding's score minus the better of its untrained counterparts "
        "(random_joined: an untrained network joined with the same spectra; spectral_parts: the spectra alone), "
        f"signed so that above zero means training helped; {_text(gain.get('min_gain'))} or less counts as none.</p>"
        + (_table(rows, list(rows[0])) if rows else "")
    )


def _levels(scores: dict[str, Any]) -> list[str]:
    """The cluster levels of a feature set's map-agreement scores, k-means first, each by size (k4, k12, h3)."""
    import re

    found = [lv for lv, v in scores.items() if isinstance(v, dict) and "ari" in v and re.fullmatch(r"[kh]\d+", lv)]
    return sorted(found, key=lambda lv: (lv[0] != "k", int(lv[1:])))


def _map_agreement_html(block: dict[str, Any]) -> str:
    """Clusters against the unit map at every level (ARI, NMI, purity), spatial kNN, and the per-unit table."""
    from outcrop.search.unit_table import unit_rows

    title = f"Agreement with the geological map ({_fmt(block.get('seconds'))} s)"
    maps = ", ".join(str(m) for m in block.get("maps") or [])
    head = (
        f"<h3>{html.escape(title)}</h3><p>{_text(maps)}: {_text(block.get('tiles_with_unit'))} of "
        f"{_text(block.get('tiles_read'))} tiles read have a unit ({_text(block.get('rule'))}).</p>"
    )
    if "skipped" in block:
        return head + f"<p>skipped: {_text(block['skipped'])}</p>"
    scored = [n for n in QUALITY_SETS if isinstance(block.get(n), dict)]
    levels = _levels(block[scored[0]]) if scored else []
    own = block.get("workflow_clusters") if isinstance(block.get("workflow_clusters"), dict) else {}
    out = [head]
    for measure, label in (("ari", "ARI"), ("nmi", "NMI"), ("purity", "purity")):
        rows = [{"features": n, **{lv: (block[n].get(lv) or {}).get(measure) for lv in levels}} for n in scored]
        if own:
            rows.append(
                {"features": "workflow's own clusters", **{lv: (own.get(lv) or {}).get(measure) for lv in levels}}
            )
        out.append(f"<h4>Clusters against the units: {label}</h4>" + _table(rows, ["features", *levels]))
    split = block.get("split") or {}
    rows = [
        {"features": n, "macro-F1": block[n].get("knn_macro_f1"), "tiles predicted": block[n].get("knn_predicted")}
        for n in scored
    ]
    out.append(
        f"<h4>Units predicted by kNN across a spatial split</h4><p>{_text(split.get('k'))} nearest neighbours; "
        f"blocks of {_text(split.get('block_tiles'))} tile widths in {_text(split.get('folds'))} folds, no training "
        f"tile within {_text(split.get('gap_tiles'))} tile width of a test tile.</p>"
        + _table(rows, ["features", "macro-F1", "tiles predicted"])
    )
    units = unit_rows(block)
    if units:
        out.append("<h4>Per unit: tiles and kNN recall</h4>" + _table(units, list(units[0])))
    return "".join(out)


def write_summary(
    scenes: Sequence[str],
    out: Path,
    *,
    tile_tables: Sequence[Path],
    prepared: Sequence[Path],
    training_curve: Path,
    dendrogram: Path,
    cluster_maps: Sequence[Path],
    index_info: Path,
    analogues: Path | None = None,
    skipped: Path | None = None,
    grid: Path | None = None,
    metrics: Path | None = None,
    webmap: Path | None = None,
    snakemake_report: Path | None = None,
    cluster_table: Path | None = None,
    analogue_maps: Sequence[Path] = (),
    log: Callable[[str], None] = print,
) -> None:
    """Write the run's HTML summary: grid, model, index, clusters, analogues, label-free quality, and
    demo scores if present.

    ``tile_tables``, ``prepared`` and ``cluster_maps`` list one file per scene, in the order of
    ``scenes``; a figure or table that is absent is left out of the page. A run without deposits
    gives ``skipped`` (analogues/skipped.txt) instead of ``analogues``, and the page says why.
    ``webmap``, ``snakemake_report``, ``cluster_table`` and ``analogue_maps`` (one per scene) are
    the pages the summary links to, relative to ``out``.
    """
    check_one_per_scene("report", scenes, tile_tables=tile_tables, prepared_scenes=prepared, cluster_maps=cluster_maps)
    parts = [
        "<h1>outcrop run summary</h1>",
        f"<p>{len(scenes)} scenes: {html.escape(', '.join(scenes))}</p>",
        _links_section(
            out,
            scenes,
            webmap=webmap,
            snakemake_report=snakemake_report,
            cluster_table=cluster_table,
            analogue_maps=analogue_maps,
        ),
    ]
    empty = scenes_without_tiles(scenes, tile_tables, prepared)
    if empty:
        parts.append(f"<p><strong>{html.escape(_without_tiles_line(empty))}</strong></p>")
    if grid is not None:
        parts.append(_grid_html(Path(grid)))
    parts.append(_surfaces_html(scenes, tile_tables, prepared))
    if metrics is not None and Path(metrics).exists():
        scores = json.loads(Path(metrics).read_text())
        parts.append(_quality_section(scores))
        if "rock_unit_tiles" in scores:
            parts.append(_metrics_section(scores))
    info_path = Path(index_info)
    if info_path.exists():
        info = json.loads(info_path.read_text())
        parts.append("<h2>Index</h2>" + _table([info], [k for k in info if not isinstance(info[k], dict)]))
    parts.append("<h2>Encoder</h2>" + _img(Path(training_curve), "BYOL training curve"))
    parts.append("<h2>Clusters</h2>" + _img(Path(dendrogram), "Ward hierarchy of clusters"))
    for scene, cluster_map in zip(scenes, cluster_maps):
        parts.append(_img(Path(cluster_map), f"clusters of {scene}"))
    why = analogues_skipped(Path(skipped)) if skipped is not None else ""
    if why:
        parts.append(f"<h2>Analogues</h2><p><strong>{html.escape(why)}</strong></p>")
    analogues_csv = Path(analogues) if analogues is not None else None
    if analogues_csv is not None and analogues_csv.exists():
        top = read_csv(analogues_csv).head(20)
        parts.append("<h2>Top analogues</h2>" + _table(top.to_dict("records"), list(top.columns)))
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
        "img{max-width:100%}figure{margin:1em 0}"
    )
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>outcrop summary</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n"
    )
    with atomic_path(out) as tmp:
        tmp.write_text(page)
    log(f"report: wrote {out}")


def summary_of_run(results: Path, scenes: Sequence[str], out: Path, log: Callable[[str], None] = print) -> None:
    """:func:`write_summary` of a results folder, its files found through :mod:`outcrop.layout`."""
    run = Layout(results)
    metrics = Path(run.metrics)
    write_summary(
        scenes,
        out,
        tile_tables=[Path(run.tile_table(s)) for s in scenes],
        prepared=[Path(run.prepared(s)) for s in scenes],
        training_curve=Path(run.training_curve_png),
        dendrogram=Path(run.dendrogram),
        cluster_maps=[Path(run.cluster_map(s)) for s in scenes],
        analogues=Path(run.analogues_csv),
        index_info=Path(run.index_info),
        metrics=metrics if metrics.exists() else None,
        webmap=Path(run.webmap),
        snakemake_report=Path(run.snakemake_report),
        cluster_table=Path(run.cluster_summary_html),
        analogue_maps=[Path(p) for p in in_folder(run.analogue_maps, scenes, ".png")],
        log=log,
    )


def _link(target: Path, out: Path, label: str, note: str = "") -> str:
    """A relative link from the page at ``out`` to ``target``; names from the run are escaped in
    both the URL and the text."""
    rel = os.path.relpath(target, out.parent).replace(os.sep, "/")
    href = html.escape(urllib.parse.quote(rel), quote=True)
    return f'<li><a href="{href}">{html.escape(label)}</a>{html.escape(note)}</li>'


def _links_section(
    out: Path,
    scenes: Sequence[str],
    *,
    webmap: Path | None,
    snakemake_report: Path | None,
    cluster_table: Path | None,
    analogue_maps: Sequence[Path],
) -> str:
    """Links to the run's other pages: the interactive map, the Snakemake report, the cluster table
    and the analogue map of each scene (``analogue_maps``: one per scene, or none in a run without
    deposits). Relative, so they work wherever the results folder goes (the figures above are
    embedded; these pages are too large to embed)."""
    items = []
    if webmap is not None:
        items.append(_link(Path(webmap), out, "Interactive map", f" ({_relative(webmap, out)})"))
    if snakemake_report is not None:
        items.append(
            _link(
                Path(snakemake_report),
                out,
                "Snakemake report",
                f" ({_relative(snakemake_report, out)}, written by: snakemake --report {snakemake_report})",
            )
        )
    if cluster_table is not None:
        items.append(_link(Path(cluster_table), out, "Cluster table", f" ({_relative(cluster_table, out)})"))
    items += [_link(Path(path), out, f"Analogue map of {scene}") for scene, path in zip(scenes, analogue_maps)]
    if not items:
        return ""
    return "<h2>Pages of this run</h2><ul class='links'>" + "".join(items) + "</ul>"


def _relative(target: Path | str, out: Path) -> str:
    return os.path.relpath(target, Path(out).parent).replace(os.sep, "/")


# "unknown": ground whose bands cannot tell rock from water, snow or vegetation (RGB, panchromatic);
# counted apart, or an RGB scene would read as all rock. Tables written before a class read it as 0.
SURFACE_CLASSES = ("rock", "vegetation", "snow_ice", "water", "cloud", "unknown")


def scenes_without_tiles(
    scenes: Sequence[str], tile_tables: Sequence[Path], prepared: Sequence[Path]
) -> list[tuple[str, str]]:
    """Scenes whose tile table is empty, each with what covers it (``("C", "all cloud")``).

    Such a scene stops nothing (its tiles stage writes an empty table and the run goes on), so the
    summary and ``outcrop info`` must say that it is absent from the index, clusters and analogues.
    ``tile_tables`` and ``prepared`` list one file per scene; a missing or unreadable table is skipped.
    """
    import pyarrow.parquet as pq

    out = []
    for scene, table, scene_file in zip(scenes, tile_tables, prepared):
        try:
            rows = pq.read_metadata(Path(table)).num_rows
        except Exception:  # not there yet, or broken: other stages say so
            continue
        if rows == 0:
            out.append((scene, _cover(Path(scene_file))))
    return out


def _cover(prepared: Path) -> str:
    """What covers a prepared scene, from its mask band read at a reduced size (overviews)."""
    import numpy as np
    import rasterio
    from rasterio.enums import Resampling

    from outcrop.raster.surfaces import CLOUD, NODATA

    try:
        with rasterio.open(prepared) as src:
            step = max(1, max(src.width, src.height) // 512)
            shape = (max(1, src.height // step), max(1, src.width // step))
            mask = src.read(src.count, out_shape=shape, resampling=Resampling.nearest)
    except rasterio.errors.RasterioIOError:
        return "prepared scene unreadable"
    cloud, nodata = float(np.mean(mask == CLOUD)), float(np.mean(mask == NODATA))
    if cloud >= 0.995:
        return "all cloud"
    if nodata >= 0.995:
        return "all nodata"
    return f"{cloud:.0%} cloud, {nodata:.0%} nodata"


def _without_tiles_line(empty: Sequence[tuple[str, str]]) -> str:
    return "scenes without usable tiles: " + ", ".join(f"{scene} ({why})" for scene, why in empty)


def _model_metadata(path: Path) -> dict[str, Any]:
    """The metadata of an encoder file (torch is imported only here, and only if the file exists);
    ``{"error": why}`` for a file that is no readable encoder file, which is said, never loaded,
    and where torch is not installed (the report's environment need not have it)."""
    try:
        from outcrop.learning.torch_files import read_torch_file

        payload = read_torch_file(path, "encoder file")
    except ImportError:
        return {"error": "not read: torch is not installed here"}
    except OutcropError as exc:  # a broken or foreign file: say so, do not fail the overview
        return {"error": _one_line(exc).removeprefix(f"{path}: ")}
    return payload.get("metadata", {}) if isinstance(payload, dict) else {}


def _one_line(exc: BaseException) -> str:
    """A library's message whole, on one line (torch says why it refused a pickle on its third line)."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__


def surface_counts(tables: Sequence[tuple[str, Path]]) -> tuple[Any, list[str]]:
    """Tiles per scene under each one's dominant surface class (a DataFrame indexed by scene, one
    column per :data:`SURFACE_CLASSES`), and a line for each table that could not be read."""
    import pandas as pd
    import pyarrow.parquet as pq

    frames, broken = [], []
    for scene, p in tables:
        try:
            present = set(pq.read_schema(p).names)  # only the class columns: not the footprints
            frame = pd.read_parquet(p, columns=[c for c in SURFACE_CLASSES if c in present])
            frame = frame.assign(**{c: 0.0 for c in SURFACE_CLASSES if c not in present})
            frames.append(frame[list(SURFACE_CLASSES)].assign(scene=scene))
        except Exception as exc:  # a broken table is reported and the others still counted
            broken.append(f"  {scene}: {p} unreadable ({_one_line(exc)})")
    if not frames:
        return pd.DataFrame(columns=list(SURFACE_CLASSES)), broken
    tiles = pd.concat(frames, ignore_index=True)
    tiles["dominant"] = tiles[list(SURFACE_CLASSES)].to_numpy().argmax(axis=1)
    counts = tiles.groupby("scene", sort=False)["dominant"].value_counts().unstack(fill_value=0)
    counts = counts.reindex(columns=range(len(SURFACE_CLASSES)), fill_value=0)
    counts.columns = list(SURFACE_CLASSES)
    return counts.reindex([scene for scene, _ in tables if scene in counts.index]).fillna(0).astype(int), broken


def scene_radiometry(prepared: Path) -> str:
    """How a prepared scene's stored numbers became reflectance (its ``radiometry`` tag: "float data
    taken as reflectance", a sensor's scale and offset, the percentile rule), or "" when unknown."""
    import rasterio

    try:
        with rasterio.open(prepared) as src:
            return str(src.tags().get("radiometry", ""))
    except Exception:  # not prepared yet, or unreadable: other sections say so
        return ""


def _tiles_section(folder: Path) -> list[str]:
    """Scenes and kept tiles, each tile counted under its dominant surface class."""
    tables = sorted(Path(folder).glob("*.parquet"))
    if not tables:
        return ["tiles: none yet"]
    counts, broken = surface_counts([(p.stem, p) for p in tables])
    if counts.empty and broken:
        return [f"scenes: {len(tables)}, every tile table unreadable", *broken]
    lines = [
        f"scenes: {len(tables)} ({', '.join(p.stem for p in tables)})",
        f"tiles: {int(counts.to_numpy().sum())}, by dominant surface: "
        + ", ".join(f"{c} {int(counts[c].sum())}" for c in SURFACE_CLASSES),
    ]
    for scene, row in counts.iterrows():
        per_class = ", ".join(f"{c} {int(row[c])}" for c in SURFACE_CLASSES)
        lines.append(f"  {scene}: {int(row.sum())} tiles ({per_class})")
    return lines + broken


def _radiometry_section(folder: Path) -> list[str]:
    """How each prepared scene's numbers became reflectance: a float GeoTIFF is taken as
    reflectance as it is, which a user must know (a float file of radiance would be wrong)."""
    scenes = sorted(Path(folder).glob("*.tif"))
    notes = [(p.stem, scene_radiometry(p)) for p in scenes]
    notes = [(scene, how) for scene, how in notes if how]
    if not notes:
        return []
    return ["reflectance:", *(f"  {scene}: {how}" for scene, how in notes)]


def _surfaces_html(scenes: Sequence[str], tile_tables: Sequence[Path], prepared: Sequence[Path]) -> str:
    """The summary's table of scenes: tiles by dominant surface, and how each became reflectance."""
    counts, _ = surface_counts([(s, Path(t)) for s, t in zip(scenes, tile_tables) if Path(t).exists()])
    rows = []
    for scene, scene_file in zip(scenes, prepared):
        row: dict[str, Any] = {"scene": scene}
        if scene in counts.index:
            row["tiles"] = int(counts.loc[scene].sum())
            row.update({c.replace("_", "/"): int(counts.loc[scene, c]) for c in SURFACE_CLASSES})
        row["reflectance"] = scene_radiometry(Path(scene_file))
        rows.append(row)
    columns = ["scene", "tiles", *(c.replace("_", "/") for c in SURFACE_CLASSES), "reflectance"]
    return (
        "<h2>Scenes and surfaces</h2><p>Tiles by dominant surface class (rock: exposed ground; unknown: "
        "ground whose bands cannot tell rock from water, snow or vegetation), and how each scene's "
        "numbers became reflectance.</p>" + _table(rows, columns)
    )


def _grid_section(path: Path) -> list[str]:
    """The run grid (grid.json): CRS, resolution, alignment, why, and scenes it distorts."""
    from outcrop.raster.grid_choice import grid_lines

    return grid_lines(path) if Path(path).exists() else ["grid: not chosen yet"]


def _grid_html(path: Path) -> str:
    """The grid section of the summary; its warnings stand out, each naming its scene."""
    try:
        lines = _grid_section(path)
    except Exception as exc:
        lines = [f"grid: {path} unreadable ({type(exc).__name__})"]
    items = "".join(
        f"<li><strong>{html.escape(line.strip())}</strong></li>"
        if line.strip().startswith("warning")
        else f"<li>{html.escape(line.strip())}</li>"
        for line in lines[1:]
    )
    return f"<h2>Grid</h2><p>{html.escape(lines[0])}</p><ul>{items}</ul>"


def _model_section(model: Path) -> list[str]:
    if not model.exists():
        return ["model: not trained yet"]
    meta = _model_metadata(model)
    size = f"{model.stat().st_size / 1e6:.1f} MB"
    if "error" in meta:
        return [f"model: {model} ({size}): {meta['error']}"]
    settings = meta.get("settings", {})
    parts = [
        f"{meta.get('arch', '?')}",
        f"embedding dim {meta.get('embedding_dim', '?')}",
        f"bands {','.join(meta.get('bands', []))}",
    ]
    if "train_tiles" in meta:
        parts.append(
            f"trained on {meta['train_tiles']} tiles: {_budget_words(meta, settings)}, "
            f"final loss {meta.get('final_loss', float('nan')):.4f}"
        )
    return [f"model: {', '.join(parts)} ({size})"]


def _budget_words(meta: dict[str, Any], settings: dict[str, Any]) -> str:
    """What a training ran, in views and steps (a budgeted training has no epoch count of its own:
    its ``epochs`` setting is None), with the passes over the tiles they make."""
    try:
        tiles, steps = int(meta["train_tiles"]), int(meta["steps"])
        batch = min(int(settings["batch_size"]), tiles)
    except (KeyError, TypeError, ValueError):
        return f"{meta.get('steps', '?')} steps"
    views = steps * batch
    how = (
        f"{settings['epochs']} epochs asked for"
        if isinstance(settings.get("epochs"), int)
        else f"a budget of {settings.get('samples', '?')} views"
    )
    return f"{views} views in {steps} steps of {batch} ({views / max(tiles, 1):.3g} passes over the tiles; {how})"


def _index_section(info: Path) -> list[str]:
    if not info.exists():
        return ["index: not built yet"]
    data = json.loads(info.read_text())
    recall = data.get("recall_at_10")
    return [
        f"index: {data.get('kind', '?')} ({data.get('metric', '?')}), {data.get('count', '?')} tiles of dim "
        f"{data.get('dim', '?')}, recall@10 {recall:.3f}"
        if isinstance(recall, (int, float))
        else f"index: {data.get('kind', '?')}, {data.get('count', '?')} tiles, recall@10 not measured"
    ]


def _clusters_section(summary: Path) -> list[str]:
    import re

    if not summary.exists():
        return ["clusters: not computed yet"]
    table = read_csv(summary)
    lines = ["clusters:"]
    for level, group in table.groupby("level", sort=False):
        sizes = group.sort_values("cluster")["size"].astype(int).tolist()
        kind = "k-means" if re.fullmatch(r"k\d+", str(level)) else "hierarchy cut"
        lines.append(f"  {level} ({kind}): {len(sizes)} clusters, sizes {sizes[:12]}{' …' if len(sizes) > 12 else ''}")
    return lines


def analogues_skipped(path: Path) -> str:
    """Why a run ranked no analogues (it was given no deposits: analogues/skipped.txt), or "" when
    it was meant to."""
    return path.read_text(encoding="utf-8", errors="replace").strip() if path.is_file() else ""


def _analogues_section(csv: Path, top: int, skipped: Path) -> list[str]:
    why = analogues_skipped(skipped)
    if why and not csv.exists():
        return [why]
    if not csv.exists():
        return ["analogues: not ranked yet"]
    table = read_csv(csv)
    columns = [
        c
        for c in ("rank", "score", "scene", "tile_id", "nearest_positive", "distance_km", "lon", "lat")
        if c in table.columns
    ]
    head = table[columns].head(top).to_string(index=False, float_format=lambda v: f"{v:.3f}")
    return [
        f"analogues: {len(table)} ranked; top {min(top, len(table))}:",
        *("  " + line for line in head.splitlines()),
    ]


def _scores_section(metrics: Path) -> list[str]:
    if not metrics.exists():
        return []
    data = json.loads(metrics.read_text())
    warning = without_tiles_line(data.get("leave_one_out"))
    lines = [warning] if warning else []
    summary = data.get("summary", {})
    lines += _quality_lines(data)
    if summary:  # the demo's truth
        lines.append(
            "scores (demo truth): "
            + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(summary.items()))
        )
    return lines


def _ari_at(level: str) -> Callable[[Any], Any]:
    """The pick of :func:`_best_other` for the ARI at one clustering ``level`` of map-agreement scores."""
    return lambda s: (s.get(level) or {}).get("ari")


def _best_other(scores: dict[str, Any], pick: Callable[[Any], Any]) -> str:
    """``shipped a, best baseline b (name)`` of one measure over the feature sets of a block."""
    values = {n: pick(scores[n]) for n in QUALITY_SETS if isinstance(scores.get(n), dict)}
    values = {n: v for n, v in values.items() if isinstance(v, (int, float))}
    if "byol" not in values:
        return "not scored"
    others = {n: v for n, v in values.items() if n != "byol"}
    if not others:
        return f"shipped {values['byol']:.3f}"
    best = max(others, key=lambda n: others[n])
    return f"shipped {values['byol']:.3f}, best baseline {best} {others[best]:.3f}"


def _quality_lines(data: dict[str, Any]) -> list[str]:
    """What training added, re-identification by acquisition dates and within a scene, and map agreement."""
    lines = []
    gain = data.get("training_gain")
    if isinstance(gain, dict) and gain.get("verdict"):
        lines.append(f"training gain: {gain['verdict']}")
    by_dates = (data.get("reidentification") or {}).get("by_dates") or {}
    for relation in ("same_date", "different_dates", "unknown"):
        if isinstance(by_dates.get(relation), dict):
            block = by_dates[relation]
            lines.append(
                f"re-identification, {DATE_TITLES[relation]} ({block.get('pairs')}): top-1 "
                + _best_other(block, lambda s: s.get("top1"))
            )
    same = data.get("same_scene") or {}
    for kind in ("shifted", "reprojected"):
        if isinstance(same.get(kind), dict):
            lines.append(
                f"same-scene re-identification, {kind} ({same.get('scene')}): top-1 "
                + _best_other(same[kind], lambda s: s.get("top1"))
            )
    agree = data.get("map_agreement")
    if isinstance(agree, dict):
        head = (
            f"map agreement ({', '.join(str(m) for m in agree.get('maps') or [])}; "
            f"{agree.get('tiles_with_unit')} tiles, {len(agree.get('units') or {})} units)"
        )
        if "skipped" in agree:
            lines.append(f"{head}: skipped: {agree['skipped']}")
        elif isinstance(agree.get("byol"), dict):
            levels = _levels(agree["byol"])
            lines.append(f"{head}:")
            for lv in levels:
                lines.append(f"  {lv} ARI " + _best_other(agree, _ari_at(lv)))
            lines.append("  kNN macro-F1 " + _best_other(agree, lambda s: s.get("knn_macro_f1")))
    return lines


def _readable(name: str, path: Path, section: Callable[..., list[str]], *args: Any) -> list[str]:
    """One section of ``outcrop info``, or a line saying its file is unreadable: a broken file (cut
    short, edited, of another version) must not hide the rest of the overview behind a traceback."""
    try:
        return section(*args)
    except Exception as exc:
        return [f"{name}: {path} unreadable ({type(exc).__name__}: {_one_line(exc)})"]


def _without_tiles_section(run: Layout) -> list[str]:
    scenes = sorted(p.stem for p in Path(run.tiles_folder).glob("*.parquet"))
    empty = scenes_without_tiles(
        scenes, [Path(run.tile_table(s)) for s in scenes], [Path(run.prepared(s)) for s in scenes]
    )
    return [_without_tiles_line(empty)] if empty else []


def run_info(results: Path, top: int = 5) -> str:
    """A plain-text overview of a finished (or partial) run, for ``outcrop info``.

    Scenes and tiles per dominant surface class, the model, the index kind and its measured
    recall, cluster sizes per level, the top analogues, and the demo scores when present. Each
    section says when its stage has not run yet, so the command also tells how far a run got.
    """
    results = Path(results)
    if not results.is_dir():
        from outcrop.errors import OutcropError

        raise OutcropError(f"{results}: no such results folder")
    run = Layout(results)
    lines = [f"run: {results}"]
    tiles, model, info = Path(run.tiles_folder), Path(run.model), Path(run.index_info)
    clusters, analogues, metrics = Path(run.cluster_summary_csv), Path(run.analogues_csv), Path(run.metrics)
    grid = Path(run.grid)
    lines += _readable("grid", grid, _grid_section, grid)
    lines += _readable("tiles", tiles, _tiles_section, tiles)
    prepared = Path(run.prepared()).parent
    lines += _readable("reflectance", prepared, _radiometry_section, prepared)
    lines += _readable("scenes without usable tiles", tiles, _without_tiles_section, run)
    lines += _readable("model", model, _model_section, model)
    lines += _readable("index", info, _index_section, info)
    lines += _readable("clusters", clusters, _clusters_section, clusters)
    lines += _readable("analogues", analogues, _analogues_section, analogues, top, Path(run.analogues_skipped))
    lines += _readable("scores", metrics, _scores_section, metrics)
    outputs = [Path(p) for p in (run.webmap, run.summary) if Path(p).exists()]
    if outputs:
        lines.append("open: " + ", ".join(str(p) for p in outputs))
    return "\n".join(lines)
