"""Every CSV the project writes: text that a spreadsheet would run as a formula is marked as text,
text cells are quoted, and the project's own reader gives back what was written."""

from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd
import pytest

from outcrop.csvfile import FORMULA_START, csv_cell, plain_cell, read_csv, write_csv
from outcrop.search.query import COLUMNS, format_csv

# OWASP's formula starters, the tab and carriage return a spreadsheet skips before one, their
# full-width forms, quotes that must survive reading back, and names that are harmless as they are.
NAMES = [
    '=cmd|" /C calc"!A0',
    "+1+1",
    "-1+1",
    "@SUM(1)",
    "\t=1+1",
    "\r=1+1",
    "\n=1",
    "\uff1d1+1",
    "'",
    "'=x",
    "''",
    "'plain",
    "a;=1+1",
    "a,b",
    'say "hi"',
    "Mt Erebus",
    "",
    "1e5",
    "-",
]


def _cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def test_no_text_cell_starts_a_formula_and_every_name_reads_back(tmp_path):
    frame = pd.DataFrame({"name": NAMES, "score": np.linspace(-1, 1, len(NAMES)), "rank": range(len(NAMES))})
    path = tmp_path / "t.csv"
    write_csv(frame, path, float_format="%.6f")
    with open(path, newline="") as fh:
        text = fh.read()
    rows = _cells(text)
    assert rows[0] == ["name", "score", "rank"] and len(rows) == len(NAMES) + 1
    for row in rows[1:]:
        assert not row[0].startswith(FORMULA_START), row
        assert row[1].startswith("-") or float(row[1]) >= 0  # numbers are written as numbers
    assert text.count('"a;=1+1"') == 1  # quoted: a ';'-separated spreadsheet keeps it one cell
    back = read_csv(path, keep_default_na=False)
    assert back["name"].tolist() == NAMES
    np.testing.assert_allclose(back["score"], frame["score"], atol=1e-6)
    assert back["rank"].tolist() == list(range(len(NAMES)))


@pytest.mark.parametrize("name", NAMES)
def test_a_cell_is_marked_only_when_it_must_be(name):
    cell = csv_cell(name)
    assert plain_cell(cell) == name
    assert not cell.startswith(FORMULA_START)
    assert (cell == name) == (not name.startswith((*FORMULA_START, "'")))
    assert csv_cell(-1.5) == -1.5 and plain_cell(-1.5) == -1.5  # numbers are data


def test_query_csv_marks_text_cells():
    """`outcrop query --format csv`: the scene column comes from the run's index table."""
    columns = {name: np.arange(2) for name in COLUMNS}
    columns["scene"] = np.array(["=1+1", "a"], dtype=object)
    columns["score"] = np.array([-0.5, 0.25])
    rows = _cells(format_csv(columns))
    scene, score = COLUMNS.index("scene"), COLUMNS.index("score")
    assert [r[scene] for r in rows[1:]] == ["'=1+1", "a"]
    assert [float(r[score]) for r in rows[1:]] == [-0.5, 0.25]
