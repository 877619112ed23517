"""Names from a user's files are text on every page: markup in them is shown, never run.

A deposit called ``<img src=x onerror=…>`` or ``</script><script>…`` reaches ``map.html`` (its
popup, and every analogue's "matched deposit"), ``summary.html`` and the cluster table. The
fast tests build each page from a small real run (``hostile_run.py``) with hostile deposit names,
scene ids, band names, cluster level and run title, and read the markup; the last opens the map in
a real headless Chromium, clicks the markers and checks that the names are shown and nothing ran.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import time
import urllib.parse
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio

from hostile_run import HOSTILE, IMG, SCRIPT, HostileRun, make_hostile_run
from outcrop import OutcropError
from outcrop.cli import main
from outcrop.figures.cluster_table import write_cluster_table
from outcrop.figures.report import summary_of_run
from outcrop.figures.webmap import json_for_script, write_webmap
from outcrop.io import read_geoparquet, save_npy, write_geodataframe
from tests.workflow.test_webmap import browser  # noqa: F401  (the headless Chromium fixture)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> HostileRun:
    return make_hostile_run(tmp_path_factory.mktemp("hostile"))


def _assert_no_raw_markup(page: str) -> None:
    for payload in HOSTILE:
        assert payload not in page
    assert 'onerror="' not in page and "<img src=x" not in page.lower()


def _data_of(page: str) -> dict:
    """The map's embedded JSON, as the browser's ``JSON.parse`` would read it."""
    match = re.search(r'<script id="outcrop-data" type="application/json">(.*?)</script>', page, re.S)
    assert match, "the map's data element is missing or was closed early"
    return json.loads(match.group(1))


def _with_level(rasters: list[Path], folder: Path, level: str) -> list[Path]:
    """Copies of the cluster rasters whose ``level`` tag (shown in the map's layer names) is ``level``."""
    out = []
    for path in rasters:
        out.append(folder / f"clusters_{path.name}")
        shutil.copy(path, out[-1])
        with rasterio.open(out[-1], "r+", IGNORE_COG_LAYOUT_BREAK="YES") as dst:
            dst.update_tags(level=level)
    return out


def test_json_for_script_cannot_close_or_escape_its_script_element():
    value = {"name": SCRIPT, "other": IMG + " & <!-- -->"}
    text = json_for_script(value)
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == value


def test_map_shows_hostile_names_scene_ids_level_and_title_only_as_data(hostile, tmp_path):
    # Scene ids and a cluster level are hostile too: the analogue table and a raster's tag say so.
    analogues = gpd.read_file(hostile.analogues)
    analogues["scene"] = [HOSTILE[i % 2] for i in range(len(analogues))]
    analogues.to_file(tmp_path / "analogues.gpkg", driver="GPKG")
    quicklook = tmp_path / f"{IMG}.tif"  # a quicklook's file name becomes its overlay's scene
    shutil.copy(hostile.quicklooks[0], quicklook)
    rasters = _with_level(hostile.cluster_rasters, tmp_path, SCRIPT)
    out = tmp_path / "map.html"
    write_webmap(
        [quicklook, *hostile.quicklooks[1:]],
        rasters,
        hostile.similarity,
        tmp_path / "analogues.gpkg",
        hostile.deposits,
        out,
        title=SCRIPT,
        log=lambda *_: None,
    )
    page = out.read_text()
    _assert_no_raw_markup(page)
    assert page.lower().count("</script") == 3  # Leaflet, the data, the app: nothing closes one early
    assert "<!--" not in page
    data = _data_of(page)
    assert [d["name"] for d in data["deposits"]] == list(HOSTILE)
    assert {a["nearest_positive"] for a in data["analogues"]} == set(HOSTILE)
    assert {a["scene"] for a in data["analogues"]} == set(HOSTILE)
    assert data["quicklooks"][0]["scene"] == IMG
    assert data["layers"]["clusters"] == f"Clusters ({SCRIPT})"
    assert f"<title>{html.escape(SCRIPT)}</title>" in page


def test_summary_escapes_scene_ids_analogues_metrics_and_index_info(hostile, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(hostile.results / "analogues", results / "analogues")
    info = json.loads((hostile.results / "index" / "info.json").read_text())
    (results / "index").mkdir()
    (results / "index" / "info.json").write_text(json.dumps(info | {"kind": IMG}))
    scores = {
        "ari": 0.5,
        "nmi": 0.5,
        "knn_accuracy": IMG,
        "linear_probe_accuracy": 0.5,
        "deposit_recall": {"exclusion": {"recall@5": 0.5}},
    }
    (results / "metrics.json").write_text(
        json.dumps({"rock_unit_tiles": IMG, "known_deposits": SCRIPT, "hidden_deposits": IMG, "byol": scores})
    )
    out = results / "summary.html"
    summary_of_run(results, [IMG, SCRIPT], out, log=lambda *_: None)
    page = out.read_text()
    _assert_no_raw_markup(page)
    assert "<script" not in page.lower()
    # Shown literally: the scene list, the analogues' nearest deposits, the metrics and the index kind.
    assert page.count(html.escape(IMG)) >= 1 + 3 + 3 + 1
    assert html.escape(SCRIPT) in page


def test_cluster_table_escapes_scene_ids_and_band_names(hostile, tmp_path, monkeypatch):
    """Markup in a table's scene ids is refused when the table is read (no run writes such an id);
    past that check, the page would still show it as text."""
    labels = read_geoparquet(hostile.labels)
    labels["scene"] = labels["scene"].replace({"a": IMG, "b": SCRIPT.replace("/", "|")})
    write_geodataframe(tmp_path / "labels.parquet", labels)
    with pytest.raises(OutcropError, match="labels.parquet: scene .* is not a scene id"):
        read_geoparquet(tmp_path / "labels.parquet")
    monkeypatch.setattr("outcrop.limits.check_scene_ids", lambda *_: None)  # the page's own defence, alone
    embeddings, tiles = [], []
    for old, new in (("a", IMG), ("b", SCRIPT.replace("/", "|"))):  # a file name cannot hold "/"
        for src, dest, folder in ((hostile.embeddings, embeddings, "embeddings"), (hostile.tiles, tiles, "tiles")):
            path = next(p for p in src if p.stem == old)
            dest.append(tmp_path / folder / f"{new}{path.suffix}")
            save_npy(dest[-1], np.load(path))
    summary = pd.read_csv(hostile.summary).rename(columns={"mean_red": f"mean_{IMG}", "mean_nir": f"mean_{SCRIPT}"})
    summary.to_csv(tmp_path / "summary.csv", index=False)
    out = tmp_path / "clusters.html"
    write_cluster_table(
        tmp_path / "labels.parquet", tmp_path / "summary.csv", embeddings, tiles, out, log=lambda *_: None
    )
    page = out.read_text()
    _assert_no_raw_markup(page)
    assert "<script" not in page.lower() and SCRIPT.replace("/", "|") not in page
    assert html.escape(IMG) in page and html.escape(SCRIPT) in page


def _popup_text(driver, timeout: float = 10) -> str:
    """The open popup's visible text once it has faded in (Selenium reads a transparent one as '')."""
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(d):
        popups = d.find_elements("css selector", ".leaflet-popup-content")
        return (popups[0].text or None) if popups else None

    return WebDriverWait(driver, timeout).until(shown)


def _click(driver, element) -> str:
    from selenium.webdriver.common.action_chains import ActionChains

    # The run's scenes lie 130 km apart: centre the map on the marker, zoomed in, so that no control
    # or neighbour covers it, then click it as a user would.
    driver.execute_script(
        """
        var map = window.outcropMap, target = arguments[0], found = null;
        map.closePopup();
        map.eachLayer(function (l) { if (l._path === target) { found = l; } });
        map.setView(found.getLatLng(), -3, {animate: false});  // 8 m a pixel: 10 km across
    """,
        element,
    )
    ActionChains(driver).move_to_element(element).click().perform()
    return _popup_text(driver)


def _nothing_ran(driver) -> None:
    time.sleep(0.5)  # an <img onerror> would fire within milliseconds of being inserted
    assert driver.title == SCRIPT  # the page's own title, shown literally, never set by a payload
    assert driver.execute_script("return document.querySelectorAll('img[src=\"x\"]').length") == 0
    assert driver.execute_script("return document.scripts.length") == 3


def test_hostile_names_in_the_opened_map_are_shown_and_never_run(browser, hostile, tmp_path):  # noqa: F811
    """The CLI writes the map; Chromium opens it, and the deposit and analogue popups show the names."""
    from selenium.webdriver.support.ui import WebDriverWait

    out = tmp_path / "map.html"
    rasters = _with_level(hostile.cluster_rasters, tmp_path, IMG)  # a hostile level: the layer control's markup
    assert (
        main(
            [
                "webmap",
                "--quicklooks",
                *map(str, hostile.quicklooks),
                "--clusters",
                *map(str, rasters),
                "--similarity",
                *map(str, hostile.similarity),
                "--analogues",
                str(hostile.analogues),
                "--deposits",
                str(hostile.deposits),
                "--prepared",
                *map(str, hostile.prepared),
                "--out",
                str(out),
                "--title",
                SCRIPT,
            ]
        )
        == 0
    )
    browser.get(out.as_uri())
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script(
            "return !!window.outcropMap && document.querySelectorAll('.leaflet-image-layer').length > 0"
        )
    )
    _nothing_ran(browser)
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []
    labels = [e.text.strip() for e in browser.find_elements("css selector", ".leaflet-control-layers-overlays label")]
    assert f"Clusters ({IMG})" in labels
    legend = browser.find_element("css selector", ".outcrop-legend h4").text
    assert legend == f"Clusters ({IMG})"

    deposits = browser.find_elements("css selector", "path.outcrop-deposit")
    assert len(deposits) == 2
    shown = set()
    for marker in deposits:
        text = _click(browser, marker)
        assert text.startswith("Known deposit")
        shown.add(text.splitlines()[1])
        _nothing_ran(browser)
    assert shown == set(HOSTILE)

    analogues = gpd.read_file(hostile.analogues)
    for payload in HOSTILE:
        rank = int(analogues.loc[analogues.nearest_positive == payload, "rank"].iloc[0])
        markers = browser.find_elements("css selector", f"path.outcrop-analogue-{rank}")
        assert len(markers) == 1
        text = _click(browser, markers[0])
        assert f"Analogue #{rank}" in text
        assert f"matched deposit {payload}" in text
        _nothing_ran(browser)


def test_summary_links_the_map_report_cluster_table_and_analogue_maps(tmp_path):
    results = tmp_path / "results"
    out = results / "summary.html"
    results.mkdir()
    summary_of_run(results, ["a b", SCRIPT], out, log=lambda *_: None)
    page = out.read_text()
    hrefs = re.findall(r'<a href="([^"]*)">', page)
    assert hrefs[:3] == ["map.html", "report.html", "clusters/summary.html"]
    assert hrefs[3] == "analogues/maps/a%20b.png"
    # A hostile scene id is quoted in the URL and escaped in the text: no markup gets through.
    assert hrefs[4] == "analogues/maps/" + urllib.parse.quote(SCRIPT + ".png")
    _assert_no_raw_markup(page)


def test_cluster_table_shows_a_cluster_the_summary_lacks_and_the_others_spectra(hostile, tmp_path):
    """A summary without one cluster of the finest level (written before a change, or cut by hand)
    still gives the page: that cluster's row says so, and every other row draws its own spectrum."""
    summary = pd.read_csv(hostile.summary)
    level = summary["level"].iloc[-1]
    first = int(summary.loc[summary["level"] == level, "cluster"].min())
    summary[~((summary["level"] == level) & (summary["cluster"] == first))].to_csv(tmp_path / "s.csv", index=False)
    out = tmp_path / "clusters.html"
    write_cluster_table(hostile.labels, tmp_path / "s.csv", hostile.embeddings, hostile.tiles, out, log=lambda *_: None)
    page = out.read_text()
    kept = int((summary["level"] == level).sum()) - 1
    assert page.count("not in the summary") == 1
    assert page.count('alt="mean spectrum"') == kept
