# Shared helpers: validated config, the scene table, and paths. Logic lives in the outcrop package.
import os
import sys
from pathlib import Path

# The workflow runs its own copy of the package, in the scheduler and in every job: jobs inherit
# this PYTHONPATH (local shell jobs, SLURM jobs and conda environments alike) and start the stages
# as `python -m outcrop <stage>`, so the environment files name no local path that Snakemake would
# have to resolve from the copy it deploys under .snakemake/conda/.
PACKAGE_ROOT = str(Path(workflow.basedir).resolve() / "workflow")
sys.path.insert(0, PACKAGE_ROOT)
# Set, not required: a user's own PYTHONPATH is kept behind it (so no `envvars:` assertion).
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        [PACKAGE_ROOT, *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != PACKAGE_ROOT)]
    )
)

from outcrop.errors import OutcropError
from outcrop.config import canonical_results, check_thread_overrides, validate_config
import outcrop.layout
import outcrop.stages
from outcrop.layout import Layout
from outcrop.learning.encoder_settings import EncoderSettings
from outcrop.limits import check_run_paths, export_limits
from outcrop.raster.sheets import demo_sheet, local_input, read_scene_sheet

try:
    validate_config(config, "config")
    # Every job started from here reads the size limits from the environment (outcrop.limits).
    export_limits(config["limits"])
    # --set-threads RULE=N (or a profile's set-threads), as Snakemake holds it: a count below 1
    # would fail each job of the rule when it starts, after the jobs before it have run.
    check_thread_overrides(
        {rule: getattr(n, "raw", n) for rule, n in getattr(workflow.resource_settings, "overwrite_threads", {}).items()}
    )
    # One spelling per folder: Snakemake's lock compares paths as text, so `./results`,
    # `results/`, an absolute path to the same folder and a symbolic link to it (or to a parent)
    # must all become the same string.
    R = canonical_results(config["results"], "config: results")
    # Checked before any job runs, without torch (outcrop.learning.encoder_settings imports none).
    EncoderSettings.from_dict(config["encoder"]["settings"], where="config: encoder.settings")
    if config["scenes"]:
        SHEET = read_scene_sheet(config["scenes"])
    else:
        SHEET = demo_sheet(R, config["demo"]["scenes"], config["demo"]["train_scenes"], config["demo"]["dates"])
    check_run_paths(R, [row["scene"] for row in SHEET], "config: results", demo=not config["scenes"])
except OutcropError as exc:
    raise WorkflowError(str(exc))

# Every path under the results folder comes from outcrop.layout, which commands run on a finished
# run (`outcrop query`, `outcrop info`) read too.
L = Layout(R)
DEMO = not config["scenes"]
SCENES = [row["scene"] for row in SHEET]
TRAIN_SCENES = [row["scene"] for row in SHEET if row["role"] == "train"]
SCENE_ROWS = {row["scene"]: row for row in SHEET}
BANDS = ",".join(config["bands"])
# Every job logs and records its run time inside the run's own folder, so that two runs with
# different results folders never write each other's logs.
LOGS = L.logs
# The run grid (CRS, resolution, pixel alignment), chosen once from the training scenes' headers.
GRID = L.grid
DEPOSITS = L.demo_deposits if DEMO and not config["deposits"] else config["deposits"]
# Mapping similar ground needs no deposits: without them the run makes everything but the analogue
# outputs, and analogues/skipped.txt says why (the summary and `outcrop info` repeat it).
ANALOGUES = bool(DEPOSITS)
ANALOGUE_OUTPUTS = [L.analogues_gpkg, L.analogues_csv] if ANALOGUES else []
ANALOGUES_SKIPPED = [] if ANALOGUES else [L.analogues_skipped]
# The unit map the quality stage scores every feature set against: the configured one, else the
# demo's planted units (its truth rasters, one per scene), through the same code.
UNIT_MAPS = (
    [config["units"]["path"]] if config["units"]["path"] else ([L.demo_truth(s) for s in SCENES] if DEMO else [])
)
UNITS_TABLE = [L.units_table] if UNIT_MAPS else []


wildcard_constraints:
    scene="[A-Za-z0-9][A-Za-z0-9_.-]*",


# Each rule runs one stage, declared once in outcrop.stages with its files and the settings it reads.
# Its command is made from that declaration; every value in it goes in quoted, as `{...:q}` (a list
# quoted element by element), so a value from the config, the sheet or a file name arrives as one
# argument and runs nothing.


def stage_shell(command):
    """The shell command of stage `command` from the rule's named inputs, outputs and params."""
    return outcrop.stages.stage_shell(command)


def stage_args(command):
    """The settings stage `command` reads, as its arguments: the rule's `params: settings=`, so that
    Snakemake reruns the job exactly when one of them changes."""
    return outcrop.stages.stage_args(command, config)


def stage_mem_mb(command):
    """The job's memory request in MB, computed from the settings that size it."""
    return outcrop.stages.stage_mem_mb(command, config)


def on_gpus(command):
    """`command` started once per GPU of the job under torchrun when its `resources.gpu` is above 1
    (data-parallel training), as it is otherwise; a `gpu` that is no whole number is refused.
    `exec`: the command (or torchrun) replaces the shell, so a signal meant for the job reaches it
    (a shell killed by SIGTERM would leave its child running)."""
    return (
        'gpus={resources.gpu:q}; [ "$gpus" -eq "$gpus" ] 2>/dev/null'
        " || {{ echo \"resources.gpu '$gpus' is not a whole number\" >&2; exit 2; }};"
        ' if [ "$gpus" -gt 1 ]; then'
        ' launch="python -m torch.distributed.run --standalone --nproc_per_node=$gpus --no-python";'
        f" else launch=''; fi; exec $launch {command}"
    )


def sheet_value(column):
    """A column of the job's scene-sheet row (empty when the sheet leaves it empty), for `params:`."""
    return lambda wildcards: SCENE_ROWS[wildcards.scene][column]


def scene_source(wildcards):
    """The local input of a scene (a file or product folder); remote sources have none."""
    return local_input(SCENE_ROWS[wildcards.scene]["source"]) or []


def per_scene(path_of, scenes=None):
    """One path per scene (all scenes, or ``scenes``), from a per-scene path of the layout."""
    return [path_of(scene) for scene in (scenes if scenes is not None else SCENES)]


def in_folder(folder, suffix):
    """The per-scene files a whole-run job wrote into ``folder``, in scene-sheet order."""
    return outcrop.layout.in_folder(folder, SCENES, suffix)


def final_outputs():
    outputs = [
        L.cluster_labels_gpkg,
        *ANALOGUE_OUTPUTS,
        *ANALOGUES_SKIPPED,
        L.training_curve_png,
        L.summary,
    ]
    outputs.append(L.cluster_maps)
    outputs += report_outputs()
    outputs += kept_intermediates()
    outputs.append(L.metrics)
    outputs += UNITS_TABLE
    return outputs


def kept_intermediates():
    """Every stage's own outputs, asked for by `all` so that a deleted one is made again (and then
    everything that reads it), instead of being skipped because its readers are still newer."""
    outputs = [L.model, L.index, L.index_table, L.index_info]
    for path_of in (L.prepared, L.tiles, L.tile_table, L.embeddings):
        outputs += per_scene(path_of)
    return outputs


def report_outputs():
    """What rule all asks of the report rules (the figures of the other stages come with these)."""
    return [
        L.summary,
        L.webmap,
        L.projection_clusters,
        L.projection_surfaces,
        L.cluster_summary_html,
        *per_scene(L.quicklook_png),
        *([L.analogue_maps] if ANALOGUES else []),
    ]


def grid_scenes():
    """The scenes the run grid is chosen from, as `outcrop grid --scenes-json` takes them: the
    training scenes, so that a scene added later for the index is prepared onto the grid the run
    has and never re-prepares the others."""
    import json

    rows = [SCENE_ROWS[s] for s in (TRAIN_SCENES or SCENES)]
    return json.dumps(
        [{"scene": r["scene"], "source": r["source"], "sensor": r["sensor"], "bands": r["bands"] or ""} for r in rows]
    )
