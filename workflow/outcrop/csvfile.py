"""CSV files the project writes, with text cells that a spreadsheet shows and never runs.

Spreadsheets read a cell that begins with ``=``, ``+``, ``-`` or ``@`` as a formula, and skip a
leading tab or carriage return to find one (OWASP "CSV injection"). Deposit names come from the
user's files and reach ``analogues.csv`` verbatim: a deposit named ``=cmd|" /C calc"!A0`` would
run a command when a geologist opens the table. Every CSV the project writes goes through
:func:`write_csv` or :func:`csv_cell`, which put a ``'`` (a spreadsheet's mark for "this is text")
before such a cell and writes every text cell in double quotes; the project's own readers use
:func:`read_csv`, which takes it off again, so a name reads back as it was written. GeoPackages,
GeoJSON and Parquet keep every value as it is: no GIS runs a cell.

A text cell that already begins with ``'`` gets one more, so that reading back never takes off a
quote that was part of the name. Numbers are never changed (``-0.5`` in a number column is data).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

# What a spreadsheet starts a formula with, or skips before one; the full-width forms too, which
# input methods turn into the ASCII ones and which cost nothing to cover.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")
_TEXT_MARK = "'"


def csv_cell(value: Any) -> Any:
    """``value`` as a CSV cell: text that a spreadsheet would read as a formula gets a ``'`` before it."""
    if isinstance(value, str) and value.startswith((*FORMULA_START, _TEXT_MARK)):
        return _TEXT_MARK + value
    return value


def plain_cell(value: Any) -> Any:
    """The text :func:`csv_cell` was given, from the cell it wrote."""
    if isinstance(value, str) and value.startswith(_TEXT_MARK) and value[1:].startswith((*FORMULA_START, _TEXT_MARK)):
        return value[1:]
    return value


def _text_columns(frame: Any) -> list[Any]:
    from pandas.api.types import is_object_dtype, is_string_dtype

    return [c for c in frame.columns if is_object_dtype(frame[c]) or is_string_dtype(frame[c])]


def csv_frame(frame: Any) -> Any:
    """A copy of a DataFrame with every text cell and column name made safe by :func:`csv_cell`."""
    out = frame.copy()
    for column in _text_columns(out):
        out[column] = out[column].map(csv_cell)
    out.columns = [csv_cell(c) for c in out.columns]
    return out


def plain_frame(frame: Any) -> Any:
    """A DataFrame read from a CSV of :func:`write_csv`, its text cells and column names as they were given."""
    for column in _text_columns(frame):
        frame[column] = frame[column].map(plain_cell)
    frame.columns = [plain_cell(c) for c in frame.columns]
    return frame


def csv_text(frame: Any, **to_csv: Any) -> str:
    """A DataFrame as formula-safe CSV text (for a file, or a download that is never a file here)."""
    import io

    buf = io.StringIO()
    # Every text cell in double quotes: a spreadsheet that splits rows at ';' or tabs (its locale's
    # separator) then keeps "a;=1+1" one cell instead of making "=1+1" a cell of its own, and a
    # carriage return inside a name cannot end the row. (Floats written through float_format are
    # quoted too; spreadsheets and pandas still read them as numbers.)
    csv_frame(frame).to_csv(buf, index=False, quoting=csv.QUOTE_NONNUMERIC, **to_csv)
    return buf.getvalue()


def write_csv(frame: Any, path: str | Path, **to_csv: Any) -> None:
    """Write a DataFrame as CSV (whole or not at all, :func:`outcrop.io.atomic_path`), formula-safe."""
    from outcrop.io import atomic_path

    with atomic_path(Path(path)) as tmp:
        tmp.write_text(csv_text(frame, **to_csv), encoding="utf-8")


def read_csv(path: str | Path, **read_csv: Any) -> Any:
    """Read a CSV that :func:`write_csv` wrote, with its values as they were before writing."""
    import pandas as pd

    return plain_frame(pd.read_csv(path, **read_csv))


__all__ = ["FORMULA_START", "csv_cell", "plain_cell", "csv_frame", "plain_frame", "csv_text", "write_csv", "read_csv"]
