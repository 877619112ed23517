"""A scene that is all cloud stops nothing: it gets an empty tile table and the run goes on without it.

The real workflow runs on a scene sheet of two demo scenes and two scenes whose every pixel is
cloud: C, an index scene, and D, a training scene. Their tiles stage writes empty tables; training
uses the other scene's tiles; embedding, index, clusters, analogues, maps and reports cope; the run
summary and ``outcrop info`` name both as scenes without usable tiles. A known deposit that lies
only on C meets no indexed tile: the analogue stage names it in a warning and ranks with the others,
and the summary and ``outcrop info`` repeat the warning.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from outcrop.cli import main
from tests.workflow.conftest import TINY_CONFIG, snakemake, write_config

pytestmark = pytest.mark.workflow

SIZE = 192  # px of each scene: small, and still enough tiles to train on
# Landsat Collection 2 Level-2 rescaling, and a bright cloud spectrum (coastal … swir2).
C2L2_SCALE, C2L2_OFFSET = 0.0000275, -0.2
CLOUD = [0.60, 0.58, 0.57, 0.55, 0.55, 0.45, 0.35]
BANDS = ["coastal", "blue", "green", "red", "nir", "swir1", "swir2"]


def outcrop(*args: object) -> None:
    assert main([str(a) for a in args]) == 0, args


def write_cloud_scene(path: Path, left: float, top: float) -> Path:
    """A Level-2-style scene (uint16 DN, canonical band names) that is cloud in every pixel."""
    dn = np.round((np.array(CLOUD) - C2L2_OFFSET) / C2L2_SCALE).astype(np.uint16)
    data = np.broadcast_to(dn[:, None, None], (len(BANDS), SIZE, SIZE))
    profile = {
        "driver": "GTiff",
        "width": SIZE,
        "height": SIZE,
        "count": len(BANDS),
        "dtype": "uint16",
        "crs": "EPSG:3031",
        "transform": Affine(30.0, 0, left, 0, -30.0, top),
        "nodata": 0,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, name in enumerate(BANDS, start=1):
            dst.set_band_description(i, name)
    return path


def add_deposit(path: Path, name: str, x: float, y: float) -> None:
    """One more known deposit in the deposits file, at (x, y) in its CRS."""
    import geopandas as gpd
    import pandas as pd
    from shapely.geometry import Point

    known = gpd.read_file(path)
    more = gpd.GeoDataFrame({"name": [name]}, geometry=[Point(x, y)], crs=known.crs)
    gpd.GeoDataFrame(pd.concat([known, more], ignore_index=True), crs=known.crs).to_file(path)


@pytest.fixture(scope="module")
def cloudy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two demo scenes (one trains), an all-cloud index scene C and training scene D, run to the end."""
    from outcrop.raster.demo import DemoLayout

    workdir = tmp_path_factory.mktemp("cloudy_run")
    scenes = workdir / "scenes"
    scenes.mkdir()
    for name in ("demo_1", "demo_2"):
        outcrop(
            "demo-scene",
            "--scene",
            name,
            "--size",
            SIZE,
            "--out",
            scenes / f"{name}.tif",
            "--truth",
            scenes / f"{name}_units.tif",
        )
    outcrop(
        "demo-deposits",
        "--scenes",
        2,
        "--size",
        SIZE,
        "--out",
        workdir / "deposits.gpkg",
        "--truth",
        workdir / "hidden.gpkg",
    )
    left, _, right, top = DemoLayout(size=SIZE).bounds(2)
    write_cloud_scene(scenes / "C.tif", left, top)
    add_deposit(workdir / "deposits.gpkg", "Cloudy Bluff", left + 0.8 * (right - left), top - SIZE * 15.0)
    write_cloud_scene(scenes / "D.tif", *DemoLayout(size=SIZE).origin(0))
    sheet = workdir / "scenes.tsv"
    sheet.write_text(
        "scene\tsource\tsensor\trole\n"
        f"demo_1\t{scenes / 'demo_1.tif'}\tlandsat-c2l2\ttrain\n"
        f"demo_2\t{scenes / 'demo_2.tif'}\tlandsat-c2l2\tindex\n"
        f"C\t{scenes / 'C.tif'}\tlandsat-c2l2\tindex\n"
        f"D\t{scenes / 'D.tif'}\tlandsat-c2l2\ttrain\n"
    )
    write_config(workdir, {**TINY_CONFIG, "scenes": str(sheet), "deposits": str(workdir / "deposits.gpkg")})
    snakemake(workdir, "--cores", "2")
    return workdir


def test_all_cloud_scenes_leave_the_run_to_finish(cloudy_run):
    import pandas as pd

    results = cloudy_run / "results"
    for path in (
        "model/encoder.pt",
        "index/tiles.faiss",
        "clusters/labels.gpkg",
        "analogues/analogues.csv",
        "summary.html",
        "map.html",
        "clusters/summary.html",
        "embeddings/projection_clusters.png",
    ):
        assert (results / path).is_file(), path
    for scene in "CD":
        assert np.load(results / f"tiles/{scene}.npy").shape[0] == 0
        assert np.load(results / f"embeddings/{scene}.npy").shape[0] == 0
        assert f"{scene}: no usable tiles" in (cloudy_run / f"results/logs/tiles/{scene}.log").read_text()
        for folder in ("clusters/maps", "analogues/maps"):
            assert (results / folder / f"{scene}.png").is_file(), (folder, scene)
        for folder in ("clusters/rasters", "analogues/similarity"):  # all nodata, on the scene's grid
            with rasterio.open(results / folder / f"{scene}.tif") as src:
                assert src.read(1, masked=True).mask.all(), (folder, scene)
    index = pd.read_parquet(results / "index/tiles.parquet", columns=["scene"])
    assert set(index["scene"]) == {"demo_1", "demo_2"}


def test_the_summary_and_info_name_the_scenes_without_tiles(cloudy_run, capsys):
    line = "scenes without usable tiles: C (all cloud), D (all cloud)"
    assert line in (cloudy_run / "results/summary.html").read_text()
    assert main(["info", str(cloudy_run / "results")]) == 0
    assert line in capsys.readouterr().out.splitlines()


def test_a_deposit_only_on_the_cloud_scene_is_named_and_the_run_finishes(cloudy_run, capsys):
    import json

    results = cloudy_run / "results"
    log = (results / "logs" / "analogues.log").read_text()
    assert "warning: 1 of " in log and "meet no indexed tile" in log and "'Cloudy Bluff' (feature " in log
    assert "Cloudy Bluff" not in set(pd_read(results / "analogues" / "analogues.csv")["nearest_positive"])
    loo = json.loads((results / "metrics.json").read_text())["leave_one_out"]
    assert loo["without_tiles"]["count"] == 1 and "'Cloudy Bluff'" in loo["without_tiles"]["named"][0]
    warning = "warning: known deposits that meet no indexed tile"
    summary = (results / "summary.html").read_text()
    assert warning in summary and "&#x27;Cloudy Bluff&#x27; (feature " in summary
    assert main(["info", str(results)]) == 0
    assert any(line.startswith(warning) and "'Cloudy Bluff'" in line for line in capsys.readouterr().out.splitlines())


def pd_read(path: Path):
    import pandas as pd

    return pd.read_csv(path)
