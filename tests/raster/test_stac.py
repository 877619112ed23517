"""Tests of STAC items and searches (outcrop.raster.stac) and of preparing scenes from STAC items.

The real scenes of shared/data are converted to COGs and served, with a static STAC catalog and a
small STAC API ``/search`` endpoint, by a real HTTP server on 127.0.0.1 that honours byte ranges.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.shutil import copy as rio_copy
from rasterio.warp import transform_bounds

from outcrop import OutcropError
from outcrop.io import read_prepared
from outcrop.raster.stac import StacItem, expand_stac, item_bands, item_source, write_scene_sheet
from range_server import Server, serve
from shared_data import DATA

GREENLAND = DATA / "landsat8" / "LC80030172015001LGN00_greenland"
PARANA = DATA / "landsat8" / "LC08_L1TP_224078_20200518_parana"
VIRGINIA = DATA / "sentinel2" / "s2_virginia"

# (item id, collection, platform, datetime, cloud cover, {asset key: source file}) of the catalog.
# Dates and cloud covers of Greenland and Paraná are those of their product ids; Virginia's product
# id is not known, so its date and cloud cover are set here.
SCENES = [
    (
        "LC80030172015001LGN00",
        "landsat-c2-l1",
        "landsat-8",
        "2015-01-01T14:10:00Z",
        12.0,
        {
            k: GREENLAND / f"LC80030172015001LGN00_{b}.tiff"
            for k, b in [("blue", "B2"), ("green", "B3"), ("red", "B4"), ("nir08", "B5")]
        },
    ),
    (
        "S2A_MSIL1C_virginia",
        "sentinel-2-l1c",
        "sentinel-2a",
        "2017-06-10T15:50:00Z",
        0.5,
        {"green": VIRGINIA / "s2_B03.jp2", "nir": VIRGINIA / "s2_B08.jp2", "swir16": VIRGINIA / "s2_B11.jp2"},
    ),
    (
        "LC08_L1TP_224078_20200518_20200518_01_RT",
        "landsat-c2-l1",
        "landsat-8",
        "2020-05-18T13:20:00Z",
        35.0,
        {f"B{n}": PARANA / f"LC08_L1TP_224078_20200518_20200518_01_RT_B{n}.TIF" for n in (2, 3, 4)},
    ),
]


def quiet(_: str) -> None:
    pass


def _item(
    server: Server, item_id: str, collection: str, platform: str, when: str, cloud: float, assets: dict[str, Path]
) -> dict[str, Any]:
    """Write the COGs of one scene under www/data/<id>/ and return its STAC item."""
    folder = server.root / "data" / item_id
    folder.mkdir(parents=True)
    entries, boxes = {}, []
    for key, path in assets.items():
        name = path.stem + ".TIF"
        rio_copy(path, folder / name, driver="COG", compress="DEFLATE", blocksize=256)
        with rasterio.open(path) as ds:
            boxes.append(transform_bounds(ds.crs, "EPSG:4326", *ds.bounds))
        entry: dict[str, Any] = {
            "href": f"../../data/{item_id}/{name}",
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
        }
        if collection.startswith("sentinel-2"):  # a product from before baseline 04.00: no offset
            entry["raster:bands"] = [{"scale": 0.0001, "offset": 0.0}]
        entries[key] = entry
    bbox = [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]
    w, s, e, n = bbox
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "collection": collection,
        "bbox": bbox,
        "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
        "properties": {"datetime": when, "platform": platform, "eo:cloud_cover": cloud},
        "assets": entries,
        "links": [
            {"rel": "self", "href": f"{server.url}/{collection}/{item_id}/{item_id}.json"},
            {"rel": "collection", "href": "../collection.json"},
        ],
    }


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def _search_route(server: Server, items: list[dict[str, Any]], *, allow_post: bool):
    """A tiny STAC API item search over ``items``: collections, bbox, datetime, limit, token paging."""

    def parse_time(text: str) -> dt.datetime:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))

    def route(method: str, path: str, query: str, body: bytes) -> tuple[int, Any]:
        if method == "POST" and not allow_post:
            return 405, {"code": "MethodNotAllowed"}
        if method == "POST":
            args = json.loads(body or b"{}")
        else:
            q = dict(urllib.parse.parse_qsl(query))
            args = dict(q)
            for key in ("collections", "bbox"):
                if key in args:
                    args[key] = args[key].split(",")
        found = items
        if args.get("collections"):
            found = [i for i in found if i["collection"] in args["collections"]]
        if args.get("bbox"):
            w, s, e, n = map(float, args["bbox"])
            found = [
                i for i in found if i["bbox"][0] <= e and w <= i["bbox"][2] and i["bbox"][1] <= n and s <= i["bbox"][3]
            ]
        if args.get("datetime"):
            lo, _, hi = args["datetime"].partition("/")
            if lo != "..":
                found = [i for i in found if parse_time(i["properties"]["datetime"]) >= parse_time(lo)]
            if hi != "..":
                found = [i for i in found if parse_time(i["properties"]["datetime"]) <= parse_time(hi)]
        limit, start = int(args.get("limit", 10)), int(args.get("token", 0))
        page = found[start : start + limit]
        links = []
        if start + limit < len(found):
            if method == "POST":
                links.append(
                    {
                        "rel": "next",
                        "href": f"{server.url}{path}",
                        "method": "POST",
                        "body": {"token": start + limit},
                        "merge": True,
                    }
                )
            else:
                q = dict(urllib.parse.parse_qsl(query), token=str(start + limit))
                links.append({"rel": "next", "href": f"{server.url}{path}?{urllib.parse.urlencode(q)}"})
        return 200, {"type": "FeatureCollection", "features": page, "links": links}

    return route


@pytest.fixture(scope="module")
def stac_server(tmp_path_factory):
    """The served catalog: catalog.json → two collections → three items; the API under /api/."""
    root = tmp_path_factory.mktemp("stac") / "www"
    with serve(root) as server:
        items = [_item(server, *scene) for scene in SCENES]
        collections = sorted({i["collection"] for i in items})
        _write(
            root / "catalog.json",
            {
                "type": "Catalog",
                "stac_version": "1.0.0",
                "id": "outcrop-test",
                "description": "test scenes",
                "links": [{"rel": "child", "href": f"./{c}/collection.json"} for c in collections],
            },
        )
        for c in collections:
            members = [i for i in items if i["collection"] == c]
            _write(
                root / c / "collection.json",
                {
                    "type": "Collection",
                    "stac_version": "1.0.0",
                    "id": c,
                    "description": c,
                    "license": "various",
                    "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
                    "links": [{"rel": "item", "href": f"./{i['id']}/{i['id']}.json"} for i in members],
                },
            )
            for i in members:
                _write(root / c / i["id"] / f"{i['id']}.json", i)
        server.routes["/api/search"] = _search_route(server, items, allow_post=True)
        server.routes["/get-only/search"] = _search_route(server, items, allow_post=False)
        server.routes["/api/"] = lambda *a: (
            200,
            {
                "type": "Catalog",
                "id": "api",
                "description": "test API",
                "stac_version": "1.0.0",
                "conformsTo": ["https://api.stacspec.org/v1.0.0/item-search"],
                "links": [{"rel": "search", "href": f"{server.url}/api/search", "method": "POST"}],
            },
        )
        yield server


def _ids(rows: list[dict[str, str]]) -> list[str]:
    return [r["scene"] for r in rows]


GREEN, VIRG, PARA = (s[0] for s in SCENES)


# --- mapping assets -----------------------------------------------------------------------


def test_item_assets_map_to_canonical_bands_for_each_naming():
    def item(props: dict[str, Any], assets: list[str], collection: str = "") -> StacItem:
        return StacItem(
            {
                "type": "Feature",
                "id": "x",
                "collection": collection,
                "properties": props,
                "assets": {k: {"href": f"https://example.org/x_{k}.tif"} for k in assets},
            },
            "https://example.org/x.json",
        )

    # Landsat Collection 2 Level-2 (USGS and Planetary Computer names): nir08 is OLI band 5, "nir"
    c2 = item_bands(
        item(
            {"platform": "landsat-9"},
            ["coastal", "blue", "green", "red", "nir08", "swir16", "swir22", "qa_pixel", "lwir11"],
            "landsat-c2-l2",
        )
    )
    assert c2.sensor == "landsat-c2l2"
    assert list(c2.bands) == ["coastal", "blue", "green", "red", "nir", "swir1", "swir2"]
    assert c2.bands["nir"] == ("https://example.org/x_nir08.tif", "B5")
    assert c2.quality == ("QA_PIXEL", "https://example.org/x_qa_pixel.tif")
    sr = item_bands(
        item({"platform": "LANDSAT_8", "landsat:correction": "L2SP"}, [f"SR_B{n}" for n in range(1, 8)] + ["QA_PIXEL"])
    )
    assert sr.sensor == "landsat-c2l2" and sr.bands["swir2"][1] == "B7" and sr.quality[0] == "QA_PIXEL"
    # Sentinel-2 L2A, earth-search names: COGs win over the JPEG 2000 copies; nir08 is B8A
    es = item_bands(
        item(
            {"platform": "sentinel-2b", "constellation": "sentinel-2"},
            ["red-jp2", "red", "nir", "nir08", "nir09", "swir16", "scl", "visual", "aot"],
            "sentinel-2-l2a",
        )
    )
    assert es.sensor == "sentinel2-l2a"
    assert es.bands["red"][0].endswith("x_red.tif") and es.bands["nir08"][1] == "B8A"
    assert es.bands["nir"][1] == "B8" and es.bands["wv"][1] == "B9" and es.bands["swir1"][1] == "B11"
    assert es.quality == ("SCL", "https://example.org/x_scl.tif")
    # Sentinel-2 with producer tokens (Planetary Computer)
    pc = item_bands(
        item(
            {"platform": "Sentinel-2A", "s2:product_type": "S2MSI2A"},
            [f"B{n:02d}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12)] + ["B8A", "SCL"],
        )
    )
    assert pc.sensor == "sentinel2-l2a" and pc.bands["rededge2"][1] == "B6" and pc.bands["coastal"][1] == "B1"
    assert pc.quality[0] == "SCL"
    with pytest.raises(OutcropError, match=r"x\.json: item 'x': cannot tell its sensor.*'modis'"):
        item_bands(item({"platform": "modis"}, ["red"]))


def test_item_source_names_the_item_itself():
    data = {
        "type": "Feature",
        "id": "a",
        "collection": "landsat-c2-l2",
        "properties": {"platform": "landsat-8"},
        "assets": {"red": {"href": "a_B4.TIF"}},
        "links": [{"rel": "self", "href": "https://example.org/items/a.json"}],
    }
    assert item_source(data) == ("stac:https://example.org/items/a.json", "landsat-c2l2", ["red"])
    del data["links"]
    with pytest.raises(OutcropError, match="no self link"):
        item_source(StacItem(data, "https://example.org/search"))


# --- searches -----------------------------------------------------------------------------


def test_static_catalog_expands_into_rows_with_filters(stac_server):
    url = f"{stac_server.url}/catalog.json"
    rows = expand_stac(url)
    assert _ids(rows) == [GREEN, VIRG, PARA]  # sorted by acquisition time
    assert rows[0] == {
        "scene": GREEN,
        "source": f"stac:{stac_server.url}/landsat-c2-l1/{GREEN}/{GREEN}.json",
        "sensor": "landsat-c2l1",
        "role": "index",
    }
    assert rows[1]["sensor"] == "sentinel2-l1c"
    assert _ids(expand_stac(url, collection="landsat-c2-l1", role="train")) == [GREEN, PARA]
    assert {r["role"] for r in expand_stac(url, role="train")} == {"train"}
    assert _ids(expand_stac(url, bbox=(-60, 55, -40, 70))) == [GREEN]  # south-west Greenland
    assert _ids(expand_stac(url, bbox=(-80, -40, -40, 40))) == [VIRG, PARA]  # the Americas, not Greenland
    assert _ids(expand_stac(url, datetime="2016-01-01/..")) == [VIRG, PARA]
    assert _ids(expand_stac(url, datetime="2015-01-01")) == [GREEN]  # a date is its whole day
    assert _ids(expand_stac(url, datetime="2015-01-02/2020-05-17T23:00:00Z")) == [VIRG]
    assert _ids(expand_stac(url, max_cloud=20)) == [GREEN, VIRG]
    assert _ids(expand_stac(url, max_cloud=20, collection="sentinel-2-l1c")) == [VIRG]


def test_api_search_posts_the_filters_and_follows_next_pages(stac_server):
    before = len(stac_server.log)
    rows = expand_stac(f"{stac_server.url}/api/search", datetime="2014-01-01/2030-01-01", limit=1)
    assert _ids(rows) == [GREEN, VIRG, PARA]
    posts = [r for r in stac_server.log[before:] if r.path == "/api/search"]
    assert [r.method for r in posts] == ["POST"] * 3  # one item per page: two next links followed
    first = json.loads(posts[0].body)
    assert first["limit"] == 1 and first["datetime"].startswith("2014-01-01T00:00:00")
    assert [json.loads(p.body).get("token") for p in posts] == [None, 1, 2]
    # the landing page leads to the same search; server-side filters are sent and applied
    before = len(stac_server.log)
    rows = expand_stac(f"{stac_server.url}/api/", collection="landsat-c2-l1", bbox=(-80, -40, -40, 40))
    assert _ids(rows) == [PARA]
    body = json.loads([r for r in stac_server.log[before:] if r.path == "/api/search"][0].body)
    assert body["collections"] == ["landsat-c2-l1"] and body["bbox"] == [-80, -40, -40, 40]
    # cloud cover is filtered on the client, whatever the API supports
    assert _ids(expand_stac(f"{stac_server.url}/api/search", max_cloud=1)) == [VIRG]


def test_api_that_refuses_post_is_searched_with_get(stac_server):
    before = len(stac_server.log)
    rows = expand_stac(f"{stac_server.url}/get-only/search", collection="landsat-c2-l1", limit=1)
    assert _ids(rows) == [GREEN, PARA]
    calls = [(r.method, r.status) for r in stac_server.log[before:] if r.path == "/get-only/search"]
    assert calls == [("POST", 405), ("GET", 200), ("GET", 200)]


def test_search_errors_name_the_url_and_the_problem(stac_server):
    with pytest.raises(
        OutcropError,
        match=r"/catalog\.json: the STAC search found no item "
        r"\(collection landsat-c2-l1, bbox 0,0,1,1\)",
    ):
        expand_stac(f"{stac_server.url}/catalog.json", collection="landsat-c2-l1", bbox=(0, 0, 1, 1))
    with pytest.raises(OutcropError, match=r"/api/search: the STAC search found no item \(datetime 1990"):
        expand_stac(f"{stac_server.url}/api/search", datetime="1990-01-01/1990-12-31")
    with pytest.raises(OutcropError, match=r"http://127\.0\.0\.1:9/catalog\.json: unreachable"):
        expand_stac("http://127.0.0.1:9/catalog.json")
    with pytest.raises(OutcropError, match=r"/nowhere/catalog\.json: HTTP 404"):
        expand_stac(f"{stac_server.url}/nowhere/catalog.json")
    with pytest.raises(OutcropError, match=r"/data/.*\.TIF: not JSON"):
        expand_stac(f"{stac_server.url}/data/{GREEN}/LC80030172015001LGN00_B2.TIF")
    with pytest.raises(OutcropError, match="bbox"):
        expand_stac(f"{stac_server.url}/catalog.json", bbox=(10, 0, 0, 1))


# --- preparing items ----------------------------------------------------------------------


def _same_pixels(a_path: Path, b_path: Path) -> None:
    a, ma, pa, ba = read_prepared(a_path)
    b, mb, pb, bb = read_prepared(b_path)
    assert ba == bb and pa["transform"] == pb["transform"] and pa["crs"] == pb["crs"]
    assert np.array_equal(ma, mb)
    assert np.array_equal(np.nan_to_num(a, nan=-9), np.nan_to_num(b, nan=-9))


def test_landsat_item_prepares_the_local_pixels_by_range_requests(stac_server, tmp_path):
    from outcrop.raster.scenes import prepare_scene

    bands = ["blue", "green", "red", "nir"]
    url = f"stac:{stac_server.url}/landsat-c2-l1/{GREEN}/{GREEN}.json"
    before = len(stac_server.log)
    lines: list[str] = []
    prepare_scene(
        url,
        "landsat-c2l1",
        tmp_path / "remote.tif",
        scene_id="g",
        bands=bands,
        crs="EPSG:32622",
        resolution=60.0,
        log=lines.append,
    )
    tifs = [r for r in stac_server.log[before:] if r.path.endswith(".TIF")]
    assert {r.path.rsplit("_", 1)[1] for r in tifs} == {"B2.TIF", "B3.TIF", "B4.TIF", "B5.TIF"}
    assert all(r.status == 206 and r.range.startswith("bytes=") for r in tifs if r.method == "GET")
    assert any(r.method == "GET" for r in tifs)
    # the same numbers as the producer's folder on disk, through the same radiometry
    prepare_scene(
        str(GREENLAND),
        "landsat-l1",
        tmp_path / "local.tif",
        scene_id="g",
        bands=bands,
        crs="EPSG:32622",
        resolution=60.0,
        log=quiet,
    )
    _same_pixels(tmp_path / "remote.tif", tmp_path / "local.tif")
    with rasterio.open(tmp_path / "remote.tif") as ds:
        assert "modelled sun elevation" in ds.tags()["radiometry"]  # the date came from the item id
    # the item's JSON on disk, with hrefs relative to it, reads the same files locally
    local_item = stac_server.root / "landsat-c2-l1" / GREEN / f"{GREEN}.json"
    prepare_scene(
        str(local_item),
        "landsat-c2l1",
        tmp_path / "item.tif",
        scene_id="g",
        bands=bands,
        crs="EPSG:32622",
        resolution=60.0,
        log=quiet,
    )
    _same_pixels(tmp_path / "item.tif", tmp_path / "local.tif")


def test_sentinel2_item_mixes_resolutions_and_uses_declared_rescaling(stac_server, tmp_path):
    from outcrop.raster.scenes import prepare_scene

    bands = ["green", "nir", "swir1"]
    url = f"{stac_server.url}/sentinel-2-l1c/{VIRG}/{VIRG}.json"  # a .json URL needs no prefix
    prepare_scene(
        url,
        "sentinel2-l1c",
        tmp_path / "remote.tif",
        scene_id="v",
        bands=bands,
        crs="EPSG:32618",
        resolution=60.0,
        log=quiet,
    )
    prepare_scene(
        str(VIRGINIA),
        "sentinel2-l1c",
        tmp_path / "local.tif",
        scene_id="v",
        bands=bands,
        crs="EPSG:32618",
        resolution=60.0,
        offset=0.0,
        log=quiet,
    )
    _same_pixels(tmp_path / "remote.tif", tmp_path / "local.tif")
    with rasterio.open(tmp_path / "remote.tif") as ds:
        assert "STAC raster:bands" in ds.tags()["radiometry"]


def test_item_errors_name_the_item_and_the_problem(stac_server, tmp_path):
    from outcrop.raster.scenes import prepare_scene

    out = tmp_path / "x.tif"
    item = f"stac:{stac_server.url}/landsat-c2-l1/{GREEN}/{GREEN}.json"
    with pytest.raises(OutcropError, match=rf"{GREEN}\.json: item '{GREEN}' has no asset for band 'swir1'"):
        prepare_scene(item, "landsat-c2l1", out, scene_id="x", bands=["blue", "swir1"], log=quiet)
    with pytest.raises(OutcropError, match=rf"item '{GREEN}' is a landsat-c2l1 scene, not sentinel2-l2a"):
        prepare_scene(item, "sentinel2-l2a", out, scene_id="x", bands=["blue"], log=quiet)
    with pytest.raises(OutcropError, match=r"127\.0\.0\.1:9/item\.json: unreachable"):
        prepare_scene("stac:http://127.0.0.1:9/item.json", "landsat-c2l1", out, scene_id="x", bands=["blue"], log=quiet)
    # an item whose asset is gone: the asset's URL is named
    broken = json.loads((stac_server.root / "landsat-c2-l1" / GREEN / f"{GREEN}.json").read_text())
    broken["assets"]["blue"]["href"] = f"{stac_server.url}/data/gone_B2.TIF"
    _write(stac_server.root / "broken" / "item.json", broken)
    with pytest.raises(OutcropError, match=r"/data/gone_B2\.TIF: cannot read raster"):
        prepare_scene(
            f"stac:{stac_server.url}/broken/item.json", "landsat-c2l1", out, scene_id="x", bands=["blue"], log=quiet
        )
    assert not out.exists()


# --- the scene sheet ----------------------------------------------------------------------


def test_stac_search_command_writes_and_extends_a_scene_sheet(stac_server, tmp_path, capsys):
    from outcrop.cli import main
    from outcrop.raster.sheets import read_scene_sheet

    sheet = tmp_path / "scenes.tsv"
    url = f"{stac_server.url}/catalog.json"
    assert (
        main(
            [
                "stac-search",
                url,
                "--collection",
                "landsat-c2-l1",
                "--datetime",
                "../2016-01-01",
                "--role",
                "train",
                "--out",
                str(sheet),
            ]
        )
        == 0
    )
    rows = read_scene_sheet(sheet)
    assert [(r["scene"], r["role"], r["sensor"]) for r in rows] == [(GREEN, "train", "landsat-c2l1")]
    # months later: the same search over a wider window adds only the new scenes
    assert main(["stac-search", url, "--max-cloud", "50", "--append", "--out", str(sheet)]) == 0
    rows = read_scene_sheet(sheet)
    assert [(r["scene"], r["role"]) for r in rows] == [(GREEN, "train"), (VIRG, "index"), (PARA, "index")]
    assert main(["stac-search", url, "--append", "--out", str(sheet)]) == 0
    assert len(read_scene_sheet(sheet)) == 3
    assert "0 new" in capsys.readouterr().out
    # a search that finds nothing: exit 2, one line naming the URL, the sheet untouched
    text = sheet.read_text()
    assert main(["stac-search", url, "--bbox", "0,0,1,1", "--append", "--out", str(sheet)]) == 2
    assert "found no item" in capsys.readouterr().err and sheet.read_text() == text


def test_appending_refuses_a_taken_scene_id(tmp_path):
    sheet = tmp_path / "s.tsv"
    write_scene_sheet([{"scene": "a", "source": "x.json", "sensor": "landsat-c2l2", "role": "train"}], sheet)
    with pytest.raises(OutcropError, match=r"s\.tsv: scene id 'a' is already used for x\.json"):
        write_scene_sheet(
            [{"scene": "a", "source": "y.json", "sensor": "landsat-c2l2", "role": "index"}], sheet, append=True
        )


# --- pystac-client: server-side cloud filter, retries, authenticated catalogs ---------------


def _with_query_extension(server: Server, items: list[dict[str, Any]], prefix: str) -> None:
    """An API at ``prefix`` whose landing page declares the Query extension, and whose search
    honours ``query: {eo:cloud_cover: {lte: N}}``."""
    plain = _search_route(server, items, allow_post=True)

    def route(method: str, path: str, query: str, body: bytes) -> tuple[int, Any]:
        status, page = plain(method, path, query, body)
        cap = (json.loads(body or b"{}").get("query") or {}).get("eo:cloud_cover", {}).get("lte")
        if cap is not None:
            page["features"] = [f for f in page["features"] if f["properties"]["eo:cloud_cover"] <= cap]
        return status, page

    server.routes[f"{prefix}search"] = route
    server.routes[prefix] = lambda *a: (
        200,
        {
            "type": "Catalog",
            "id": "q",
            "description": "query API",
            "stac_version": "1.0.0",
            "conformsTo": [
                "https://api.stacspec.org/v1.0.0/core",
                "https://api.stacspec.org/v1.0.0/item-search",
                "https://api.stacspec.org/v1.0.0-rc.1/item-search#query",
            ],
            "links": [{"rel": "search", "href": f"{server.url}{prefix}search", "method": "POST"}],
        },
    )


def _catalog_items(server: Server) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(server.root.glob("*/*/*.json"))]


def test_cloud_cover_is_filtered_by_the_server_where_the_api_can(stac_server):
    _with_query_extension(stac_server, _catalog_items(stac_server), "/q/")
    before = len(stac_server.log)
    assert _ids(expand_stac(f"{stac_server.url}/q/search", max_cloud=20)) == [GREEN, VIRG]
    body = json.loads([r for r in stac_server.log[before:] if r.path == "/q/search"][0].body)
    assert body["query"] == {"eo:cloud_cover": {"lte": 20}}
    # An API that declares no such extension gets no query (it might refuse it); the client filters.
    before = len(stac_server.log)
    assert _ids(expand_stac(f"{stac_server.url}/api/search", max_cloud=20)) == [GREEN, VIRG]
    assert "query" not in json.loads([r for r in stac_server.log[before:] if r.path == "/api/search"][0].body)


def test_a_failing_server_is_retried(stac_server, monkeypatch):
    from outcrop.raster import stac

    monkeypatch.setitem(stac.RETRIES, "backoff_factor", 0.01)  # the same retries, shorter waits
    items = _catalog_items(stac_server)
    plain = _search_route(stac_server, items, allow_post=True)
    answers = iter([503, 502])

    def flaky(method: str, path: str, query: str, body: bytes) -> tuple[int, Any]:
        status = next(answers, 200)
        return (status, {"code": "busy"}) if status != 200 else plain(method, path, query, body)

    stac_server.routes["/flaky/search"] = flaky
    before = len(stac_server.log)
    assert _ids(expand_stac(f"{stac_server.url}/flaky/search")) == [GREEN, VIRG, PARA]
    assert [r.status for r in stac_server.log[before:] if r.path == "/flaky/search"] == [503, 502, 200]
    stac_server.routes["/down/search"] = lambda *a: (503, {"code": "down"})
    before = len(stac_server.log)
    with pytest.raises(OutcropError, match=r"/down/search: HTTP 503"):
        expand_stac(f"{stac_server.url}/down/search")
    assert len([r for r in stac_server.log[before:] if r.path == "/down/search"]) == 1 + stac.RETRIES["status"]


def test_headers_reach_an_authenticated_catalog(stac_server, tmp_path):
    from outcrop.cli import main

    stac_server.routes["/private/search"] = _search_route(stac_server, _catalog_items(stac_server), allow_post=True)
    sheet = tmp_path / "s.tsv"
    before = len(stac_server.log)
    assert (
        main(
            [
                "stac-search",
                f"{stac_server.url}/private/search",
                "--header",
                "Authorization: Bearer s3cret",
                "--header",
                "X-Team: geology",
                "--out",
                str(sheet),
            ]
        )
        == 0
    )
    sent = [r.headers for r in stac_server.log[before:] if r.path == "/private/search"]
    assert sent and all(h.get("Authorization") == "Bearer s3cret" and h.get("X-Team") == "geology" for h in sent)
    # A request modifier (to sign requests) sees and may change every request.
    signed: list[str] = []

    def sign(request: Any) -> Any:
        request.headers["X-Signature"] = "abc"
        signed.append(request.url)
        return request

    before = len(stac_server.log)
    expand_stac(f"{stac_server.url}/private/search", request_modifier=sign)
    assert signed and all(
        r.headers.get("X-Signature") == "abc" for r in stac_server.log[before:] if r.path == "/private/search"
    )


def test_a_malformed_header_is_refused(stac_server, tmp_path, capsys):
    from outcrop.cli import main

    assert (
        main(
            [
                "stac-search",
                f"{stac_server.url}/api/search",
                "--header",
                "Bearer s3cret",
                "--out",
                str(tmp_path / "s.tsv"),
            ]
        )
        == 2
    )
    assert "--header 'Bearer s3cret': expected 'Name: value'" in capsys.readouterr().err
    assert not (tmp_path / "s.tsv").exists()
