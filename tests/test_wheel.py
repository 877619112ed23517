"""The package works installed from its wheel, away from the repository: the config schema, the
scene-sheet schema and the web map's assets ship inside it.

The wheel is built from a copy of the files it is made of, and installed without its dependencies
into a fresh virtual environment. That environment reaches the dependencies already installed for
the tests through a plain path to their site-packages (a line of a `.pth` file): the folder's own
`.pth` files are not run from there, so the editable install of the repository (one of them) is
not seen, and nothing else on the path holds `outcrop`. The installed `outcrop` then runs from a
folder outside the repository, with no PYTHONPATH: `--help`, and the demo scene through prepare and
tile, which read the schema's defaults.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel installed: its bin folder."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "workflow" / "outcrop", source / "workflow" / "outcrop", ignore=shutil.ignore_patterns("__pycache__")
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(work / "dist"),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    (wheel,) = (work / "dist").glob("outcrop-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    bin_dir = venv / "bin"
    site = Path(
        subprocess.run(
            [str(bin_dir / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        ).stdout.strip()
    )
    (site / "_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    return bin_dir


def _run(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_the_wheel_holds_the_schemas_and_the_web_assets():
    """What the wheel is made of, read from the wheel the fixture builds (no install needed)."""
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["outcrop"]
    assert "schemas/*.yaml" in data and any(p.startswith("figures/webmap_assets/") for p in data)


def test_the_installed_package_is_not_the_repositorys(installed, tmp_path):
    proc = _run(
        installed,
        str(installed / "python"),
        "-c",
        "import outcrop, outcrop.config, outcrop.raster.sheets as s; "
        "print(outcrop.__file__); print(outcrop.config.SCHEMA); print(s.SCHEMA)",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    package, schema, sheet_schema = (Path(line) for line in proc.stdout.split())
    venv = installed.parent
    assert venv in package.parents and ROOT not in package.parents
    assert schema.is_file() and venv in schema.parents and schema.parent.parent == package.parent
    assert sheet_schema.is_file() and sheet_schema.parent == schema.parent


def test_the_installed_command_runs_a_stage_with_the_schemas_defaults(installed, tmp_path):
    help_text = _run(installed, "outcrop", "--help", cwd=tmp_path)
    assert help_text.returncode == 0 and "tile" in help_text.stdout, help_text.stderr
    tile_help = _run(installed, "outcrop", "tile", "--help", cwd=tmp_path)
    assert "(config: tiles.stride; default: 16)" in " ".join(tile_help.stdout.split())
    steps = [
        ["outcrop", "demo-scene", "--scene", "demo_1", "--size", "128", "--out", "scene.tif", "--truth", "units.tif"],
        [
            "outcrop",
            "prepare",
            "--source",
            "scene.tif",
            "--sensor",
            "landsat-c2l2",
            "--scene",
            "demo_1",
            "--out",
            "prepared.tif",
        ],
        [
            "outcrop",
            "tile",
            "--prepared",
            "prepared.tif",
            "--scene",
            "demo_1",
            "--out-tiles",
            "tiles.npy",
            "--out-table",
            "tiles.parquet",
        ],
    ]
    for step in steps:
        proc = _run(installed, *step, cwd=tmp_path)
        assert proc.returncode == 0, (step, proc.stdout[-2000:], proc.stderr[-2000:])
    proc = _run(
        installed,
        str(installed / "python"),
        "-c",
        "from outcrop.raster.tiles import read_tile_grid; print(read_tile_grid('tiles.parquet'))",
        cwd=tmp_path,
    )
    assert proc.stdout.strip() == "TileLayout(size=32, stride=16, min_valid=0.9)", proc.stderr


def test_the_installed_web_map_finds_its_assets(installed, tmp_path):
    proc = _run(
        installed,
        str(installed / "python"),
        "-c",
        "from outcrop.figures.webmap import leaflet_assets, page_asset; "
        "print(len(page_asset('map.js')) + len(page_asset('page.html')) + len(''.join(leaflet_assets())))",
        cwd=tmp_path,
    )
    assert proc.returncode == 0 and int(proc.stdout) > 1000, proc.stderr


def test_the_wheel_names_its_files_inside_the_package(installed):
    (wheel,) = (installed.parent.parent / "dist").glob("outcrop-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "outcrop/schemas/config.schema.yaml" in names and "outcrop/schemas/scenes.schema.yaml" in names
    assert any(n.startswith("outcrop/figures/webmap_assets/") for n in names)
    assert not any(n.startswith(("workflow/", "tests/")) for n in names)
