"""The per-cluster summary as a page a geologist reads: numbers beside pictures of the ground.

One row per cluster of the finest k-means level: its map colour, size and share, surface fractions,
how many scenes it spans, its mean spectrum (a small line plot) and the tiles nearest its centre as
false-colour thumbnails. Reads the clusters stage's outputs (labels and summary table) and the tile
arrays; the thumbnails share one stretch so that brightness compares across clusters. Images are
inlined as data URIs: the page is one file, readable inside the Snakemake report or on its own.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from outcrop.csvfile import read_csv
from outcrop.errors import OutcropError
from outcrop.figures.projection import finest_level
from outcrop.figures.quicklook import composite_bands
from outcrop.io import atomic_path, read_columns
from outcrop.raster.tile_store import open_tiles

THUMBS_PER_CLUSTER = 6
# Past this many labelled tiles the cluster centres and the tiles nearest them come from a seeded
# sample of this many: every tile's vector is 7.9 GB at ten million, for 6 thumbnails a cluster.
MAX_ROWS = 200_000


def _png_uri(rgb: np.ndarray) -> str:
    """(H, W, 3|4) uint8 image to a PNG data URI."""
    import matplotlib.image

    buf = io.BytesIO()
    matplotlib.image.imsave(buf, rgb, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _spectrum_uri(values: np.ndarray, lo: float, hi: float) -> str:
    """A small line plot of a mean spectrum on a shared y range, as a PNG data URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6, 0.7), dpi=80)
    ax.plot(np.arange(len(values)), values, color="0.2", lw=1.2, marker="o", ms=2)
    ax.set_ylim(lo, hi)
    ax.axis("off")
    fig.subplots_adjust(0.02, 0.05, 0.98, 0.95)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", transparent=True)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _thumbnails(table: Any, picks: list[np.ndarray], tiles_paths: Sequence[Path], bands: list[str]) -> dict[int, str]:
    """False-colour thumbnail data URI of every picked row, one stretch for all."""
    from outcrop.search.index import scene_of

    channels = composite_bands(bands)
    by_scene = {scene_of(p): p for p in tiles_paths}
    scenes, tile_ids = table["scene"].to_numpy(), table["tile_id"].to_numpy()
    images: dict[int, np.ndarray] = {}
    opened: dict[str, np.ndarray] = {}
    for row in (int(r) for r in np.concatenate(picks)) if picks else ():
        scene = scenes[row]
        if scene not in by_scene:
            raise OutcropError(f"cluster table: no tiles/{scene}.npy given for scene {scene!r}")
        if scene not in opened:
            opened[scene] = open_tiles(by_scene[scene])
        images[row] = np.asarray(opened[scene][tile_ids[row]], dtype=np.float64)[channels]
    if not images:
        return {}
    stack = np.stack(list(images.values()))
    lo = np.percentile(stack, 2, axis=(0, 2, 3))[:, None, None]
    hi = np.percentile(stack, 98, axis=(0, 2, 3))[:, None, None]
    out = {}
    for row, img in images.items():
        rgb = (np.clip((img - lo) / np.maximum(hi - lo, 1e-6), 0, 1) * 255).round().astype(np.uint8)
        out[row] = _png_uri(np.moveaxis(rgb, 0, -1))
    return out


TABLE_STYLE = (
    "body{font-family:sans-serif;color:#222;margin:1em}table{border-collapse:collapse;font-size:13px}"
    "td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:middle}"
    ".swatch{display:inline-block;width:12px;height:12px;margin-right:5px;border:1px solid #555}"
    ".thumb{width:64px;height:64px;image-rendering:pixelated;margin-right:3px}"
)


def _read_summary(summary_path: Path, level: str) -> Any:
    """The cluster summary's rows at ``level``, indexed by cluster; refused in one line when unreadable."""
    try:
        summary = read_csv(summary_path)
    except (OSError, ValueError) as exc:
        raise OutcropError(f"{summary_path}: not a readable cluster summary ({exc})") from None
    return summary[summary["level"] == level].set_index("cluster").sort_index()


def _exemplar_picks(table: Any, labels: np.ndarray, k: int, embedding_paths: Sequence[Path]) -> list[np.ndarray]:
    """Per cluster, the rows of the tiles nearest its centre (mean of its unit vectors), for thumbnails.

    Two passes over the sampled rows' vectors a chunk at a time (sums, then similarities), so that
    neither they nor a float64 copy of them is held whole."""
    from scipy.sparse import csr_matrix

    from outcrop.search.cluster_outputs import exemplars_by_similarity
    from outcrop.search.index import normalise_rows, table_vector_source

    source = table_vector_source(table, embedding_paths)
    labels = np.asarray(labels, dtype=np.int64)
    sums = np.zeros((k, source.dim), dtype=np.float64)
    for start, block in source.chunks():
        part = labels[start : start + len(block)]
        ones = csr_matrix((np.ones(len(part)), (part, np.arange(len(part)))), shape=(k, len(part)))
        sums += ones @ block.astype(np.float64)
    centroids = normalise_rows(sums)  # an empty cluster's row stays zero
    similarity = np.empty(source.count, dtype=np.float32)
    for start, block in source.chunks():
        part = labels[start : start + len(block)]
        similarity[start : start + len(block)] = np.einsum("ij,ij->i", block, centroids[part])
    return exemplars_by_similarity(similarity, labels, k, THUMBS_PER_CLUSTER)


def _thumb_cell(table: Any, picks: np.ndarray, thumbs: dict[int, str]) -> str:
    """A cluster's exemplar thumbnails as <img> tags; scene names come from a file, so are escaped."""
    return "".join(
        f'<img class="thumb" alt="{html.escape(str(table["scene"].iat[r]))} tile {int(table["tile_id"].iat[r])}" '
        f'title="{html.escape(str(table["scene"].iat[r]))}:{int(table["tile_id"].iat[r])}" src="{thumbs[int(r)]}">'
        for r in picks
    )


def _cluster_row(
    c: int, colour: np.ndarray, s: Any, spectrum_cols: list[str], span: tuple[float, float], imgs: str
) -> str:
    """One table row: swatch and number, the summary's figures and mean spectrum (when it has the cluster), thumbs.

    The spectrum is the summary row's own ``spectrum_cols``: the summary may lack a cluster, so a
    position in it is not a cluster number.
    """
    swatch = "#{:02x}{:02x}{:02x}".format(*(int(v) for v in colour[:3]))
    cells = [f'<td><span class="swatch" style="background:{swatch}"></span>{c}</td>']
    if s is not None:
        cells += [f"<td>{int(s['size'])}</td>", f"<td>{s['share']:.1%}</td>"]
        # summaries written before the vegetation class lack its column: none of the cluster
        cells += [f"<td>{s.get(f, 0.0):.2f}</td>" for f in ("rock", "vegetation", "snow_ice", "water", "cloud")]
        spectrum = _spectrum_uri(s[spectrum_cols].to_numpy(dtype=np.float64), span[0], span[1])
        cells += [f"<td>{int(s['scenes'])}</td>", f'<td><img alt="mean spectrum" src="{spectrum}"></td>']
    else:
        cells += ["<td colspan='9'>not in the summary</td>"]
    cells.append(f"<td>{imgs}</td>")
    return "<tr>" + "".join(cells) + "</tr>"


def _table_head(bands: list[str]) -> str:
    """The header cells. Band names come from the summary's column names (a file): escaped like every other text."""
    return "".join(
        f"<th>{html.escape(h)}</th>"
        for h in (
            "cluster",
            "tiles",
            "share",
            "rock",
            "vegetation",
            "snow/ice",
            "water",
            "cloud",
            "scenes",
            f"mean spectrum ({', '.join(bands)})",
            "tiles nearest the centre",
        )
    )


def _page(level: str, bands: list[str], n_tiles: int, head: str, rows: list[str]) -> str:
    """The whole HTML page around the table: one self-contained file, every text from a file escaped."""
    level_text = html.escape(level)
    composite = html.escape("/".join(bands[i] for i in composite_bands(bands)))
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>clusters at {level_text}</title>"
        f"<style>{TABLE_STYLE}</style></head><body><h2>Clusters at {level_text}</h2>"
        f"<p>{n_tiles} tiles. Thumbnails: composite {composite}, "
        f"one stretch for all.</p><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f"</body></html>\n"
    )


def write_cluster_table(
    labels_path: Path,
    summary_path: Path,
    embedding_paths: Sequence[Path],
    tiles_paths: Sequence[Path],
    out: Path,
    *,
    log: Callable[[str], Any] = print,
) -> None:
    """Write the HTML table of the finest level's clusters with exemplar thumbnails."""
    from outcrop.search.clusters import palette

    table = read_columns(labels_path)
    level = finest_level(table.columns)
    summary = _read_summary(summary_path, level)
    bands = [c[len("mean_") :] for c in summary.columns if c.startswith("mean_")]
    k = int(table[level].max()) + 1
    tiles_total = len(table)
    if len(table) > MAX_ROWS:  # centres and exemplars from a seeded sample: a coast's vectors do not fit
        table = table.iloc[np.sort(np.random.default_rng(0).choice(len(table), MAX_ROWS, replace=False))]
        table = table.reset_index(drop=True)
    labels = table[level].to_numpy(dtype=np.int64)
    picks = _exemplar_picks(table, labels, k, embedding_paths)
    thumbs = _thumbnails(table, picks, tiles_paths, bands)
    colours = palette(k)
    spectrum_cols = [f"mean_{b}" for b in bands]
    spectra = summary[spectrum_cols].to_numpy(dtype=np.float64)
    lo, hi = float(np.nanmin(spectra)), float(np.nanmax(spectra))
    pad = 0.05 * max(hi - lo, 1e-6)
    rows = [
        _cluster_row(
            c,
            colours[c],
            summary.loc[c] if c in summary.index else None,
            spectrum_cols,
            (lo - pad, hi + pad),
            _thumb_cell(table, picks[c], thumbs),
        )
        for c in range(k)
    ]
    page = _page(level, bands, tiles_total, _table_head(bands), rows)
    with atomic_path(out) as tmp:
        tmp.write_text(page)
    log(f"cluster table: {k} clusters at {level}, wrote {out}")
