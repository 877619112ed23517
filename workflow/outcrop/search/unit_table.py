"""The per-unit table of a run's agreement with its geological map: one row per unit, its tiles and
each feature set's kNN recall of it (``units.csv``, and the summary's table).

Kept apart from the scoring (:mod:`outcrop.search.unit_agreement`) so that the pages that show it
need nothing but the scores themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TABLE_SETS = (
    "byol",
    "random_joined",
    "spectral_parts",
    "band_statistics",
    "random_encoder",
    "raw_spectral",
    "raw_pixels",
)


def unit_rows(block: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per unit: its tiles and each feature set's kNN recall of it (the per-unit table)."""
    rows = []
    for unit, count in (block.get("units") or {}).items():
        row: dict[str, Any] = {"unit": unit, "tiles": count}
        for name in TABLE_SETS:
            recall = (block.get(name) or {}).get("knn_recall") if isinstance(block.get(name), dict) else None
            if isinstance(recall, dict):
                row[f"recall {name}"] = recall.get(unit)
        rows.append(row)
    return rows


def write_units_table(path: Path, block: dict[str, Any]) -> None:
    """The per-unit table as CSV (the Snakemake report shows it): unit, tiles, kNN recall per feature set."""
    import pandas as pd

    from outcrop.io import atomic_path

    rows = unit_rows(block)
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["unit", "tiles"])
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.3f")
