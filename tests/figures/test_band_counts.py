"""Any band count from one: the config accepts it, and the quicklook names the composite it shows."""

from __future__ import annotations

import numpy as np
import rasterio

from outcrop.config import validate_config
from outcrop.figures.quicklook import composite_bands, composite_name, write_quicklook
from outcrop.io import prepared_writer


def test_one_band_is_a_valid_run():
    config = {"bands": ["pan"]}
    validate_config(config, "config")
    assert config["bands"] == ["pan"]


def test_visible_bands_show_true_colour_in_red_green_blue_order():
    bands = ["blue", "green", "red"]
    assert [bands[i] for i in composite_bands(bands)] == ["red", "green", "blue"]
    assert composite_name(bands) == "true colour (red/green/blue)"


def test_swir_bands_show_geological_false_colour():
    bands = ["blue", "green", "red", "nir", "swir1", "swir2"]
    assert [bands[i] for i in composite_bands(bands)] == ["swir2", "swir1", "red"]
    assert composite_name(bands) == "false colour (swir2/swir1/red)"
    assert composite_name(["pan"]) == "grey (pan)"


def test_quicklook_of_an_rgb_scene_is_labelled_true_colour(tmp_path):
    from rasterio.transform import from_origin

    refl = np.random.default_rng(0).uniform(0.05, 0.3, (3, 64, 64)).astype(np.float32)
    mask = np.full((64, 64), 5, np.uint8)
    prepared = tmp_path / "p.tif"
    with prepared_writer(
        prepared, "EPSG:32621", from_origin(500000, 7000000, 30, 30), ["blue", "green", "red"], (64, 64), {"scene": "p"}
    ) as write:
        write(0, 0, refl, mask)
    write_quicklook(prepared, tmp_path / "q.png", tmp_path / "q.tif", scene="p", log=lambda _: None)
    with rasterio.open(tmp_path / "q.tif") as src:
        assert src.tags()["composite"] == "red,green,blue"
        assert src.tags()["composite_name"] == "true colour (red/green/blue)"
        red = src.read(1)
    # the red channel is the red band's stretch, not the blue one's
    assert np.corrcoef(red.ravel().astype(float), refl[2].ravel())[0, 1] > 0.95


def test_info_counts_unknown_ground_apart_from_rock(tmp_path):
    """An RGB scene's tiles are all of the unknown class: `outcrop info` and the summary say so, not rock."""
    import pandas as pd

    from outcrop.figures.report import run_info

    tiles = tmp_path / "results" / "tiles"
    tiles.mkdir(parents=True)
    n = 7
    pd.DataFrame(
        {"tile_id": range(n), "scene": "rgb", "rock": 0.0, "snow_ice": 0.0, "water": 0.0, "cloud": 0.0, "unknown": 1.0}
    ).to_parquet(tiles / "rgb.parquet")
    # A table from before the class existed reads it as none of the tile.
    pd.DataFrame(
        {"tile_id": range(3), "scene": "old", "rock": 1.0, "snow_ice": 0.0, "water": 0.0, "cloud": 0.0}
    ).to_parquet(tiles / "old.parquet")
    text = run_info(tmp_path / "results")
    assert "tiles: 10, by dominant surface: rock 3, vegetation 0, snow_ice 0, water 0, cloud 0, unknown 7" in text
    assert "rgb: 7 tiles (rock 0, vegetation 0, snow_ice 0, water 0, cloud 0, unknown 7)" in text


def test_info_counts_vegetated_tiles_apart_from_rock(tmp_path):
    """A forest's tiles are vegetation in `outcrop info`, not rock (tables before the class read 0)."""
    import pandas as pd

    from outcrop.figures.report import run_info

    tiles = tmp_path / "results" / "tiles"
    tiles.mkdir(parents=True)
    pd.DataFrame(
        {
            "tile_id": range(5),
            "scene": "forest",
            "rock": 0.1,
            "snow_ice": 0.0,
            "water": 0.0,
            "cloud": 0.0,
            "unknown": 0.0,
            "vegetation": 0.9,
        }
    ).to_parquet(tiles / "forest.parquet")
    pd.DataFrame(
        {"tile_id": range(2), "scene": "ice", "rock": 0.0, "snow_ice": 1.0, "water": 0.0, "cloud": 0.0, "unknown": 0.0}
    ).to_parquet(tiles / "ice.parquet")
    text = run_info(tmp_path / "results")
    assert "forest: 5 tiles (rock 0, vegetation 5, snow_ice 0, water 0, cloud 0, unknown 0)" in text
    assert "ice: 2 tiles (rock 0, vegetation 0, snow_ice 2, water 0, cloud 0, unknown 0)" in text
