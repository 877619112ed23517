"""Docs that cannot drift: what they state about settings, commands, benchmarks, tests and the
code's layers is generated from the code or checked against it here.

- docs/settings.md is generated from the config schema and the stage declarations;
- a default a doc states (`` `key: value` `` in a sentence that calls it the default, or
  `` `key` (value by default) ``) is the schema's;
- every `outcrop <command>` a doc names exists and answers `--help`; every `benchmarks/*.py` a doc
  names exists; every test a doc or a module docstring names exists;
- docs/architecture.md counts the modules of each layer and names the index kinds as the code has them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from outcrop.config import load_schema
from outcrop.stages import STAGES, _table_rows, settings_table

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "workflow" / "outcrop"
DOCS = sorted(
    [
        ROOT / "README.md",
        ROOT / "config" / "README.md",
        ROOT / "benchmarks" / "README.md",
        *(ROOT / "docs").glob("*.md"),
    ]
)
# Words that make a sentence's "default" a past one ("the previous defaults", "then the default").
HISTORY = re.compile(r"\b(previous|earlier|old|then|was|were|before|history)\b", re.I)


def _sentences(text: str) -> list[str]:
    """Sentences of a Markdown text: table rows and list items apart, paragraphs split at full stops."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        for line_group in re.split(r"\n(?=\s*[|*-] )", block):
            out += re.split(r"(?<=[.!?])\s+(?=[A-Z(`*])", " ".join(line_group.split()))
    return out


def _schema_keys() -> dict[str, dict]:
    return dict(_table_rows(load_schema()))


def _resolve(name: str, keys: dict[str, dict]) -> str | None:
    """The config key a doc means by ``name``: itself, or the one key it ends (``symmetry``)."""
    if name in keys:
        return name
    found = [k for k in keys if k.endswith("." + name)]
    return found[0] if len(found) == 1 else None


def _value(text: str):
    """A value as a doc writes it: YAML, with thousands spaced (200 000) and a unit after a number (8 GB)."""
    text = re.sub(r"(?<=\d)[\s\u202f](?=\d{3}\b)", "", text.strip())
    number = re.fullmatch(r"(-?[\d.]+)\s*[A-Za-z%]+", text)
    return yaml.safe_load(number.group(1) if number else text)


def stated_defaults(text: str) -> list[tuple[str, object]]:
    """(key, value) of every default the text states."""
    keys = _schema_keys()
    out = []
    for sentence in _sentences(text):
        if "default" not in sentence.lower() or HISTORY.search(sentence):
            continue
        for name, value in re.findall(r"`([a-z_][a-z0-9_.]*): ([^`]+)`", sentence):
            key = _resolve(name, keys)
            if key is not None:
                out.append((key, _value(value)))
        for name, first, second in re.findall(
            r"`([a-z_][a-z0-9_.]*)` \((?:default:? (\d{1,3}(?:[ \u202f]\d{3})+\b|"
            r"[^\s,;:)]+)|([^,;()]+?) by default)",
            sentence,
        ):
            key = _resolve(name, keys)
            if key is not None:
                out.append((key, _value(first or second)))
        named = {k for k in (_resolve(n, keys) for n in re.findall(r"`([a-z_][a-z0-9_.]*)`", sentence)) if k}
        said = re.findall(r"\b(?:the default is|defaults to) `?(-?[\d.]*\d|[a-z_]+)`?", sentence)
        if len(named) == 1 and said:  # "`key` above 0 (the default is 0)"
            out += [(next(iter(named)), _value(v)) for v in said]
    return out


def test_the_default_finder_sees_stated_defaults_and_leaves_others():
    text = (
        "Embeddings average the poses (`encoder.settings.symmetry: d4`, the default). `symmetry: none` embeds "
        "in one pass. The budget, `encoder.settings.samples` (200 000 by default), is views. Before, the "
        "previous default was `embed.spectral_weight: 0`."
    )
    assert stated_defaults(text) == [("encoder.settings.symmetry", "d4"), ("encoder.settings.samples", 200000)]
    assert stated_defaults("More scenes than `limits.sheet_rows` (default 20 000) are refused.") == [
        ("limits.sheet_rows", 20000)
    ]
    # What docs/architecture.md and docs/evaluation.md said of the spectral weight, once the schema's was 0.15:
    for old in (
        "With `embed.spectral_weight` above 0 (the default is 0) a row is (N, D + 5C).",
        "The vector is D + 5C long. `embed.spectral_weight` (default 0: the learned vector alone) is read.",
    ):
        assert stated_defaults(old) == [("embed.spectral_weight", 0)]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_default_a_doc_states_is_the_schemas(doc):
    keys = _schema_keys()
    wrong = [
        f"{key}: the doc says {value!r}, the schema {keys[key].get('default')!r}"
        for key, value in stated_defaults(doc.read_text())
        if value != keys[key].get("default")
    ]
    assert wrong == []


def test_the_docs_state_the_defaults_users_ask_about():
    """The finder is not idle: the README states the embedding weights and the grid's defaults."""
    found = dict(stated_defaults((ROOT / "README.md").read_text()))
    assert {"embed.spectral_weight", "embed.context_weight", "grid.crs", "grid.resolution"} <= set(found)


def test_the_settings_table_is_current():
    """docs/settings.md is generated: `python -m outcrop.stages > docs/settings.md` after a schema change."""
    assert (ROOT / "docs" / "settings.md").read_text() == settings_table()


def test_the_schema_uses_only_the_keywords_the_code_reads():
    """A comma in an unquoted YAML flow mapping makes a key of the rest of a description; a keyword
    the command line and the docs do not read would be a check nobody makes."""
    known = {
        "$schema",
        "type",
        "description",
        "default",
        "properties",
        "additionalProperties",
        "patternProperties",
        "x-fill-defaults",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "enum",
        "const",
        "anyOf",
        "items",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minLength",
    }
    odd = []

    def walk(entry: dict, where: str) -> None:
        odd.extend(f"{where}: {k}" for k in entry if k not in known)
        for name, sub in entry.get("properties", {}).items():
            walk(sub, f"{where}.{name}".lstrip("."))
        if isinstance(entry.get("items"), dict):
            walk(entry["items"], f"{where}[]")
        for sub in entry.get("anyOf", []):
            walk(sub, where)

    walk(load_schema(), "")
    assert odd == []


# --- commands, benchmarks and tests named in the docs ----------------------------------------------


def _code_lines(text: str) -> list[str]:
    """The code of a Markdown text, a command per line: lines of fenced blocks, inline code spans,
    and what follows `&&`, `;` or `|` in them."""
    fenced = [line for block in re.findall(r"```.*?\n(.*?)```", text, re.S) for line in block.splitlines()]
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return [part for line in fenced + inline for part in re.split(r"&&|;|\|", line)]


def named_commands() -> dict[str, str]:
    """`outcrop <command>` (or `python -m outcrop <command>`) starting a command in any doc's code ->
    the first doc naming it."""
    found: dict[str, str] = {}
    for doc in DOCS:
        for line in _code_lines(doc.read_text()):
            command = re.match(r"\s*(?:\$\s*)?(?:python -m )?outcrop ([a-z][a-z-]*)", line)
            if command:
                found.setdefault(command.group(1), str(doc.relative_to(ROOT)))
    return found


def test_the_command_finder_finds_commands():
    assert {"query", "info", "stac-search"} <= set(named_commands())


@pytest.mark.parametrize("command", sorted(named_commands()))
def test_every_command_a_doc_names_exists(command, capsys):
    from outcrop.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0, f"`outcrop {command}` (named in {named_commands()[command]}) is no command"
    assert f"usage: outcrop {command}" in capsys.readouterr().out


def test_every_benchmark_a_doc_names_exists():
    missing = sorted(
        {
            f"{doc.relative_to(ROOT)}: {name}"
            for doc in DOCS
            for name in re.findall(r"benchmarks/[\w/.-]+?\.py", doc.read_text())
            if not (ROOT / name).is_file()
        }
    )
    assert missing == []


def _test_names() -> set[str]:
    return {
        m
        for path in (ROOT / "tests").rglob("test_*.py")
        for m in re.findall(r"^\s*def (test_\w+)", path.read_text(), re.M)
    }


def test_every_test_a_doc_or_docstring_names_exists():
    """docs/errors.md names the test of each refusal, and docstrings the test that shows what they
    claim (`tests/x.py::test_y`): each must be there, in that file where a file is named; a test
    file named alone must be there too."""
    names = _test_names()
    missing = []
    sources = [*DOCS, *PACKAGE.rglob("*.py")]
    for source in sources:
        text = source.read_text()
        for path, name in re.findall(r"(tests/[\w/]+\.py)::(test_\w+)", text):
            if not (ROOT / path).is_file() or not re.search(rf"^\s*def {name}\b", (ROOT / path).read_text(), re.M):
                missing.append(f"{source.relative_to(ROOT)}: {path}::{name}")
        for path in re.findall(r"\b(tests/[\w/]+\.py)\b", text):
            if not (ROOT / path).is_file():
                missing.append(f"{source.relative_to(ROOT)}: {path}")
        if source.name == "errors.md":
            missing += [f"docs/errors.md: {name}" for name in re.findall(r"`(test_\w+)`", text) if name not in names]
    assert missing == []


# --- the code's shape, as docs/architecture.md tells it ----------------------------------------------


def test_architecture_counts_the_modules_of_each_layer():
    text = (ROOT / "docs" / "architecture.md").read_text()
    stated = {layer: int(n) for layer, n in re.findall(r"\| `(\w+)/` \((\d+)", text)}
    assert set(stated) == {"runtime", "raster", "learning", "search", "figures", "serve"}
    counted = {layer: len([p for p in (PACKAGE / layer).glob("*.py") if p.name != "__init__.py"]) for layer in stated}
    assert stated == counted


def test_architecture_names_every_root_module():
    text = (ROOT / "docs" / "architecture.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| root |"))
    named = set(re.findall(r"`(\w+)`", row.split("|")[2]))
    assert named == {p.stem for p in PACKAGE.glob("*.py")}


def test_architecture_names_the_index_kinds_the_code_builds():
    from outcrop.search.index import KINDS, choose_kind

    text = (ROOT / "docs" / "architecture.md").read_text()
    listed = re.search(r"info: kind \(([^)]*)\)", text).group(1)
    assert re.findall(r"`(\w+)`", listed) == list(KINDS)
    built = {
        choose_kind(10, 8, exact_max=100, memory_gb=8),
        choose_kind(10_000, 8, exact_max=100, memory_gb=8),
        choose_kind(10_000_000, 198, exact_max=100, memory_gb=1),
    }
    assert built == set(KINDS)


def test_every_stage_is_in_the_architectures_tile_walk():
    """The walk of a tile through the stages names every stage a rule runs that makes data."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    walk = text.split("## One tile from scene to analogue", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"^\| `([a-z-]+)`", walk, re.M)) | set(re.findall(r", `([a-z-]+)`", walk))
    data_stages = {
        "grid",
        "prepare",
        "tile",
        "train",
        "embed",
        "index",
        "cluster",
        "analogues",
        "quality",
        "evaluate",
        "webmap",
        "report",
    }
    assert data_stages <= set(STAGES) and data_stages <= named
