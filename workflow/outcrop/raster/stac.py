"""STAC items and searches as scene sources, read with pystac (static catalogs, items) and
pystac-client (API searches): what stays here is only the mapping of an item's assets to bands.

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

Every request goes through one :class:`StacIO` (pystac-client's ``StacApiIO``): retries with
back-off on refused connections, timeouts and 429/5xx answers; extra headers and a request
modifier for catalogs that need a token or signed requests; and any failure an
:class:`~outcrop.OutcropError` that names the URL.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import json
import os
import re
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO

from outcrop.errors import OutcropError
from outcrop.limits import STAC_PAGES
from outcrop.raster.remote_hrefs import check_reachable, remote_href
from outcrop.raster.sensors import SENSORS, normalise_token

TIMEOUT_S = 30.0
MAX_PAGES = STAC_PAGES  # a search stops following `next` links after this many pages (outcrop.limits)
PAGE_LIMIT = 100  # items asked for per page of an API search
# Retries of one request: a refused connection once, a dropped read twice, an overloaded or
# failing server (429, 5xx) four times, waiting 0.5, 1, 2 s... in between (urllib3's back-off).
RETRIES: dict[str, Any] = {
    "total": 4,
    "connect": 1,
    "read": 2,
    "status": 4,
    "backoff_factor": 0.5,
    "status_forcelist": (429, 500, 502, 503, 504),
    "allowed_methods": None,
    "raise_on_status": False,
}
_USER_AGENT = "outcrop-stac"

# STAC `eo` common names (and the asset keys that reuse them) → producer band tokens per family.
# Landsat's `nir08` is OLI band 5 (0.865 µm), the run's `nir`; Sentinel-2's `nir08` is B8A.
_LANDSAT_NAMES = {
    "coastal": "B1",
    "blue": "B2",
    "green": "B3",
    "red": "B4",
    "nir08": "B5",
    "nir": "B5",
    "swir16": "B6",
    "swir22": "B7",
    "pan": "B8",
    "cirrus": "B9",
    "lwir11": "B10",
    "lwir12": "B11",
    "lwir": "B10",
    "qa_pixel": "QA_PIXEL",
    "qa": "BQA",
    "bqa": "BQA",
}
_SENTINEL2_NAMES = {
    "coastal": "B1",
    "blue": "B2",
    "green": "B3",
    "red": "B4",
    "rededge1": "B5",
    "rededge2": "B6",
    "rededge3": "B7",
    "nir": "B8",
    "nir08": "B8A",
    "nir09": "B9",
    "cirrus": "B10",
    "swir16": "B11",
    "swir22": "B12",
    "scl": "SCL",
}
_TOKEN_IN_NAME = re.compile(
    r"(?:^|[_/.-])(?:SR_|TOA_)?(B\d{1,2}A?|QA_PIXEL|BQA|SCL)(?:_\d{2}m)?(?:\.[A-Za-z0-9]+)?$", re.IGNORECASE
)


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
        """An asset href made absolute: a URL, or a local path (only for an item read from disk)."""
        return resolve_href(self.where, href, asset=True)


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


def resolve_href(base: str, href: str, *, asset: bool = False) -> str:
    """``href`` made absolute against ``base`` (a URL or a local file path).

    An href of a document read over HTTP must stay on the web (:mod:`outcrop.raster.remote_hrefs`:
    http(s), and for an ``asset`` also s3:// or gs://; never a local file or a GDAL path): anything
    else is an :class:`OutcropError` naming the document. A local document may name local files.
    """
    if is_url(base):
        return remote_href(base, href, asset=asset)
    if is_url(href) or href.startswith(("s3://", "gs://", "/vsi")) or os.path.isabs(href):
        return href
    if href.startswith("file://"):
        return urllib.parse.unquote(urllib.parse.urlparse(href).path)
    if is_url(base):
        return urllib.parse.urljoin(base, href)
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(base)), href))


def strip_stac_prefix(source: str) -> str:
    return source[len("stac:") :] if source.startswith("stac:") else source


def is_stac_source(source: str) -> bool:
    """Whether a scene ``source`` names a STAC item: ``stac:`` prefix, or a path/URL ending ``.json``."""
    path = urllib.parse.urlparse(source).path if is_url(source) else source
    return source.startswith("stac:") or path.lower().endswith(".json")


class StacIO(StacApiIO):
    """pystac-client's HTTP reader with outcrop's retries and timeout, local files read as files,
    and every failure an :class:`OutcropError` naming the URL (pystac and pystac-client read
    through it, so a broken link deep in a catalog is named too).

    ``headers`` go with every request (``{"Authorization": "Bearer ..."}``); ``request_modifier``
    may change each ``requests.Request`` before it is sent (to sign it, for example).

    ``origin``, once a search starts from a URL, is that URL: every document read after it was named
    by a remote document (a child, item, ``next`` or ``search`` link, resolved by pystac or
    pystac-client), so it must be an http(s) URL, on a public host unless the origin's is not
    (:mod:`outcrop.raster.remote_hrefs`); a link to a local file is refused, never read.
    """

    def __init__(
        self, headers: dict[str, str] | None = None, request_modifier: Callable[[Any], Any] | None = None
    ) -> None:
        from urllib3.util.retry import Retry

        super().__init__(
            headers={"User-Agent": _USER_AGENT, "Accept": "application/json", **(headers or {})},
            request_modifier=request_modifier,
            timeout=TIMEOUT_S,
            max_retries=Retry(**RETRIES),
        )
        self.origin: str | None = None

    def _check_linked(self, href: str) -> None:
        if self.origin is None or href == self.origin:
            return
        if not is_url(href):
            raise OutcropError(
                f"{self.origin}: the catalog links to {href!r}, which is not an http(s) URL; a "
                "catalog read over HTTP may link only to http(s) documents, never to local files"
            )
        check_reachable(self.origin, href)

    def request(
        self,
        href: str,
        method: str | None = None,
        headers: dict[str, str] | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> str:
        self._check_linked(href)
        try:
            return super().request(href, method=method, headers=headers, parameters=parameters)
        except APIError as exc:
            if getattr(exc, "status_code", None) is not None:
                raise OutcropError(f"{href}: HTTP {exc.status_code}") from None
            if "codec can't decode" in str(exc):  # an answer that is not text at all (a GeoTIFF)
                raise OutcropError(f"{href}: not JSON (not UTF-8 text)") from None
            problem = re.search(r"\[Errno -?\d+\] [^'\")]+|timed out|Connection refused", str(exc))
            raise OutcropError(f"{href}: unreachable ({problem.group(0) if problem else exc})") from None

    def read_text(self, source: Any, *args: Any, **kwargs: Any) -> str:
        href = os.fspath(source) if isinstance(source, (str, Path)) else None
        if href is not None:
            self._check_linked(href)
        if href is not None and not is_url(href):
            try:
                return Path(href).read_text()
            except OSError as exc:
                raise OutcropError(f"{href}: cannot read ({exc.strerror or exc})") from None
        return super().read_text(source, *args, **kwargs)


def fetch_text(ref: str, io: StacIO | None = None) -> str:
    """Text of a local file or URL; any failure is an :class:`OutcropError` naming it."""
    return (io or StacIO()).read_text(ref)


def fetch_json(ref: str, io: StacIO | None = None) -> dict[str, Any]:
    text = fetch_text(ref, io)
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
    words = " ".join(
        str(v)
        for v in (
            p.get("platform"),
            p.get("constellation"),
            item.data.get("collection"),
            p.get("s2:product_type"),
            p.get("landsat:correction"),
            p.get("processing:level"),
            item.id,
        )
        if v
    ).lower()
    if "sentinel-2" in words or "sentinel2" in words or re.search(r"\bs2[abc]?_", words):
        level2 = re.search(r"l2a|msi2a|level-2", words) is not None
        return "sentinel2-l2a" if level2 else "sentinel2-l1c"
    if "landsat" in words or re.search(r"\bl[co]0?[89]", words):
        level2 = re.search(r"c2-l2|c2l2|l2sp|l2sr|\bl2\b|level-2", words) is not None
        return "landsat-c2l2" if level2 else "landsat-c2l1"
    raise OutcropError(
        f"{item.where}: item {item.id!r}: cannot tell its sensor (platform "
        f"{p.get('platform')!r}, constellation {p.get('constellation')!r}, collection "
        f"{item.data.get('collection')!r}); outcrop reads Landsat 8/9 and Sentinel-2 items"
    )


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
                mtl = resolve_href(item.where, href)  # read as text, not by GDAL: no s3:// or gs://
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
        raise OutcropError(
            f"{item.where}: item {item.id!r} has no asset outcrop can read as a "
            f"{name} band (assets: {', '.join(item.data.get('assets') or {}) or 'none'})"
        )
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
        raise OutcropError(
            f"{item.where}: item {item.id!r} links to no copy of itself (no self link), so a scene sheet cannot name it"
        )
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
        return (box[0], box[1], box[3], box[4]) if len(box) == 6 else tuple(box)
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
            day = dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
            return day + dt.timedelta(days=1, microseconds=-1) if end else day
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise OutcropError(f"datetime {text!r}: not an RFC 3339 date or datetime") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


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


def make_filters(
    collection: str | Sequence[str] | None = None,
    bbox: Sequence[float] | None = None,
    datetime: str | None = None,
    max_cloud: float | None = None,
) -> Filters:
    """Check and normalise search filters (``datetime``: ``a/b``, ``a/..``, ``../b`` or one instant)."""
    if isinstance(collection, str):
        collections: tuple[str, ...] = tuple(c for c in collection.split(",") if c)
    else:
        collections = tuple(collection or ())
    box = None
    if bbox is not None:
        box = tuple(float(v) for v in bbox)
        if len(box) != 4 or box[0] > box[2] or box[1] > box[3]:
            raise OutcropError(
                f"bbox {list(bbox)}: expected west,south,east,north with west <= east and south <= north"
            )
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


def _static_items(catalog: Any, filters: Filters) -> Iterator[StacItem]:
    """Items under a static catalog or collection (pystac), skipping collections not asked for."""
    import warnings

    import pystac
    from pystac_client.warnings import FallbackToPystac

    with warnings.catch_warnings():
        # A static catalog has no search: walking it is the point, not a fallback.
        warnings.simplefilter("ignore", FallbackToPystac)
        try:
            yield from _walk(catalog, filters, pystac.Collection)
        except (pystac.STACError, pystac.STACTypeError, KeyError, TypeError, ValueError) as exc:
            # pystac wraps whatever went wrong reading a link (a refused href, an unreachable or
            # broken child) in its own error: the first outcrop error inside it says it in one line.
            inner: BaseException | None = exc
            while inner is not None and not isinstance(inner, OutcropError):
                inner = inner.__cause__ or inner.__context__
            if inner is not None:
                raise OutcropError(str(inner)) from None
            raise OutcropError(f"{catalog.get_self_href()}: not a readable STAC catalog ({_one_line(exc)})") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _walk(catalog: Any, filters: Filters, collection_type: type[Any]) -> Iterator[StacItem]:
    for root, _, items in catalog.walk():
        if isinstance(root, collection_type) and filters.collections and root.id not in filters.collections:
            continue
        for item in items:
            href = item.get_self_href()
            yield StacItem(item.to_dict(include_self_link=False, transform_hrefs=False), href or "", href)


def _collection_items(ref: str, io: StacIO) -> Iterator[StacItem]:
    """Features of an item collection, following its ``next`` links page by page."""
    for n, page in enumerate(io.get_pages(ref)):
        for feature in page.get("features") or []:
            own = _self_href(feature, ref)
            yield StacItem(feature, own or ref, own)
        if n + 1 >= MAX_PAGES:
            return


def _conformance(url: str, io: StacIO) -> list[str]:
    """The ``conformsTo`` classes of the API whose ``/search`` is ``url`` (empty where its landing
    page cannot be read: then no optional filter is sent)."""
    landing = url.rstrip("/").removesuffix("/search") + "/"
    try:
        return [str(c) for c in fetch_json(landing, io).get("conformsTo") or []]
    except OutcropError:
        return []


def _server_cloud_filter(filters: Filters, conforms: Sequence[str]) -> dict[str, Any]:
    """The cloud-cover cap in the API's own terms: the Query extension, else CQL2 Filter, else
    nothing (then only the client-side check applies, which always runs anyway)."""
    if filters.max_cloud is None:
        return {}
    if any(c.endswith("item-search#query") for c in conforms):
        return {"query": {"eo:cloud_cover": {"lte": filters.max_cloud}}}
    if any(c.endswith("item-search#filter") for c in conforms):
        return {
            "filter": {"op": "<=", "args": [{"property": "eo:cloud_cover"}, filters.max_cloud]},
            "filter_lang": "cql2-json",
        }
    return {}


def _search_api(url: str, filters: Filters, limit: int, io: StacIO) -> Iterator[StacItem]:
    """Items of a STAC API ``/search`` (pystac-client): POST, or GET where POST is refused."""
    from pystac_client import ItemSearch

    params: dict[str, Any] = {"limit": limit, **_server_cloud_filter(filters, _conformance(url, io))}
    if filters.collections:
        params["collections"] = list(filters.collections)
    if filters.bbox:
        params["bbox"] = list(filters.bbox)
    if filters.datetime_text:
        params["datetime"] = _interval_text(filters)
    for method in ("POST", "GET"):
        pages = ItemSearch(url, method=method, stac_io=io, **params).pages_as_dicts()
        try:
            first = next(pages, None)
        except OutcropError as exc:
            if method == "POST" and "HTTP 405" in str(exc):
                continue
            raise
        break
    if first is None:
        return
    for n, page in enumerate(itertools.chain([first], pages)):
        for feature in page.get("features") or []:
            yield _api_item(feature, url)
        if n + 1 >= MAX_PAGES:
            return


def _api_item(feature: dict[str, Any], search_url: str) -> StacItem:
    """A feature of a search page, located by its self link or the STAC API item path."""
    own = _self_href(feature, search_url)
    if own is None and feature.get("collection") and feature.get("id"):
        own = urllib.parse.urljoin(search_url, f"collections/{feature['collection']}/items/{feature['id']}")
    return StacItem(feature, own or search_url, own)


def _interval_text(filters: Filters) -> str:
    """The datetime filter as the RFC 3339 interval STAC APIs take (dates expanded to instants)."""

    def fmt(t: dt.datetime | None) -> str:
        return ".." if t is None else t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    return f"{fmt(filters.start)}/{fmt(filters.end)}"


def search_items(
    url_or_path: str, filters: Filters, *, limit: int = PAGE_LIMIT, io: StacIO | None = None
) -> list[StacItem]:
    """Every item that ``url_or_path`` leads to and ``filters`` keep, in no particular order.

    ``url_or_path`` is an item, an item collection, a static catalog or collection, a STAC API
    landing page (its ``search`` link is used), or an API ``/search`` endpoint.
    """
    import pystac

    io = io or StacIO()
    ref = strip_stac_prefix(url_or_path)
    # Read from a URL, the catalog is someone else's: every document it leads to must stay on the web.
    io.origin = ref if is_url(ref) else None
    if is_url(ref) and urllib.parse.urlparse(ref).path.rstrip("/").endswith("/search"):
        found: Iterator[StacItem] = _search_api(ref, filters, limit, io)
    else:
        data = fetch_json(ref, io)
        kind = data.get("type")
        search = [link for link in data.get("links") or [] if link.get("rel") == "search" and link.get("href")]
        if kind == "Feature":
            found = iter([StacItem(data, ref, ref)])
        elif kind == "FeatureCollection":
            found = _collection_items(ref, io)
        elif search and kind in ("Catalog", "Collection") and "conformsTo" in data:
            found = _search_api(resolve_href(ref, str(search[0]["href"])), filters, limit, io)
        elif kind in ("Catalog", "Collection"):
            try:
                catalog = pystac.read_dict(data, href=ref, stac_io=io)
            except (pystac.STACError, KeyError, TypeError, ValueError) as exc:
                raise OutcropError(f"{ref}: not a readable STAC {kind.lower()} ({exc})") from None
            found = _static_items(catalog, filters)
        else:
            raise OutcropError(f"{ref}: not a STAC catalog, collection, item or search (type {kind!r})")
    return [item for item in found if filters.keeps(item.data)]


_SCENE_ID = re.compile(r"[^A-Za-z0-9_.-]")


def scene_id(item_id: str) -> str:
    """A scene id (file-name safe, as the scene sheet requires) from an item id."""
    text = _SCENE_ID.sub("_", item_id).lstrip("_.-")
    return text or "item"


def expand_stac(
    url_or_path: str,
    *,
    collection: str | Sequence[str] | None = None,
    bbox: Sequence[float] | None = None,
    datetime: str | None = None,
    max_cloud: float | None = None,
    role: str = "index",
    limit: int = PAGE_LIMIT,
    headers: dict[str, str] | None = None,
    request_modifier: Callable[[Any], Any] | None = None,
) -> list[dict[str, str]]:
    """Scene-sheet rows ``{scene, source, sensor, role}`` for every item a STAC reference yields.

    ``headers`` and ``request_modifier`` reach catalogs that need a token or signed requests (see
    :class:`StacIO`).

    Rows are sorted by acquisition time then id, so the same search gives the same sheet. A search
    that finds nothing, an unreachable URL, and an item whose sensor or bands outcrop cannot read
    are each an :class:`OutcropError` naming the URL and the problem.
    """
    if role not in ("train", "index"):
        raise OutcropError(f"role {role!r}: expected 'train' or 'index'")
    filters = make_filters(collection, bbox, datetime, max_cloud)
    items = search_items(url_or_path, filters, limit=limit, io=StacIO(headers, request_modifier))
    if not items:
        raise OutcropError(f"{strip_stac_prefix(url_or_path)}: the STAC search found no item ({filters.describe()})")
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
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
            raise OutcropError(
                f"{path}: scene id {row['scene']!r} is already used for {taken[row['scene']]}; "
                f"cannot add {row['source']}"
            )
        new.append(row)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, delimiter="\t", restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(existing)
        writer.writerows(new)
    return len(new)


__all__ = [
    "expand_stac",
    "item_source",
    "item_bands",
    "item_sensor",
    "load_item",
    "search_items",
    "make_filters",
    "write_scene_sheet",
    "is_stac_source",
    "StacItem",
    "ItemBands",
    "Filters",
]
