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

from outcrop.io import atomic_path


def _img(path: Path, alt: str) -> str:
    if not path.exists():
        return f"<p><em>missing: {html.escape(str(path))}</em></p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{_text(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_text(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _text(value: Any) -> str:
    """A value read from a run's files, as HTML text: files are hostile, markup in them stays text."""
    return html.escape(_fmt(value))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


def _metrics_section(metrics: dict[str, Any]) -> str:
    sets = [k for k in ("byol", "raw_spectral", "band_statistics", "random_encoder") if k in metrics]
    rows = []
    for name in sets:
        m = metrics[name]
        row = {"features": name, "cluster ARI": m["ari"], "cluster NMI": m["nmi"],
               "kNN accuracy": m["knn_accuracy"], "linear probe": m["linear_probe_accuracy"]}
        for mode, rec in m["deposit_recall"].items():
            for k, v in rec.items():
                row[f"{mode} {k}"] = v
        rows.append(row)
    columns = list(rows[0]) if rows else []
    return ("<h2>Scores against the demo's planted truth</h2>"
            f"<p>{_text(metrics['rock_unit_tiles'])} tiles dominated by one planted rock unit; "
            f"{_text(metrics['known_deposits'])} known deposits, {_text(metrics['hidden_deposits'])} hidden.</p>"
            + _table(rows, columns))


def write_summary(results: Path, scenes: Sequence[str], out: Path, log: Callable[[str], None] = print) -> None:
    """Write the run's HTML summary: model, index, clusters, analogues, and demo scores if present."""
    import pandas as pd

    parts = ["<h1>outcrop run summary</h1>", f"<p>{len(scenes)} scenes: {html.escape(', '.join(scenes))}</p>",
             _links_section(results, scenes, out)]
    empty = scenes_without_tiles(results, scenes)
    if empty:
        parts.append(f"<p><strong>{html.escape(_without_tiles_line(empty))}</strong></p>")
    metrics_path = results / "metrics.json"
    if metrics_path.exists():
        parts.append(_metrics_section(json.loads(metrics_path.read_text())))
    info_path = results / "index" / "info.json"
    if info_path.exists():
        info = json.loads(info_path.read_text())
        parts.append("<h2>Index</h2>" + _table([info], [k for k in info if not isinstance(info[k], dict)]))
    parts.append("<h2>Encoder</h2>" + _img(results / "model" / "training_curve.png", "BYOL training curve"))
    parts.append("<h2>Clusters</h2>" + _img(results / "clusters" / "dendrogram.png", "Ward hierarchy of clusters"))
    for scene in scenes:
        parts.append(_img(results / "clusters" / "maps" / f"{scene}.png", f"clusters of {scene}"))
    analogues_csv = results / "analogues" / "analogues.csv"
    if analogues_csv.exists():
        top = pd.read_csv(analogues_csv).head(20)
        parts.append("<h2>Top analogues</h2>" + _table(top.to_dict("records"), list(top.columns)))
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
             "img{max-width:100%}figure{margin:1em 0}")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>outcrop summary</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")
    with atomic_path(out) as tmp:
        tmp.write_text(page)
    log(f"report: wrote {out}")


def _link(target: Path, out: Path, label: str, note: str = "") -> str:
    """A relative link from the page at ``out`` to ``target``; names from the run are escaped in
    both the URL and the text."""
    rel = os.path.relpath(target, out.parent).replace(os.sep, "/")
    href = html.escape(urllib.parse.quote(rel), quote=True)
    return f'<li><a href="{href}">{html.escape(label)}</a>{html.escape(note)}</li>'


def _links_section(results: Path, scenes: Sequence[str], out: Path) -> str:
    """Links to the run's other pages: the interactive map, the Snakemake report, the cluster table
    and the analogue map of each scene. Relative, so they work wherever the results folder goes
    (the figures above are embedded; these pages are too large to embed)."""
    items = [
        _link(results / "map.html", out, "Interactive map", " (map.html)"),
        _link(results / "report.html", out, "Snakemake report",
              " (report.html, written by: snakemake --report results/report.html)"),
        _link(results / "clusters" / "summary.html", out, "Cluster table", " (clusters/summary.html)"),
    ]
    items += [_link(results / "analogues" / "maps" / f"{scene}.png", out, f"Analogue map of {scene}")
              for scene in scenes]
    return "<h2>Pages of this run</h2><ul class='links'>" + "".join(items) + "</ul>"


SURFACE_CLASSES = ("rock", "snow_ice", "water", "cloud")


def scenes_without_tiles(results: Path, scenes: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """Scenes whose tile table is empty, each with what covers it (``("C", "all cloud")``).

    Such a scene stops nothing (its tiles stage writes an empty table and the run goes on), so the
    summary and ``outcrop info`` must say that it is absent from the index, clusters and analogues.
    ``scenes`` defaults to every tile table in the run; a missing or unreadable table is skipped.
    """
    import pyarrow.parquet as pq

    folder = Path(results) / "tiles"
    if scenes is None:
        scenes = sorted(p.stem for p in folder.glob("*.parquet"))
    out = []
    for scene in scenes:
        try:
            rows = pq.read_metadata(folder / f"{scene}.parquet").num_rows
        except Exception:  # not there yet, or broken: other stages say so
            continue
        if rows == 0:
            out.append((scene, _cover(Path(results) / "prepared" / f"{scene}.tif")))
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
    """The metadata of an encoder file (torch is imported only here, and only if the file exists)."""
    try:
        import torch

        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a broken or foreign file: say so, do not fail the overview
        return {"error": _one_line(exc)}
    return payload.get("metadata", {}) if isinstance(payload, dict) else {}


def _one_line(exc: BaseException) -> str:
    """A library's message whole, on one line (torch says why it refused a pickle on its third line)."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__


def _tiles_section(results: Path) -> list[str]:
    """Scenes and kept tiles, each tile counted under its dominant surface class."""
    import pandas as pd

    tables = sorted((results / "tiles").glob("*.parquet"))
    if not tables:
        return ["tiles: none yet"]
    frames, broken = [], []
    for p in tables:
        try:
            frames.append(pd.read_parquet(p, columns=["scene", *SURFACE_CLASSES]).assign(scene=p.stem))
        except Exception as exc:  # a broken table is reported and the others still counted
            broken.append(f"  {p.stem}: {p} unreadable ({_one_line(exc)})")
    if not frames:
        return [f"scenes: {len(tables)}, every tile table unreadable", *broken]
    tiles = pd.concat(frames, ignore_index=True)
    tiles["dominant"] = tiles[list(SURFACE_CLASSES)].to_numpy().argmax(axis=1)
    counts = tiles.groupby(["scene", "dominant"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=range(len(SURFACE_CLASSES)), fill_value=0)
    counts.columns = list(SURFACE_CLASSES)
    lines = [f"scenes: {len(tables)} ({', '.join(p.stem for p in tables)})",
             f"tiles: {len(tiles)}, by dominant surface: "
             + ", ".join(f"{c} {int(counts[c].sum())}" for c in SURFACE_CLASSES)]
    for scene, row in counts.iterrows():
        lines.append(f"  {scene}: {int(row.sum())} tiles (" + ", ".join(f"{c} {int(row[c])}" for c in SURFACE_CLASSES) + ")")
    return lines + broken


def _model_section(results: Path) -> list[str]:
    model = results / "model" / "encoder.pt"
    if not model.exists():
        return ["model: not trained yet"]
    meta = _model_metadata(model)
    size = f"{model.stat().st_size / 1e6:.1f} MB"
    if "error" in meta:
        return [f"model: {model} ({size}), unreadable: {meta['error']}"]
    settings = meta.get("settings", {})
    parts = [f"{meta.get('arch', '?')}", f"embedding dim {meta.get('embedding_dim', '?')}",
             f"bands {','.join(meta.get('bands', []))}"]
    if "train_tiles" in meta:
        parts.append(f"trained on {meta['train_tiles']} tiles, {settings.get('epochs', '?')} epochs, "
                     f"{meta.get('steps', '?')} steps, final loss {meta.get('final_loss', float('nan')):.4f}")
    return [f"model: {', '.join(parts)} ({size})"]


def _index_section(results: Path) -> list[str]:
    info = results / "index" / "info.json"
    if not info.exists():
        return ["index: not built yet"]
    data = json.loads(info.read_text())
    recall = data.get("recall_at_10")
    return [f"index: {data.get('kind', '?')} ({data.get('metric', '?')}), {data.get('count', '?')} tiles of dim "
            f"{data.get('dim', '?')}, recall@10 {recall:.3f}" if isinstance(recall, (int, float)) else
            f"index: {data.get('kind', '?')}, {data.get('count', '?')} tiles, recall@10 not measured"]


def _clusters_section(results: Path) -> list[str]:
    import re

    import pandas as pd

    summary = results / "clusters" / "summary.csv"
    if not summary.exists():
        return ["clusters: not computed yet"]
    table = pd.read_csv(summary)
    lines = ["clusters:"]
    for level, group in table.groupby("level", sort=False):
        sizes = group.sort_values("cluster")["size"].astype(int).tolist()
        kind = "k-means" if re.fullmatch(r"k\d+", str(level)) else "hierarchy cut"
        lines.append(f"  {level} ({kind}): {len(sizes)} clusters, sizes {sizes[:12]}{' …' if len(sizes) > 12 else ''}")
    return lines


def _analogues_section(results: Path, top: int) -> list[str]:
    import pandas as pd

    csv = results / "analogues" / "analogues.csv"
    if not csv.exists():
        return ["analogues: not ranked yet"]
    table = pd.read_csv(csv)
    columns = [c for c in ("rank", "score", "scene", "tile_id", "nearest_positive", "distance_km", "lon", "lat")
               if c in table.columns]
    head = table[columns].head(top).to_string(index=False, float_format=lambda v: f"{v:.3f}")
    return [f"analogues: {len(table)} ranked; top {min(top, len(table))}:", *("  " + line for line in head.splitlines())]


def _scores_section(results: Path) -> list[str]:
    metrics = results / "metrics.json"
    if not metrics.exists():
        return []
    summary = json.loads(metrics.read_text()).get("summary", {})
    return ["scores (demo truth): " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                for k, v in sorted(summary.items()))]


def _readable(name: str, path: Path, section: Callable[..., list[str]], *args: Any) -> list[str]:
    """One section of ``outcrop info``, or a line saying its file is unreadable: a broken file (cut
    short, edited, of another version) must not hide the rest of the overview behind a traceback."""
    try:
        return section(*args)
    except Exception as exc:
        return [f"{name}: {path} unreadable ({type(exc).__name__}: {_one_line(exc)})"]


def _without_tiles_section(results: Path) -> list[str]:
    empty = scenes_without_tiles(results)
    return [_without_tiles_line(empty)] if empty else []


def run_info(results: Path, top: int = 5) -> str:
    """A plain-text overview of a finished (or partial) run, for ``outcrop info``.

    Scenes and tiles per dominant surface class, the model, the index kind and its measured
    recall, cluster sizes per level, the top analogues, and the demo scores when present. Each
    section says when its stage has not run yet, so the command also tells how far a run got.
    """
    results = Path(results)
    if not results.is_dir():
        from outcrop import OutcropError

        raise OutcropError(f"{results}: no such results folder")
    lines = [f"run: {results}"]
    lines += _readable("tiles", results / "tiles", _tiles_section, results)
    lines += _readable("scenes without usable tiles", results / "tiles", _without_tiles_section, results)
    lines += _readable("model", results / "model" / "encoder.pt", _model_section, results)
    lines += _readable("index", results / "index" / "info.json", _index_section, results)
    lines += _readable("clusters", results / "clusters" / "summary.csv", _clusters_section, results)
    lines += _readable("analogues", results / "analogues" / "analogues.csv", _analogues_section, results, top)
    lines += _readable("scores", results / "metrics.json", _scores_section, results)
    outputs = [p for p in ("map.html", "summary.html") if (results / p).exists()]
    if outputs:
        lines.append("open: " + ", ".join(str(results / p) for p in outputs))
    return "\n".join(lines)
