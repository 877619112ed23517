"""The command line: every subcommand documents itself; bad input is one line and exit status 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from outcrop.cli import build_parser, main

SUBCOMMANDS = ["demo-scene", "demo-deposits", "prepare", "tile", "train", "embed", "index", "cluster",
               "analogues", "evaluate", "report", "query", "info"]


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
    assert set(SUBCOMMANDS) <= set(choices)


def test_bad_input_is_one_line_naming_the_file_and_exit_2(tmp_path):
    missing = tmp_path / "nowhere.tif"
    proc = subprocess.run(
        [sys.executable, "-m", "outcrop.cli", "tile", "--prepared", str(missing), "--scene", "x",
         "--out-tiles", str(tmp_path / "t.npy"), "--out-table", str(tmp_path / "t.parquet")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "nowhere.tif" in lines[0] and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_set_values_parse_as_json_or_text():
    from outcrop.cli import _parse_sets

    assert _parse_sets(["epochs=3", "lr=0.01", "arch=resnet18", "view1={\"blur_p\": 0.5}"]) == {
        "epochs": 3, "lr": 0.01, "arch": "resnet18", "view1": {"blur_p": 0.5}}
