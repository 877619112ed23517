"""Values from the config, the scene sheet and file names reach each command as one argument.

Every rule quotes what it puts into its shell command: a results folder, a scene source, a deposits
file and an AOI file whose names hold `$( )`, backticks, `;` and spaces run nothing, and a run
with them finishes end to end with its outputs where the names say. Scene ids, which become file
names, are refused unless they are plain. The same run's `snakemake --report` page, which writes
these values raw inside <script> elements, is opened in headless Chromium: the characters that are
still allowed run nothing there, and '<' or '>' in any value is refused before any job.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rasterio
from shapely.geometry import box, mapping

from tests.workflow.conftest import TINY_CONFIG, snakemake, write_config
from tests.workflow.test_webmap import browser  # noqa: F401  (the headless Chromium fixture)

pytestmark = pytest.mark.workflow

CANARIES = ("CANARY_R", "CANARY_B", "CANARY_S", "CANARY_SRC", "CANARY_D", "CANARY_A", "CANARY_ID")


# What may still be in a value (no '<', '>' or '/'), and matters to HTML or JavaScript somewhere:
# quotes, a backslash, entities that would decode to markup, JavaScript's line separators,
# full-width and percent-encoded brackets.
MARKUPISH = (
    "\" ' \\ &lt;img src=x onerror=document.title=1&gt; &#60;b&#62; -- ]] \u2028\u2029 "
    "\uff1cimg src=x onerror=document.title=2\uff1e %3Cscript%3E"
)


def hostile(label: str) -> str:
    """A name with every shell metacharacter that would run `touch CANARY_<label>` if unquoted, and
    the characters of ``MARKUPISH``."""
    return f"{label} $(touch CANARY_{label}) `touch CANARY_B`; touch CANARY_S & x {MARKUPISH}"


def canaries_under(*folders: Path) -> list[str]:
    return [str(p) for folder in folders for p in folder.rglob("CANARY_*") if p.name in CANARIES]


def outcrop(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "outcrop.cli", *args], check=True, capture_output=True, text=True)


def test_hostile_names_run_nothing_and_a_run_with_them_finishes(tmp_path, browser):  # noqa: F811
    src = tmp_path / hostile("SRC")
    results = hostile("R")
    deposits = tmp_path / f"{hostile('D')}.gpkg"
    aoi = tmp_path / f"{hostile('A')}.geojson"
    size, seed = 256, 7
    scenes = []
    for i, scene in enumerate(("demo_1", "demo_2")):
        out = src / f"{scene}.tif"
        outcrop(
            "demo-scene",
            "--scene",
            scene,
            "--size",
            str(size),
            "--seed",
            str(seed),
            "--out",
            str(out),
            "--truth",
            str(src / f"{scene}_units.tif"),
        )
        scenes.append(f"{scene}\t{out}\tlandsat-c2l2\t{'train' if i == 0 else 'index'}")
    outcrop(
        "demo-deposits",
        "--scenes",
        "2",
        "--size",
        str(size),
        "--seed",
        str(seed),
        "--out",
        str(deposits),
        "--truth",
        str(tmp_path / "hidden.gpkg"),
    )
    with rasterio.open(src / "demo_1.tif") as ds:
        bounds, crs = ds.bounds, ds.crs.to_string()
    aoi.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": crs}},
                "features": [{"type": "Feature", "properties": {}, "geometry": mapping(box(*bounds).buffer(30_000))}],
            }
        )
    )
    sheet = tmp_path / "scenes.tsv"
    sheet.write_text("scene\tsource\tsensor\trole\n" + "\n".join(scenes) + "\n")
    config = {k: v for k, v in TINY_CONFIG.items() if k != "demo"}
    config.update(
        {"results": results, "scenes": str(sheet), "deposits": str(deposits), "aoi": {"path": str(aoi), "buffer_km": 0}}
    )
    write_config(tmp_path, config)

    snakemake(tmp_path, "--cores", "2")

    assert canaries_under(tmp_path) == []
    out = tmp_path / results
    for name in (
        "summary.html",
        "map.html",
        "analogues/analogues.gpkg",
        "clusters/labels.gpkg",
        "prepared/demo_2.tif",
        "logs/prepare/demo_2.log",
    ):
        assert (out / name).is_file(), name
    # Nothing escaped the declared folder: the shell did not split the name at `;` or at a space.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [src.name, results, deposits.name, aoi.name, "hidden.gpkg", "scenes.tsv", "config.yaml", ".snakemake"]
    )

    # The report page holds every hostile value (rule inputs and outputs, job params) and runs none.
    report = out / "report.html"
    snakemake(tmp_path, "--report", str(report))
    page = report.read_text()
    assert json.dumps(str(deposits))[1:-1] in page and json.dumps(results)[1:-1] in page
    assert canaries_under(tmp_path) == []
    shown = _open_report(browser, report)
    assert str(deposits) in shown and f"{results}/analogues/analogues.csv" in shown
    # The check can fail: the same page with a value written as Snakemake writes a raw '<' runs it.
    raw = tmp_path / "raw.html"
    raw.write_text(page.replace(json.dumps(str(deposits))[1:-1], MARKUP_PATH, 1))
    browser.get(raw.as_uri())
    time.sleep(1)
    assert browser.title == "X" or _injected(browser) > 0


def _injected(driver) -> int:
    """Elements the page's own code would never make: any <img> with src x, any element with an
    inline event handler."""
    return driver.execute_script(
        "return document.querySelectorAll('img[src=\"x\"], [onerror], [onload], [onclick]').length"
    )


def _open_report(driver, report: Path) -> str:
    """Open the report, show every rule and every result as a user would click through it, check
    after each that nothing ran, and return all the text that was shown."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(report.as_uri())
    WebDriverWait(driver, 60).until(
        lambda d: d.execute_script(
            "return typeof app !== 'undefined' && document.querySelector('#loading-screen').style.display === 'none'"
        )
    )

    def nothing_ran() -> str:
        time.sleep(0.3)  # an <img onerror> fires within milliseconds of being inserted
        assert driver.title == "Snakemake Report"
        assert _injected(driver) == 0
        return driver.execute_script("return document.body.innerText")

    shown = [nothing_ran()]
    for rule in driver.execute_script("return Object.keys(rules)"):
        driver.execute_script("app.setView({navbarMode: 'ruleinfo', ruleinfo: arguments[0]})", rule)
        shown.append(nothing_ran())
    for category in driver.execute_script("return Object.keys(categories)"):
        driver.execute_script("app.showCategory(arguments[0])", category)
        shown.append(nothing_ran())
    for path in driver.execute_script("return Object.keys(results)"):
        driver.execute_script("app.showResultInfo(arguments[0])", path)
        shown.append(nothing_ran())
    return "\n".join(shown)


@pytest.mark.parametrize("scene", ["a$(touch CANARY_ID)", "a`touch CANARY_ID`", "a;touch CANARY_ID", "a b"])
def test_hostile_scene_ids_are_refused_before_any_job(tmp_path, scene):
    sheet = tmp_path / "scenes.tsv"
    sheet.write_text(f"scene\tsource\tsensor\trole\n{scene}\t{tmp_path / 'a.tif'}\tlandsat-c2l2\ttrain\n")
    write_config(tmp_path, {"scenes": str(sheet), "deposits": str(tmp_path / "d.csv")})
    proc = snakemake(tmp_path, "--cores", "1", check=False, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in text
    assert "scenes.tsv: line 2: scene:" in text and "does not match" in text
    assert canaries_under(tmp_path) == [] and not (tmp_path / "results").exists()


@pytest.mark.parametrize("key", ["results", "deposits"])
def test_braces_in_a_path_are_refused_before_any_job(tmp_path, key):
    """Snakemake reads `{...}` in a path as a wildcard: refused, naming the key."""
    write_config(tmp_path, {key: "run{scene}"})
    proc = snakemake(tmp_path, "--cores", "1", check=False, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in text
    lines = [line for line in text.splitlines() if f"config: {key}: 'run{{scene}}': a path may not contain" in line]
    assert len(lines) == 1, text[-3000:]


def test_one_folder_spelled_two_ways_is_one_run(tmp_path):
    """`./results`, `results/` and the absolute path are one folder: one lock, one set of logs."""
    config = dict(TINY_CONFIG)
    outputs = set()
    for spelling in ("results", "./results", "results/", str(tmp_path / "results")):
        write_config(tmp_path, {**config, "results": spelling})
        proc = snakemake(tmp_path, "--cores", "1", "-n", "--forceall", "-p")
        outputs.add(frozenset(line.split()[-2] for line in proc.stdout.splitlines() if "> " in line and "2>&1" in line))
    assert len(outputs) == 1
    assert all(p.startswith("results/logs/") for p in next(iter(outputs)))


def test_braces_in_a_scene_source_are_refused_before_any_job(tmp_path):
    sheet = tmp_path / "scenes.tsv"
    sheet.write_text(f"scene\tsource\tsensor\trole\na\t{tmp_path / 'a{scene}.tif'}\tlandsat-c2l2\ttrain\n")
    write_config(tmp_path, {"scenes": str(sheet), "deposits": str(tmp_path / "d.csv")})
    proc = snakemake(tmp_path, "--cores", "1", check=False, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in text
    assert "scenes.tsv: line 2: source:" in text and "a path may not contain '{' or '}'" in text


# A legal path that is markup: `/` splits it, so the folder `x/a<` holds the file `script><img …>.gpkg`.
MARKUP_PATH = "x/a</script><img src=x onerror=document.title='X'>.gpkg"


@pytest.mark.parametrize("where", ["deposits", "aoi.path", "results", "negatives", "source"])
def test_markup_in_a_value_is_refused_before_any_job(tmp_path, where):
    """`snakemake --report` writes rule inputs, outputs and params raw inside <script> elements:
    a '<' in any value that reaches a rule is refused, naming the key (or sheet line) and the character."""
    path = tmp_path / MARKUP_PATH
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    config: dict = {"deposits": str(tmp_path / "d.csv")}
    if where == "source":
        sheet = tmp_path / "scenes.tsv"
        sheet.write_text(f"scene\tsource\tsensor\trole\na\t{path}\tlandsat-c2l2\ttrain\n")
        config["scenes"] = str(sheet)
        expected = "scenes.tsv: line 2: source: "
    elif where == "aoi.path":
        config["aoi"] = {"path": str(path)}
        expected = "config: aoi.path: "
    else:
        config[where] = str(path)
        expected = f"config: {where}: "
    write_config(tmp_path, config)
    proc = snakemake(tmp_path, "--cores", "1", check=False, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in text
    lines = [line for line in text.splitlines() if expected in line and "'<' is not allowed" in line]
    assert len(lines) == 1, text[-3000:]
    # no job ran: nothing beside the inputs but Snakemake's own folder
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".snakemake", "config.yaml", "x", *(["scenes.tsv"] if where == "source" else [])]
    )
    assert [p.name for p in path.parent.iterdir()] == [path.name]
