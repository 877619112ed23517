"""The web map's page, style sheet and script are package data files that tools can read."""

from __future__ import annotations

import fnmatch
import re
import string
import subprocess
import tomllib
from pathlib import Path

import pytest

from outcrop.figures.webmap import page_asset
from tests.services import node_binary

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "workflow" / "outcrop" / "figures" / "webmap_assets"


@pytest.fixture
def nodejs() -> str:
    return node_binary()


def test_map_script_is_valid_javascript(nodejs):
    result = subprocess.run([nodejs, "--check", str(ASSETS / "map.js")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_map_script_writes_no_markup():
    """Values from files reach the page as text: the script never assigns innerHTML or outerHTML."""
    assert not re.search(r"\.(inner|outer)HTML\s*=[^=]", page_asset("map.js"))
    assert "textContent" in page_asset("map.js")


def test_page_template_fills_exactly_its_fields():
    fields = {name for _, name, _, _ in string.Formatter().parse(page_asset("page.html")) if name}
    assert fields == {
        "title",
        "leaflet_css",
        "leaflet_js",
        "data",
        "app_css",
        "app_js",
        "extra_css",
        "extra_body",
        "extra_js",
    }


def test_every_asset_is_shipped_as_package_data():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["outcrop"]
    package = ROOT / "workflow" / "outcrop"
    for path in ASSETS.iterdir():
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), f"{relative} is not in package-data"
