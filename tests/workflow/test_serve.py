"""``outcrop serve`` on the tiny demo run, in a real headless Chromium: click, see results; mark a
result wrong and see it gone; export and read back each format; kill the server and find the marks
after a restart; run the workflow with the marks file as its deposits and negatives. And, through
the server's API, the searches themselves: the same ranking as the analogues stage, and negatives on
the demo's false positives that raise the recall of its hidden deposits.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from outcrop.search.analogues import RESULT_COLUMNS, read_deposits
from outcrop.search.evaluate import hidden_found_at
from serve.conftest import live_server
from tests.services import chromium_binaries
from tests.workflow.conftest import TINY_CONFIG, snakemake, write_config
from tests.workflow.test_webmap import CHROMIUM_FLAGS

REPO = Path(__file__).resolve().parents[2]
# The README's picture of the live map, taken by the click test when OUTCROP_DOCS_SCREENSHOT is set
# (a test run leaves the repository as it found it otherwise).
SCREENSHOT = REPO / "docs" / "serve.png"
# The page talks to its server on loopback; anything else would go to a dead proxy and fail.
LIVE_FLAGS = [f.replace("<-loopback>", "127.0.0.1;localhost") for f in CHROMIUM_FLAGS]


@pytest.fixture(scope="module")
def live_browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = chromium_binaries()
    profile = tempfile.mkdtemp(prefix="outcrop-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in LIVE_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _open(driver, url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 60).until(
        lambda d: d.execute_script(
            "return !!window.outcropServe && document.querySelectorAll('.leaflet-image-layer').length > 0"
        )
    )


def _click_at(driver, x: float, y: float, zoom: float = -3) -> None:
    """Centre the map on projected (x, y) and click as a user would, 16 px (128 m at zoom -3) east of
    the centre: beside a deposit's marker, which takes its own clicks, on the deposit's ground."""
    from selenium.webdriver.common.action_chains import ActionChains

    driver.execute_script(
        "window.outcropMap.closePopup();"
        "window.outcropMap.setView([arguments[1], arguments[0]], arguments[2], {animate: false});",
        x,
        y,
        zoom,
    )
    ActionChains(driver).move_to_element_with_offset(driver.find_element("id", "map"), 16, 0).click().perform()


def _results(driver, searches: int, timeout: float = 60) -> list[int]:
    """Ids in the result list once ``searches`` searches have been drawn."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: d.execute_script("return window.outcropSearches") >= searches)
    return [int(li.get_attribute("data-id")) for li in driver.find_elements("css selector", "li.outcrop-result")]


def _counts(driver) -> tuple[int, int]:
    text = driver.find_element("id", "outcrop-counts").text
    right, wrong = re.fullmatch(r"right: (\d+) · wrong: (\d+)", text).groups()
    return int(right), int(wrong)


def _wait_counts(driver, expected: tuple[int, int], timeout: float = 30) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: _counts(d) == expected)


def _deposit_xy(demo_run: Path, which: int = 0) -> tuple[float, float]:
    run = demo_run / "results"
    deposit = read_deposits(run / "demo" / "deposits.gpkg", "EPSG:3031").geometry.iloc[which]
    return deposit.x, deposit.y


def test_a_click_searches_marking_wrong_removes_the_result_and_exports_read_back(live_browser, demo_run, tmp_path):
    import matplotlib.image

    driver = live_browser
    with live_server(demo_run / "results", marks=tmp_path / "marks.gpkg") as live:
        _open(driver, live.url)
        x, y = _deposit_xy(demo_run)
        _click_at(driver, x, y)
        first = _results(driver, 1)
        assert len(first) == 10
        assert driver.execute_script("return document.querySelectorAll('path.outcrop-analogue').length") >= 10
        assert "10 results from 1 right and 0 wrong" in driver.find_element("id", "outcrop-status").text
        assert driver.find_element("id", "outcrop-values").text  # the cluster and similarity under the click
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == []
        # The README's picture: the whole run with the search's results, and the list.
        driver.execute_script("""
            var D = window.outcrop.data, b = L.latLngBounds(D.quicklooks[0].bounds);
            D.quicklooks.forEach(function (q) { b.extend(q.bounds); });
            window.outcropMap.fitBounds(b, {animate: false});""")
        time.sleep(0.5)
        png = driver.get_screenshot_as_png()
        pixels = matplotlib.image.imread(io.BytesIO(png))[..., :3]
        assert len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 500
        if os.environ.get("OUTCROP_DOCS_SCREENSHOT"):
            SCREENSHOT.write_bytes(png)

        # Export: each format read back has the fields of analogues.gpkg and the rows of the list.
        expected_fields = list(gpd.read_file(demo_run / "results" / "analogues" / "analogues.gpkg").columns)
        for fmt in ("csv", "geojson", "gpkg"):
            href = driver.find_element("id", f"outcrop-export-{fmt}").get_attribute("href")
            with urllib.request.urlopen(href, timeout=30) as response:
                data = response.read()
                assert "attachment" in response.headers["Content-Disposition"]
            if fmt == "csv":
                table = pd.read_csv(io.BytesIO(data))
                assert list(table.columns) == RESULT_COLUMNS
            else:
                table = gpd.read_file(io.BytesIO(data))
                assert sorted(table.columns) == sorted(expected_fields)
                assert table.crs.to_epsg() == (4326 if fmt == "geojson" else 3031)
            assert table["id"].tolist() == first

        # Mark the best result wrong with its button in the list, and search the same place again.
        driver.find_elements("css selector", "li.outcrop-result button.outcrop-mark-wrong")[0].click()
        _wait_counts(driver, (0, 1))
        assert live.marks.is_file()
        _click_at(driver, x, y)
        second = _results(driver, 2)
        assert first[0] not in second and len(second) == 10
        assert second != first
        assert "1 right and 1 wrong" in driver.find_element("id", "outcrop-status").text
        # Undo puts the result back at the top; clear (confirmed) leaves no mark.
        driver.find_element("id", "outcrop-undo").click()
        _wait_counts(driver, (0, 0))
        _click_at(driver, x, y)
        assert _results(driver, 3) == first


def test_a_drawn_polygon_searches(live_browser, demo_run, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    driver = live_browser
    with live_server(demo_run / "results", marks=tmp_path / "marks.gpkg") as live:
        _open(driver, live.url)
        x, y = _deposit_xy(demo_run)
        driver.execute_script("window.outcropMap.setView([arguments[1], arguments[0]], -3, {animate: false});", x, y)
        driver.find_element("css selector", "input[name=outcrop-mode][value=draw]").click()
        element = driver.find_element("id", "map")
        for dx, dy in ((-40, -40), (40, -40), (40, 40), (-40, 40)):  # 8 m a pixel: a 640 m square
            ActionChains(driver).move_to_element_with_offset(element, dx, dy).click().perform()
            time.sleep(0.3)  # apart, so that two clicks are not a double click
        driver.find_element("id", "outcrop-finish").click()
        assert len(_results(driver, 1)) == 10
        assert "polygon at" in driver.find_element("css selector", "li.outcrop-result small").text


def _start(results: Path, marks: Path) -> tuple[subprocess.Popen, str]:
    """``outcrop serve`` as its own process on a free port; returns it and the URL it printed."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "outcrop", "serve", str(results), "--port", "0", "--marks", str(marks)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 120
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        found = re.search(r"open (http://\S+) ", line)
        if found:
            return proc, found.group(1)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("outcrop serve did not start:\n" + "".join(lines))


def test_marks_survive_a_killed_server_and_a_closed_tab(live_browser, demo_run, tmp_path):
    driver = live_browser
    marks = tmp_path / "survey.gpkg"
    proc, url = _start(demo_run / "results", marks)
    try:
        _open(driver, url)
        x, y = _deposit_xy(demo_run)
        driver.find_element("css selector", "input[name=outcrop-mode][value=positive]").click()
        _click_at(driver, x, y)
        _wait_counts(driver, (1, 0))
        driver.find_element("css selector", "input[name=outcrop-mode][value=negative]").click()
        _click_at(driver, *_deposit_xy(demo_run, 1))
        _wait_counts(driver, (1, 1))
        driver.get("about:blank")  # the tab is gone
    finally:
        proc.send_signal(signal.SIGKILL)  # no chance to save anything on the way out
        proc.wait(30)
    saved = {layer: gpd.read_file(marks, layer=layer) for layer in ("positives", "negatives")}
    assert [len(saved["positives"]), len(saved["negatives"])] == [1, 1]
    proc, url = _start(demo_run / "results", marks)
    try:
        _open(driver, url)
        _wait_counts(driver, (1, 1))
        assert driver.execute_script("return document.querySelectorAll('path.outcrop-mark').length") == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_the_marks_file_runs_the_workflow_as_deposits_and_negatives(demo_run, tmp_path):
    results = demo_run / "results"
    work = tmp_path / "again"
    shutil.copytree(demo_run, work, symlinks=True, ignore=shutil.ignore_patterns(".snakemake"))
    marks = work / "marks.gpkg"
    with live_server(work / "results", marks=marks) as live:
        assert live.post("/api/marks", {"mark": "positive", "deposits": True}).status == 200
        found = live.post("/api/search", {"top": 10}).json()["results"]
        wrong = found[0]
        assert live.post("/api/marks", {"mark": "negative", "tile": wrong["id"]}).status == 200
        assert (
            live.post("/api/marks", {"mark": "positive", "tile": found[1]["id"], "name": "field check 1"}).status == 200
        )
    write_config(work, TINY_CONFIG | {"deposits": "marks.gpkg", "negatives": "marks.gpkg"})
    snakemake(work, "--cores", "2")
    analogues = gpd.read_file(work / "results" / "analogues" / "analogues.gpkg")
    known = read_deposits(results / "demo" / "deposits.gpkg", "EPSG:3031")["name"].tolist()
    assert set(analogues["nearest_positive"]) <= set(known) | {"field check 1"}
    assert wrong["id"] not in analogues["id"].tolist() and found[1]["id"] not in analogues["id"].tolist()
    before = gpd.read_file(results / "analogues" / "analogues.gpkg")
    assert wrong["id"] in before["id"].tolist()  # it was there with the deposits alone
    log = (work / "results" / "logs" / "analogues.log").read_text()
    assert f"{len(known) + 1} deposits select" in log


def test_served_searches_rank_as_the_analogues_stage(demo_run, tmp_path):
    """With the known deposits marked right, a search returns the run's own analogues.gpkg."""
    with live_server(demo_run / "results", marks=tmp_path / "m.gpkg") as live:
        live.post("/api/marks", {"mark": "positive", "deposits": True})
        served = live.post("/api/search", {"top": 50}).json()["results"]
    stage = gpd.read_file(demo_run / "results" / "analogues" / "analogues.gpkg")
    assert [r["id"] for r in served] == stage["id"].tolist()
    np.testing.assert_allclose([r["score"] for r in served], stage["score"], atol=1e-5)
    assert [r["nearest_positive"] for r in served] == stage["nearest_positive"].tolist()


def test_negatives_on_false_positives_raise_the_recall_of_the_hidden_deposits(demo_run, tmp_path):
    """Through the API: the known deposits marked right, the top 10 read, three results that cover
    no hidden deposit marked wrong, and the search again: more hidden deposits in the top 10."""
    hidden = read_deposits(demo_run / "results" / "demo" / "hidden_deposits.gpkg", "EPSG:3031").geometry.to_numpy()
    exported = {}
    with live_server(demo_run / "results", marks=tmp_path / "m.gpkg") as live:
        live.post("/api/marks", {"mark": "positive", "deposits": True})
        for step in ("known deposits", "with negatives"):
            answer = live.post("/api/search", {"top": 10}).json()
            data = live.get(f"/api/export/{answer['search']}.gpkg").body
            exported[step] = gpd.read_file(io.BytesIO(data))
            if step == "known deposits":
                feet = exported[step].geometry.to_numpy()
                false = [r for r, foot in zip(answer["results"], feet) if not any(foot.intersects(h) for h in hidden)]
                assert len(false) >= 3
                for r in false[:3]:
                    assert live.post("/api/marks", {"mark": "negative", "tile": r["id"]}).status == 200
    recall = {
        step: float((hidden_found_at(t.geometry.to_numpy(), hidden) <= 10).mean()) for step, t in exported.items()
    }
    assert recall["with negatives"] > recall["known deposits"], recall
    print(json.dumps({"recall@10": recall}))


def test_hostile_names_in_the_live_page_are_shown_and_never_run(live_browser, tmp_path):
    """The same names as the map.html tests (hostile_run.py): deposits named like script, marked
    right and searched with; the list, the marks' popups and the title show them as text."""
    from hostile_run import HOSTILE, SCRIPT, make_hostile_run

    hostile = make_hostile_run(tmp_path / "hostile")
    driver = live_browser
    with live_server(
        hostile.results,
        deposits=hostile.deposits,
        marks=tmp_path / "m.gpkg",
        buffer_m=10.0,
        exclusion_km=0.5,
        title=SCRIPT,
    ) as live:
        _open(driver, live.url)
        driver.find_element("id", "outcrop-import").click()
        _wait_counts(driver, (2, 0))
        driver.find_element("id", "outcrop-search").click()
        _results(driver, 1)
        shown = " ".join(li.text for li in driver.find_elements("css selector", "li.outcrop-result small"))
        assert all(payload in shown for payload in HOSTILE)
        time.sleep(0.5)  # an <img onerror> would fire within milliseconds of being inserted
        assert driver.title == SCRIPT
        assert driver.execute_script("return document.querySelectorAll('img[src=\"x\"]').length") == 0
        assert driver.execute_script("return document.scripts.length") == 4  # Leaflet, data, map, serve
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == []
