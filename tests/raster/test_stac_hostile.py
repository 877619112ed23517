"""STAC documents read over HTTP are someone else's text: their hrefs never reach local files, GDAL
paths or this machine's services (outcrop.raster.remote_hrefs).

A real HTTP server on 127.0.0.1 (tests/range_server.py) serves an item, a catalog, an item
collection and a search page whose hrefs name local files (``file://``, absolute paths), GDAL paths
(``/vsicurl/`` to a second server) or other schemes; ``outcrop prepare`` and ``outcrop stac-search``
exit 2 with one line, write nothing, and neither the local file nor the second server is read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rasterio.shutil import copy as rio_copy

from outcrop import OutcropError
from outcrop.cli import main
from outcrop.raster.remote_hrefs import internal_host, remote_href
from range_server import serve
from shared_data import DATA

ITEM_ID = "LC80030172015001LGN00"
BAND = DATA / "landsat8" / "LC80030172015001LGN00_greenland" / f"{ITEM_ID}_B2.tiff"


def _item(url: str, blue: str, **extra_assets: str) -> dict[str, Any]:
    assets = {"blue": {"href": blue, "type": "image/tiff; application=geotiff; profile=cloud-optimized"}}
    assets.update({key: {"href": href} for key, href in extra_assets.items()})
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": ITEM_ID,
        "collection": "landsat-c2-l1",
        "bbox": [-52, 68, -48, 70],
        "geometry": {"type": "Polygon", "coordinates": [[[-52, 68], [-48, 68], [-48, 70], [-52, 70], [-52, 68]]]},
        "properties": {"datetime": "2015-01-01T14:10:00Z", "platform": "landsat-8"},
        "assets": assets,
        "links": [{"rel": "self", "href": url}],
    }


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """The catalog's server, and a second one that no href of it may reach."""
    root = tmp_path_factory.mktemp("hostile_stac")
    with serve(root / "www") as server, serve(root / "other") as other:
        for where in (server.root, other.root):
            rio_copy(BAND, where / "B2.TIF", driver="COG", compress="DEFLATE", blocksize=256)
        # The one local file every bad href points at: a readable raster (a read would succeed)
        # outside both servers' folders, and a valid local item naming it.
        local = root / "local"
        local.mkdir()
        rio_copy(BAND, local / "B2.TIF", driver="COG", compress="DEFLATE")
        _write(local / "item.json", _item(str(local / "item.json"), "B2.TIF"))
        yield server, other, local


def _one_error_line(capsys, command: str) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"outcrop {command}: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


# --- outcrop prepare of a remote item -----------------------------------------------------------


def _bad_hrefs(other_url: str, local: Path) -> dict[str, tuple[str, dict[str, str]]]:
    """Case → (the blue asset's href, other assets), each naming a local file or another server."""
    good = "../../B2.TIF"  # from /bad/<n>/item.json
    return {
        "file URL": (f"file://{local / 'B2.TIF'}", {}),
        "GDAL /vsicurl/ to another server": (f"/vsicurl/{other_url}/B2.TIF", {}),
        "GDAL /vsi path to a local file": (f"/vsigzip/{local / 'B2.TIF'}", {}),
        "another scheme": (f"ftp://{other_url.split('://')[1]}/B2.TIF", {}),
        "a local metadata file": (good, {"MTL.txt": f"file://{local / 'item.json'}"}),
    }


@pytest.mark.parametrize(
    "case",
    [
        "file URL",
        "GDAL /vsicurl/ to another server",
        "GDAL /vsi path to a local file",
        "another scheme",
        "a local metadata file",
    ],
)
def test_a_remote_item_naming_a_local_file_or_a_gdal_path_is_refused(servers, tmp_path, capsys, case):
    server, other, local = servers
    blue, extra = _bad_hrefs(other.url, local)[case]
    url = f"{server.url}/bad/{len(server.log)}/item.json"
    _write(server.root / url.split("/", 3)[3], _item(url, blue, **extra))
    out = tmp_path / "x.tif"
    before = len(other.log)
    assert (
        main(
            [
                "prepare",
                "--source",
                f"stac:{url}",
                "--sensor",
                "landsat-c2l1",
                "--scene",
                "x",
                "--bands",
                "blue",
                "--crs",
                "EPSG:32622",
                "--resolution",
                "60",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    line = _one_error_line(capsys, "prepare")
    assert url in line and "a STAC document read over HTTP may name only http://, https://" in line, line
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert other.log[before:] == []  # the second server was never asked


def test_an_absolute_path_in_a_remote_item_is_a_path_on_its_own_server(servers, tmp_path, capsys):
    """``/data/x.tif`` in a document at ``http://host/…`` is ``http://host/data/x.tif`` (RFC 3986, as
    pystac reads it): a file on the catalog's server, never on this machine's disk."""
    server, _, local = servers
    url = f"{server.url}/absolute/item.json"
    _write(server.root / "absolute" / "item.json", _item(url, str(local / "B2.TIF")))
    out = tmp_path / "x.tif"
    before = len(server.log)
    assert (
        main(
            [
                "prepare",
                "--source",
                f"stac:{url}",
                "--sensor",
                "landsat-c2l1",
                "--scene",
                "x",
                "--bands",
                "blue",
                "--crs",
                "EPSG:32622",
                "--resolution",
                "60",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    line = _one_error_line(capsys, "prepare")
    assert f"{server.url}{local / 'B2.TIF'}: cannot read raster" in line, line
    assert str(local / "B2.TIF") in {r.path for r in server.log[before:]}  # asked of the server
    assert not out.exists()
    # The same href in an item read from disk is the user's own file, and is read.
    main(
        [
            "prepare",
            "--source",
            str(local / "item.json"),
            "--sensor",
            "landsat-c2l1",
            "--scene",
            "x",
            "--bands",
            "blue",
            "--crs",
            "EPSG:32622",
            "--resolution",
            "60",
            "--out",
            str(out),
        ]
    )
    assert out.exists()


# --- outcrop stac-search of a remote catalog ------------------------------------------------------


def _catalog(links: list[dict[str, str]]) -> dict[str, Any]:
    return {"type": "Catalog", "stac_version": "1.0.0", "id": "c", "description": "c", "links": links}


@pytest.mark.parametrize(
    "case",
    [
        "child file:///etc/passwd",
        "child /vsicurl/ to another server",
        "item file:// of a local item",
        "next page file:///etc/passwd",
        "search feature with a file:// self link",
    ],
)
def test_a_remote_catalog_never_leads_to_a_local_file_or_another_protocol(servers, tmp_path, capsys, case):
    server, other, local = servers
    base = f"{server.url}/cat{len(server.log)}"
    folder = server.root / base.rsplit("/", 1)[1]
    _write(other.root / "catalog.json", _catalog([]))
    if case.startswith("child"):
        href = "file:///etc/passwd" if "passwd" in case else f"/vsicurl/{other.url}/catalog.json"
        _write(folder / "catalog.json", _catalog([{"rel": "child", "href": href}]))
        start = f"{base}/catalog.json"
    elif case.startswith("item"):
        href = f"file://{local / 'item.json'}"
        _write(folder / "catalog.json", _catalog([{"rel": "item", "href": href}]))
        start = f"{base}/catalog.json"
    elif case.startswith("next"):
        href = "file:///etc/passwd"
        first = _item(f"{base}/items.json", "../B2.TIF")  # one good feature, then the next page
        _write(
            folder / "items.json",
            {"type": "FeatureCollection", "features": [first], "links": [{"rel": "next", "href": href}]},
        )
        start = f"{base}/items.json"
    else:
        href = f"file://{local / 'item.json'}"
        feature = _item(href, "../B2.TIF")
        server.routes[f"/cat{len(server.log)}/search"] = lambda *a, f=feature: (
            200,
            {"type": "FeatureCollection", "features": [f], "links": []},
        )
        start = f"{base}/search"
    sheet = tmp_path / "s.tsv"
    before = len(other.log)
    assert main(["stac-search", start, "--out", str(sheet)]) == 2
    line = _one_error_line(capsys, "stac-search")
    assert href in line and ("not an http(s) URL" in line or "may name only http://, https://" in line), line
    assert not sheet.exists() and other.log[before:] == []


def test_a_broken_link_inside_a_remote_catalog_is_one_line(servers, tmp_path, capsys):
    """pystac wraps whatever failed while resolving a link in its own error; the line is the link's."""
    server, _, _ = servers
    _write(server.root / "broken" / "catalog.json", _catalog([{"rel": "child", "href": "./gone/catalog.json"}]))
    assert main(["stac-search", f"{server.url}/broken/catalog.json", "--out", str(tmp_path / "s.tsv")]) == 2
    line = _one_error_line(capsys, "stac-search")
    assert line.endswith(f"{server.url}/broken/gone/catalog.json: HTTP 404"), line


# --- the policy itself ------------------------------------------------------------------------------


PUBLIC = "https://8.8.8.8/v1/collections/x/items/a.json"  # an address that is global, given as a literal


@pytest.mark.parametrize(
    "href",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/",
        "http://10.0.0.5/x.tif",
        "http://127.0.0.1:8080/x.tif",
        "http://127.1/x.tif",
        "http://2130706433/x.tif",
        "http://0x7f.0.0.1/x.tif",
        "http://[::1]/x.tif",
        "http://[::ffff:127.0.0.1]/x.tif",
        "http://localhost/x.tif",
        "http://a.localhost/x",
        "http://0.0.0.0/x.tif",
        "http://192.168.1.1/x.tif",
    ],
)
def test_a_public_document_may_not_send_outcrop_to_this_machine_or_a_private_network(href):
    with pytest.raises(
        OutcropError,
        match=r"an address of this machine or a private network, from a document "
        r"on the public host 8\.8\.8\.8; refused",
    ):
        remote_href(PUBLIC, href, asset=True)
    # a document that is itself on such a host may name hosts of its own network
    assert remote_href("http://10.1.2.3/catalog/item.json", href, asset=True) == href


def test_what_a_remote_document_may_name():
    assert remote_href(PUBLIC, "../../b/B2.TIF", asset=True) == "https://8.8.8.8/v1/collections/b/B2.TIF"
    assert remote_href(PUBLIC, "/etc/passwd", asset=True) == "https://8.8.8.8/etc/passwd"  # on its own server
    assert remote_href(PUBLIC, "//9.9.9.9/x.tif", asset=True) == "https://9.9.9.9/x.tif"  # another public host
    assert remote_href(PUBLIC, "s3://usgs-landsat/x_B2.TIF", asset=True) == "s3://usgs-landsat/x_B2.TIF"
    assert remote_href(PUBLIC, "gs://bucket/x.tif", asset=True) == "gs://bucket/x.tif"
    for href in ("s3://usgs-landsat/catalog.json", "file:///etc/passwd", "/vsicurl/http://9.9.9.9/c.json"):
        with pytest.raises(OutcropError, match=r"may name only http://, https:// URLs"):
            remote_href(PUBLIC, href)  # a document to fetch: the web only
    for href in (
        "file:///etc/passwd",
        "FILE:///etc/passwd",
        " /vsis3/bucket/key",
        "/VSICURL/http://x/y",
        "data:text/plain,x",
        "C:\\data\\x.tif",
    ):
        with pytest.raises(OutcropError, match=r"may name only http://, https://, s3://, gs:// URLs"):
            remote_href(PUBLIC, href, asset=True)
    assert internal_host("localhost") and not internal_host("8.8.8.8")


def test_a_search_whose_item_ids_are_formulas_writes_a_sheet_that_reads_back(servers, tmp_path):
    """A scene sheet is an input the workflow reads back as it is, so it is not marked for
    spreadsheets (a mark would change a path); what stac-search writes cannot start a formula
    anyway: ids are made to start with a letter or digit, sources are ``stac:`` URLs."""
    import csv
    import urllib.parse

    from outcrop.csvfile import FORMULA_START
    from outcrop.raster.sheets import read_scene_sheet

    server, _, _ = servers
    ids = ['=cmd|" /C calc"!A0', "+1+1", "-1+1", "@SUM(1)", "\t=1"]
    features = []
    for i, item_id in enumerate(ids):
        feature = _item(f"{server.url}/formulas/{urllib.parse.quote(item_id, safe='')}.json", "../B2.TIF")
        feature["id"] = item_id
        feature["properties"]["datetime"] = f"2015-01-0{i + 1}T14:10:00Z"
        features.append(feature)
    server.routes["/formulas/search"] = lambda *a: (
        200,
        {"type": "FeatureCollection", "features": features, "links": []},
    )
    sheet = tmp_path / "s.tsv"
    assert main(["stac-search", f"{server.url}/formulas/search", "--role", "train", "--out", str(sheet)]) == 0
    with open(sheet, newline="") as fh:
        cells = [cell for row in csv.reader(fh, delimiter="\t") for cell in row]
    assert cells and not [c for c in cells if c.startswith(FORMULA_START)]
    rows = read_scene_sheet(sheet)
    assert [r["scene"][0].isalnum() for r in rows] == [True] * len(ids)
    assert [r["source"] for r in rows] == [f"stac:{f['links'][0]['href']}" for f in features]
