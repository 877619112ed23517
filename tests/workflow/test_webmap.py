"""The offline map of a finished tiny run, opened in a real headless Chromium with the network off.

Chromium and its driver come from Debian (``apt-get install chromium chromium-driver``); the test
installs them when they are missing (tests/services.py), and fails, saying so, where it cannot: a map
nobody has opened is not tested.
"""

from __future__ import annotations

import io
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from outcrop.figures.webmap import LAYER_NAMES
from tests.services import chromium_binaries

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1280,900",
    # Any request that slipped through would go to a dead proxy and fail, never reach out.
    "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
]


def _browser_binaries() -> tuple[str, str]:
    return chromium_binaries()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = _browser_binaries()
    profile = tempfile.mkdtemp(prefix="outcrop-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    # The network is off for the page: offline emulation through the DevTools protocol.
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions",
                           {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0})
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def opened_map(browser, demo_run):
    from selenium.webdriver.support.ui import WebDriverWait

    path = demo_run / "results" / "map.html"
    assert path.is_file(), "the workflow did not write results/map.html"
    browser.get(path.as_uri())
    WebDriverWait(browser, 30).until(lambda d: d.execute_script(
        "return !!window.outcropMap && document.querySelectorAll('.leaflet-image-layer').length > 0"))
    return browser


def test_map_html_loads_nothing_from_outside(demo_run):
    page = (demo_run / "results" / "map.html").read_text()
    assert not re.search(r"<(script|link|img)[^>]+(src|href)\s*=\s*['\"]?(https?:)?//", page, re.I)
    assert "L.CRS.Simple" in page and "leaflet" in page.lower()


def test_map_opens_without_console_errors(opened_map):
    errors = [e for e in opened_map.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []
    requested = [e["message"] for e in opened_map.get_log("performance") if "Network.requestWillBeSent" in e["message"]]
    outside = [m for m in requested if re.search(r'"url":"(https?|wss?):', m)]
    assert outside == []


def test_every_layer_is_in_the_layer_control(opened_map):
    labels = [e.text.strip() for e in opened_map.find_elements("css selector", ".leaflet-control-layers-overlays label")]
    for name in LAYER_NAMES.values():
        assert any(label.startswith(name.split(" (")[0]) for label in labels), (name, labels)
    assert len(labels) == len(LAYER_NAMES)
    images = opened_map.execute_script("return document.querySelectorAll('img.leaflet-image-layer').length")
    assert images >= 2 * 3  # quicklooks and clusters of the three scenes are on at the start


def test_clicking_an_analogue_opens_its_popup(opened_map):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait

    markers = opened_map.find_elements("css selector", "path.outcrop-analogue-1")
    assert len(markers) == 1
    ActionChains(opened_map).move_to_element(markers[0]).click().perform()

    def shown_text(driver: WebDriver) -> str | None:
        """The popup's visible text once it has faded in (Selenium reads a transparent one as '')."""
        popups = driver.find_elements("css selector", ".leaflet-popup-content")
        return (popups[0].text or None) if popups else None

    text = WebDriverWait(opened_map, 10).until(shown_text)
    assert "Analogue #1" in text
    for field in ("score", "scene", "matched deposit", "distance", "lon, lat"):
        assert field in text


def test_screenshot_is_not_blank(opened_map):
    import matplotlib.image

    png = opened_map.get_screenshot_as_png()
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "map.png").write_bytes(png)
    pixels = matplotlib.image.imread(io.BytesIO(png))[..., :3]
    assert pixels.shape[0] > 500 and pixels.shape[1] > 500
    assert float(np.var(pixels)) > 0.01  # a blank or single-colour page is near 0
    # The scenes cover much of the view with many distinct colours, not just controls on grey.
    assert len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 500
