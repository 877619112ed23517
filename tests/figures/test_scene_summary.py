"""What `outcrop info` and the summary say of each scene: its tiles by surface class, vegetation among
them, and how its numbers became reflectance (a float GeoTIFF is taken as reflectance as it is)."""

from __future__ import annotations

from pathlib import Path

from outcrop.figures.report import run_info, write_summary
from outcrop.raster.scenes import prepare_scene
from outcrop.raster.tiles import tile_scene

AMAZON = Path(__file__).resolve().parents[1] / "data" / "amazon_tucurui_tm5.tif"
SIX = ["blue", "green", "red", "nir", "swir1", "swir2"]


def _amazon_run(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    prepared = results / "prepared" / "amazon.tif"
    prepare_scene(
        str(AMAZON),
        "geotiff",
        prepared,
        scene_id="amazon",
        bands=SIX,
        declared_bands=SIX,
        crs="EPSG:32622",
        resolution=30,
        log=lambda _: None,
    )
    tile_scene(
        prepared,
        results / "tiles" / "amazon.npy",
        results / "tiles" / "amazon.parquet",
        scene_id="amazon",
        log=lambda _: None,
    )
    return results


def test_info_names_vegetation_and_float_reflectance(tmp_path):
    results = _amazon_run(tmp_path)
    text = run_info(results)
    line = next(x for x in text.splitlines() if x.startswith("  amazon:") and "tiles" in x)
    counts = dict(part.rsplit(" ", 1) for part in line.split("(")[1].rstrip(")").split(", "))
    assert int(counts["vegetation"]) > 0.9 * sum(int(v) for v in counts.values())
    assert "reflectance:\n  amazon: float data taken as reflectance" in text


def test_summary_names_vegetation_and_float_reflectance(tmp_path):
    results = _amazon_run(tmp_path)
    out = results / "summary.html"
    write_summary(
        ["amazon"],
        out,
        tile_tables=[results / "tiles" / "amazon.parquet"],
        prepared=[results / "prepared" / "amazon.tif"],
        training_curve=tmp_path / "none.png",
        dendrogram=tmp_path / "none.png",
        cluster_maps=[tmp_path / "none.png"],
        index_info=tmp_path / "none.json",
        log=lambda _: None,
    )
    page = out.read_text()
    assert "<h2>Scenes and surfaces</h2>" in page
    assert "<th>vegetation</th>" in page and "<th>snow/ice</th>" in page
    assert "float data taken as reflectance" in page
