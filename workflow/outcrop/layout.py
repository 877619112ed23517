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
# What a COG writer appends to its temporary's name while it builds the file (outcrop.io.cog_writer's
# staging copy, and GDAL's own temporaries beside the file it writes: overviews, auxiliary metadata).
STAGING_SUFFIXES = (".stage.tif", ".ovr.tmp", ".aux.xml")


def temporary_stem(name: str) -> str:
    """The stem of the temporaries of a file ``name``: without `;`, which GDAL's vector writers (through
    pyogrio, see :func:`outcrop.io.read_vector`) take for the end of the name."""
    return Path(name).stem.replace(";", "_")


def temporary_name(name: str, token: str) -> str:
    """The hidden temporary that :func:`outcrop.io.atomic_path` writes a file ``name`` to (``token``:
    its random part), keeping the final suffix for format-sniffing writers."""
    return f".{temporary_stem(name)}.{token}.tmp{Path(name).suffix}"


def temporary_names(name: str) -> list[str]:
    """Every name a write of the file ``name`` passes through (with ``0`` * 8 for the random part), so
    that the room a file name needs can be measured (:func:`outcrop.limits.scene_name_overhead`)."""
    tmp = temporary_name(name, "0" * 8)
    return [tmp, *(tmp + suffix for suffix in STAGING_SUFFIXES if name.endswith(".tif"))]


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

    @property
    def demo_random_vectors(self) -> str:
        """The random encoder's vectors of the indexed tiles, made by ``outcrop evaluate`` and taken
        by ``outcrop quality`` (:mod:`outcrop.search.random_vectors`)."""
        return self.at("demo", "random_encoder.npz")

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
    def analogue_state(self) -> str:
        """Folder of the kept scores of every tile (no rule's output: kept across reruns)."""
        return self.at("analogues", "state")

    @property
    def analogue_map_state(self) -> str:
        """Folder of the kept analogue maps and what each shows (no rule's output)."""
        return self.at("analogues", "state", "maps")

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

    # --- every path, for the limits on names and paths ------------------------------------------------
    # Per-scene stages that log per scene (their rules' `log:` and `benchmark:`), and the longest
    # name a cluster level can have (``k`` or ``h`` and a count).
    SCENE_STAGES = ("demo_scene", "prepare", "tiles", "embed", "quicklook")
    LONGEST_LEVEL = "k" + "9" * 6

    def scene_paths(self, scene: str = SCENE, demo: bool = False) -> list[str]:
        """Every path the run writes for ``scene`` (:func:`outcrop.limits.check_run_paths` measures
        them; a test checks that a finished run writes no other per-scene file name); the demo's
        synthesised scenes too with ``demo``."""
        stages = self.SCENE_STAGES if demo else self.SCENE_STAGES[1:]
        return [
            *([self.demo_scene(scene), self.demo_truth(scene)] if demo else []),
            self.prepared(scene),
            self.prepared_classes(scene),
            self.tiles(scene),
            self.tile_table(scene),
            self.embeddings(scene),
            self.quicklook_png(scene),
            self.quicklook_tif(scene),
            self.cluster_map(scene),
            self.cluster_raster(scene),
            f"{self.cluster_raster(scene)}.aux.xml",
            self.cluster_level_raster(self.LONGEST_LEVEL, scene),
            f"{self.cluster_level_raster(self.LONGEST_LEVEL, scene)}.aux.xml",
            self.similarity_raster(scene),
            f"{self.analogue_maps}/{scene}.png",
            f"{self.analogue_map_state}/maps/{scene}.png",  # the kept map, linked into analogue_maps
            f"{self.analogue_map_state}/land/{scene}.npz",  # its land cells (outcrop.figures.analogue_maps)
            *(path for stage in stages for path in (self.log(stage, scene), self.benchmark(stage, scene))),
        ]

    def run_paths(self) -> list[str]:
        """The longest paths the run writes that belong to no scene."""
        return [
            self.at("logs", "benchmarks", "analogues_skipped.tsv"),
            self.cluster_summary_html,
            self.projection_surfaces,
            self.training_curve_png,
        ]


def in_folder(folder: str | Path, scenes: Sequence[str], suffix: str) -> list[str]:
    """The per-scene files a whole-run job wrote into ``folder``, in the given scene order."""
    return [f"{str(folder).rstrip('/')}/{scene}{suffix}" for scene in scenes]
