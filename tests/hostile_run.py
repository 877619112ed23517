"""A small finished run whose names are hostile markup: the deposits are called like script.

Built by the real stages on the synthetic run of ``synthetic_run.py`` (index, clusters, analogues,
quicklooks), so every hostile string reaches the pages by the paths a user's file would take: the
deposit names come from a deposits CSV and the analogues' ``nearest_positive`` from the analogue
search itself. Takes a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from outcrop.figures.cluster_maps import write_cluster_figures
from outcrop.figures.quicklook import write_quicklook
from outcrop.search.analogues import find_analogues
from outcrop.search.clusters import cluster_tiles
from outcrop.search.index import build_index
from synthetic_run import make_run

# Runs its handler if placed as markup: sets the page title.
IMG = "<img src=x onerror=\"document.title='X'\">"
# Ends a <script> element early, then opens the parser's escaped script states with <!-- <script>.
SCRIPT = "</script><script>document.title='Y'</script><!--<script>"
HOSTILE = (IMG, SCRIPT)


@dataclass
class HostileRun:
    results: Path
    deposits: Path
    quicklooks: list[Path]
    cluster_rasters: list[Path]
    similarity: list[Path]
    analogues: Path
    labels: Path
    summary: Path
    embeddings: list[Path]
    tiles: list[Path]
    scenes: list[str]
    prepared: list[Path]


def make_hostile_run(root: Path) -> HostileRun:
    """Run index, clusters, analogues and quicklooks on the synthetic run, deposits named ``HOSTILE``."""
    quiet = lambda *_: None  # noqa: E731
    res = root / "results"
    run = make_run(res)
    deposits = pd.read_csv(run.deposits_csv)
    deposits["name"] = list(HOSTILE)
    deposits.to_csv(run.deposits_csv, index=False)
    idx = res / "index"
    build_index(run.embeddings, run.tables, idx / "tiles.faiss", idx / "tiles.parquet", idx / "info.json", log=quiet)
    clusters = res / "clusters"
    clustering = cluster_tiles(
        idx / "tiles.parquet",
        run.embeddings,
        run.tiles,
        run.prepared,
        clusters / "tiles.gpkg",
        clusters / "tiles.parquet",
        clusters / "summary.csv",
        clusters / "rasters",
        ks=(3,),
        seed=0,
        log=quiet,
    )
    write_cluster_figures(clustering, run.prepared, run.tiles, clusters / "dendrogram.png", clusters / "maps")
    ana = res / "analogues"
    find_analogues(
        idx / "tiles.faiss",
        idx / "tiles.parquet",
        run.embeddings,
        run.deposits_csv,
        run.prepared,
        ana / "analogues.gpkg",
        ana / "analogues.csv",
        ana / "similarity",
        buffer_m=10.0,
        exclusion_km=0.5,
        top=8,
        log=quiet,
    )
    scenes = [p.stem for p in run.prepared]
    quicklooks = []
    for scene, prepared in zip(scenes, run.prepared):
        quicklooks.append(res / "quicklooks" / f"{scene}.tif")
        write_quicklook(prepared, res / "quicklooks" / f"{scene}.png", quicklooks[-1], scene=scene, log=quiet)
    return HostileRun(
        results=res,
        deposits=run.deposits_csv,
        quicklooks=quicklooks,
        cluster_rasters=[clusters / "rasters" / f"{s}.tif" for s in scenes],
        similarity=[ana / "similarity" / f"{s}.tif" for s in scenes],
        analogues=ana / "analogues.gpkg",
        labels=clusters / "tiles.parquet",
        summary=clusters / "summary.csv",
        embeddings=run.embeddings,
        tiles=run.tiles,
        scenes=scenes,
        prepared=list(run.prepared),
    )
