"""The scene sheet: which scenes a run uses, where they come from, and which train the encoder.

The sheet is read when Snakemake builds the job graph, so it must be fast for thousands of rows
(one pass with the csv module, no per-row file-system checks) and fail with the row and column.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from outcrop.config import refuse_markup
from outcrop.errors import OutcropError
from outcrop.layout import Layout
from outcrop.limits import limit, refuse_above, scene_id_problem
from outcrop.raster.sensors import CANONICAL_BANDS, SENSORS, canonical_name

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "scenes.schema.yaml"  # package data


def _read_text(path: Path, what: str) -> str:
    """A text file as UTF-8, without the byte-order mark that spreadsheets put at its start."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise OutcropError(f"{path}: {what} not found") from None
    except UnicodeDecodeError as exc:
        raise OutcropError(
            f"{path}: {what} is not UTF-8 text (byte {exc.object[exc.start : exc.start + 1]!r} at "
            f"offset {exc.start}); save it as UTF-8"
        ) from None
    except OSError as exc:
        raise OutcropError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None


class _Lines:
    """The sheet's lines without ``#`` comments, remembering the file line number of the last one read.

    The csv reader pulls lines one at a time, so after each row ``number`` is the row's (last) line
    in the file, which is the line a user finds in an editor, comments included.
    """

    def __init__(self, text: str) -> None:
        # Split at line ends only (\n, \r\n, \r): str.splitlines also splits at U+2028, U+2029 and
        # other separators, which a file name may hold.
        self._lines = io.StringIO(text, newline="").readlines()
        self.number = 0

    def __iter__(self) -> Iterator[str]:
        for number, line in enumerate(self._lines, start=1):
            if line.startswith("#"):
                continue
            self.number = number
            yield line


def _check_number(value: str, column: str, where: str, nonzero: bool = False) -> None:
    """A scale or offset must be a finite number (a scale also non-zero), or empty for the sensor's own."""
    if value == "":
        return
    try:
        number = float(value)
    except ValueError:
        raise OutcropError(f"{where}: {column}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise OutcropError(f"{where}: {column}: {value!r} is not a finite number")
    if nonzero and number == 0:
        raise OutcropError(f"{where}: {column}: 0 would turn every pixel into the same value")


def _check_bands(row: dict[str, str], where: str) -> None:
    """Declared band labels: canonical names or the sensor's own band tokens, each once."""
    labels = [b.strip() for b in row["bands"].split(",") if b.strip()]
    sensor = SENSORS[row["sensor"]]
    names = []
    for label in labels:
        name = canonical_name(sensor, label)
        if name is None:
            raise OutcropError(
                f"{where}: bands: unknown band name {label!r} for sensor {sensor.name} "
                f"(canonical names: {', '.join(CANONICAL_BANDS)})"
            )
        names.append(name)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise OutcropError(f"{where}: bands: {row['bands']!r} names {twice[0]!r} twice")


def read_scene_sheet(path: str | Path) -> list[dict[str, str]]:
    """Rows of a scene sheet (TSV), validated. Relative sources are relative to the working directory.

    Errors name the file line (comment lines counted) and the column. A byte-order mark, as
    spreadsheets write it, is ignored; a file in another encoding than UTF-8 is refused in one line.
    A scene id must fit the file names the run gives it and be one Snakemake accepts as a wildcard
    (:func:`outcrop.limits.scene_id_problem`); a source listed twice is refused, naming both lines
    (one product as two scenes is a copy-and-paste slip, and every copy would be prepared, tiled
    and indexed again); more rows than ``limits.sheet_rows`` are refused.
    """
    from jsonschema import Draft7Validator

    path = Path(path)
    lines = _Lines(_read_text(path, "scene sheet"))
    reader = csv.DictReader(lines, delimiter="\t")
    schema = yaml.safe_load(SCHEMA.read_text())
    validator = Draft7Validator(schema)
    seen: dict[str, int] = {}
    sources: dict[str, tuple[int, str]] = {}
    most_rows = limit("sheet_rows")
    out: list[dict[str, str]] = []
    for row in reader:
        n = lines.number
        where = f"{path}: line {n}"
        if len(out) == most_rows:
            refuse_above("sheet_rows", most_rows + 1, where, "scenes", at_least=True)
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        err = next(iter(sorted(validator.iter_errors(row), key=lambda e: list(e.path))), None)
        if err is not None:
            column = ".".join(str(p) for p in err.path) or "row"
            raise OutcropError(f"{where}: {column}: {err.message}")
        if row["sensor"] not in SENSORS:
            raise OutcropError(
                f"{where}: sensor: unknown sensor {row['sensor']!r} (known: {', '.join(sorted(SENSORS))})"
            )
        problem = scene_id_problem(row["scene"])
        if problem is not None:
            raise OutcropError(f"{where}: scene: {problem}")
        if row["scene"] in seen:
            raise OutcropError(f"{where}: duplicate scene id {row['scene']!r} (first on line {seen[row['scene']]})")
        seen[row["scene"]] = n
        same = _source_key(row["source"])
        if same in sources:
            first, scene = sources[same]
            raise OutcropError(
                f"{where}: source: {row['source']!r} is already the source of scene {scene!r} on "
                f"line {first}; list each scene once"
            )
        sources[same] = (n, row["scene"])
        row.setdefault("bands", "")
        row.setdefault("scale", "")
        row.setdefault("offset", "")
        row.setdefault("collar", "")
        row.setdefault("date", "")
        if row["date"]:
            from outcrop.raster.dates import parse_date

            row["date"] = parse_date(row["date"], f"{where}: date")
        _check_number(row["scale"], "scale", where, nonzero=True)
        _check_number(row["offset"], "offset", where)
        _check_bands(row, where)
        if local_input(row["source"]) and ("{" in row["source"] or "}" in row["source"]):
            # A local source is an input of the job graph, where Snakemake reads `{...}` as a wildcard.
            raise OutcropError(
                f"{where}: source: {row['source']!r}: a path may not contain '{{' or '}}' "
                "(Snakemake would read them as wildcards); rename the file or folder"
            )
        for column, value in row.items():  # every cell reaches a job's input or params
            refuse_markup(
                value, f"{where}: {column}", "rename the file or folder" if column == "source" else "change the value"
            )
        out.append(row)
    if not out:
        raise OutcropError(f"{path}: scene sheet has no scenes")
    if not any(r["role"] == "train" for r in out):
        raise OutcropError(f"{path}: no scene has role 'train'; the encoder needs at least one")
    return out


def _source_key(source: str) -> str:
    """A source as compared for repeats: a local path normalised as text (``./a.tif`` is ``a.tif``),
    without touching the file system, which a sheet of thousands of rows cannot afford."""
    return os.path.normpath(source) if local_input(source) else source


# Sources read over the network (GDAL reads URLs through /vsicurl/); the one list both the job graph
# and the readers (``outcrop.raster.scenes.is_remote``) go by.
REMOTE_PREFIXES = ("http://", "https://", "/vsicurl/", "s3://", "gs://")


def local_input(source: str) -> str | None:
    """The file or folder Snakemake should track for a scene source; None for a remote one or a
    ``stac:`` item, whose band assets may lie anywhere."""
    return None if source.startswith((*REMOTE_PREFIXES, "stac:")) else source


def demo_sheet(results: str, scenes: int, train_scenes: int, dates: int) -> list[dict[str, Any]]:
    """The scene sheet of the built-in demo: ``scenes`` places, each seen on ``dates`` days,
    synthesised under ``results/demo``. The first ``train_scenes`` places train, on every day.
    The days' dates are stamped on the synthesised scenes themselves, so the sheet gives none."""
    from outcrop.raster.demo import scene_name

    return [
        {
            "scene": scene_name(i, d),
            "source": Layout(results).demo_scene(scene_name(i, d)),
            "sensor": "landsat-c2l2",
            "role": "train" if i < train_scenes else "index",
            "bands": "",
            "scale": "",
            "offset": "",
            "collar": "",
            "date": "",
        }
        for d in range(dates)
        for i in range(scenes)
    ]
