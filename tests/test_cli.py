"""The command line: every subcommand documents itself; bad input is one line and exit status 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from outcrop.cli import build_parser, main
from outcrop.stages import STAGES

# The workflow's stages (made from their declarations in outcrop.stages) and the commands for users.
SUBCOMMANDS = [*STAGES, "stac-search", "query", "info", "serve"]


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_has_help_with_an_example(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "example:" in out and f"outcrop {name}" in out


def test_parser_knows_every_subcommand():
    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse has no public accessor
    assert set(SUBCOMMANDS) == set(choices)
    assert {
        "demo-scene",
        "prepare",
        "tile",
        "train",
        "embed",
        "index",
        "cluster",
        "analogues",
        "quality",
        "report",
        "webmap",
    } <= set(STAGES)


def test_bad_input_is_one_line_naming_the_file_and_exit_2(tmp_path):
    missing = tmp_path / "nowhere.tif"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "outcrop.cli",
            "tile",
            "--prepared",
            str(missing),
            "--scene",
            "x",
            "--out-tiles",
            str(tmp_path / "t.npy"),
            "--out-table",
            str(tmp_path / "t.parquet"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "nowhere.tif" in lines[0] and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_set_values_parse_as_json_or_text():
    from outcrop.stages import parse_pairs

    assert parse_pairs(["epochs=3", "lr=0.01", "arch=resnet18", 'view1={"blur_p": 0.5}'], "--settings") == {
        "epochs": 3,
        "lr": 0.01,
        "arch": "resnet18",
        "view1": {"blur_p": 0.5},
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["query", "--lon", "142", "--lat", "-67", "--top", "0"], "argument --top: '0' is less than 1"),
        (["query", "--lon", "142", "--lat", "-67", "--top", "-3"], "argument --top: '-3' is less than 1"),
        (["query", "--lon", "nan", "--lat", "-67"], "argument --lon: 'nan' is not a finite number"),
        (
            [
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
                "--resolution",
                "nan",
            ],
            "argument --resolution: 'nan' is not a finite number",
        ),
        (
            [
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
                "--scale",
                "0.0001x",
            ],
            "argument --scale: '0.0001x' is not a number",
        ),
        (
            [
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
                "--max-pixels",
                "-1",
            ],
            "argument --max-pixels: '-1' is less than 1",
        ),
        (
            [
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
                "--max-pixels",
                "0",
            ],
            "argument --max-pixels: '0' is less than 1",
        ),
        (
            [
                "tile",
                "--prepared",
                "p.tif",
                "--scene",
                "s",
                "--out-tiles",
                "t.npy",
                "--out-table",
                "t.parquet",
                "--min-valid",
                "inf",
            ],
            "argument --min-valid: 'inf' is not a finite number",
        ),
        (
            [
                "tile",
                "--prepared",
                "p.tif",
                "--scene",
                "s",
                "--out-tiles",
                "t.npy",
                "--out-table",
                "t.parquet",
                "--stride",
                "0",
            ],
            "argument --stride: '0' is less than 1",
        ),
        (
            ["embed", "--tiles", "t.npy", "--model", "m.pt", "--out", "e.npy", "--batch-size", "0"],
            "argument --batch-size: '0' is less than 1",
        ),
        (
            ["embed", "--tiles", "t.npy", "--model", "m.pt", "--out", "e.npy", "--threads", "0"],
            "argument --threads: '0' is less than 1",
        ),
        (
            ["embed", "--tiles", "t.npy", "--model", "m.pt", "--out", "e.npy", "--spectral-weight", "-1"],
            "argument --spectral-weight: '-1' is less than 0",
        ),
        (
            ["embed", "--tiles", "t.npy", "--model", "m.pt", "--out", "e.npy", "--spectral-weight", "nan"],
            "argument --spectral-weight: 'nan' is not a finite number",
        ),
        (
            [
                "analogues",
                "--index",
                "i",
                "--index-table",
                "t",
                "--embeddings",
                "e",
                "--prepared",
                "p",
                "--deposits",
                "d",
                "--out-gpkg",
                "g",
                "--out-csv",
                "c",
                "--similarity-dir",
                "s",
                "--exclusion-km",
                "inf",
            ],
            "argument --exclusion-km: 'inf' is not a finite number",
        ),
        (
            [
                "cluster",
                "--index-table",
                "t",
                "--embeddings",
                "e",
                "--tiles",
                "t",
                "--prepared",
                "p",
                "--out-gpkg",
                "g",
                "--out-parquet",
                "q",
                "--out-summary",
                "s",
                "--out-dendrogram",
                "d",
                "--maps-dir",
                "m",
                "--rasters-dir",
                "r",
                "--k",
                "1",
            ],
            "argument --k: '1' is less than 2",
        ),
    ],
)
def test_numbers_the_command_line_refuses(argv, message, capsys):
    """``float`` reads 'nan' and 'inf' and ``int`` reads 0 and -3: each would end in a traceback, an
    empty answer or an all-nodata scene rather than a refusal."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_surface_threshold_that_is_no_finite_number(capsys):
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
        "ndsi_snow=nan",
    ]
    assert main(argv) == 2
    assert (
        capsys.readouterr().err.strip() == "outcrop prepare: error: --surfaces: ndsi_snow: nan is not a finite number"
    )


def test_building_the_parser_imports_nothing_heavy():
    """`outcrop --help` and every subcommand's options come from the stage declarations and the
    schema alone: no stage module, no array or geometry library, not even the schema validator."""
    code = (
        "import sys; from outcrop.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('numpy', 'jsonschema', 'torch', 'faiss', 'rasterio', 'geopandas', 'pandas', "
        "'pyarrow', 'shapely', 'outcrop.raster', 'outcrop.search', 'outcrop.learning', 'outcrop.figures') "
        "if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
