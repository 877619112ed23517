"""The stage declarations agree with the config schema, the stages' functions and the rules.

Each stage is declared once (outcrop.stages); the command line's options and each rule's command
and settings are made from that declaration, so nothing restates a setting by hand. What is left to
check is that the declaration itself fits what it names: keys of the schema, parameters of the
function, and the rules that run it.
"""

from __future__ import annotations

import copy
import inspect
import re
from pathlib import Path

import pytest

from outcrop.cli import build_parser, main
from outcrop.config import load_schema, schema_entry, validate_config
from outcrop.stages import STAGES, stage_args, stage_settings, stage_shell

ROOT = Path(__file__).resolve().parents[1]
RULES = sorted((ROOT / "workflow" / "rules").glob("*.smk"))
STAGE_NAMES = sorted(STAGES)


def _leaf_keys(schema: dict, prefix: str = "") -> list[str]:
    """Every key of the config schema a stage can read: leaves, and sections taken whole (objects)."""
    out = []
    for name, sub in schema.get("properties", {}).items():
        key = f"{prefix}{name}"
        if sub.get("type") == "object" and "properties" in sub and key not in ("encoder.settings", "surfaces"):
            out += _leaf_keys(sub, f"{key}.")
        else:
            out.append(key)
    return out


@pytest.mark.parametrize("command", STAGE_NAMES)
def test_every_declared_setting_is_a_key_of_the_schema(command):
    for key in STAGES[command].setting_keys().values():
        entry = schema_entry(key)
        assert "default" in entry, f"{command}: {key} has no default in the schema"
        assert entry.get("type") != "object" or "properties" in entry or key == "encoder.settings", key


@pytest.mark.parametrize("command", STAGE_NAMES)
def test_the_declaration_fits_the_functions_signature(command):
    """Every parameter without a default is declared; everything declared is a parameter; an
    optional argument may be None; the function's own defaults are the schema's (or None: not given)."""
    stage = STAGES[command]
    params = inspect.signature(stage.load()).parameters
    declared = [a.param for a in stage.args] + list(stage.setting_keys())
    assert len(declared) == len(set(declared)), f"{command}: a parameter is declared twice"
    assert sorted(set(declared) - set(params)) == [], f"{command}: declared but not parameters of {stage.function}"
    undeclared = [p.name for p in params.values() if p.default is inspect.Parameter.empty and p.name not in declared]
    assert undeclared == [], f"{command}: {stage.function} needs {undeclared}, which nothing declares"
    for arg in stage.args:
        param = params[arg.param]
        if arg.optional and not arg.many:
            assert param.default is None or "None" in str(param.annotation), f"{command}: {arg.param} may be None"
        if "default" in arg.kind:
            assert param.default == arg.kind["default"], f"{command}: --{arg.name} defaults differently"
    for param_name, key in stage.setting_keys().items():
        found = params[param_name].default
        if found is inspect.Parameter.empty or found is None:
            continue
        found = list(found) if isinstance(found, tuple) else found
        assert found == schema_entry(key)["default"], (
            f"{command}: {stage.function}({param_name}=) defaults to {found!r}, the schema's {key} to "
            f"{schema_entry(key)['default']!r}"
        )


def test_surface_thresholds_default_as_the_schema_says():
    from dataclasses import asdict

    from outcrop.raster.surfaces import Thresholds

    assert asdict(Thresholds()) == {k: v["default"] for k, v in schema_entry("surfaces")["properties"].items()}


def test_every_config_key_is_read_by_a_stage_or_by_the_workflow_itself():
    """A key nobody reads is a setting that does nothing; the few the Snakefile reads itself (which
    scenes, where the results go) are named here, and the limits section, which the Snakefile hands
    to every job in its environment."""
    read = {key for stage in STAGES.values() for key in stage.setting_keys().values()}
    workflow_keys = {
        "results",
        "scenes",
        "deposits",
        "negatives",
        "aoi.path",
        "units.path",
        "demo.scenes",
        "demo.dates",
        "demo.train_scenes",
    }
    unread = [
        key
        for key in _leaf_keys(load_schema())
        if key not in read and key not in workflow_keys and not key.startswith("limits.")
    ]
    assert unread == []


def _changed(value, entry):
    """A valid value of a schema entry other than ``value``."""
    kind = entry.get("type")
    if kind == "boolean":
        return not value
    if kind == "integer":
        return value + 1 if value + 1 <= entry.get("maximum", value + 1) else value - 1
    if kind == "number":
        top = entry.get("maximum", value + 1)
        return round(min(top, value + 0.05) if value < top else value - 0.05, 6)
    if kind == "array":
        items = entry.get("items", {})
        if "enum" in items:
            return [v for v in items["enum"] if v not in value][:2]
        return [v + 1 for v in value] if value else [5]
    if kind == "object":
        return {"ndsi_snow": 0.45} if "ndsi_snow" in entry.get("properties", {}) else {"epochs": 3}
    if "enum" in entry:
        return next(v for v in entry["enum"] if v != value)
    if "anyOf" in entry:
        return 60
    return "EPSG:3031"


def test_a_rule_reruns_exactly_when_a_setting_its_stage_reads_changes():
    """Changing one key changes the settings argument of exactly the stages that read it (Snakemake
    compares `params:` and reruns those jobs), and no other stage's."""
    base = validate_config({})
    readers = {}
    for command, stage in STAGES.items():
        for key in stage.setting_keys().values():
            readers.setdefault(key, set()).add(command)
    for key, commands in sorted(readers.items()):
        config = copy.deepcopy(base)
        *parents, last = key.split(".")
        holder = config
        for part in parents:
            holder = holder[part]
        holder[last] = _changed(holder[last], schema_entry(key))
        config = validate_config(config)
        changed = {c for c in STAGES if stage_args(c, config) != stage_args(c, base)}
        assert changed == commands, f"{key}: changes the arguments of {sorted(changed)}, read by {sorted(commands)}"


def _required_args(command):
    """Placeholder values for the arguments a rule passes besides the settings."""
    out = []
    for arg in STAGES[command].args:
        if arg.source and not arg.optional:
            value = (
                "demo_1"
                if arg.name == "scene"
                else ("3" if arg.name == "scenes" and command == "demo-deposits" else "x")
            )
            out += [arg.option, value]
    return out


@pytest.mark.parametrize("command", STAGE_NAMES)
@pytest.mark.parametrize("which", ["defaults", "changed"])
def test_the_rules_arguments_read_back_as_the_config_values(command, which):
    """What a rule passes (stage_args of a config) is what the subcommand parses back, value for value:
    the rules and the command line agree on every option's name and type."""
    config = validate_config({})
    if which == "changed":
        for key in STAGES[command].setting_keys().values():
            *parents, last = key.split(".")
            holder = config
            for part in parents:
                holder = holder[part]
            holder[last] = _changed(holder[last], schema_entry(key))
        config = validate_config(config)
    args = build_parser().parse_args([command, *_required_args(command), *stage_args(command, config)])
    kwargs = STAGES[command].call_arguments(vars(args))
    for param, value in stage_settings(command, config).items():
        assert kwargs[param] == value, f"{command} --{param}: {kwargs[param]!r}, the config says {value!r}"


@pytest.mark.parametrize("command", STAGE_NAMES)
def test_help_shows_every_setting_with_its_key_default_and_description(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for param, key in STAGES[command].setting_keys().items():
        assert f"--{param.replace('_', '-')}" in text
        assert f"(config: {key}; default:" in text, key
        description = " ".join(str(schema_entry(key).get("description", "")).split())
        assert description and description[:40] in text, f"{key}: no description in the schema"


def test_a_bad_value_on_the_command_line_is_one_line_from_the_schema(capsys):
    """Ranges and words come from the schema entry: tiles.min_valid is at most 1, the device a word."""
    base = ["tile", "--prepared", "p.tif", "--scene", "s", "--out-tiles", "t.npy", "--out-table", "t.parquet"]
    for argv, message in (
        (base + ["--min-valid", "1.5"], "argument --min-valid: '1.5' is greater than 1"),
        (base + ["--size", "4"], "argument --size: '4' is less than 8"),
        (
            ["embed", "--tiles", "t", "--model", "m", "--out", "o", "--device", "gpu"],
            "argument --device: 'gpu' is not one of auto, cpu, cuda, mps",
        ),
        (
            [
                "index",
                "--embeddings",
                "e",
                "--tables",
                "t",
                "--out-index",
                "i",
                "--out-table",
                "t",
                "--out-info",
                "j",
                "--retrain",
                "maybe",
            ],
            "argument --retrain: 'maybe' is not yes or no",
        ),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_a_bad_key_of_a_mapping_setting_is_one_line_naming_the_option(capsys):
    argv = [
        "prepare",
        "--source",
        "s.tif",
        "--sensor",
        "geotiff",
        "--scene",
        "s",
        "--bands",
        "red",
        "--out",
        "o.tif",
        "--surfaces",
        "ndsi_snoww=0.4",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("outcrop prepare: error: --surfaces: unknown key 'ndsi_snoww' (known: ndsi_snow,")


def _rule_stages() -> dict[str, str]:
    """Rule name -> the stage its shell runs, read from the rule files."""
    out = {}
    for smk in RULES:
        text = smk.read_text()
        for block in re.split(r"^rule ", text, flags=re.M)[1:]:
            found = re.search(r'stage_shell\("([a-z-]+)"\)', block)
            if found:
                out[block.split(":", 1)[0]] = found.group(1)
    return out


def test_every_stage_is_run_by_a_rule_and_every_rule_names_a_stage():
    assert sorted(set(_rule_stages().values())) == STAGE_NAMES


def test_the_rules_name_their_files_as_their_stages_do(tmp_path):
    """A dry run prints every job's command: each declared file, value and setting of its stage is
    in it (a rule that names an input otherwise would fail here, not in a job)."""
    import subprocess
    import sys

    import yaml

    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"demo": {"scenes": 2, "train_scenes": 1, "size": 128}}))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(ROOT / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(tmp_path / "config.yaml"),
            "-n",
            "-p",
            "--cores",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    commands = {}
    for block in re.split(r"\n\s*rule ", proc.stdout)[1:]:
        rule = block.split(":", 1)[0]
        found = re.search(r"^Shell command: (.*)$", block, re.M)
        if found and "python -m outcrop" in found.group(1):
            commands[rule] = found.group(1)
    stages = _rule_stages()
    assert set(commands) == set(stages), sorted(set(stages) ^ set(commands))
    for rule, command in commands.items():
        stage = STAGES[stages[rule]]
        assert f"python -m outcrop {stage.command} " in command
        for arg in stage.args:
            if arg.source:
                assert arg.option in command, f"{rule}: no {arg.option}"
        for param, key in stage.setting_keys().items():
            if schema_entry(key)["default"] != {}:  # an empty mapping (encoder.settings) is no argument
                assert f"--{param.replace('_', '-')}" in command, f"{rule}: no --{param}"
        assert ("--threads" in command) == stage.threads
    assert stage_shell("index").startswith("python -m outcrop index --embeddings {input.embeddings:q}")


@pytest.mark.parametrize("profile", ["none", "slurm"])
def test_the_index_job_asks_for_the_memory_its_budget_sets(tmp_path, profile):
    """index.memory_gb sizes the index job's memory request, with or without the SLURM profile (which
    must not replace it with a number of its own): changing the setting changes the request."""
    import subprocess
    import sys

    import yaml

    from outcrop.stages import INDEX_OVERHEAD_MB

    asked = {}
    for memory_gb in (8, 20.5):
        (tmp_path / "config.yaml").write_text(
            yaml.safe_dump({"demo": {"scenes": 2, "train_scenes": 1, "size": 128}, "index": {"memory_gb": memory_gb}})
        )
        extra = (
            ["--workflow-profile", str(ROOT / "workflow" / "profiles" / "slurm")]
            if profile == "slurm"
            else ["--cores", "2"]
        )
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "snakemake",
                "-s",
                str(ROOT / "Snakefile"),
                "--directory",
                str(tmp_path),
                "--configfile",
                str(tmp_path / "config.yaml"),
                "-n",
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        block = re.split(r"\n\s*rule ", proc.stdout.split("\nrule index:", 1)[1])[0]
        asked[memory_gb] = int(re.search(r"resources: .*\bmem_mb=(\d+)", block).group(1))
    assert asked == {8: 8 * 1024 + INDEX_OVERHEAD_MB, 20.5: 20.5 * 1024 + INDEX_OVERHEAD_MB}


def test_the_path_check_takes_every_file_argument_from_the_declarations():
    """The command line checks the lengths of the arguments declared as files (and local sources)
    before a stage runs: each stage's recorded list is exactly its declared files, and a value that
    is no file (a scene id) is never measured as a path."""
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for command, stage in STAGES.items():
        recorded = {dest for dest, _, _ in commands[command].get_default("file_arguments") or ()}
        assert recorded == {arg.param for arg in stage.args if arg.names_files}, command
    local_only = {dest for dest, _, local in commands["prepare"].get_default("file_arguments") if local}
    assert local_only == {"source"}


def test_a_long_output_path_is_refused_and_a_long_scene_id_is_not_taken_for_one(tmp_path, capsys):
    base = ["prepare", "--source", str(tmp_path / "s.tif"), "--sensor", "geotiff", "--bands", "red"]
    assert main([*base, "--scene", "s", "--out", str(tmp_path / ("o" * 300 + ".tif"))]) == 2
    assert capsys.readouterr().err.startswith("outcrop prepare: error: --out: '")
    assert main([*base, "--scene", "s" * 300, "--out", str(tmp_path / "o.tif")]) == 2
    err = capsys.readouterr().err
    assert "--scene" not in err and "a file or folder name of" not in err
