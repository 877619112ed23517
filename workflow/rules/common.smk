# Shared helpers: validated config, the scene table, and paths. Logic lives in the outcrop package.
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from outcrop import OutcropError
from outcrop.config import canonical_results, validate_config
from outcrop.learning.encoder_settings import EncoderSettings
from outcrop.raster.sheets import demo_sheet, local_input, read_scene_sheet


try:
    validate_config(config, "config")
    # One spelling per folder: Snakemake's lock compares paths as text, so `./results`,
    # `results/` and an absolute path to the same folder must all become the same string.
    R = canonical_results(config["results"], "config: results")
    # Checked before any job runs, without torch (outcrop.learning.encoder_settings imports none).
    EncoderSettings.from_dict(config["encoder"]["settings"], where="config: encoder.settings")
    if config["scenes"]:
        SHEET = read_scene_sheet(config["scenes"])
    else:
        SHEET = demo_sheet(R, config["demo"]["scenes"], config["demo"]["train_scenes"])
except OutcropError as exc:
    raise WorkflowError(str(exc))

DEMO = not config["scenes"]
SCENES = [row["scene"] for row in SHEET]
TRAIN_SCENES = [row["scene"] for row in SHEET if row["role"] == "train"]
SCENE_ROWS = {row["scene"]: row for row in SHEET}
BANDS = ",".join(config["bands"])
# Every job logs and records its run time inside the run's own folder, so that two runs with
# different results folders never write each other's logs.
LOGS = f"{R}/logs"
DEPOSITS = f"{R}/demo/deposits.gpkg" if DEMO and not config["deposits"] else config["deposits"]


wildcard_constraints:
    scene="[A-Za-z0-9][A-Za-z0-9_.-]*",


# Every value in a job's shell command goes in quoted, as `{...:q}`. Snakemake quotes each element
# of a list on its own, so the helpers below return argument lists, never pre-joined text, and a
# value from the config, the sheet or a file name arrives as one argument and runs nothing.


def cli_sets(option, mapping):
    """A mapping as repeated `--option key=value` arguments, in key order."""
    import json

    return [arg for k, v in sorted(mapping.items()) for arg in (option, f"{k}={json.dumps(v)}")]


def optional(option, value):
    """`[option, value]` when the value is set, else no argument at all."""
    return [option, str(value)] if value else []


def scene_source(wildcards):
    """The local input of a scene (a file or product folder); remote sources have none."""
    return local_input(SCENE_ROWS[wildcards.scene]["source"]) or []


def per_scene(pattern, scenes=None):
    return expand(pattern, R=R, scene=scenes if scenes is not None else SCENES)


def in_folder(folder, suffix):
    """The per-scene files a whole-run job wrote into ``folder``, in scene-sheet order."""
    return [os.path.join(folder, f"{scene}{suffix}") for scene in SCENES]


def final_outputs():
    outputs = [
        f"{R}/clusters/labels.gpkg",
        f"{R}/analogues/analogues.gpkg",
        f"{R}/analogues/analogues.csv",
        f"{R}/model/training_curve.png",
        f"{R}/summary.html",
    ]
    outputs.append(f"{R}/clusters/maps")
    outputs += report_outputs()
    outputs += kept_intermediates()
    outputs.append(f"{R}/metrics.json")
    return outputs


def kept_intermediates():
    """Every stage's own outputs, asked for by `all` so that a deleted one is made again (and then
    everything that reads it), instead of being skipped because its readers are still newer."""
    outputs = [f"{R}/model/encoder.pt", f"{R}/index/tiles.faiss", f"{R}/index/tiles.parquet", f"{R}/index/info.json"]
    for pattern in ("{R}/prepared/{scene}.tif", "{R}/tiles/{scene}.npy", "{R}/tiles/{scene}.parquet",
                    "{R}/embeddings/{scene}.npy"):
        outputs += per_scene(pattern)
    return outputs


def report_outputs():
    """What rule all asks of the report rules (the figures of the other stages come with these)."""
    return [
        f"{R}/summary.html",
        f"{R}/map.html",
        f"{R}/embeddings/projection_clusters.png",
        f"{R}/embeddings/projection_surfaces.png",
        f"{R}/clusters/summary.html",
        *per_scene("{R}/quicklooks/{scene}.png"),
        f"{R}/analogues/maps",
    ]
