"""The results layout: where each output of a run lives under its results folder, named once.

The rules build every input and output path from this module, and the commands that users point at
a finished run (``outcrop query``, ``outcrop info``) find their files through it too, so that a path
is never spelled in two places that could disagree. Stage functions themselves take explicit files.

Paths are plain strings joined with ``/``: Snakemake compares paths as text, and a rule's pattern
keeps its wildcards (``Layout(R).prepared("{scene}")`` is ``"{R}/prepared/{scene}.tif"``). Only the
standard library is imported, so the workflow's scheduler can import this without the stage stack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SCENE = "{scene}"  # the wildcard of per-scene rules


@dataclass(frozen=True)
class Layout:
    """Every path of one run, under ``root`` (the results folder, as text or a path)."""

    root: str | Path

    def at(self, *parts: str) -> str:
        """``root/part/...``: a path inside the results folder."""
        return "/".join([str(self.root).rstrip("/") or "/", *parts])

    # --- demo inputs ------------------------------------------------------------------------------
    def demo_scene(self, scene: str = SCENE) -> str:
        return self.at("demo", "scenes", f"{scene}.tif")

    def demo_truth(self, scene: str = SCENE) -> str:
        return self.at("demo", "truth", f"{scene}_units.tif")

    @property
    def demo_deposits(self) -> str:
        return self.at("demo", "deposits.gpkg")

    @property
    def demo_hidden_deposits(self) -> str:
        return self.at("demo", "hidden_deposits.gpkg")

    @property
    def demo_scores(self) -> str:
        """The demo's truth-based scores (``outcrop evaluate``), merged into ``metrics.json``."""
        return self.at("demo", "scores.json")

    # --- the run grid -----------------------------------------------------------------------------
    @property
    def grid(self) -> str:
        """The run grid (CRS, resolution, pixel alignment), chosen once by ``outcrop grid``."""
        return self.at("grid.json")

    # --- per-scene stages -------------------------------------------------------------------------
    def prepared(self, scene: str = SCENE) -> str:
        return self.at("prepared", f"{scene}.tif")

    def prepared_classes(self, scene: str = SCENE) -> str:
        """The mask band's class names (a GDAL ``.aux.xml`` sidecar, where GDAL and QGIS look)."""
        return f"{self.prepared(scene)}.aux.xml"

    def tiles(self, scene: str = SCENE) -> str:
        return self.at("tiles", f"{scene}.npy")

    def tile_table(self, scene: str = SCENE) -> str:
        return self.at("tiles", f"{scene}.parquet")

    @property
    def tiles_folder(self) -> str:
        return self.at("tiles")

    def embeddings(self, scene: str = SCENE) -> str:
        return self.at("embeddings", f"{scene}.npy")

    @property
    def embeddings_folder(self) -> str:
        return self.at("embeddings")

    def quicklook_png(self, scene: str = SCENE) -> str:
        return self.at("quicklooks", f"{scene}.png")

    def quicklook_tif(self, scene: str = SCENE) -> str:
        return self.at("quicklooks", f"{scene}.tif")

    # --- encoder ----------------------------------------------------------------------------------
    @property
    def model(self) -> str:
        return self.at("model", "encoder.pt")

    @property
    def checkpoint(self) -> str:
        return self.at("model", "checkpoint.pt")

    @property
    def training_curve_tsv(self) -> str:
        return self.at("model", "training_curve.tsv")

    @property
    def training_curve_png(self) -> str:
        return self.at("model", "training_curve.png")

    @property
    def projection_clusters(self) -> str:
        return self.at("embeddings", "projection_clusters.png")

    @property
    def projection_surfaces(self) -> str:
        return self.at("embeddings", "projection_surfaces.png")

    # --- index ------------------------------------------------------------------------------------
    @property
    def index(self) -> str:
        return self.at("index", "tiles.faiss")

    @property
    def index_table(self) -> str:
        return self.at("index", "tiles.parquet")

    @property
    def index_info(self) -> str:
        return self.at("index", "info.json")

    @property
    def index_state(self) -> str:
        """Folder of the kept trained index and the scenes in it (no rule's output: kept across reruns)."""
        return self.at("index", "state")

    # --- clusters ---------------------------------------------------------------------------------
    @property
    def cluster_labels_gpkg(self) -> str:
        return self.at("clusters", "labels.gpkg")

    @property
    def cluster_labels(self) -> str:
        return self.at("clusters", "labels.parquet")

    @property
    def cluster_summary_csv(self) -> str:
        return self.at("clusters", "summary.csv")

    @property
    def cluster_summary_html(self) -> str:
        return self.at("clusters", "summary.html")

    @property
    def dendrogram(self) -> str:
        return self.at("clusters", "dendrogram.png")

    @property
    def exemplars(self) -> str:
        return self.at("clusters", "exemplars.png")

    @property
    def cluster_maps(self) -> str:
        """Folder of ``{scene}.png``, one cluster map per scene."""
        return self.at("clusters", "maps")

    def cluster_map(self, scene: str = SCENE) -> str:
        return f"{self.cluster_maps}/{scene}.png"

    def cluster_raster(self, scene: str = SCENE) -> str:
        """The label raster of the largest k (what the web map shows), inside :attr:`cluster_rasters`."""
        return f"{self.cluster_rasters}/{scene}.tif"

    def similarity_raster(self, scene: str = SCENE) -> str:
        """Best cosine to the deposits per tile cell, inside :attr:`similarity`."""
        return f"{self.similarity}/{scene}.tif"

    @property
    def cluster_rasters(self) -> str:
        """Folder of ``{scene}.tif``, one cluster raster per scene (the largest k), and of
        ``{level}/{scene}.tif``, one per level."""
        return self.at("clusters", "rasters")

    def cluster_level_raster(self, level: str, scene: str = SCENE) -> str:
        """The label raster of one level (``k12``, ``h6``) of one scene, inside :attr:`cluster_rasters`."""
        return f"{self.cluster_rasters}/{level}/{scene}.tif"

    @property
    def cluster_state(self) -> str:
        """Folder of the kept centroids (no rule's output: kept across reruns)."""
        return self.at("clusters", "state")

    # --- analogues --------------------------------------------------------------------------------
    @property
    def analogues_gpkg(self) -> str:
        return self.at("analogues", "analogues.gpkg")

    @property
    def analogues_csv(self) -> str:
        return self.at("analogues", "analogues.csv")

    @property
    def analogues_skipped(self) -> str:
        """Why a run without deposits ranked no analogues (written instead of the analogue outputs)."""
        return self.at("analogues", "skipped.txt")

    @property
    def similarity(self) -> str:
        """Folder of ``{scene}.tif``, one similarity raster per scene."""
        return self.at("analogues", "similarity")

    @property
    def analogue_maps(self) -> str:
        """Folder of ``{scene}.png``, one similarity map per scene."""
        return self.at("analogues", "maps")

    # --- pages and scores -------------------------------------------------------------------------
    @property
    def summary(self) -> str:
        return self.at("summary.html")

    @property
    def webmap(self) -> str:
        return self.at("map.html")

    @property
    def snakemake_report(self) -> str:
        """Where ``snakemake --report`` is asked to write (no rule's output; the summary links to it)."""
        return self.at("report.html")

    @property
    def metrics(self) -> str:
        """Every run's label-free quality (``outcrop quality``), with the demo's scores merged in."""
        return self.at("metrics.json")

    @property
    def units_table(self) -> str:
        """Agreement with the unit map, one row per unit (``outcrop quality --units-table``)."""
        return self.at("units.csv")

    # --- logs -------------------------------------------------------------------------------------
    @property
    def logs(self) -> str:
        return self.at("logs")

    def log(self, stage: str, scene: str | None = None) -> str:
        """A job's log: ``logs/{stage}.log``, or ``logs/{stage}/{scene}.log`` for a per-scene job."""
        return self.at("logs", stage, f"{scene}.log") if scene else self.at("logs", f"{stage}.log")

    def benchmark(self, stage: str, scene: str | None = None) -> str:
        """A job's run-time record, beside the logs under ``logs/benchmarks``."""
        if scene:
            return self.at("logs", "benchmarks", stage, f"{scene}.tsv")
        return self.at("logs", "benchmarks", f"{stage}.tsv")


def in_folder(folder: str | Path, scenes: Sequence[str], suffix: str) -> list[str]:
    """The per-scene files a whole-run job wrote into ``folder``, in the given scene order."""
    return [f"{str(folder).rstrip('/')}/{scene}{suffix}" for scene in scenes]
