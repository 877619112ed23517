"""Every stage of the workflow, declared once: its function, its files, and the settings it reads.

One declaration per stage is all the three places that run it need:

- the command line (:mod:`outcrop.cli`) makes the stage's subcommand from it: an option per file,
  and an option per setting typed, ranged, defaulted and described by the setting's entry in the
  config schema (``outcrop index --help`` lists them);
- the rules (``workflow/rules/*.smk``) make each job's command from it: :func:`stage_shell` names the
  rule's inputs and outputs, :func:`stage_args` turns the settings the stage reads into its
  arguments, kept in the rule's ``params:`` so that Snakemake reruns a job exactly when a setting it
  reads changes, and never otherwise; :func:`stage_mem_mb` computes a memory request from them;
- ``tests/test_stages.py`` checks the declarations against the schema and the functions' signatures.

A setting is named by its config key: ``"embed.spectral_weight"`` goes to the function's parameter
``spectral_weight``, ``"min_rock=encoder.train_min_rock"`` to ``min_rock``, a whole section
``"index.*"`` to one parameter per key of it (but those a ``param=key`` of the same declaration
names otherwise), and a section without ``.*`` (``"surfaces"``) to one parameter that takes the
mapping. So adding a setting is a schema entry and a function parameter:
a stage that reads a section takes every key of it, and a stage that reads single keys names the
new one here once.

This module imports nothing heavy: the command line builds its parser from it, and Snakemake reads
it when it builds the job graph. Each stage's function is named as ``module:function`` and imported
only when the stage runs.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from outcrop.config import check_setting, schema_entry
from outcrop.errors import OutcropError

PATH: dict[str, Any] = {"type": "string", "format": "path"}
# A file or folder here, or a URL: checked as a path only where it is local.
SOURCE: dict[str, Any] = {"type": "string", "format": "source"}
TEXT: dict[str, Any] = {"type": "string"}


@dataclass(frozen=True)
class Arg:
    """One argument of a stage that is not a setting: a file, or a value of one job.

    ``source`` says where a rule's job finds it: ``input`` and ``output`` (the rule's named input or
    output of the same name), ``params`` (a value the rule computes: the scene list, a kept state
    folder, the files of a folder), ``wildcards``, or ``""`` for an option of the command line that
    rules leave at its default. ``kind`` is a JSON-Schema fragment (``format: path`` makes a
    ``Path``), with a ``default`` for a command-line option.
    """

    name: str
    source: str
    kind: Mapping[str, Any]
    many: bool = False
    optional: bool = False
    to: str = ""
    help: str = ""
    # The settable limit (outcrop.limits) that the option overrides: left out, the job takes the
    # config's limits section from the environment.
    limit: str = ""

    @property
    def param(self) -> str:
        """The function's parameter that takes it."""
        return self.to or self.name

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def is_path(self) -> bool:
        return self.kind.get("format") == "path"

    @property
    def names_files(self) -> bool:
        """Whether its values name files or folders (a source: where they are local), which the
        command line checks against the file system's limits before the stage starts."""
        return self.kind.get("format") in ("path", "source")


def reads(name: str, *, many: bool = False, optional: bool = False, to: str = "", help: str = "") -> Arg:
    """A file (or folder) the stage reads: the rule's input ``name``."""
    return Arg(name, "input", PATH, many, optional, to, help)


def writes(name: str, *, many: bool = False, optional: bool = False, to: str = "", help: str = "") -> Arg:
    """A file (or folder) the stage writes: the rule's output ``name``."""
    return Arg(name, "output", PATH, many, optional, to, help)


def given(
    name: str,
    kind: Mapping[str, Any] = TEXT,
    *,
    many: bool = False,
    optional: bool = False,
    to: str = "",
    help: str = "",
) -> Arg:
    """A value the rule gives in ``params:`` (a row of the scene sheet, the scene list, a path that is
    neither input nor output)."""
    return Arg(name, "params", kind, many, optional, to, help)


def wildcard(name: str, *, to: str = "", help: str = "") -> Arg:
    """The job's wildcard ``name`` (the scene)."""
    return Arg(name, "wildcards", TEXT, to=to, help=help)


def option(name: str, kind: Mapping[str, Any], *, to: str = "", help: str = "") -> Arg:
    """A command-line option that rules leave at its default (``kind`` holds it); not a config key."""
    return Arg(name, "", kind, to=to, help=help)


def limit_option(name: str, limit: str, *, to: str = "", help: str = "") -> Arg:
    """A command-line option that overrides the settable limit ``limit`` for one command. Typed and
    ranged by the limit's schema entry (``limits.<limit>``); left out (rules leave it), the function
    gets None and takes the limit as the run's config sets it (:func:`outcrop.limits.limit`)."""
    entry = schema_entry(f"limits.{limit}")
    kind = {key: value for key, value in entry.items() if key not in ("default", "description")}
    return Arg(name, "", {**kind, "default": None}, to=to, help=help or str(entry.get("description", "")), limit=limit)


@dataclass(frozen=True)
class Stage:
    """A stage: the subcommand ``command`` runs ``function`` (``module:name``) with ``args`` and ``settings``."""

    command: str
    function: str
    summary: str
    example: str
    args: tuple[Arg, ...] = ()
    settings: tuple[str, ...] = ()
    threads: bool = False
    # The job's memory request in MB, from the stage's settings (parameter -> value), where a setting sizes it.
    mem_mb: Callable[[Mapping[str, Any]], int] | None = None
    # Whether the job's process keeps large freed blocks in its heap (outcrop.runtime.allocator): a
    # gain for loops over same-sized batches, a loss measured for prepare and tile (benchmarks/README.md).
    keeps_large_blocks: bool = True

    def setting_keys(self) -> dict[str, str]:
        """Function parameter -> config key, for every setting the stage reads, in declaration order."""
        out: dict[str, str] = {}
        renamed = {key for param, _, key in (spec.rpartition("=") for spec in self.settings) if param}
        for spec in self.settings:
            param, _, key = spec.rpartition("=")
            if key.endswith(".*"):  # every key of the section, but those named under another parameter
                section = key[:-2]
                for name in schema_entry(section).get("properties", {}):
                    if f"{section}.{name}" not in renamed:
                        out[name] = f"{section}.{name}"
            else:
                out[param or key.rsplit(".", 1)[-1]] = key
        return out

    def load(self) -> Callable[..., Any]:
        """The stage's function (importing its module: only when the stage runs)."""
        module, _, name = self.function.partition(":")
        return getattr(importlib.import_module(module), name)

    def call_arguments(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Keyword arguments of the function from parsed command-line values (keyed by parameter).

        Paths become ``Path``s; an optional argument left empty is passed as None (a list, as an empty
        list); a mapping setting (``KEY=VALUE`` pairs) is checked against its schema entry, so that a
        bad value is one error naming the option and the key.
        """
        kwargs: dict[str, Any] = {}
        for arg in self.args:
            value = values.get(arg.param)
            if arg.many:
                value = _flat(value or [], split=not arg.is_path)
                kwargs[arg.param] = [Path(v) for v in value] if arg.is_path else value
            elif value in (None, "") and arg.optional:
                kwargs[arg.param] = None
            else:
                kwargs[arg.param] = Path(value) if arg.is_path and value is not None else value
        for param, key in self.setting_keys().items():
            value = values.get(param)
            entry = schema_entry(key)
            if entry.get("type") == "object":
                value = check_setting(parse_pairs(value, option_name(param)), key, option_name(param))
            elif entry.get("type") == "array" and entry.get("items", {}).get("type") == "string":
                value = _flat(value, split=True)
            kwargs[param] = value
        return kwargs


def option_name(param: str) -> str:
    return "--" + param.replace("_", "-")


def parse_pairs(items: Sequence[str] | None, option: str) -> dict[str, Any]:
    """``KEY=VALUE`` texts as a mapping; values are JSON where they parse (numbers, lists, booleans),
    else text. A text without ``=`` is one error naming the option."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise OutcropError(f"{option} {item!r}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _flat(values: Any, split: bool) -> list[Any]:
    """Items given one by one, or (``split``: names, never paths) comma-separated too
    (``--bands red,nir swir1``), as one list; empty names are dropped."""
    out: list[Any] = []
    for value in values if isinstance(values, (list, tuple)) else [values]:
        if isinstance(value, (list, tuple)):
            out.extend(_flat(value, split))
        elif split and isinstance(value, str):
            out.extend(v.strip() for v in value.split(",") if v.strip())
        else:
            out.append(value)
    return out


# --- the rules' side: arguments and commands ---------------------------------------------------------


def _text(value: Any) -> str:
    """A setting's value as the command line reads it back (booleans as true/false, floats exactly)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _lookup(config: Mapping[str, Any], key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = value[part]
    return value


def stage_settings(command: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """Parameter -> value of every setting ``command`` reads, from a validated config."""
    return {param: _lookup(config, key) for param, key in STAGES[command].setting_keys().items()}


def stage_args(command: str, config: Mapping[str, Any]) -> list[str]:
    """The command-line arguments of every setting ``command`` reads, from a validated config.

    A list, one argument per element, for a rule's ``params:`` (quoted element by element with
    ``{params.settings:q}``): ``--stride=16``, ``--k 4 8 12``, ``--surfaces ndsi_snow=0.4 ...``.
    """
    stage = STAGES[command]
    out: list[str] = []
    for param, value in stage_settings(command, config).items():
        flag = option_name(param)
        kind = schema_entry(stage.setting_keys()[param]).get("type")
        if value is None:
            continue
        if kind == "object":
            for key, item in sorted(value.items()):
                out += [flag, f"{key}={json.dumps(item)}"]
        elif isinstance(value, (list, tuple)):
            out += [flag, *map(_text, value)]
        else:
            out.append(f"{flag}={_text(value)}")
    return out


def stage_shell(command: str) -> str:
    """The shell command of a rule that runs stage ``command``, from the rule's named files.

    Every value goes in quoted (``{input.x:q}``); a single value as ``--option=VALUE``, so that one
    starting with a dash is never read as an option. The rule must name its inputs and outputs as
    the stage's arguments, give ``params: settings=stage_args(...)`` when the stage reads settings,
    and have a ``log:``.
    """
    stage = STAGES[command]
    parts = [f"python -m outcrop {command}"]
    for arg in stage.args:
        if not arg.source:
            continue
        ref = f"{{{arg.source}.{arg.name}:q}}"
        parts.append(f"{arg.option} {ref}" if arg.many else f"{arg.option}={ref}")
    if stage.settings:
        parts.append("{params.settings:q}")
    if stage.threads:
        parts.append("--threads {threads}")
    parts.append("> {log:q} 2>&1")
    return " ".join(parts)


def stage_mem_mb(command: str, config: Mapping[str, Any]) -> int:
    """The job's memory request in MB, computed from the settings that size it (the stage's ``mem_mb``)."""
    stage = STAGES[command]
    if stage.mem_mb is None:
        raise KeyError(f"stage {command!r} declares no memory formula; give the rule's mem_mb as a number")
    return stage.mem_mb(stage_settings(command, config))


# Memory the index job holds besides the index's own budget: the interpreter and its libraries, the
# id table's columns and the held-out queries of the recall check (1.1-2.3 GiB peak RSS at 0.2-10
# million tiles, benchmarks/README.md, coast scale).
INDEX_OVERHEAD_MB = 3072


def index_mem_mb(settings: Mapping[str, Any]) -> int:
    """``index.memory_gb`` (the index's budget: it picks IVF-PQ rather than hold more) plus the overhead."""
    return math.ceil(float(settings["memory_gb"]) * 1024) + INDEX_OVERHEAD_MB


# --- the stages ------------------------------------------------------------------------------------

_PER_SCENE = "one file per scene, in the order of --scenes"
_STATE_KEPT = "where the kept state lives between runs (not a rule's output: rerunning the rule keeps it)"

STAGE_LIST: tuple[Stage, ...] = (
    Stage(
        "demo-scene",
        "outcrop.raster.demo:write_demo_scene",
        "synthesise one scene of the built-in demo coast",
        "outcrop demo-scene --scene demo_1_t2 --out demo/demo_1_t2.tif --truth demo/demo_1_t2_units.tif",
        args=(
            wildcard("scene", help="demo_<place> (the first day) or demo_<place>_t<day>"),
            writes("out"),
            writes("truth"),
        ),
        settings=("demo.size", "demo.seed"),
    ),
    Stage(
        "demo-deposits",
        "outcrop.raster.demo:write_deposits",
        "write the demo's known deposits and hidden truth",
        "outcrop demo-deposits --scenes 3 --out demo/deposits.gpkg --truth demo/hidden.gpkg",
        args=(writes("out", to="out_known"), writes("truth", to="out_truth")),
        # The number of places (each seen on demo.dates days, with the same deposits).
        settings=("scenes=demo.scenes", "demo.size", "demo.seed"),
    ),
    Stage(
        "grid",
        "outcrop.raster.scenes:choose_run_grid",
        "choose the run grid (CRS, resolution, pixel alignment) from the scenes' headers",
        'outcrop grid --scenes-json \'[{"scene": "s1", "source": "LC08_.../", "sensor": "landsat-c2l2"}]\' '
        "--bands blue,green,red --out results/grid.json",
        args=(given("scenes_json", help="JSON list of {scene, source, sensor[, bands]}"), writes("out")),
        settings=("bands", "grid.*"),
    ),
    Stage(
        "prepare",
        "outcrop.raster.scenes:prepare_on_grid",
        "reproject a scene onto the run grid with reflectance and a surface mask",
        "outcrop prepare --source LC08_..._SR/ --sensor landsat-c2l2 --scene s1 "
        "--bands coastal,blue,green,red,nir,swir1,swir2 --out prepared/s1.tif",
        args=(
            given("source", SOURCE, help="file, product folder, URL or STAC item"),
            given("sensor"),
            wildcard("scene"),
            reads(
                "grid",
                optional=True,
                help="the run's grid.json (from `outcrop grid`): CRS, resolution and "
                "pixel alignment; overrides --crs and --resolution",
            ),
            given(
                "declared_bands",
                {"type": "array", "items": {"type": "string"}},
                optional=True,
                many=True,
                help="band names of a generic GeoTIFF, in file order",
            ),
            given("scale", {"type": "number"}, optional=True, help="reflectance = DN * scale + offset"),
            given("offset", {"type": "number"}, optional=True),
            given(
                "collar",
                {"type": "string", "enum": ["auto", "off"]},
                optional=True,
                help="auto (the default): mask a constant border without a nodata tag as nodata; off: keep it",
            ),
            given(
                "date",
                optional=True,
                help="acquisition date (YYYY-MM-DD), overriding the product's own; "
                "written as the prepared scene's ACQUISITION_DATE tag",
            ),
            limit_option(
                "max_pixels", "scene_pixels", help="largest scene on the run grid, in pixels; a larger one is refused"
            ),
            writes("out"),
        ),
        settings=("bands", "grid.*", "surfaces"),
        threads=True,
        keeps_large_blocks=False,
    ),
    Stage(
        "tile",
        "outcrop.raster.aoi:tile_scene_in_aoi",
        "cut a prepared scene into tiles (array + GeoParquet table)",
        "outcrop tile --prepared prepared/s1.tif --scene s1 --out-tiles tiles/s1.npy --out-table tiles/s1.parquet",
        args=(
            reads("prepared"),
            wildcard("scene"),
            reads("aoi", optional=True, help="AOI polygon or coastline file"),
            reads("grid", optional=True, help="the run's grid.json (the AOI is brought into its CRS); overrides --crs"),
            writes("out_tiles"),
            writes("out_table"),
        ),
        settings=("tiles.*", "aoi_buffer_km=aoi.buffer_km", "grid.crs"),
        keeps_large_blocks=False,
    ),
    Stage(
        "quicklook",
        "outcrop.figures.quicklook:quicklook_in_aoi",
        "false-colour quicklook of a prepared scene: a COG and a PNG with the surface mask and AOI",
        "outcrop quicklook --prepared results/prepared/s1.tif --scene s1 --out-png results/quicklooks/s1.png "
        "--out-tif results/quicklooks/s1.tif --aoi coast.gpkg --aoi-buffer-km 10",
        args=(
            reads("prepared"),
            wildcard("scene"),
            reads("aoi", optional=True, help="AOI polygon or coastline file, outlined on the figure"),
            reads("grid", optional=True, help="the run's grid.json (the AOI is brought into its CRS); overrides --crs"),
            option(
                "max_size",
                {"type": "integer", "minimum": 1, "default": 2048},
                help="largest side of the quicklook in pixels",
            ),
            writes("out_png"),
            writes("out_tif"),
        ),
        settings=("aoi_buffer_km=aoi.buffer_km", "grid.crs"),
    ),
    Stage(
        "train",
        "outcrop.learning.encoder:train_byol",
        "train the BYOL encoder on the tiles of the training scenes",
        "outcrop train --tiles tiles/a.npy --tables tiles/a.parquet --bands blue,green,red,nir "
        "--out model/encoder.pt --curve-tsv model/curve.tsv --curve-png model/curve.png "
        "--checkpoint model/checkpoint.pt --settings epochs=20 --threads 2",
        args=(
            reads("tiles", many=True, to="tile_paths"),
            reads("tables", many=True, to="table_paths"),
            given(
                "checkpoint", PATH, to="checkpoint_path", help="kept up to date while training; a rerun resumes from it"
            ),
            writes("out", to="out_path"),
            writes("curve_tsv"),
            writes("curve_png"),
        ),
        settings=("bands", "min_rock=encoder.train_min_rock", "encoder.*"),
        threads=True,
    ),
    Stage(
        "embed",
        "outcrop.learning.embeddings:embed_tiles",
        "embed one scene's tiles with the trained encoder",
        "outcrop embed --tiles tiles/s1.npy --table tiles/s1.parquet --model model/encoder.pt --out embeddings/s1.npy",
        args=(
            reads("tiles", to="tiles_path"),
            reads(
                "table",
                optional=True,
                to="table_path",
                help="the scene's tile table, for the block part (default: the .parquet beside --tiles)",
            ),
            reads("model", to="model_path"),
            writes("out", to="out_path"),
        ),
        settings=("embed.*", "encoder.device", "bands"),
        threads=True,
    ),
    Stage(
        "index",
        "outcrop.search.index:build_index",
        "build the FAISS index over all embeddings",
        "outcrop index --embeddings embeddings/*.npy --tables tiles/*.parquet --out-index index/tiles.faiss "
        "--out-table index/tiles.parquet --out-info index/info.json",
        args=(
            reads("embeddings", many=True, to="embedding_paths"),
            reads("tables", many=True, to="table_paths"),
            reads("grid", optional=True, help="the run's grid.json: info.json then records the grid the tiles lie on"),
            given(
                "state_dir",
                PATH,
                optional=True,
                help="keep the trained index here and add new scenes to it; " + _STATE_KEPT,
            ),
            writes("out_index"),
            writes("out_table"),
            writes("out_info"),
        ),
        settings=("index.*",),
        threads=True,
        mem_mb=index_mem_mb,
    ),
    Stage(
        "cluster",
        "outcrop.figures.cluster_maps:cluster_and_map",
        "k-means at each k plus a Ward hierarchy on the centroids",
        "outcrop cluster --index-table index/tiles.parquet --embeddings embeddings/*.npy --tiles tiles/*.npy "
        "--prepared prepared/*.tif --k 4 8 --cuts 3 --out-gpkg clusters/labels.gpkg --out-parquet "
        "clusters/labels.parquet --out-summary clusters/summary.csv --out-dendrogram clusters/dendrogram.png "
        "--maps-dir clusters/maps --rasters-dir clusters/rasters",
        args=(
            reads("index_table"),
            reads("embeddings", many=True),
            reads("tiles", many=True),
            reads("prepared", many=True),
            given(
                "state_dir",
                PATH,
                optional=True,
                help="keep the centroids here and assign new scenes' tiles to them; " + _STATE_KEPT,
            ),
            writes("out_gpkg"),
            writes("out_parquet"),
            writes("out_summary"),
            writes("out_dendrogram"),
            writes("out_exemplars", optional=True, help="PNG of exemplar tiles per cluster"),
            writes("maps_dir"),
            writes("rasters_dir"),
        ),
        settings=("clusters.*",),
        threads=True,
    ),
    Stage(
        "analogues",
        "outcrop.search.analogues:find_analogues",
        "rank analogues of the known deposits",
        "outcrop analogues --index index/tiles.faiss --index-table index/tiles.parquet --embeddings embeddings/*.npy "
        "--prepared prepared/*.tif --deposits deposits.gpkg --out-gpkg analogues/analogues.gpkg "
        "--out-csv analogues/analogues.csv --similarity-dir analogues/similarity",
        args=(
            reads("index", to="index_path"),
            reads("index_table", to="table_path"),
            reads("embeddings", many=True, to="embedding_paths"),
            reads("prepared", many=True, to="prepared_paths"),
            reads("deposits", to="deposits_path"),
            reads(
                "negatives",
                optional=True,
                to="negatives_path",
                help="places known not to be analogues; the set query is pushed away from them",
            ),
            given(
                "state_dir",
                PATH,
                optional=True,
                help="keep every tile's score here and score only an added scene's tiles while the deposits "
                "stay the same; " + _STATE_KEPT,
            ),
            writes("out_gpkg"),
            writes("out_csv"),
            writes("similarity_dir"),
        ),
        settings=("analogues.*",),
        threads=True,
    ),
    Stage(
        "evaluate",
        "outcrop.search.evaluate:evaluate_run",
        "score a demo run against its planted truth",
        "outcrop evaluate --scenes demo_1 demo_2 --index results/index/tiles.faiss "
        "--index-table results/index/tiles.parquet --embeddings results/embeddings/demo_{1,2}.npy "
        "--tiles results/tiles/demo_{1,2}.npy --truth-units results/demo/truth/demo_{1,2}_units.tif "
        "--model results/model/encoder.pt --labels results/clusters/labels.parquet --truth-deposits "
        "results/demo/hidden_deposits.gpkg --deposits results/demo/deposits.gpkg --out results/demo/scores.json",
        args=(
            given("scenes", many=True),
            reads("index"),
            reads("index_table"),
            reads("embeddings", many=True, help="embeddings, " + _PER_SCENE),
            reads("tiles", many=True, help="tile arrays, " + _PER_SCENE),
            reads("truth_units", many=True, to="truth", help="planted rock units, " + _PER_SCENE),
            reads("model", help="trained encoder whose architecture the random-encoder baseline copies"),
            reads("labels", optional=True, help="the workflow's clusters (clusters/labels.parquet), also scored"),
            reads(
                "tables",
                many=True,
                optional=True,
                help="tile tables, " + _PER_SCENE + " (the block part of random_joined and spectral_parts)",
            ),
            reads("truth_deposits"),
            reads("deposits"),
            writes("out"),
            writes(
                "random_vectors",
                optional=True,
                help="keep the random encoder's vectors of the indexed tiles here, for outcrop quality",
            ),
        ),
        settings=(
            "analogues.buffer_m",
            "analogues.exclusion_km",
            "analogues.site_overlap",
            "evaluate.recall_k",
            "clusters.seed",
            "embed.spectral_weight",
            "embed.context_weight",
        ),
        threads=True,
    ),
    Stage(
        "quality",
        "outcrop.search.quality:quality_run",
        "score any run without labels: leave-one-deposit-out, re-identification across scenes and within one, "
        "agreement with a unit map and what training added, beside the baselines",
        "outcrop quality --scenes s1 s2 --index results/index/tiles.faiss --index-table results/index/tiles.parquet "
        "--embeddings results/embeddings/s{1,2}.npy --tiles results/tiles/s{1,2}.npy --tables "
        "results/tiles/s{1,2}.parquet --prepared results/prepared/s{1,2}.tif --model results/model/encoder.pt "
        "--deposits deposits.gpkg --out results/metrics.json",
        args=(
            given("scenes", many=True),
            reads("index"),
            reads("index_table"),
            reads("embeddings", many=True, help="embeddings, " + _PER_SCENE),
            reads("tiles", many=True, help="tile arrays, " + _PER_SCENE),
            reads(
                "tables", many=True, help="tile tables (their tile size and stride frame the queries), " + _PER_SCENE
            ),
            reads("prepared", many=True, help="prepared scenes, " + _PER_SCENE),
            reads("model", help="trained encoder (embeds the re-identification queries)"),
            reads("deposits", optional=True, help="known deposits (leave-one-out needs three or more)"),
            reads("demo_scores", optional=True, help="the demo's truth-based scores (outcrop evaluate), merged in"),
            reads(
                "units",
                many=True,
                optional=True,
                help="unit maps (polygons with a unit field, or class "
                "rasters) to score every feature set against; the demo's truth rasters, one per scene",
            ),
            reads(
                "labels",
                optional=True,
                help="the workflow's clusters (clusters/labels.parquet), scored against the units",
            ),
            given("units_table", PATH, optional=True, help="write the per-unit table (CSV) here"),
            reads(
                "random_vectors",
                optional=True,
                help="random-encoder vectors of the indexed tiles kept by outcrop evaluate (used when made "
                "from the same model and seed)",
            ),
            writes("out"),
        ),
        settings=(
            "analogues.buffer_m",
            "analogues.exclusion_km",
            "analogues.site_overlap",
            "evaluate.recall_k",
            "evaluate.loo_deposits",
            "clusters.seed",
            "embed.spectral_weight",
            "embed.context_weight",
            "embed.precision",
            "unit_field=units.field",
            "unit_share=units.min_share",
            "ks=clusters.k",
            "clusters.cuts",
        ),
        threads=True,
    ),
    Stage(
        "report",
        "outcrop.figures.report:write_summary",
        "write the HTML summary of a run",
        "outcrop report --scenes demo_1 demo_2 --tile-tables results/tiles/demo_{1,2}.parquet "
        "--prepared results/prepared/demo_{1,2}.tif --cluster-maps results/clusters/maps/demo_{1,2}.png "
        "--training-curve results/model/training_curve.png --dendrogram results/clusters/dendrogram.png "
        "--analogues results/analogues/analogues.csv --grid results/grid.json --index-info "
        "results/index/info.json --metrics results/metrics.json --webmap results/map.html --out results/summary.html",
        args=(
            given("scenes", many=True),
            reads("tile_tables", many=True, help=_PER_SCENE),
            reads("prepared", many=True, help=_PER_SCENE),
            given("cluster_maps", PATH, many=True, help=_PER_SCENE),
            reads("training_curve"),
            reads("dendrogram"),
            reads("index_info"),
            reads("analogues", optional=True, help="the ranked analogues (analogues.csv), when deposits were given"),
            reads(
                "analogues_skipped",
                optional=True,
                to="skipped",
                help="why no analogues were ranked (analogues/skipped.txt)",
            ),
            reads("grid", optional=True, help="the run grid (grid.json)"),
            reads("metrics", optional=True, help="the run's quality scores (metrics.json)"),
            reads("webmap", optional=True, help="the interactive map (map.html), linked from the page"),
            given(
                "snakemake_report", PATH, optional=True, help="where `snakemake --report` writes, linked from the page"
            ),
            reads(
                "cluster_table", optional=True, help="the cluster table (clusters/summary.html), linked from the page"
            ),
            given(
                "analogue_maps",
                PATH,
                many=True,
                optional=True,
                help="the analogue map of each scene, in the order of --scenes, linked from the page",
            ),
            writes("out"),
        ),
    ),
    Stage(
        "projection",
        "outcrop.figures.projection:write_projection",
        "2-D PCA of the clustered tiles' embeddings, coloured by cluster and by surface class",
        "outcrop projection --labels results/clusters/labels.parquet --embeddings results/embeddings/*.npy "
        "--out-clusters results/embeddings/projection_clusters.png "
        "--out-surfaces results/embeddings/projection_surfaces.png",
        args=(
            reads("labels", to="labels_path", help="clusters/labels.parquet"),
            reads("embeddings", many=True, to="embedding_paths"),
            option(
                "max_points", {"type": "integer", "minimum": 1, "default": 20_000}, help="tiles drawn (a seeded sample)"
            ),
            writes("out_clusters"),
            writes("out_surfaces"),
        ),
        settings=("clusters.seed",),
    ),
    Stage(
        "cluster-table",
        "outcrop.figures.cluster_table:write_cluster_table",
        "HTML table of the clusters (size, surfaces, mean spectrum) with thumbnails of their nearest tiles",
        "outcrop cluster-table --labels results/clusters/labels.parquet --summary results/clusters/summary.csv "
        "--embeddings results/embeddings/*.npy --tiles results/tiles/*.npy --out results/clusters/summary.html",
        args=(
            reads("labels", to="labels_path"),
            reads("summary", to="summary_path"),
            reads("embeddings", many=True, to="embedding_paths"),
            reads("tiles", many=True, to="tiles_paths"),
            writes("out"),
        ),
    ),
    Stage(
        "analogue-maps",
        "outcrop.figures.analogue_maps:write_analogue_maps",
        "per-scene maps of similarity with the known deposits and the top analogues marked",
        "outcrop analogue-maps --similarity results/analogues/similarity/*.tif "
        "--analogues results/analogues/analogues.gpkg --deposits deposits.gpkg --out-dir results/analogues/maps",
        args=(
            given("similarity", PATH, many=True, to="similarity_paths"),
            reads("analogues", to="analogues_path"),
            reads("deposits", to="deposits_path"),
            reads(
                "prepared",
                many=True,
                optional=True,
                to="prepared_paths",
                help="prepared scenes, one per similarity raster in the same order: similarity over open "
                "water is left out of the maps",
            ),
            option(
                "label_top", {"type": "integer", "minimum": 0, "default": 10}, help="analogues numbered on the maps"
            ),
            given(
                "state_dir",
                PATH,
                optional=True,
                help="keep the maps here and draw again only those whose content changed; " + _STATE_KEPT,
            ),
            writes("out_dir"),
        ),
    ),
    Stage(
        "webmap",
        "outcrop.figures.webmap:write_webmap",
        "standalone offline interactive map (HTML): quicklooks, clusters, similarity, deposits, analogues",
        "outcrop webmap --quicklooks results/quicklooks/*.tif --clusters results/clusters/rasters/*.tif "
        "--similarity results/analogues/similarity/*.tif --analogues results/analogues/analogues.gpkg "
        "--deposits deposits.gpkg --prepared results/prepared/*.tif --out results/map.html",
        # A run without deposits has no similarity, analogues nor deposits: the map shows the rest.
        args=(
            reads("quicklooks", many=True),
            given("clusters", PATH, many=True, to="cluster_rasters"),
            given("similarity", PATH, many=True, optional=True, to="similarity_rasters"),
            reads("analogues", optional=True, to="analogues_path"),
            reads("deposits", optional=True, to="deposits_path"),
            reads("prepared", many=True, optional=True, help="prepared scenes (their masks give the coastline)"),
            reads("units", many=True, optional=True, help="unit maps shown as a layer (as `outcrop quality --units`)"),
            option("title", {"type": "string", "default": "outcrop run"}, help="the page's title"),
            writes("out"),
        ),
        settings=("unit_field=units.field",),
    ),
)

STAGES: dict[str, Stage] = {stage.command: stage for stage in STAGE_LIST}


# --- the settings table of docs/settings.md ----------------------------------------------------------

# Keys the Snakefile reads itself (which scenes, where results go, which files), not a stage.
# The limits section is read whole: the Snakefile puts it in every job's environment (outcrop.limits).
WORKFLOW_KEYS = (
    "results",
    "scenes",
    "deposits",
    "negatives",
    "aoi.path",
    "units.path",
    "demo.scenes",
    "demo.dates",
    "demo.train_scenes",
    "limits",
)


def read_by_workflow(key: str) -> bool:
    """Whether the Snakefile reads ``key`` itself (:data:`WORKFLOW_KEYS`, or a key of a section named there)."""
    return any(key == k or key.startswith(k + ".") for k in WORKFLOW_KEYS)


def _allowed(entry: Mapping[str, Any]) -> str:
    """What a schema entry admits, in words."""
    if "anyOf" in entry:
        return " or ".join(_allowed(sub) for sub in entry["anyOf"])
    if "const" in entry:
        return f"`{entry['const']}`"
    kind = entry.get("type")
    if isinstance(kind, list):
        return " or ".join(_allowed({**entry, "type": k}) for k in kind)
    if kind in ("integer", "number"):
        bounds = [
            f"{word} {entry[key]}"
            for key, word in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"))
            if key in entry
        ]
        return kind + (f" {' and '.join(bounds)}" if bounds else "")
    if kind == "boolean":
        return "true or false"
    if kind == "null":
        return "null"
    if kind == "array":
        items = entry.get("items", {})
        text = f"list of {_allowed(items) if items else 'values'}"
        if entry.get("minItems") and entry.get("minItems") == entry.get("maxItems"):
            text += f", exactly {entry['minItems']}"
        elif entry.get("minItems"):
            text += f", at least {entry['minItems']}"
        return text + (", each once" if entry.get("uniqueItems") else "")
    if kind == "object":
        return "mapping"
    if "enum" in entry:
        return "one of " + ", ".join(f"`{v}`" if v != "" else '`""`' for v in entry["enum"])
    return "text" + (", not empty" if entry.get("minLength") else "")


def _default_text(value: Any) -> str:
    return (
        "`" + json.dumps(value, ensure_ascii=False) + "`"
        if not isinstance(value, str)
        else (f"`{value}`" if value else '`""`')
    )


def _table_rows(entry: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Mapping[str, Any]]]:
    rows = []
    for name, sub in entry.get("properties", {}).items():
        key = f"{prefix}{name}"
        if sub.get("type") == "object" and "properties" in sub:
            if key in ("surfaces", "encoder.settings"):  # read whole: the mapping has a row too
                rows.append((key, sub))
            rows += _table_rows(sub, f"{key}.")
        else:
            rows.append((key, sub))
    return rows


def settings_table() -> str:
    """docs/settings.md: every key of the config schema, its default, what it admits, the stages that
    read it and what it is; generated (``python -m outcrop.stages > docs/settings.md``) so that it
    cannot drift from the schema or the declarations."""
    from outcrop.config import load_schema

    readers: dict[str, list[str]] = {}
    for stage in STAGE_LIST:
        for key in stage.setting_keys().values():
            readers.setdefault(key, []).append(stage.command)
    lines = [
        "# Settings",
        "",
        "<!-- Generated from workflow/outcrop/schemas/config.schema.yaml and outcrop.stages by",
        "     `python -m outcrop.stages > docs/settings.md`; tests/test_docs.py checks it is current. -->",
        "",
        "Every key of `config.yaml`: its default, what it may be, the stages that read it and what it is.",
        "A stage's job reruns when a key it reads changes (and the jobs after it, which read its outputs),",
        "never for another key; *workflow* marks the keys the Snakefile reads itself (which scenes and",
        "files, where the results go, and the limits, which every job reads from its environment and which",
        "rerun nothing). `outcrop <stage> --help` lists the same settings as options.",
        "",
        "| key | default | may be | read by | what it is |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, entry in _table_rows(load_schema()):
        owners = next(
            (readers[k] for k in (key, *(key.rsplit(".", n)[0] for n in range(1, key.count(".") + 1))) if k in readers),
            [],
        )
        read_by = ", ".join(f"`{c}`" for c in owners) if owners else ("*workflow*" if read_by_workflow(key) else "")
        what = " ".join(str(entry.get("description", "")).split()).replace("|", "\\|")
        default_value = _default_text(entry["default"]) if "default" in entry else ""
        lines.append(f"| `{key}` | {default_value} | {_allowed(entry)} | {read_by} | {what} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover - writes docs/settings.md
    print(settings_table(), end="")
