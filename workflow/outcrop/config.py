"""Run configuration: validated against the JSON Schema, with defaults filled in by the schema.

Snakemake's own validator reports an unknown nested key without saying where it is; a user with a
long config file needs the key path (``encoder.epochs``), so validation happens here and the
Snakefile calls it before any job is scheduled.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from outcrop.errors import OutcropError
from outcrop.limits import CONFIG_VALUES

# Inside the package (package data), so that an installed outcrop finds it as the workflow does.
SCHEMA = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"


def _with_defaults(validator_class: Any) -> Any:
    from jsonschema import validators

    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator: Any, properties: dict, instance: Any, schema: dict) -> Any:
        if isinstance(instance, dict) and schema.get("x-fill-defaults", True):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    default = sub["default"]
                    instance[prop] = (
                        dict(default)
                        if isinstance(default, dict)
                        else (list(default) if isinstance(default, list) else default)
                    )
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


def _scalar_from_text(text: str, kind: str) -> Any:
    """``text`` read as a ``kind`` (integer, number, boolean) value, or ``text`` itself if it is not one."""
    word = text.strip()
    try:
        if kind == "integer":
            return int(word)
        if kind == "number":
            return int(word) if re.fullmatch(r"[+-]?\d+", word) else float(word)
    except ValueError:
        return text
    if kind == "boolean" and word.lower() in ("true", "false"):
        return word.lower() == "true"
    return text


def _read_text_values(instance: Any, schema: dict[str, Any], path: str, source: str) -> Any:
    """Numbers and booleans written as text, read as what the schema wants.

    ``snakemake --config "tiles={size: 64}"`` hands over ``{'size': '64'}``: Snakemake parses a
    nested value with YAML's base loader, which keeps every scalar as text. Reading such text as
    the number the schema asks for makes ``--config`` work for nested keys; text that is no number
    still fails validation, naming the key. A string where a mapping belongs (``--config`` of an
    older Snakemake, or a quoted mapping in a config file) is refused with how to write it.
    """
    kind = schema.get("type")
    if kind is None and isinstance(instance, str) and "anyOf" in schema:
        # a number or a word (grid.resolution: 30 or auto): text that is one of the words stays text
        words = [s.get("const") for s in schema["anyOf"] if "const" in s]
        kinds = [s.get("type") for s in schema["anyOf"]]
        if instance.strip() not in words and "number" in kinds:
            return _scalar_from_text(instance, "number")
        return instance
    if isinstance(instance, str):
        if kind == "object":
            raise OutcropError(
                f"{source}: {path or '(top level)'}: got the string {instance!r} where a mapping of keys belongs; "
                f'write nested keys in a config file (--configfile) or as --config "{path or "key"}={{key: value}}"'
            )
        if kind in ("integer", "number", "boolean"):
            return _scalar_from_text(instance, kind)
        return instance
    if isinstance(instance, dict) and kind == "object":
        props = schema.get("properties", {})
        for key, value in instance.items():
            if key in props:
                instance[key] = _read_text_values(value, props[key], f"{path}.{key}" if path else str(key), source)
    elif isinstance(instance, list) and kind == "array" and isinstance(schema.get("items"), dict):
        for i, value in enumerate(instance):
            instance[i] = _read_text_values(value, schema["items"], f"{path}.{i}", source)
    return instance


def _non_finite(instance: Any, path: str = "") -> tuple[str, float] | None:
    """Key path and value of the first NaN or infinity in ``instance``, or None.

    JSON Schema's ``minimum`` and ``exclusiveMinimum`` let NaN through (every comparison with it is
    false) and infinity through where only a minimum is given; no setting of a run means either.
    """
    if isinstance(instance, float) and not math.isfinite(instance):
        return path, instance
    items = (
        instance.items() if isinstance(instance, dict) else (enumerate(instance) if isinstance(instance, list) else ())
    )
    for key, value in items:
        found = _non_finite(value, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def _refuse_too_many_values(config: Any, source: str, budget: int = CONFIG_VALUES) -> None:
    """Count keys, list items and values (aliases expanded) up to ``budget``, and refuse the config,
    naming the top-level key where the count passed it. Stops at the budget, so that a bomb, or a
    config that contains itself, costs ``budget`` steps and no more (:data:`outcrop.limits.CONFIG_VALUES`:
    why a fixed bound and not a setting)."""
    tops = config.items() if isinstance(config, dict) else [("(top level)", config)]
    count = 0
    for top, value in tops:
        stack = [value]
        while stack:
            node = stack.pop()
            count += 1
            if count > budget:
                raise OutcropError(
                    f"{source}: {top}: more than {budget:,} values (keys, list items and values, YAML aliases "
                    "expanded), where a run's config has a few hundred; write the values out instead of "
                    "repeating aliases"
                )
            if isinstance(node, dict):
                stack.extend(node.keys())
                stack.extend(node.values())
            elif isinstance(node, (list, tuple)):
                stack.extend(node)


@functools.cache
def load_schema(path: Path = SCHEMA) -> dict[str, Any]:
    """The config schema, read once per process (the C loader where PyYAML has it: `--help` reads it)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(Path(path).read_text(), Loader=loader)  # noqa: S506 - a safe loader


def schema_entry(key: str) -> dict[str, Any]:
    """The schema of a dotted config key (``tiles.stride``, ``surfaces``): type, range, default, description."""
    entry: dict[str, Any] = load_schema()
    for part in key.split("."):
        properties = entry.get("properties", {})
        if part not in properties:
            raise KeyError(f"{key}: not a key of the config schema")
        entry = properties[part]
    return entry


def _check(instance: Any, schema: dict[str, Any], source: str, fill_defaults: bool) -> None:
    """Raise one error naming the key path of the first thing in ``instance`` that ``schema`` refuses."""
    from jsonschema import Draft7Validator

    _read_text_values(instance, schema, "", source)
    bad = _non_finite(instance)
    if bad is not None:
        raise OutcropError(f"{source}: {bad[0] or '(value)'}: {bad[1]!r} is not a finite number")
    validator = (_with_defaults(Draft7Validator) if fill_defaults else Draft7Validator)(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        path = ".".join(str(p) for p in err.absolute_path)
        if err.validator == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            key = ".".join(filter(None, [path, extra[0] if extra else ""]))
            known = ", ".join(err.schema.get("properties", {}))
            raise OutcropError(f"{source}: unknown key {key!r} (known: {known})")
        raise OutcropError(f"{source}: {path or '(top level)'}: {err.message}")


def check_setting(value: Any, key: str, source: str) -> Any:
    """``value`` checked against the schema of config key ``key`` (numbers given as text read as numbers);
    one error naming ``source`` and the offending part. Returns the value."""
    _check(value, schema_entry(key), source, fill_defaults=False)
    return value


def validate_config(config: dict[str, Any], source: str = "config", schema_path: Path = SCHEMA) -> dict[str, Any]:
    """Validate ``config`` in place, fill defaults, and raise one error naming the key path."""
    _refuse_too_many_values(config, source)
    _check(config, load_schema(schema_path), source, fill_defaults=True)
    if not str(config["results"]).strip().strip("/"):
        # Every output path is results/..., so an empty results would write at the file-system root.
        raise OutcropError(
            f"{source}: results: {config['results']!r} names no folder; give the folder that receives the run's outputs"
        )
    # Text that could break the report page or a path is refused first, before any check quotes it.
    _refuse_markup_in_values(config, source)
    _refuse_wildcard_braces(config, source)
    _check_clusters(config["clusters"], source)
    _check_grid(config["grid"], source)
    return config


def _check_grid(grid: dict[str, Any], source: str) -> None:
    """A given grid.crs must be a projected CRS in metres (:func:`check_grid_crs`), checked
    here so that a CRS the grid job cannot use stops the run before any job."""
    if str(grid["crs"]).strip() != "auto":
        check_grid_crs(grid["crs"], f"{source}: grid.crs", grid["resolution"])


# Keys whose values become file paths in the job graph. Snakemake reads `{...}` in a path as a
# wildcard, so a brace there would silently change which files a rule makes or reads.
_PATH_KEYS = (("results",), ("scenes",), ("deposits",), ("negatives",), ("aoi", "path"))


def _refuse_wildcard_braces(config: dict[str, Any], source: str) -> None:
    for keys in _PATH_KEYS:
        value: Any = config
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, str) and ("{" in value or "}" in value):
            raise OutcropError(
                f"{source}: {'.'.join(keys)}: {value!r}: a path may not contain '{{' or '}}' "
                "(Snakemake would read them as wildcards); rename the file or folder"
            )


# Snakemake's report page (`snakemake --report`) writes every rule's inputs, outputs and params
# unescaped inside <script> elements, as JSON. JSON escapes quotes, backslashes and control
# characters, so a value cannot leave its JavaScript string; only the HTML parser can end the
# element early, and it needs a '<' to do so ('</script>', or '<!--' with '<script' to swallow the
# element's real end). '>' closes what '<' opens and is refused with it. Nothing else in a value
# matters there ('&' is not decoded inside <script>; quotes and backticks stay inside the string).
MARKUP_CHARACTERS = "<>"


def refuse_markup(value: str, where: str, fix: str = "rename the file or folder") -> None:
    """Refuse a value that would be markup in the Snakemake report page, naming ``where`` and the character."""
    bad = next((c for c in value if c in MARKUP_CHARACTERS), None)
    if bad is not None:
        raise OutcropError(
            f"{where}: {value!r}: {bad!r} is not allowed in a value the workflow passes to its "
            f"jobs (it would be markup in the `snakemake --report` page); {fix}"
        )


def _refuse_markup_in_values(instance: Any, source: str, path: str = "") -> None:
    """Every text value of the config, at any depth: all of them reach some rule's input, output or params."""
    if isinstance(instance, str):
        is_path = tuple(path.split(".")) in _PATH_KEYS
        refuse_markup(
            instance,
            f"{source}: {path or '(top level)'}",
            "rename the file or folder" if is_path else "change the value",
        )
    items = (
        instance.items() if isinstance(instance, dict) else (enumerate(instance) if isinstance(instance, list) else ())
    )
    for key, value in items:
        _refuse_markup_in_values(value, source, f"{path}.{key}" if path else str(key))


def canonical_results(results: str, source: str = "config: results") -> str:
    """The results folder spelled one way, whatever way the user wrote it.

    Snakemake's lock compares output paths as text: `./results`, `results/`, the absolute path of
    the same folder, a symbolic link to it (`ln -s results rlink`) or a path through a linked parent
    would each take a lock of their own, and two runs would write one folder at once. Every link is
    resolved (a folder that does not exist yet is resolved as far as its parents exist, and a link
    whose target is not made yet still leads to that target); the folder is then given relative to
    the working directory when it is inside it, else as an absolute path.
    """
    text = str(results)
    if not text.strip().strip("/"):
        raise OutcropError(f"{source}: {text!r} names no folder; give the folder that receives the run's outputs")
    real = os.path.realpath(text)
    here = os.path.realpath(os.getcwd())
    relative = os.path.relpath(real, here)
    if relative == os.curdir or relative == os.pardir or relative.startswith(os.pardir + os.sep):
        # outside the working directory: the folders above it become part of every output path
        refuse_markup(real, source)
        return real
    return relative


def _check_clusters(clusters: dict[str, Any], source: str) -> None:
    """Hierarchy cuts split the Ward tree of the largest k's centroids: each must be below that k."""
    largest = max(clusters["k"])
    too_big = [c for c in clusters["cuts"] if c >= largest]
    if too_big:
        raise OutcropError(
            f"{source}: clusters.cuts: {too_big[0]} is not less than the largest k ({largest}); "
            "a cut splits the hierarchy of that k's clusters into fewer groups"
        )


# --- settings checked beyond the schema -------------------------------------------------------------

# Why grid.crs must be a 2-D projected CRS in metres: the run measures everything on its grid in
# the grid CRS's units and takes them as metres: grid.resolution (metres per pixel), the AOI buffer
# and the exclusion radius (km), the deposits' buffer and the distances in analogues.csv and
# `outcrop query`. A geographic CRS would make `resolution: 30` thirty degrees a pixel (one pixel
# for a whole coast) and every distance a count of degrees; a CRS in feet would be off by a factor
# of three. A PROJ pipeline or a vertical or geocentric CRS is no grid at all, and rasterio accepts
# some of them only to fail in the middle of the grid job. So the CRS is checked once, before any
# job, with the key named (and again by the stages that take a CRS from the command line).
GRID_CRS_EXAMPLES = "a UTM zone such as EPSG:32633, EPSG:3031 (Antarctic polar stereographic), or auto"


def check_grid_crs(text: str, where: str, resolution: Any = None) -> None:
    """Refuse ``text`` unless it is a 2-D projected CRS with axes in metres.

    ``where`` names the setting (``config: grid.crs``); ``resolution``, when a number, is named in
    the refusal of a CRS in other units, as the value it would have been read as.
    """
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        crs = CRS.from_user_input(text)
    except CRSError as exc:
        detail = " ".join(str(exc).split())[:200]
        raise OutcropError(
            f"{where}: {text!r} is not a coordinate reference system ({detail}); "
            f"give a projected CRS in metres: {GRID_CRS_EXAMPLES}"
        ) from None
    axes = crs.axis_info
    if crs.is_geographic or (crs.is_projected and not crs.is_compound and len(axes) == 2):
        unit = axes[0].unit_name if axes else "unknown unit"
        factor = axes[0].unit_conversion_factor if axes else None
        if crs.is_projected and unit == "metre" and factor == 1.0:
            return
        kind = "a geographic CRS" if crs.is_geographic else "a projected CRS"
        as_read = ""
        if isinstance(resolution, (int, float)) and not isinstance(resolution, bool):
            as_read = f"; grid.resolution {resolution:g} would be read as {resolution:g} {unit} a pixel"
        raise OutcropError(
            f"{where}: {text!r} is {kind} with axes in {unit}{as_read}, but the run measures "
            "pixels, buffers and distances in metres: give a projected CRS in metres: "
            f"{GRID_CRS_EXAMPLES}"
        )
    kind = crs.type_name[:1].lower() + crs.type_name[1:]
    raise OutcropError(
        f"{where}: {text!r} is a {kind}, not a 2-D projected CRS a grid can "
        f"be laid out in: give a projected CRS in metres: {GRID_CRS_EXAMPLES}"
    )


def check_thread_overrides(overrides: Mapping[str, Any], option: str = "--set-threads") -> None:
    """Refuse a thread count below 1 given for a rule (Snakemake's ``--set-threads``, or a profile's
    ``set-threads``) before any job runs.

    Snakemake takes ``index=0`` as given; the job then fails when it starts, at its own
    ``--threads 0``, after the jobs before it have run. An expression (``2*input.size_mb``) is
    evaluated per job by Snakemake and is left to it.
    """
    for rule, value in sorted(overrides.items()):
        text = str(value).strip()
        try:
            number = float(text)
        except ValueError:
            continue
        if not (math.isfinite(number) and round(number) >= 1):
            raise OutcropError(f"{option} {rule}={text}: a job needs at least 1 thread; give {rule}=1 or more")


@functools.cache
def _defaults() -> dict[str, Any]:
    return validate_config({}, "defaults")


def default(key: str) -> Any:
    """The schema's default for a dotted config key (``tiles.stride``).

    The stage functions take their defaults from here (and the command line from the schema
    itself, through :mod:`outcrop.stages`), so that calling `outcrop tile` or
    :func:`outcrop.raster.tiles.tile_scene` without an option gives what the workflow gives.
    """
    value: Any = _defaults()
    for part in key.split("."):
        value = value[part]
    return copy.deepcopy(value)


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and validate a YAML config file."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise OutcropError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise OutcropError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise OutcropError(f"{path}: a config file must be a mapping of keys")
    return validate_config(data, str(path))
