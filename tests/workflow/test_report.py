"""The Snakemake report (the real ``snakemake --report``), ``outcrop info``, and the CLI's help."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from outcrop.cli import build_parser
from outcrop.figures.projection import dominant_surface, pca_2d
from outcrop.figures.report import run_info
from tests.workflow.conftest import TINY_CONFIG, snakemake

SCENES = ["demo_1", "demo_2", "demo_3"]

# Category → figures (paths under results/) the report must show there.
EXPECTED = {
    "Scenes": [f"quicklooks/{s}.png" for s in SCENES],
    "Encoder": ["model/training_curve.png"],
    "Embeddings": ["embeddings/projection_clusters.png", "embeddings/projection_surfaces.png"],
    "Clusters": [f"clusters/maps/{s}.png" for s in SCENES] + ["clusters/dendrogram.png", "clusters/summary.html"],
    "Analogues": [f"analogues/maps/{s}.png" for s in SCENES] + ["analogues/analogues.csv"],
    "Metrics": ["metrics.json", "summary.html", "units.csv"],
    "Map": ["map.html"],
}


def _js_object(page: str, name: str) -> dict:
    """The JSON literal assigned to ``var name = {...}`` in the report page."""
    matches = list(re.finditer(rf"var {name} = (?=\{{\s*\")", page))  # the bundled JS has its own `results`
    assert matches, f"report has no `{name}`"
    value, _ = json.JSONDecoder().raw_decode(page, matches[-1].end())
    return value


@pytest.fixture(scope="module")
def report_page(demo_run, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("report") / "report.html"
    snakemake(demo_run, "--report", str(out))
    return out.read_text()


def test_report_has_every_figure_in_its_category(report_page):
    categories = _js_object(report_page, "categories")
    for category, figures in EXPECTED.items():
        assert category in categories, (category, list(categories))
        listed = {path for sub in categories[category].values() for path in sub}
        for figure in figures:
            assert f"results/{figure}" in listed, (category, figure, sorted(listed))
    assert set(categories["Scenes"]) == set(SCENES)  # one subcategory per scene


def test_report_entries_have_captions_and_data(report_page):
    results = _js_object(report_page, "results")
    wanted = {f"results/{f}" for figures in EXPECTED.values() for f in figures}
    assert wanted <= set(results)
    for path in wanted:
        entry = results[path]
        assert len(re.sub(r"<[^>]+>", "", entry["caption"]).strip()) > 40, path
        assert entry["data_uri"].startswith("data:"), path
    # Captions are rendered templates: the quicklook's names its scene.
    assert "Scene demo_2 as prepared" in results["results/quicklooks/demo_2.png"]["caption"]


def test_outcrop_info_summarises_the_run(demo_run):
    text = run_info(demo_run / "results")
    assert "scenes: 3 (demo_1, demo_2, demo_3)" in text
    match = re.search(
        r"tiles: (\d+), by dominant surface: rock (\d+), vegetation (\d+), snow_ice (\d+), "
        r"water (\d+), cloud (\d+), unknown (\d+)",
        text,
    )
    assert match and int(match[1]) == sum(int(match[i]) for i in range(2, 8)) > 0
    assert re.search(r"model: resnet\S*, embedding dim \d+", text)
    assert re.search(r"index: (flat|ivf|hnsw)\w* .*recall@10 [01]\.\d{3}", text)
    for k in TINY_CONFIG["clusters"]["k"]:
        assert re.search(rf"k{k} \(k-means\): {k} clusters, sizes \[", text)
    assert re.search(r"analogues: \d+ ranked; top 5:", text)
    assert "nearest_positive" in text and "map.html" in text
    assert "without usable tiles" not in text  # every demo scene has tiles
    assert "without usable tiles" not in (demo_run / "results" / "summary.html").read_text()


def test_outcrop_info_on_the_command_line(demo_run):
    proc = subprocess.run(
        [sys.executable, "-m", "outcrop.cli", "info", str(demo_run / "results")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "index:" in proc.stdout and "analogues:" in proc.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "outcrop.cli", "info", str(demo_run / "nowhere")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2 and "no such results folder" in missing.stderr


def test_every_subcommand_has_help_with_an_example():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    names = set(sub.choices)
    assert {"quicklook", "projection", "cluster-table", "analogue-maps", "webmap", "info"} <= names
    for name, p in sub.choices.items():
        text = p.format_help()
        assert "example:" in text, name
        example = text.split("example:")[1]
        assert f"outcrop {name}" in example, name
        assert not re.search(r"(^|\s)\.\.\.(\s|$)", example), f"{name}: example elides arguments"


def test_pca_finds_the_main_axis_and_is_sign_stable():
    rng = np.random.default_rng(0)
    t = rng.normal(size=500)
    data = np.stack([3 * t, -2 * t, 0.1 * rng.normal(size=500), 0.1 * rng.normal(size=500)], axis=1)
    coords, ratio = pca_2d(data)
    assert ratio[0] > 0.95 and abs(np.corrcoef(coords[:, 0], t)[0, 1]) > 0.99
    # The same points in another order get the same coordinates: signs do not flip between runs.
    order = rng.permutation(len(data))
    shuffled, _ = pca_2d(data[order])
    np.testing.assert_allclose(shuffled, coords[order], atol=1e-9)


def test_dominant_surface_picks_the_largest_fraction():
    import pandas as pd

    table = pd.DataFrame(
        {"rock": [0.7, 0.1, 0.2], "snow_ice": [0.2, 0.1, 0.5], "water": [0.1, 0.8, 0.0], "cloud": [0.0, 0.0, 0.3]}
    )
    assert dominant_surface(table).tolist() == [1, 3, 2]


def test_cluster_table_has_a_row_and_thumbnails_per_cluster(demo_run):
    page = (demo_run / "results" / "clusters" / "summary.html").read_text()
    k = max(TINY_CONFIG["clusters"]["k"])
    body = page.split("<tbody>")[1]
    assert body.count("<tr>") == k
    assert body.count('class="thumb"') >= k  # at least one exemplar per cluster
    assert Path(demo_run / "results" / "clusters" / "summary.csv").is_file()
