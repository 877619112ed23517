"""A small synthetic run for the index, clusters and analogues tests: real files, known truth.

Two scenes on the EPSG:3031 run grid (30 m pixels, 8-pixel tiles) whose tiles belong to four
lithologies laid out in bands across each scene; embeddings are noisy copies of one unit vector per
lithology. An alteration signature is planted at two known deposits (scene a), at the tiles around
them (which the exclusion radius must hide) and at hidden analogues far away (scene b and a far
corner of scene a), which a working search must rank first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from rasterio.transform import from_origin
from shapely.geometry import box

from outcrop.io import save_npy, write_prepared
from outcrop.raster.geo import TileLayout
from outcrop.raster.tiles import write_tile_table

CRS = "EPSG:3031"
RES = 30.0
SIZE = 8
BANDS = ["blue", "green", "red", "nir"]
DIM = 16
N_LITH = 4
SPECTRA = np.array(
    [[0.10, 0.12, 0.14, 0.16], [0.30, 0.28, 0.25, 0.22], [0.05, 0.07, 0.20, 0.35], [0.20, 0.20, 0.20, 0.20]]
)
# Scene name -> (top-left x, top-left y, tile rows, tile cols); multiples of the tile size in metres.
SCENES = {
    "a": (-1_200_000.0, 1_800_000.0, 20, 20),
    "b": (-1_080_000.0, 1_740_000.0, 14, 18),
    "c": (-1_000_080.0, 1_700_160.0, 6, 6),
}
ICE_SCENE = "c"  # all snow and ice: no tile has rock
DEPOSITS = {"a": [(4, 4), (15, 5)]}  # (tile row, tile col) of the known deposits
HIDDEN = {"b": [(3, 12), (10, 4)], "a": [(17, 17)]}


@dataclass
class SyntheticRun:
    root: Path
    embeddings: list[Path] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)
    tiles: list[Path] = field(default_factory=list)
    prepared: list[Path] = field(default_factory=list)
    lithology: dict[str, np.ndarray] = field(default_factory=dict)
    hidden: list[tuple[str, int]] = field(default_factory=list)
    halo: list[tuple[str, int]] = field(default_factory=list)
    deposit_xy: list[tuple[float, float]] = field(default_factory=list)
    deposits_csv: Path | None = None


def tile_number(scene: str, r: int, c: int) -> int:
    return r * SCENES[scene][3] + c


def make_run(root: Path, seed: int = 0, noise: float = 0.25, ice_scene: bool = False) -> SyntheticRun:
    """Write the run's files under ``root``; with ``ice_scene`` add scene c, which has no rock."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(N_LITH + 1, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    alteration = centres[N_LITH]
    run = SyntheticRun(root)
    for d in ("embeddings", "tiles", "prepared"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for scene, (x0, y0, nr, nc) in SCENES.items():
        if scene == ICE_SCENE and not ice_scene:
            continue
        rr, cc = np.meshgrid(np.arange(nr), np.arange(nc), indexing="ij")
        rr, cc = rr.ravel(), cc.ravel()
        lith = ((rr + cc // 3) // 4) % N_LITH
        vec = centres[lith] + noise * rng.normal(size=(len(lith), DIM)) / np.sqrt(DIM)
        planted = np.zeros(len(lith), dtype=bool)
        for r, c in DEPOSITS.get(scene, []):
            for dr in (-1, 0, 1):  # the deposit tile and its ring of neighbours
                for dc in (-1, 0, 1):
                    t = tile_number(scene, r + dr, c + dc)
                    planted[t] = True
                    if dr or dc:
                        run.halo.append((scene, t))
            run.deposit_xy.append((x0 + (c + 0.5) * SIZE * RES, y0 - (r + 0.5) * SIZE * RES))
        for r, c in HIDDEN.get(scene, []):
            t = tile_number(scene, r, c)
            planted[t] = True
            run.hidden.append((scene, t))
        vec[planted] = alteration + 0.05 * rng.normal(size=(planted.sum(), DIM)) / np.sqrt(DIM)
        vec /= np.linalg.norm(vec, axis=1, keepdims=True)
        run.lithology[scene] = lith

        rows, cols = rr * SIZE, cc * SIZE
        geoms = [
            box(x0 + c * RES, y0 - (r + SIZE) * RES, x0 + (c + SIZE) * RES, y0 - r * RES) for r, c in zip(rows, cols)
        ]
        rock = np.where(cc % 5 == 0, 0.1, 0.9)  # a column of ice-dominated tiles every 5
        if scene == ICE_SCENE:
            rock = np.zeros(len(lith))
        table = gpd.GeoDataFrame(
            {
                "tile_id": np.arange(len(lith), dtype=np.int64),
                "scene": scene,
                "row": rows.astype(np.int64),
                "col": cols.astype(np.int64),
                "size": np.int64(SIZE),
                "valid": 1.0,
                "rock": rock,
                "snow_ice": 1.0 - rock,
                "water": 0.0,
                "cloud": 0.0,
            },
            geometry=geoms,
            crs=CRS,
        )
        tiles = SPECTRA[lith][:, :, None, None] + 0.01 * rng.normal(size=(len(lith), len(BANDS), SIZE, SIZE))
        reflectance = rng.uniform(0.05, 0.4, size=(len(BANDS), nr * SIZE, nc * SIZE)).astype(np.float32)
        mask = np.ones(reflectance.shape[1:], dtype=np.uint8)
        paths = (
            root / "embeddings" / f"{scene}.npy",
            root / "tiles" / f"{scene}.parquet",
            root / "tiles" / f"{scene}.npy",
            root / "prepared" / f"{scene}.tif",
        )
        save_npy(paths[0], vec.astype(np.float32))
        write_tile_table(paths[1], table, TileLayout(SIZE, SIZE, 0.9))  # tiles side by side
        save_npy(paths[2], tiles.astype(np.float32))
        write_prepared(paths[3], reflectance, mask, CRS, from_origin(x0, y0, RES, RES), BANDS)
        run.embeddings.append(paths[0])
        run.tables.append(paths[1])
        run.tiles.append(paths[2])
        run.prepared.append(paths[3])
    lonlat = gpd.GeoSeries(gpd.points_from_xy(*zip(*run.deposit_xy)), crs=CRS).to_crs("EPSG:4326")
    run.deposits_csv = root / "deposits.csv"
    pd.DataFrame({"name": [f"known {i + 1}" for i in range(len(lonlat))], "lon": lonlat.x, "lat": lonlat.y}).to_csv(
        run.deposits_csv, index=False
    )
    return run


def make_finished_run(root: Path) -> SyntheticRun:
    """The synthetic run, indexed, clustered (k 3 and 6, cut 2) and searched for analogues by the
    real stages, under the file names the workflow gives them (:class:`outcrop.layout.Layout`): a
    small finished results folder."""
    from outcrop.figures.cluster_maps import write_cluster_figures
    from outcrop.layout import Layout
    from outcrop.search.analogues import find_analogues
    from outcrop.search.clusters import cluster_tiles
    from outcrop.search.index import build_index

    quiet = lambda *_: None  # noqa: E731
    run = make_run(root)
    at = Layout(root)
    build_index(run.embeddings, run.tables, Path(at.index), Path(at.index_table), Path(at.index_info), log=quiet)
    clustering = cluster_tiles(
        Path(at.index_table),
        run.embeddings,
        run.tiles,
        run.prepared,
        Path(at.cluster_labels_gpkg),
        Path(at.cluster_labels),
        Path(at.cluster_summary_csv),
        Path(at.cluster_rasters),
        ks=(3, 6),
        cuts=(2,),
        seed=0,
        log=quiet,
    )
    write_cluster_figures(clustering, run.prepared, run.tiles, Path(at.dendrogram), Path(at.cluster_maps))
    find_analogues(
        Path(at.index),
        Path(at.index_table),
        run.embeddings,
        run.deposits_csv,
        run.prepared,
        Path(at.analogues_gpkg),
        Path(at.analogues_csv),
        Path(at.similarity),
        buffer_m=10.0,
        exclusion_km=0.5,
        top=10,
        log=quiet,
    )
    return run
