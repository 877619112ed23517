"""What a new user reads says one thing: the training cost from one measured figure, every sensor in
the README's table, an ETA that follows the current load, and the training budget in views and steps."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from outcrop.learning.encoder_settings import (
    MEASURED_ON,
    MEASURED_VIEWS_PER_SECOND,
    EncoderSettings,
    measured_cost,
    measured_minutes,
)
from outcrop.raster.sensors import SENSORS
from outcrop.runtime.progress import RateWindow

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
CONFIG = (REPO / "config.yaml").read_text()
DEMO_VIEWS = 116_000  # the demo's 100 passes over its tiles, as the README says


def _flat(text: str) -> str:
    """Text with comment marks and line breaks folded, so a phrase split over lines reads whole."""
    return re.sub(r"\s+", " ", re.sub(r"(?m)^\s*#\s?|\s+#\s", " ", text))


@pytest.mark.parametrize("name, text", [("README.md", README), ("config.yaml", CONFIG)])
def test_training_time_is_the_one_measured_figure(name, text):
    flat = _flat(text)
    budget = EncoderSettings().samples
    assert measured_cost(budget) in flat, f"{name} does not state {measured_cost(budget)!r}"
    # every training time it gives is that figure, for the budget or the demo's views
    allowed = {measured_minutes(budget), measured_minutes(DEMO_VIEWS)}
    said = {float(m) for m in re.findall(r"about (\d+(?:\.\d+)?) min(?:utes)?\b", flat)}
    assert said and said <= allowed, f"{name} gives training times {sorted(said)}, not {sorted(allowed)}"
    assert MEASURED_ON in flat and f"{MEASURED_VIEWS_PER_SECOND} views/s" in flat


def test_the_training_log_states_the_same_figure(tmp_path):
    from tests.learning.test_encoder import TINY, textures, train, write_scene

    lines: list[str] = []
    scene = write_scene(tmp_path / "tiles", "a", textures(40)[0])
    train(tmp_path, [scene], TINY, log=lines.append)
    budget = next(line for line in lines if line.startswith("budget "))
    views = int(budget.split()[1])
    assert budget.startswith(f"budget {views} views: {measured_cost(views)}; the ETA below is this machine's")
    step = next(line for line in lines if line.startswith("step "))
    assert re.search(r"eta \d+m\d\ds \(at the rate of the last \d+ s\)$", step), step


def test_the_eta_follows_the_current_rate_not_the_average_since_the_start():
    window = RateWindow(60.0)
    t = done = 0.0
    window.add(t, done)
    for _ in range(120):  # two minutes at 100 views/s
        t, done = t + 1.0, done + 100.0
        window.add(t, done)
    assert window.rate() == pytest.approx(100.0)
    for _ in range(90):  # the cores get busy: 25 views/s for a minute and a half
        t, done = t + 1.0, done + 25.0
        window.add(t, done)
    assert window.rate() == pytest.approx(25.0)  # the average since the start: 75
    assert window.eta(1000.0) == pytest.approx(40.0)
    assert window.span_s == pytest.approx(60.0)
    assert RateWindow().eta(10.0) == float("inf")  # no rate yet: no ETA pretended


def test_every_sensor_is_in_the_readme_table_with_what_it_reads():
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([a-z0-9-]+)`.*\|$", README, flags=re.M)}
    for name in SENSORS:
        assert name in rows or f"`{name}`" in next(r for r in rows.values() if "also" in r), name
    assert "Collection 1" in rows["landsat-c2l1"] and "Collection 2" in rows["landsat-c2l1"]
    assert "`landsat-l1`, the same reader" in rows["landsat-c2l1"]
    assert "Collection 2 Level-2" in rows["landsat-c2l2"] and "0.0000275" in rows["landsat-c2l2"]
    assert "L2A" in rows["sentinel2-l2a"] and "L1C" in rows["sentinel2-l1c"]
    assert "**float** data is taken as reflectance as it is" in rows["geotiff"]
    assert "**integer** data without `scale`" in rows["geotiff"]


def test_info_gives_a_budgeted_training_in_views_and_steps(tmp_path):
    import torch

    from outcrop.figures.report import run_info
    from outcrop.learning.encoder import FORMAT_VERSION, MODEL_FORMAT

    model = tmp_path / "results" / "model" / "encoder.pt"
    model.parent.mkdir(parents=True)
    settings = EncoderSettings().to_dict()  # epochs None: the budget of samples decides
    torch.save(
        {
            "format": MODEL_FORMAT,
            "format_version": FORMAT_VERSION,
            "state_dict": {},
            "metadata": {
                "arch": "resnet-small",
                "embedding_dim": 128,
                "bands": ["red"],
                "settings": settings,
                "train_tiles": 460_000,
                "steps": 1563,
                "final_loss": 0.3,
            },
        },
        model,
    )
    text = run_info(tmp_path / "results")
    assert "None" not in text
    assert (
        "trained on 460000 tiles: 200064 views in 1563 steps of 128 (0.435 passes over the tiles; "
        "a budget of 200000 views)"
    ) in text
