"""A self-contained HTML summary of a run, and a plain-text overview for ``outcrop info``.

Figures are embedded as data URIs so that the page survives being copied, mailed or opened on a
field laptop without the results folder beside it.
"""

from __future__ import annotations

import base64
import html
import json
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
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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
            f"<p>{metrics['rock_unit_tiles']} tiles dominated by one planted rock unit; "
            f"{metrics['known_deposits']} known deposits, {metrics['hidden_deposits']} hidden.</p>"
            + _table(rows, columns))


def write_summary(results: Path, scenes: Sequence[str], out: Path, log: Callable[[str], None] = print) -> None:
    """Write the run's HTML summary: model, index, clusters, analogues, and demo scores if present."""
    import pandas as pd

    parts = ["<h1>outcrop run summary</h1>", f"<p>{len(scenes)} scenes: {html.escape(', '.join(scenes))}</p>"]
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


def run_info(results: Path) -> str:
    """A plain-text overview of a finished run: scenes, tiles per surface class, model, index, scores."""
    import pandas as pd

    lines = [f"run: {results}"]
    tables = sorted((results / "tiles").glob("*.parquet"))
    if tables:
        frames = [pd.read_parquet(p, columns=["scene", "rock", "snow_ice", "water", "cloud"]) for p in tables]
        tiles = pd.concat(frames)
        lines.append(f"scenes: {len(tables)}; tiles: {len(tiles)}")
        lines.append("mean surface fractions: " + ", ".join(
            f"{c} {tiles[c].mean():.2f}" for c in ("rock", "snow_ice", "water", "cloud")))
    model = results / "model" / "encoder.pt"
    if model.exists():
        lines.append(f"model: {model} ({model.stat().st_size / 1e6:.1f} MB)")
    info = results / "index" / "info.json"
    if info.exists():
        data = json.loads(info.read_text())
        lines.append("index: " + ", ".join(f"{k} {v}" for k, v in data.items() if not isinstance(v, dict)))
    metrics = results / "metrics.json"
    if metrics.exists():
        lines.append("scores: " + json.dumps(json.loads(metrics.read_text()).get("summary", {})))
    csv = results / "analogues" / "analogues.csv"
    if csv.exists():
        top = pd.read_csv(csv).head(5)
        lines.append("top analogues:\n" + top.to_string(index=False))
    return "\n".join(lines)
