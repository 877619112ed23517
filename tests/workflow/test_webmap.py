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
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
    # Any request that slipped through would go to a dead proxy and fail, never reach out.
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
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
    driver.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0},
    )
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
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script(
            "return !!window.outcropMap && document.querySelectorAll('.leaflet-image-layer').length > 0"
        )
    )
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
    found = opened_map.find_elements("css selector", ".leaflet-control-layers-overlays label")
    labels = [e.text.strip() for e in found]
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
    from selenium.webdriver.common.action_chains import ActionChains

    # The cursor over the map fills the lat/lon readout, which the screenshot then shows.
    ActionChains(opened_map).move_to_element_with_offset(opened_map.find_element("id", "map"), 60, 40).perform()
    assert re.fullmatch(
        r"lat -?\d+\.\d+, lon -?\d+\.\d+", opened_map.find_element("css selector", ".outcrop-readout").text
    )
    png = opened_map.get_screenshot_as_png()
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "map.png").write_bytes(png)
    pixels = matplotlib.image.imread(io.BytesIO(png))[..., :3]
    assert pixels.shape[0] > 500 and pixels.shape[1] > 500
    assert float(np.var(pixels)) > 0.01  # a blank or single-colour page is near 0
    # The scenes cover much of the view with many distinct colours, not just controls on grey.
    assert len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 500


def _focus(driver, x: float, y: float, zoom: float = 0) -> None:
    """Centre the map on projected (x, y) at ``zoom`` (0: one metre a pixel), popups closed."""
    driver.execute_script(
        "window.outcropMap.closePopup();"
        "window.outcropMap.setView([arguments[1], arguments[0]], arguments[2], {animate: false});",
        x,
        y,
        zoom,
    )


def test_cursor_readout_agrees_with_pyproj(opened_map, demo_run):
    import rasterio
    from pyproj import Transformer
    from selenium.webdriver.common.action_chains import ActionChains

    prepared = sorted((demo_run / "results" / "prepared").glob("*.tif"))[0]
    with rasterio.open(prepared) as src:
        crs, (w, s, e, n) = src.crs, src.bounds
    _focus(opened_map, (w + e) / 2, (s + n) / 2)
    element = opened_map.find_element("id", "map")
    inverse = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    for dx, dy in ((-200, -150), (0, 0), (250, 120)):
        ActionChains(opened_map).move_to_element_with_offset(element, dx, dy).perform()
        text = opened_map.find_element("css selector", ".outcrop-readout").text
        match = re.fullmatch(r"lat (-?\d+\.\d+), lon (-?\d+\.\d+)", text)
        assert match, text
        # Where the cursor is, in map units: Leaflet's L.CRS.Simple gives (y, x) of the run CRS.
        y, x = opened_map.execute_script(
            "var m = window.outcropMap, c = m.getSize();"
            "var ll = m.containerPointToLatLng([c.x / 2 + arguments[0], c.y / 2 + arguments[1]]);"
            "return [ll.lat, ll.lng];",
            dx,
            dy,
        )
        lon, lat = inverse.transform(x, y)
        # The readout shows 4 decimals; a pixel of rounding in the cursor's position is 1 m here.
        assert abs(float(match.group(1)) - lat) < 1e-3, (text, lat)
        assert abs((float(match.group(2)) - lon + 180) % 360 - 180) < 1e-3, (text, lon)


def test_graticule_and_coastline_are_drawn(opened_map):
    graticule = opened_map.execute_script("return document.querySelectorAll('path.outcrop-graticule').length")
    labels = opened_map.find_elements("css selector", ".outcrop-graticule-label span")
    coast = opened_map.execute_script(
        "var p = document.querySelector('path.outcrop-coastline'); return p ? p.getAttribute('d') : '';"
    )
    assert graticule >= 2 and labels and all("°" in label.get_attribute("textContent") for label in labels)
    assert coast.count("L") > 10  # the demo's coast is a long line, not an empty path


def test_clicking_a_cluster_pixel_shows_its_values(opened_map, demo_run):
    import rasterio
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    raster = sorted((demo_run / "results" / "clusters" / "rasters").glob("*.tif"))[0]
    with rasterio.open(raster) as src:
        labels = src.read(1)
        rows, cols = np.nonzero(labels != src.nodata)
        r, c = int(rows[len(rows) // 2]), int(cols[len(cols) // 2])
        # A quarter cell off the cell's centre, where an analogue's marker (a tile's centre) may sit:
        # the click goes to the map, not to a marker.
        x, y = src.xy(r, c)
        x, y = x + src.res[0] / 4, y + src.res[1] / 4
        expected = int(labels[r, c])
        level = src.tags().get("level") or src.descriptions[0]
    _focus(opened_map, x, y, -3)
    ActionChains(opened_map).move_to_element(opened_map.find_element("id", "map")).click().perform()

    def shown(driver):
        popups = driver.find_elements("css selector", ".outcrop-value-popup")
        return (popups[0].text or None) if popups else None

    text = WebDriverWait(opened_map, 10).until(shown)
    assert raster.stem in text
    assert f"cluster {expected} ({level})" in text, text
    assert re.search(r"similarity \d\.\d\d", text), text
    assert re.search(r"lat -?\d+\.\d{4}, lon -?\d+\.\d{4}", text), text


def test_clicking_shows_the_unit_of_the_geological_map(opened_map, demo_run):
    """The demo's planted units are its unit map: a layer in the control, off at the start, and a
    click on the map names the unit under the cursor."""
    import rasterio
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    labels = [
        e.text.strip() for e in opened_map.find_elements("css selector", ".leaflet-control-layers-overlays label")
    ]
    assert LAYER_NAMES["units"] in labels
    assert opened_map.execute_script("return document.querySelectorAll('img.outcrop-units').length") == 0
    truth = demo_run / "results" / "demo" / "truth" / "demo_1_units.tif"
    with rasterio.open(truth) as src:
        units = src.read(1)
        names = src.tags()["units"].split(",")
        # A pixel deep inside one unit (its 9 x 9 neighbourhood all that unit), near the scene's middle.
        inside = np.zeros_like(units, dtype=bool)
        inside[4:-4, 4:-4] = True
        for dr in range(-4, 5):
            for dc in range(-4, 5):
                inside[4:-4, 4:-4] &= (
                    units[4 + dr : units.shape[0] - 4 + dr, 4 + dc : units.shape[1] - 4 + dc] == units[4:-4, 4:-4]
                )
        rows, cols = np.nonzero(inside & (units > 0))
        middle = np.argmin((rows - units.shape[0] / 2) ** 2 + (cols - units.shape[1] / 2) ** 2)
        r, c = int(rows[middle]), int(cols[middle])
        x, y = src.xy(r, c)
        expected = names[int(units[r, c]) - 1]
    _focus(opened_map, x + src.res[0] / 4, y + src.res[1] / 4, -3)
    ActionChains(opened_map).move_to_element(opened_map.find_element("id", "map")).click().perform()

    def shown(driver):
        popups = driver.find_elements("css selector", ".outcrop-value-popup")
        return (popups[0].text or None) if popups else None

    text = WebDriverWait(opened_map, 10).until(shown)
    assert f"unit {expected}" in text, text
