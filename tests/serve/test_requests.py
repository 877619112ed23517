"""Hostile requests to a real ``outcrop serve`` (waitress, loopback): every one gets one clear JSON
error with a 4xx status and changes nothing; no file is served, no traceback leaves the server, no
name is markup, and nothing but the marks file is written.

The run is the small real run of ``hostile_run.py``: its deposits are named like script.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from pyproj import Transformer

from hostile_run import HOSTILE, make_hostile_run
from outcrop import OutcropError
from outcrop.serve.checks import MAX_VERTICES
from outcrop.serve.server import check_marks_path, default_marks
from serve.conftest import live_server
from synthetic_run import CRS

TO_LONLAT = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return make_hostile_run(tmp_path_factory.mktemp("serve_hostile"))


@pytest.fixture(scope="module")
def live(hostile):
    with live_server(hostile.results, deposits=hostile.deposits, buffer_m=10.0, exclusion_km=0.5) as server:
        yield server


def _place(hostile, dx: float = 0.0, dy: float = 0.0) -> dict:
    """Lon/lat of the first known deposit, moved by (dx, dy) metres."""
    xy = pd.read_csv(hostile.deposits)  # lon, lat columns
    lon, lat = float(xy["lon"].iloc[0]), float(xy["lat"].iloc[0])
    if dx or dy:
        fwd = Transformer.from_crs("EPSG:4326", CRS, always_xy=True)
        px, py = fwd.transform(lon, lat)
        lon, lat = TO_LONLAT.transform(px + dx, py + dy)
    return {"lon": lon, "lat": lat}


def _clear_error(answer, status: int | tuple[int, ...]) -> str:
    """The answer is one JSON error line with the expected status; no traceback, no markup."""
    statuses = status if isinstance(status, tuple) else (status,)
    assert answer.status in statuses, (answer.status, answer.body[:300])
    assert answer.headers["content-type"].startswith("application/json"), answer.headers
    message = answer.json()["error"]
    assert isinstance(message, str) and message and "\n" not in message
    assert "Traceback" not in answer.body.decode() and 'File "' not in answer.body.decode()
    return message


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


# --- files: none is served ---------------------------------------------------------------------------

TRAVERSALS = [
    "/../../../../etc/passwd",
    "/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static/../../index/tiles.faiss",
    "/index/tiles.parquet",
    "/api/../index/info.json",
    "//etc/passwd",
    "/api/export/..%2f..%2f..%2fetc%2fpasswd.csv",
    "/api/export/../../index/tiles.csv",
    "/api/export/0123456789abcdef.csv/../../../../etc/passwd",
    "/api/export/%2e%2e%2findex%2ftiles.gpkg",
    "/quicklooks/a.png",
    "/api/marks/..%2f..%2fresults-marks.gpkg",
    "/results-marks.gpkg",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_no_file_is_served_whatever_the_path(live, hostile, path):
    answer = live.get(path)
    _clear_error(answer, (400, 404, 405))
    assert b"root:" not in answer.body and b"PAR1" not in answer.body and b"SQLite" not in answer.body


# --- Host: DNS rebinding -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "evil.example:{port}",
        "evil.example",
        "127.0.0.1",
        "127.0.0.1:1",
        "localhost.evil.example:{port}",
        "127.0.0.1:{port}.evil.example",
        "",
    ],
)
def test_a_request_naming_another_host_is_refused(live, host):
    answer = live.get("/api/run", host=host.format(port=live.port))
    assert "is not this server" in _clear_error(answer, 421)


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}"])
def test_this_server_s_own_names_are_answered(live, host):
    assert live.get("/api/run", host=host.format(port=live.port)).status == 200


# --- cross-origin requests that change something -----------------------------------------------------


@pytest.mark.parametrize(
    "headers, status",
    [
        ({"Origin": "http://evil.example"}, 403),
        ({"Origin": "null"}, 403),
        ({"Origin": "http://127.0.0.1:1"}, 403),
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"Sec-Fetch-Site": "same-site"}, 403),
        ({"Content-Type": "text/plain"}, 415),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ({"Content-Type": "multipart/form-data; boundary=x"}, 415),
    ],
)
def test_a_cross_origin_or_form_request_changes_nothing(live, hostile, headers, status):
    before = live.get("/api/marks").json()
    stamp = live.marks.stat().st_mtime_ns if live.marks.exists() else None
    body = json.dumps({"mark": "negative", "place": _place(hostile)})
    answer = live.request("POST", "/api/marks", body, headers={"Content-Type": "application/json", **headers})
    _clear_error(answer, status)
    assert live.get("/api/marks").json() == before
    assert (live.marks.stat().st_mtime_ns if live.marks.exists() else None) == stamp


def test_the_page_s_own_origin_may_change_marks(live, hostile):
    origin = f"http://127.0.0.1:{live.port}"
    answer = live.post(
        "/api/marks",
        {"mark": "negative", "place": _place(hostile)},
        headers={"Origin": origin, "Sec-Fetch-Site": "same-origin"},
    )
    assert answer.status == 200 and answer.json()["negatives"] >= 1
    assert live.post("/api/marks/undo", headers={"Origin": origin}).status == 200


# --- bodies --------------------------------------------------------------------------------------------


def test_bodies_are_bounded(live, hostile):
    padding = {"place": _place(hostile), "top": 5, "x": "a" * 300_000}
    assert "Too Large" in _clear_error(live.post("/api/search", padding), 413)
    # Past the server's own bound waitress answers 413 before the application sees a byte (and may
    # close the connection while the client is still sending: then there is no answer to read).
    big = live.request("POST", "/api/search", "{" + " " * 2_000_000 + "}", headers={"Content-Type": "application/json"})
    assert big.status in (413, 0)
    assert live.get("/api/run").status == 200  # and goes on serving
    # A length claimed but never sent is refused on the claim, at once.
    t = time.monotonic()
    claim = live.request(
        "POST", "/api/search", b"{}", headers={"Content-Type": "application/json", "Content-Length": str(10**10)}
    )
    assert claim.status == 413 and time.monotonic() - t < 10


# --- every parameter -----------------------------------------------------------------------------------


def _square(lon: float, lat: float, half_m: float, corners: int = 4) -> list[list[float]]:
    fwd = Transformer.from_crs("EPSG:4326", CRS, always_xy=True)
    x, y = fwd.transform(lon, lat)
    angles = np.linspace(0, 2 * np.pi, corners, endpoint=False) + np.pi / 4
    return [list(TO_LONLAT.transform(x + half_m * np.cos(a) * 1.414, y + half_m * np.sin(a) * 1.414)) for a in angles]


SEARCHES = {
    "lon beyond 180": ({"place": {"lon": 181, "lat": -70}}, "place.lon"),
    "lat beyond -90": ({"place": {"lon": 10, "lat": -91}}, "place.lat"),
    "lon as text": ({"place": {"lon": "10", "lat": -70}}, "expected a number"),
    "lon as boolean": ({"place": {"lon": True, "lat": -70}}, "expected a number"),
    "lon not a number": ('{"place": {"lon": NaN, "lat": -70}}', "place.lon"),
    "lat infinite": ('{"place": {"lon": 10, "lat": 1e999}}', "place.lat"),
    "lat missing": ({"place": {"lon": 10}}, "needs lon and lat"),
    "place a list": ({"place": [10, -70]}, "expected a JSON object"),
    "place extra field": ({"place": {"lon": 10, "lat": -70, "z": 1}}, "unknown field"),
    "unknown field": ({"where": 1}, "unknown field 'where'"),
    "body a list": ([1, 2], "expected a JSON object"),
    "body not JSON": ("{lon: 1", "not valid JSON"),
    "top zero": ({"top": 0}, "top"),
    "top too many": ({"top": 201}, "top"),
    "top fractional": ({"top": 1.5}, "expected an integer"),
    "top as text": ({"top": "10"}, "expected an integer"),
    "place and polygon": ("BOTH", "not both"),
    "polygon of two corners": ({"polygon": [[10, -70], [11, -70]]}, "at least 3 corners"),
    "polygon corner not a pair": ({"polygon": [[10, -70], [11], [11, -71]]}, "expected [lon, lat]"),
    "polygon too many corners": ("MANY", f"at most {MAX_VERTICES}"),
    "polygon crossing itself": ("BOWTIE", "not a simple polygon"),
    "polygon too large": ("LARGE", "km across"),
    "polygon not a list": ({"polygon": "POLYGON((0 0,1 0,1 1,0 0))"}, "expected a list"),
    "place far from every tile": ({"place": {"lon": 0, "lat": 60}}, "meets no indexed tile"),
    "nothing to search with": ({}, "nothing to search with"),
}


@pytest.mark.parametrize("case", list(SEARCHES))
def test_every_search_parameter_is_checked(live, hostile, case):
    body, expected = SEARCHES[case]
    place = _place(hostile)
    if body == "BOTH":
        body = {"place": place, "polygon": _square(place["lon"], place["lat"], 300)}
    elif body == "MANY":
        body = {"polygon": _square(place["lon"], place["lat"], 300, MAX_VERTICES + 5)}
    elif body == "BOWTIE":
        a, b, c, d = _square(place["lon"], place["lat"], 300)
        body = {"polygon": [a, c, b, d]}
    elif body == "LARGE":
        body = {"polygon": _square(place["lon"], place["lat"], 150_000)}
    if isinstance(body, str):
        answer = live.request("POST", "/api/search", body, headers={"Content-Type": "application/json"})
    else:
        answer = live.post("/api/search", body)
    assert expected in _clear_error(answer, 400)


MARKS = {
    "kind unknown": ({"mark": "maybe", "place": "PLACE"}, "expected one of positive, negative"),
    "kind missing": ({"place": "PLACE"}, "expected one of"),
    "tile negative": ({"mark": "negative", "tile": -1}, "tile"),
    "tile past the index": ({"mark": "negative", "tile": 10**9}, "tile"),
    "tile as text": ({"mark": "negative", "tile": "3"}, "expected an integer"),
    "two places": ({"mark": "negative", "tile": 1, "place": "PLACE"}, "exactly one of"),
    "deposits not true": ({"mark": "positive", "deposits": 1}, "expected true"),
    "name too long": ({"mark": "positive", "place": "PLACE", "name": "x" * 201}, "at most 200 characters"),
    "name with control characters": ({"mark": "positive", "place": "PLACE", "name": "a\u0000b"}, "control"),
    "name not text": ({"mark": "positive", "place": "PLACE", "name": ["a"]}, "expected a string"),
    "place off the tiles": ({"mark": "positive", "place": {"lon": 0, "lat": 60}}, "meets no indexed tile"),
}


@pytest.mark.parametrize("case", list(MARKS))
def test_every_mark_parameter_is_checked(live, hostile, case):
    body, expected = MARKS[case]
    body = {k: (_place(hostile) if v == "PLACE" else v) for k, v in body.items()}
    before = live.get("/api/marks").json()
    assert expected in _clear_error(live.post("/api/marks", body), 400)
    assert live.get("/api/marks").json() == before


@pytest.mark.parametrize(
    "path, method, status",
    [
        ("/api/export/zzzz.csv", "GET", 404),
        ("/api/export/0123456789abcdef.csv", "GET", 404),
        ("/api/export/0123456789abcdef.exe", "GET", 404),
        ("/api/marks/999999", "DELETE", 404),
        ("/api/marks/-1", "DELETE", 404),
        ("/api/marks/abc", "DELETE", 404),
        ("/api/search", "GET", 405),
        ("/api/search", "PUT", 405),
    ],
)
def test_unknown_ids_and_methods_are_refused(live, path, method, status):
    _clear_error(live.request(method, path), status)


def test_undo_with_nothing_to_undo_says_so(hostile, tmp_path):
    with live_server(
        hostile.results, deposits=hostile.deposits, marks=tmp_path / "m.gpkg", buffer_m=10.0, exclusion_km=0.5
    ) as fresh:
        assert "nothing to undo" in _clear_error(fresh.post("/api/marks/undo"), 409)


# --- names are text ------------------------------------------------------------------------------------


def test_hostile_names_come_back_as_json_text_and_never_as_page_markup(live, hostile):
    page = live.get("/").body.decode()
    for payload in HOSTILE:
        assert payload not in page
    csp = live.get("/").headers["content-security-policy"]
    assert "script-src 'sha256-" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    for payload in HOSTILE:
        answer = live.post("/api/marks", {"mark": "positive", "place": _place(hostile), "name": payload})
        assert answer.status == 200
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert payload in [m["name"] for m in answer.json()["marks"]]
    found = live.post("/api/search", {"top": 5}).json()["results"]
    assert {r["nearest_positive"] for r in found} <= set(HOSTILE)
    live.post("/api/marks/clear")


# --- writes --------------------------------------------------------------------------------------------


def test_nothing_but_the_marks_file_is_written(hostile, tmp_path):
    marks = tmp_path / "marks" / "session.gpkg"
    marks.parent.mkdir()
    before_run = _tree(hostile.results)
    with live_server(
        hostile.results, deposits=hostile.deposits, marks=marks, buffer_m=10.0, exclusion_km=0.5
    ) as server:
        place = _place(hostile)
        found = server.post("/api/search", {"place": place, "top": 5}).json()
        for fmt in ("csv", "geojson", "gpkg"):
            assert server.get(f"/api/export/{found['search']}.{fmt}").status == 200
        server.post("/api/marks", {"mark": "negative", "tile": found["results"][0]["id"]})
        server.post("/api/marks", {"mark": "positive", "deposits": True})
        server.post("/api/marks/undo")
        server.post("/api/marks/clear")
        for path in TRAVERSALS[:4]:
            server.post(path, {"mark": "negative", "place": place})
    assert _tree(hostile.results) == before_run
    assert sorted(p.name for p in marks.parent.iterdir()) == ["session.gpkg"]


def test_the_marks_file_is_refused_inside_the_run_or_when_it_is_another_file(hostile, tmp_path):
    with pytest.raises(OutcropError, match="inside the results folder"):
        check_marks_path(hostile.results / "marks.gpkg", hostile.results)
    assert default_marks(hostile.results) == hostile.results.parent / "results-marks.gpkg"
    other = tmp_path / "occurrences.gpkg"
    xy = pd.read_csv(hostile.deposits)
    gpd.GeoDataFrame(xy, geometry=gpd.points_from_xy(xy.lon, xy.lat), crs="EPSG:4326").to_file(other, driver="GPKG")
    stamp = other.read_bytes()
    with (
        pytest.raises(OutcropError, match="not a marks file"),
        live_server(hostile.results, deposits=hostile.deposits, marks=other),
    ):
        pass
    assert other.read_bytes() == stamp


def test_listening_beyond_this_machine_is_warned_about(hostile, tmp_path, capfd):
    import socket

    from outcrop.cli import main

    # Bind to a port that is taken, so that the command stops after its warning, not serving.
    taken = socket.socket()
    taken.bind(("0.0.0.0", 0))
    taken.listen(1)
    try:
        code = main(
            [
                "serve",
                str(hostile.results),
                "--host",
                "0.0.0.0",
                "--port",
                str(taken.getsockname()[1]),
                "--marks",
                str(tmp_path / "m.gpkg"),
                "--deposits",
                str(hostile.deposits),
            ]
        )
    finally:
        taken.close()
    err = capfd.readouterr().err
    assert "warning: listening on 0.0.0.0" in err
    assert code == 2 and "cannot listen on 0.0.0.0" in err
