"""STAC items and searches as scene sources, with the standard library only.

A STAC item is one scene: its assets are the per-band files (local paths or remote COGs read by
HTTP range requests) and its properties say which sensor took it. :func:`item_source` maps an item
onto what :func:`outcrop.raster.scenes.prepare_scene` needs (sensor name, band → file, quality band);
:func:`expand_stac` turns an item, an item collection, a static catalog or a STAC API ``/search``
into scene-sheet rows.

Why searches become a scene sheet instead of living in the workflow: Snakemake reads the sheet
when it builds the job graph, for every run, dry runs included. A search there would make building
the graph depend on the network, and a live catalog answers differently over time (new
acquisitions, reprocessed items), so the same config would silently describe another run. The
``outcrop stac-search`` command runs the search once and writes the rows; the sheet is the frozen,
reviewable list of scenes, and running the command again later with ``--append`` adds only the new
items, so only their work runs.

Only what a scene needs is read: item JSON through :mod:`urllib`, and the pixels through GDAL.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from outcrop import OutcropError
from outcrop.raster.sensors import SENSORS, normalise_token

TIMEOUT_S = 30.0
MAX_PAGES = 1000  # a search stops following `next` links after this many pages
PAGE_LIMIT = 100  # items asked for per page of an API search
_USER_AGENT = "outcrop-stac"

# STAC `eo` common names (and the asset keys that reuse them) → producer band tokens per family.
# Landsat's `nir08` is OLI band 5 (0.865 µm), the run's `nir`; Sentinel-2's `nir08` is B8A.
_LANDSAT_NAMES = {
    "coastal": "B1", "blue": "B2", "green": "B3", "red": "B4", "nir08": "B5", "nir": "B5",
    "swir16": "B6", "swir22": "B7", "pan": "B8", "cirrus": "B9", "lwir11": "B10", "lwir12": "B11",
    "lwir": "B10", "qa_pixel": "QA_PIXEL", "qa": "BQA", "bqa": "BQA",
}
_SENTINEL2_NAMES = {
    "coastal": "B1", "blue": "B2", "green": "B3", "red": "B4", "rededge1": "B5", "rededge2": "B6",
    "rededge3": "B7", "nir": "B8", "nir08": "B8A", "nir09": "B9", "cirrus": "B10", "swir16": "B11",
    "swir22": "B12", "scl": "SCL",
}
_TOKEN_IN_NAME = re.compile(r"(?:^|[_/.-])(?:SR_|TOA_)?(B\d{1,2}A?|QA_PIXEL|BQA|SCL)(?:_\d{2}m)?(?:\.[A-Za-z0-9]+)?$",
                            re.IGNORECASE)


@dataclass
class StacItem:
    """A STAC item, the URL or path its relative hrefs resolve against, and its own location.

    ``location`` is where the item itself can be read again (its file, its self link); ``None``
    for a feature of a search page or item collection that links to no copy of itself.
    """

    data: dict[str, Any]
    where: str
    location: str | None = None

    @property
    def id(self) -> str:
        return str(self.data.get("id", ""))

    @property
    def properties(self) -> dict[str, Any]:
        return self.data.get("properties") or {}

    def href(self, href: str) -> str:
        """An asset or link href made absolute: a URL, or a local path."""
        return resolve_href(self.where, href)


@dataclass
class ItemBands:
    """What an item holds for :func:`outcrop.raster.scenes.prepare_scene`: band name → (href, token)."""

    sensor: str
    bands: dict[str, tuple[str, str]]
    quality: tuple[str, str] | None = None  # (kind, href)
    mtl: str | None = None  # href of a Landsat MTL (txt or json)
    rescaling: dict[str, tuple[float, float]] = field(default_factory=dict)  # band → (scale, offset)
    product_name: str = ""


# --- reading JSON ---------------------------------------------------------------------------


def is_url(ref: str) -> bool:
    return ref.startswith(("http://", "https://"))


def resolve_href(base: str, href: str) -> str:
    """``href`` made absolute against ``base`` (a URL or a local file path)."""
    if is_url(href) or href.startswith(("s3://", "gs://", "/vsi")) or os.path.isabs(href):
        return href
    if href.startswith("file://"):
        return urllib.parse.unquote(urllib.parse.urlparse(href).path)
    if is_url(base):
        return urllib.parse.urljoin(base, href)
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(base)), href))


def strip_stac_prefix(source: str) -> str:
    return source[len("stac:"):] if source.startswith("stac:") else source


def is_stac_source(source: str) -> bool:
    """Whether a scene ``source`` names a STAC item: ``stac:`` prefix, or a path/URL ending ``.json``."""
    path = urllib.parse.urlparse(source).path if is_url(source) else source
    return source.startswith("stac:") or path.lower().endswith(".json")


def fetch_text(ref: str, *, data: bytes | None = None, method: str | None = None,
               headers: dict[str, str] | None = None) -> str:
    """Text of a local file or URL; any failure is an :class:`OutcropError` naming it."""
    if not is_url(ref):
        try:
            return Path(ref).read_text()
        except OSError as exc:
            raise OutcropError(f"{ref}: cannot read ({exc.strerror or exc})") from None
    request = urllib.request.Request(ref, data=data, method=method,
                                     headers={"User-Agent": _USER_AGENT, "Accept": "application/json",
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        raise OutcropError(f"{ref}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise OutcropError(f"{ref}: unreachable ({reason})") from None


def fetch_json(ref: str, **kwargs: Any) -> dict[str, Any]:
    text = fetch_text(ref, **kwargs)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OutcropError(f"{ref}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise OutcropError(f"{ref}: not a STAC object (a JSON {type(data).__name__})")
    return data


def load_item(source: str) -> StacItem:
    """The STAC item a scene source names (``stac:`` + path or URL, or a ``.json`` path or URL)."""
    ref = strip_stac_prefix(source)
    data = fetch_json(ref)
    if data.get("type") != "Feature":
        raise OutcropError(f"{ref}: not a STAC item (type {data.get('type')!r}, expected 'Feature')")
    return StacItem(data, ref, ref)


# --- items → bands --------------------------------------------------------------------------


def item_sensor(item: StacItem) -> str:
    """The outcrop sensor of an item, from its platform, constellation, collection and id."""
    p = item.properties
    words = " ".join(str(v) for v in (p.get("platform"), p.get("constellation"), item.data.get("collection"),
                                      p.get("s2:product_type"), p.get("landsat:correction"),
                                      p.get("processing:level"), item.id) if v).lower()
    if "sentinel-2" in words or "sentinel2" in words or re.search(r"\bs2[abc]?_", words):
        level2 = re.search(r"l2a|msi2a|level-2", words) is not None
        return "sentinel2-l2a" if level2 else "sentinel2-l1c"
    if "landsat" in words or re.search(r"\bl[co]0?[89]", words):
        level2 = re.search(r"c2-l2|c2l2|l2sp|l2sr|\bl2\b|level-2", words) is not None
        return "landsat-c2l2" if level2 else "landsat-c2l1"
    raise OutcropError(f"{item.where}: item {item.id!r}: cannot tell its sensor (platform "
                       f"{p.get('platform')!r}, constellation {p.get('constellation')!r}, collection "
                       f"{item.data.get('collection')!r}); outcrop reads Landsat 8/9 and Sentinel-2 items")


def _asset_token(key: str, asset: dict[str, Any], names: dict[str, str]) -> str | None:
    """The producer token of an asset: from its key, its ``eo:bands``, or its file name."""
    base = key.lower().removesuffix("-jp2").removesuffix("_jp2")
    if base in names:
        return names[base]
    token = normalise_token(key.removesuffix("-jp2"))
    if re.fullmatch(r"B\d{1,2}A?|QA_PIXEL|BQA|SCL", token):
        return token
    for band in asset.get("eo:bands") or []:
        for label in (band.get("common_name"), band.get("name")):
            if not label:
                continue
            if label.lower() in names:
                return names[label.lower()]
            token = normalise_token(str(label))
            if re.fullmatch(r"B\d{1,2}A?", token):
                return token
    m = _TOKEN_IN_NAME.search(urllib.parse.urlparse(str(asset.get("href", ""))).path)
    return normalise_token(m.group(1)) if m else None


def _raster_rescaling(asset: dict[str, Any]) -> tuple[float, float] | None:
    bands = asset.get("raster:bands") or []
    if len(bands) != 1 or "scale" not in bands[0] and "offset" not in bands[0]:
        return None
    return float(bands[0].get("scale", 1.0)), float(bands[0].get("offset", 0.0))


def item_bands(item: StacItem, sensor: str | None = None) -> ItemBands:
    """Map an item's assets to canonical bands of ``sensor`` (by default the item's own).

    Cloud-optimised GeoTIFF assets win over JPEG 2000 copies of the same band (earth-search's
    ``red`` vs ``red-jp2``): both hold the same numbers and COGs read faster by range requests.
    """
    name = sensor or item_sensor(item)
    spec = SENSORS.get(name)
    if spec is None:
        raise OutcropError(f"{item.where}: unknown sensor {name!r}")
    names = _SENTINEL2_NAMES if name.startswith("sentinel2") else _LANDSAT_NAMES
    chosen: dict[str, tuple[int, str, dict[str, Any]]] = {}  # token → (rank, key, asset)
    mtl = None
    for key, asset in (item.data.get("assets") or {}).items():
        href = str(asset.get("href", ""))
        if not href:
            continue
        low = key.lower()
        if low in ("mtl.txt", "mtl.json", "mtl") or re.search(r"_MTL\.(txt|json)$", href):
            if mtl is None or href.endswith(".txt"):
                mtl = item.href(href)
            continue
        token = _asset_token(key, asset, names)
        if token is None:
            continue
        is_jp2 = low.endswith("jp2") or href.lower().endswith(".jp2")
        rank = 1 if is_jp2 else 0
        if token not in chosen or rank < chosen[token][0]:
            chosen[token] = (rank, key, asset)
    out = ItemBands(name, {}, mtl=mtl, product_name=str(item.properties.get("s2:product_uri") or item.id))
    for token, (_, _, asset) in chosen.items():
        if token in spec.quality and out.quality is None:
            out.quality = (token, item.href(str(asset["href"])))
            continue
        canonical = spec.band_tokens.get(token)
        if canonical is None:
            continue
        out.bands[canonical] = (item.href(str(asset["href"])), token)
        rescale = _raster_rescaling(asset)
        if rescale is not None:
            out.rescaling[canonical] = rescale
    if not out.bands:
        raise OutcropError(f"{item.where}: item {item.id!r} has no asset outcrop can read as a "
                           f"{name} band (assets: {', '.join(item.data.get('assets') or {}) or 'none'})")
    return out


def item_source(item: StacItem | dict[str, Any], where: str = "") -> tuple[str, str, list[str]]:
    """(source, sensor, canonical bands) of an item, as a scene-sheet row would hold them.

    ``source`` is the item's own location: ``stac:`` + its URL, or its local JSON path.
    """
    if isinstance(item, dict):
        self_href = _self_href(item, where)
        item = StacItem(item, where or self_href or "", self_href or where or None)
    bands = item_bands(item)
    location = item.location
    if not location:
        raise OutcropError(f"{item.where}: item {item.id!r} links to no copy of itself (no self link), "
                           f"so a scene sheet cannot name it")
    local_json = not is_url(location) and location.lower().endswith(".json")
    return (location if local_json else f"stac:{location}"), bands.sensor, list(bands.bands)


# --- searches -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    """What a search keeps: collections, a lon/lat bbox, a datetime interval, a cloud-cover cap."""

    collections: tuple[str, ...] = ()
    bbox: tuple[float, float, float, float] | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    max_cloud: float | None = None
    datetime_text: str | None = None

    def describe(self) -> str:
        parts = []
        if self.collections:
            parts.append(f"collection {','.join(self.collections)}")
        if self.bbox:
            parts.append(f"bbox {','.join(f'{v:g}' for v in self.bbox)}")
        if self.datetime_text:
            parts.append(f"datetime {self.datetime_text}")
        if self.max_cloud is not None:
            parts.append(f"cloud cover <= {self.max_cloud:g}%")
        return ", ".join(parts) or "no filters"

    def keeps(self, item: dict[str, Any]) -> bool:
        props = item.get("properties") or {}
        if self.collections and item.get("collection") not in self.collections:
            return False
        if self.bbox is not None:
            box = item_bbox(item)
            if box is None or not _overlaps(box, self.bbox):
                return False
        if self.start is not None or self.end is not None:
            first, last = item_interval(item)
            if first is None or last is None:
                return False
            if self.start is not None and last < self.start:
                return False
            if self.end is not None and first > self.end:
                return False
        if self.max_cloud is not None:
            cloud = props.get("eo:cloud_cover")
            if cloud is None or float(cloud) > self.max_cloud:
                return False  # unknown cloud cover cannot be vouched for
        return True


def _overlaps(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def item_bbox(item: dict[str, Any]) -> tuple[float, float, float, float] | None:
    """The item's lon/lat bbox, from ``bbox`` or else its geometry's coordinates."""
    box = item.get("bbox")
    if box and len(box) in (4, 6):
        return (box[0], box[1], box[3], box[4]) if len(box) == 6 else tuple(box)  # type: ignore[return-value]
    coords = list(_coordinates((item.get("geometry") or {}).get("coordinates")))
    if not coords:
        return None
    xs, ys = [c[0] for c in coords], [c[1] for c in coords]
    return min(xs), min(ys), max(xs), max(ys)


def _coordinates(value: Any) -> Iterator[Sequence[float]]:
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (int, float)):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _coordinates(v)


def parse_time(text: str, *, end: bool = False) -> dt.datetime:
    """An RFC 3339 datetime (UTC when it has no zone); a bare date means its first or last instant."""
    text = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc)
            return day + dt.timedelta(days=1, microseconds=-1) if end else day
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise OutcropError(f"datetime {text!r}: not an RFC 3339 date or datetime") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def item_interval(item: dict[str, Any]) -> tuple[dt.datetime | None, dt.datetime | None]:
    props = item.get("properties") or {}
    try:
        if props.get("datetime"):
            t = parse_time(str(props["datetime"]))
            return t, t
        if props.get("start_datetime") and props.get("end_datetime"):
            return parse_time(str(props["start_datetime"])), parse_time(str(props["end_datetime"]))
    except OutcropError:
        return None, None
    return None, None


def make_filters(collection: str | Sequence[str] | None = None, bbox: Sequence[float] | None = None,
                 datetime: str | None = None, max_cloud: float | None = None) -> Filters:
    """Check and normalise search filters (``datetime``: ``a/b``, ``a/..``, ``../b`` or one instant)."""
    if isinstance(collection, str):
        collections: tuple[str, ...] = tuple(c for c in collection.split(",") if c)
    else:
        collections = tuple(collection or ())
    box = None
    if bbox is not None:
        box = tuple(float(v) for v in bbox)
        if len(box) != 4 or box[0] > box[2] or box[1] > box[3]:
            raise OutcropError(f"bbox {list(bbox)}: expected west,south,east,north with west <= east "
                               f"and south <= north")
    start = end = None
    if datetime:
        first, _, last = datetime.partition("/") if "/" in datetime else (datetime, "", datetime)
        start = None if first in ("", "..") else parse_time(first)
        end = None if last in ("", "..") else parse_time(last, end=True)
    if max_cloud is not None and not 0 <= max_cloud <= 100:
        raise OutcropError(f"max cloud cover {max_cloud}: expected a percentage from 0 to 100")
    return Filters(collections, box, start, end, max_cloud, datetime or None)  # type: ignore[arg-type]


def _self_href(data: dict[str, Any], where: str = "") -> str | None:
    for link in data.get("links") or []:
        if link.get("rel") == "self" and link.get("href"):
            return resolve_href(where, str(link["href"])) if where else str(link["href"])
    return None


def _links(data: dict[str, Any], rel: str) -> list[dict[str, Any]]:
    return [link for link in data.get("links") or [] if link.get("rel") == rel and link.get("href")]


def _static_items(ref: str, data: dict[str, Any], filters: Filters, seen: set[str]) -> Iterator[StacItem]:
    """Items under a static catalog or collection, following ``child`` and ``item`` links."""
    if ref in seen:
        return
    seen.add(ref)
    kind = data.get("type")
    if kind == "Collection" and filters.collections and data.get("id") not in filters.collections:
        return
    for link in _links(data, "item"):
        href = resolve_href(ref, str(link["href"]))
        item = fetch_json(href)
        if item.get("type") == "Feature":
            yield StacItem(item, href, href)
    for link in _links(data, "child"):
        href = resolve_href(ref, str(link["href"]))
        yield from _static_items(href, fetch_json(href), filters, seen)


def _collection_items(ref: str, data: dict[str, Any]) -> Iterator[StacItem]:
    """Features of an item collection, following ``next`` links (GET) page by page."""
    pages = 0
    seen = {ref}
    while True:
        for feature in data.get("features") or []:
            own = _self_href(feature, ref)
            yield StacItem(feature, own or ref, own)
        nxt = _links(data, "next")
        pages += 1
        if not nxt or pages >= MAX_PAGES:
            return
        ref = resolve_href(ref, str(nxt[0]["href"]))
        if ref in seen:
            return
        seen.add(ref)
        data = fetch_json(ref)


def _search_api(url: str, filters: Filters, limit: int) -> Iterator[StacItem]:
    """Items of a STAC API ``/search``: POST the query (GET where POST is refused), follow ``next``."""
    body: dict[str, Any] = {"limit": limit}
    if filters.collections:
        body["collections"] = list(filters.collections)
    if filters.bbox:
        body["bbox"] = list(filters.bbox)
    if filters.datetime_text:
        body["datetime"] = _interval_text(filters)
    try:
        page = fetch_json(url, data=json.dumps(body).encode(), method="POST",
                          headers={"Content-Type": "application/json"})
    except OutcropError as exc:
        if "HTTP 405" not in str(exc):
            raise
        query = {k: ",".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in body.items()}
        url = f"{url}{'&' if '?' in url else '?'}{urllib.parse.urlencode(query)}"
        page = fetch_json(url)
    for _ in range(MAX_PAGES):
        for feature in page.get("features") or []:
            yield _api_item(feature, url)
        nxt = _links(page, "next")
        if not nxt or not page.get("features"):
            return
        link = nxt[0]
        url = resolve_href(url, str(link["href"]))
        if str(link.get("method", "GET")).upper() == "POST":
            body = dict(body, **link.get("body", {})) if link.get("merge") else link.get("body", body)
            page = fetch_json(url, data=json.dumps(body).encode(), method="POST",
                              headers={"Content-Type": "application/json", **link.get("headers", {})})
        else:
            page = fetch_json(url)


def _api_item(feature: dict[str, Any], search_url: str) -> StacItem:
    """A feature of a search page, located by its self link or the STAC API item path."""
    own = _self_href(feature, search_url)
    if own is None and feature.get("collection") and feature.get("id"):
        own = urllib.parse.urljoin(search_url, f"collections/{feature['collection']}/items/{feature['id']}")
    return StacItem(feature, own or search_url, own)


def _interval_text(filters: Filters) -> str:
    """The datetime filter as the RFC 3339 interval STAC APIs take (dates expanded to instants)."""
    def fmt(t: dt.datetime | None) -> str:
        return ".." if t is None else t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{fmt(filters.start)}/{fmt(filters.end)}"


def search_items(url_or_path: str, filters: Filters, *, limit: int = PAGE_LIMIT) -> list[StacItem]:
    """Every item that ``url_or_path`` leads to and ``filters`` keep, in no particular order.

    ``url_or_path`` is an item, an item collection, a static catalog or collection, a STAC API
    landing page (its ``search`` link is used), or an API ``/search`` endpoint.
    """
    ref = strip_stac_prefix(url_or_path)
    if is_url(ref) and urllib.parse.urlparse(ref).path.rstrip("/").endswith("/search"):
        found: Iterator[StacItem] = _search_api(ref, filters, limit)
    else:
        data = fetch_json(ref)
        kind = data.get("type")
        search = _links(data, "search")
        if kind == "Feature":
            found = iter([StacItem(data, ref, ref)])
        elif kind == "FeatureCollection":
            found = _collection_items(ref, data)
        elif search and kind in ("Catalog", "Collection") and "conformsTo" in data:
            found = _search_api(resolve_href(ref, str(search[0]["href"])), filters, limit)
        elif kind in ("Catalog", "Collection"):
            found = _static_items(ref, data, filters, set())
        else:
            raise OutcropError(f"{ref}: not a STAC catalog, collection, item or search (type {kind!r})")
    return [item for item in found if filters.keeps(item.data)]


_SCENE_ID = re.compile(r"[^A-Za-z0-9_.-]")


def scene_id(item_id: str) -> str:
    """A scene id (file-name safe, as the scene sheet requires) from an item id."""
    text = _SCENE_ID.sub("_", item_id).lstrip("_.-")
    return text or "item"


def expand_stac(url_or_path: str, *, collection: str | Sequence[str] | None = None,
                bbox: Sequence[float] | None = None, datetime: str | None = None,
                max_cloud: float | None = None, role: str = "index", limit: int = PAGE_LIMIT) -> list[dict[str, str]]:
    """Scene-sheet rows ``{scene, source, sensor, role}`` for every item a STAC reference yields.

    Rows are sorted by acquisition time then id, so the same search gives the same sheet. A search
    that finds nothing, an unreachable URL, and an item whose sensor or bands outcrop cannot read
    are each an :class:`OutcropError` naming the URL and the problem.
    """
    if role not in ("train", "index"):
        raise OutcropError(f"role {role!r}: expected 'train' or 'index'")
    filters = make_filters(collection, bbox, datetime, max_cloud)
    items = search_items(url_or_path, filters, limit=limit)
    if not items:
        raise OutcropError(f"{strip_stac_prefix(url_or_path)}: the STAC search found no item "
                           f"({filters.describe()})")
    epoch = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    items.sort(key=lambda it: (item_interval(it.data)[0] or epoch, it.id))
    rows: list[dict[str, str]] = []
    by_scene: dict[str, str] = {}
    for item in items:
        source, sensor, _ = item_source(item)
        if source in by_scene.values():
            continue  # the same item reached twice (two catalog paths, overlapping pages)
        sid = scene_id(item.id)
        n = 2
        while sid in by_scene:
            sid = f"{scene_id(item.id)}.{n}"
            n += 1
        by_scene[sid] = source
        rows.append({"scene": sid, "source": source, "sensor": sensor, "role": role})
    return rows


# --- the scene sheet ------------------------------------------------------------------------

SHEET_COLUMNS = ("scene", "source", "sensor", "role")


def write_scene_sheet(rows: Sequence[dict[str, str]], path: str | Path, *, append: bool = False) -> int:
    """Write ``rows`` as a scene sheet (TSV), or add them to an existing one; returns rows added.

    Appending keeps the sheet's existing rows and columns and skips items already there (same
    source), so re-running a search months later adds only new scenes. A new item whose scene id
    is already taken by another source is an error naming both.
    """
    from outcrop.io import atomic_path

    path = Path(path)
    existing: list[dict[str, str]] = []
    columns = list(SHEET_COLUMNS)
    if append and path.exists():
        with open(path, newline="") as fh:
            reader = csv.DictReader((line for line in fh if not line.startswith("#")), delimiter="\t")
            existing = list(reader)
            columns = list(reader.fieldnames or columns)
        missing = [c for c in SHEET_COLUMNS if c not in columns]
        if missing:
            raise OutcropError(f"{path}: not a scene sheet (no column {', '.join(missing)})")
    sources = {r["source"] for r in existing}
    taken = {r["scene"]: r["source"] for r in existing}
    new = []
    for row in rows:
        if row["source"] in sources:
            continue
        if row["scene"] in taken:
            raise OutcropError(f"{path}: scene id {row['scene']!r} is already used for {taken[row['scene']]}; "
                               f"cannot add {row['source']}")
        new.append(row)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, delimiter="\t", restval="", lineterminator="\n")
            writer.writeheader()
            writer.writerows(existing)
            writer.writerows(new)
    return len(new)


__all__ = ["expand_stac", "item_source", "item_bands", "item_sensor", "load_item", "search_items",
           "make_filters", "write_scene_sheet", "is_stac_source", "StacItem", "ItemBands", "Filters"]
