"""A finished run as Python objects, for notebooks and scripts: ``outcrop.open_run("results")``.

Why: every output is a standard file (GeoParquet, GeoPackage, .npy, COG), but knowing which file
holds what, and how rows line up (a tile's ``id`` in the index, its ``tile_id`` in its scene), is
the run's business, not the user's. Tables come as geopandas GeoDataFrames, embeddings as
memory-mapped numpy arrays and rasters as numpy arrays with their transform and CRS. No xarray:
the arrays and an affine transform are all a raster is here, and xarray would be one more heavy
dependency for the same numbers.

Everything is read when first asked for, so opening a run costs nothing.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from outcrop.csvfile import read_csv
from outcrop.errors import OutcropError
from outcrop.io import load_npy, read_geoparquet, read_vector
from outcrop.layout import Layout


@dataclass(frozen=True)
class Raster:
    """One band of a run's raster: values (nodata as NaN for float rasters), transform, CRS, and
    the class names GDAL would show (``{7: "cluster 7"}``; empty where the raster has none)."""

    values: np.ndarray
    transform: Any
    crs: Any
    nodata: float | int | None
    classes: dict[int, str]


class Run:
    """The outputs of one finished run (see ``docs/outputs.md`` for every field)."""

    def __init__(self, results: str | os.PathLike[str]) -> None:
        self.results = Path(results)
        self.layout = Layout(self.results)  # every path comes from the run's layout
        if not Path(self.layout.index_table).is_file():
            raise OutcropError(f"{self.results}: not a finished run (no index/tiles.parquet)")

    def __repr__(self) -> str:
        return f"Run({str(self.results)!r}: {len(self.scenes)} scenes, {len(self.index)} indexed tiles)"

    @functools.cached_property
    def index(self) -> Any:
        """The indexed tiles (GeoDataFrame): ``id`` (row of the FAISS index), scene, tile_id, footprint."""
        return read_geoparquet(Path(self.layout.index_table))

    @functools.cached_property
    def scenes(self) -> list[str]:
        """Scenes of the run, those with a tile table, in sorted order."""
        return sorted(p.stem for p in Path(self.layout.tiles_folder).glob("*.parquet"))

    @functools.cached_property
    def tiles(self) -> Any:
        """Every tile of every scene (GeoDataFrame), indexed or not, with its surface shares."""
        import pandas as pd

        tables = [read_geoparquet(Path(self.layout.tile_table(s))) for s in self.scenes]
        if not tables:
            raise OutcropError(f"{self.layout.tiles_folder}: no tile tables")
        return pd.concat(tables, ignore_index=True)

    def embeddings(self, scene: str) -> np.ndarray:
        """The (tiles, dimension) embeddings of ``scene``, memory-mapped, row i = tile_id i."""
        self._known(scene)
        return load_npy(Path(self.layout.embeddings(scene)))

    def indexed_embeddings(self) -> np.ndarray:
        """(indexed tiles, dimension) float32: row i is the tile with ``id`` i in :attr:`index`."""
        table = self.index
        out = None
        for scene in table["scene"].unique():
            rows = table["scene"].to_numpy() == scene
            emb = self.embeddings(str(scene))
            if out is None:
                out = np.zeros((len(table), emb.shape[1]), dtype=np.float32)
            out[table["id"].to_numpy()[rows]] = emb[table["tile_id"].to_numpy()[rows]]
        return out if out is not None else np.zeros((0, 0), dtype=np.float32)

    @functools.cached_property
    def clusters(self) -> Any:
        """Cluster labels of every indexed tile at each level (``k4``, ``h6``, ...) (GeoDataFrame)."""
        return read_geoparquet(Path(self.layout.cluster_labels))

    @functools.cached_property
    def cluster_summary(self) -> Any:
        """Per level and cluster: size, share, mean spectrum, surface shares (DataFrame)."""
        path = Path(self.layout.cluster_summary_csv)
        if not path.is_file():
            raise OutcropError(f"{path}: file not found")
        return read_csv(path)

    @property
    def levels(self) -> list[str]:
        """The cluster levels of the run (``k4``, ``k12``, ``h6``...), as columns of :attr:`clusters`."""
        return [c for c in self.clusters.columns if c[:1] in "kh" and c[1:].isdigit()]

    @functools.cached_property
    def analogues(self) -> Any:
        """The ranked analogues (GeoDataFrame of tile footprints), best first."""
        path = Path(self.layout.analogues_gpkg)
        if not path.is_file():
            raise OutcropError(f"{path}: file not found")
        return read_vector(path)

    def cluster_raster(self, scene: str, level: str | None = None) -> Raster:
        """The label raster of ``scene`` at ``level`` (default: the finest k, as the map shows)."""
        self._known(scene)
        path = self.layout.cluster_level_raster(level, scene) if level else self.layout.cluster_raster(scene)
        return _read_raster(Path(path))

    def similarity(self, scene: str) -> Raster:
        """Best cosine similarity of each tile cell of ``scene`` to the known deposits."""
        self._known(scene)
        return _read_raster(Path(self.layout.similarity_raster(scene)))

    @functools.cached_property
    def index_info(self) -> dict[str, Any]:
        """The index's kind, size and measured recall (index/info.json)."""
        return json.loads(Path(self.layout.index_info).read_text())

    def _known(self, scene: str) -> None:
        if scene not in self.scenes:
            raise OutcropError(f"{self.results}: no scene {scene!r} (scenes: {', '.join(self.scenes)})")


def _read_raster(path: Path) -> Raster:
    import rasterio

    from outcrop.io import read_categories

    try:
        with rasterio.open(path) as src:
            values = src.read(1)
            if values.dtype.kind == "f" and src.nodata is not None and not np.isnan(src.nodata):
                values = np.where(values == src.nodata, np.nan, values)
            return Raster(values, src.transform, src.crs, src.nodata, read_categories(path).get(1, {}))
    except rasterio.errors.RasterioIOError as exc:
        raise OutcropError(f"{path}: cannot read raster ({exc})") from None


def open_run(results: str | os.PathLike[str] = "results") -> Run:
    """Open a finished run's results folder (see :class:`Run`)."""
    return Run(results)
