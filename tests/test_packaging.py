"""The repository's conventions: licence, citation, workflow-catalog files and report captions that
say what the code draws."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

from outcrop.config import SCHEMA

ROOT = Path(__file__).resolve().parent.parent


def test_license_file_matches_pyproject():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]["text"]
    text = (ROOT / "LICENSE").read_text()
    assert declared == "MIT"
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text


def test_citation_file_is_valid_cff_with_the_package_version():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert cff["cff-version"].startswith("1.2")
    assert {"message", "title", "authors"} <= set(cff) and cff["authors"]
    assert str(cff["version"]) == version and cff["license"] == "MIT"


def test_workflow_catalog_files():
    """The Snakemake workflow catalog reads `.snakemake-workflow-catalog.yml` and `config/README.md`."""
    catalog = yaml.safe_load((ROOT / ".snakemake-workflow-catalog.yml").read_text())
    usage = catalog["usage"]
    assert set(usage) == {"mandatory-flags", "software-stack-deployment"}
    assert {"desc", "flags"} <= set(usage["mandatory-flags"])
    assert set(usage["software-stack-deployment"]) <= {"conda", "apptainer", "apptainer+conda", "report"}
    assert all(isinstance(v, bool) for v in usage["software-stack-deployment"].values())
    readme = (ROOT / "config" / "README.md").read_text()
    # Every top-level config section is explained there.
    schema = yaml.safe_load(SCHEMA.read_text())
    missing = [key for key in schema["properties"] if f"`{key}" not in readme]
    assert not missing, f"config/README.md does not mention {missing}"


def test_report_captions_say_what_the_code_draws():
    exemplars = (ROOT / "workflow" / "report" / "exemplars.rst").read_text()
    assert "true colour" in exemplars and "false colour" not in exemplars
    cluster_map = (ROOT / "workflow" / "report" / "cluster_map.rst").read_text()
    assert "largest k" not in cluster_map and "every k" in cluster_map


def test_the_schemas_live_in_the_package_and_the_workflow_folder_points_at_them():
    """The schemas are package data (an installed outcrop reads them: tests/test_wheel.py);
    workflow/schemas, where the workflow layout puts them, is a link to the package's copy."""
    package = ROOT / "workflow" / "outcrop" / "schemas"
    assert package / "config.schema.yaml" == SCHEMA and SCHEMA.is_file()
    link = ROOT / "workflow" / "schemas"
    assert link.is_symlink() and link.resolve() == package.resolve()
    assert sorted(p.name for p in link.iterdir()) == ["config.schema.yaml", "scenes.schema.yaml"]
