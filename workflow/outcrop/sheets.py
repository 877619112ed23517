"""The scene sheet: which scenes a run uses, where they come from, and which train the encoder.

The sheet is read when Snakemake builds the job graph, so it must be fast for thousands of rows
(one pass with the csv module, no per-row file-system checks) and fail with the row and column.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import yaml

from outcrop import OutcropError
from outcrop.sensors import SENSORS

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "scenes.schema.yaml"


def read_scene_sheet(path: str | Path) -> list[dict[str, str]]:
    """Rows of a scene sheet (TSV), validated. Relative sources are relative to the working directory."""
    from jsonschema import Draft7Validator

    path = Path(path)
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader((line for line in fh if not line.startswith("#")), delimiter="\t"))
    except FileNotFoundError:
        raise OutcropError(f"{path}: scene sheet not found") from None
    if not rows:
        raise OutcropError(f"{path}: scene sheet has no scenes")
    schema = yaml.safe_load(SCHEMA.read_text())
    validator = Draft7Validator(schema)
    seen: dict[str, int] = {}
    out = []
    for n, row in enumerate(rows, start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        err = next(iter(sorted(validator.iter_errors(row), key=lambda e: list(e.path))), None)
        if err is not None:
            where = ".".join(str(p) for p in err.path) or "row"
            raise OutcropError(f"{path}: line {n}: {where}: {err.message}")
        if row["sensor"] not in SENSORS:
            raise OutcropError(f"{path}: line {n}: sensor: unknown sensor {row['sensor']!r} "
                               f"(known: {', '.join(sorted(SENSORS))})")
        if row["scene"] in seen:
            raise OutcropError(f"{path}: line {n}: duplicate scene id {row['scene']!r} (first on line {seen[row['scene']]})")
        seen[row["scene"]] = n
        row.setdefault("bands", "")
        row.setdefault("scale", "")
        row.setdefault("offset", "")
        out.append(row)
    if not any(r["role"] == "train" for r in out):
        raise OutcropError(f"{path}: no scene has role 'train'; the encoder needs at least one")
    return out


# Sources read over the network (GDAL reads URLs through /vsicurl/); the one list both the job graph
# and the readers (``outcrop.scenes.is_remote``) go by.
REMOTE_PREFIXES = ("http://", "https://", "/vsicurl/", "s3://", "gs://")


def local_input(source: str) -> str | None:
    """The file or folder Snakemake should track for a scene source; None for a remote one or a
    ``stac:`` item, whose band assets may lie anywhere."""
    return None if source.startswith((*REMOTE_PREFIXES, "stac:")) else source


def demo_sheet(results: str, scenes: int, train_scenes: int) -> list[dict[str, Any]]:
    """The scene sheet of the built-in demo: scenes synthesised under ``results/demo``."""
    from outcrop.demo import scene_name

    return [
        {"scene": scene_name(i), "source": f"{results}/demo/scenes/{scene_name(i)}.tif",
         "sensor": "landsat-c2l2", "role": "train" if i < train_scenes else "index",
         "bands": "", "scale": "", "offset": ""}
        for i in range(scenes)
    ]
