"""The web application of ``outcrop serve``: the map page and a small JSON API (docs/serve.md).

Flask, served by waitress (:mod:`outcrop.serve.server`). Guards, in the order a request meets them:

- **Host** must name this server (``127.0.0.1``, ``localhost`` or ``[::1]``, or the address it was
  bound to, with its port): a page on another site whose name an attacker points at 127.0.0.1
  (DNS rebinding) sends its own name and is refused.
- **Requests that change something** (POST, DELETE) must come from this server's own page: an
  ``Origin`` header, when sent, must be this server's, and ``Sec-Fetch-Site``, when sent, must be
  ``same-origin`` or ``none``; a body must be ``application/json`` (which no HTML form can send
  across sites). Clients that send neither header (curl, scripts) are not browsers acting for a page.
- **Bodies** are bounded (:data:`MAX_BODY`; waitress refuses anything past :data:`SERVER_MAX_BODY`
  before the application reads it) and every field is checked (:mod:`outcrop.serve.checks`).
- **Errors** are one JSON line, ``{"error": "..."}``, with a 4xx status; an unexpected failure is
  logged on the server and answered 500 without its traceback.
- **No file is served**: the page and every answer are made by the application, so no path of a
  request reaches the disk; the only file written is the marks file.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import threading
import traceback
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from outcrop.errors import OutcropError
from outcrop.serve import checks
from outcrop.serve.checks import RequestError
from outcrop.serve.engine import MAX_QUERY_TILES, MAX_TOP, Place, ServedRun
from outcrop.serve.export import FORMATS, export_bytes
from outcrop.serve.marks import KINDS, Mark, MarksFile

MAX_BODY = 256 * 1024  # bytes of a request body the application reads
SERVER_MAX_BODY = 1024 * 1024  # bytes waitress accepts at all
KEPT_SEARCHES = 64  # result lists kept for export
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def allowed_hosts(bound: str, port: int) -> set[str]:
    """The Host header values this server answers: loopback names and the bound address, with the port."""
    names = set(LOOPBACK)
    if bound not in ("0.0.0.0", "::", ""):
        names.add(f"[{bound}]" if ":" in bound else bound)
    return {f"{name}:{port}" for name in names}


def script_hashes(page: str) -> list[str]:
    """CSP sources of the page's inline scripts (those without attributes; the data element is not run)."""
    return [
        f"'sha256-{base64.b64encode(hashlib.sha256(m.encode()).digest()).decode()}'"
        for m in re.findall(r"<script>(.*?)</script>", page, flags=re.S)
    ]


def result_features(ranked: Any) -> list[dict[str, Any]]:
    """The page's view of a ranked list (the map's analogue markers), with ids and matched queries."""
    from outcrop.figures.webmap import analogue_features

    features = analogue_features(ranked)
    for feature, (_, row) in zip(features, ranked.sort_values("rank").iterrows()):
        feature["id"] = int(row["id"])
        feature["query"] = str(row["query"])
    return features


def mark_features(marks: list[Mark], run: ServedRun) -> list[dict[str, Any]]:
    """Marks for the page: a point or outline rings (run CRS) and the lon/lat of the centre."""
    from shapely import get_coordinates, get_parts

    out = []
    for m in marks:
        c = m.geometry.centroid
        lon, lat = run.unproject(c.x, c.y)
        rings = [
            [[float(y), float(x)] for x, y in get_coordinates(p.exterior)]
            for p in get_parts(m.geometry)
            if p.geom_type == "Polygon"
        ]
        out.append(
            {
                "seq": m.seq,
                "mark": m.kind,
                "name": m.name,
                "source": m.source,
                "scene": m.scene,
                "tile_id": m.tile_id,
                "x": float(c.x),
                "y": float(c.y),
                "rings": rings,
                "lon": float(lon),
                "lat": float(lat),
            }
        )
    return out


class Searches:
    """The last :data:`KEPT_SEARCHES` result lists, by a random id, for export (bounded memory)."""

    def __init__(self) -> None:
        self._kept: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def keep(self, ranked: Any) -> str:
        key = secrets.token_hex(8)
        with self._lock:
            self._kept[key] = ranked
            while len(self._kept) > KEPT_SEARCHES:
                self._kept.popitem(last=False)
        return key

    def get(self, key: str) -> Any:
        with self._lock:
            return self._kept.get(key)


def content_security_policy(page: str) -> str:
    """The page's Content-Security-Policy: only its own inline scripts (by hash) run, nothing loads from elsewhere."""
    return (
        "default-src 'none'; script-src " + " ".join(script_hashes(page)) + "; style-src 'unsafe-inline'; "
        "img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def refuse(message: str, status: int) -> Any:
    """The one shape every refusal takes, ``{"error": message}`` with a 4xx/5xx status, so the page shows one line."""
    from flask import jsonify

    response = jsonify({"error": message})
    response.status_code = status
    return response


def request_body() -> Any:
    """The current request's JSON body ({} when it has none), refused unless it is JSON: no form can post here."""
    from flask import request

    if not request.content_length and not request.data:
        return {}
    if request.mimetype != "application/json":
        raise RequestError("a request body must be JSON (Content-Type: application/json)", 415)
    value = request.get_json(silent=True)
    if value is None:
        raise RequestError("the request body is not valid JSON")
    return value


def place_of(run: ServedRun, value: Any, name: str) -> Place:
    """A clicked point (lon, lat) as a :class:`Place` in the run's CRS, refused when it falls outside that CRS."""
    lon, lat = checks.lon_lat(value, name)
    x, y = run.project(np.array([lon]), np.array([lat]))
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise RequestError(f"{name}: lon {lon:g}, lat {lat:g} is outside the run's coordinate system")
    import shapely

    return Place(f"place {lat:.4f}, {lon:.4f}", shapely.Point(float(x[0]), float(y[0])))


def polygon_of(run: ServedRun, value: Any, name: str) -> Place:
    """A drawn polygon as a :class:`Place`, refused when it selects more tiles than a query may (bounded work)."""
    shape = checks.polygon_in_run(checks.ring(value, name), run.project, name)
    selected = run.table.sindex.query(shape, predicate="intersects")
    if len(selected) > MAX_QUERY_TILES:
        raise RequestError(f"{name}: selects {len(selected)} tiles; at most {MAX_QUERY_TILES}")
    c = shape.centroid
    lon, lat = run.unproject(c.x, c.y)
    return Place(f"polygon at {lat:.4f}, {lon:.4f}", shape)


def marks_state(marks: MarksFile, run: ServedRun) -> Any:
    """The marks as the page shows them (counts, undo, file, features): every marks route answers with this."""
    from flask import jsonify

    current, can_undo = marks.snapshot()
    return jsonify(
        {
            "positives": sum(m.kind == "positive" for m in current),
            "negatives": sum(m.kind == "negative" for m in current),
            "undo": can_undo,
            "file": str(marks.path),
            "marks": mark_features(current, run),
        }
    )


def marks_from_request(req: dict[str, Any], run: ServedRun, deposits: Any) -> list[Mark]:
    """The marks one checked ``POST /api/marks`` body asks for: a place, a polygon, a result tile or all deposits."""
    kind = checks.choice(req.get("mark"), "mark", KINDS)
    given = [k for k in ("place", "polygon", "tile", "deposits") if k in req]
    if len(given) != 1:
        raise RequestError("give exactly one of place, polygon, tile (an index id) or deposits (true)")
    name = checks.text(req["name"], "name") if "name" in req else ""
    what = given[0]
    if what == "deposits":
        if req["deposits"] is not True:
            raise RequestError("deposits: expected true")
        if deposits is None or len(deposits) == 0:
            raise RequestError("this run has no known deposits (start the server with --deposits)", 409)
        return [Mark(kind, str(n), "deposit", g) for n, g in zip(deposits["name"], deposits.geometry)]
    if what == "tile":
        tile = checks.integer(req["tile"], "tile", 0, run.count - 1)
        scene = str(run.scene_names[run.scene_of[tile]])
        tile_id = int(run.tile_ids[tile])
        return [Mark(kind, name or f"{scene}:{tile_id}", "result", run.table.geometry.values[tile], scene, tile_id)]
    place = place_of(run, req["place"], "place") if what == "place" else polygon_of(run, req["polygon"], "polygon")
    return [Mark(kind, name or place.name, what, place.geometry)]


def register_guards(app: Any, hosts: set[str], csp: str, log: Any) -> None:
    """The guards every request meets (Host, origin, JSON bodies), the security headers and the JSON error handlers."""
    from flask import request
    from werkzeug.exceptions import HTTPException

    @app.before_request
    def guard() -> Any:
        host = request.headers.get("Host", "")
        if host not in hosts:
            return refuse(f"Host {host[:100]!r} is not this server (expected one of {', '.join(sorted(hosts))})", 421)
        if request.method in ("POST", "PUT", "PATCH", "DELETE"):
            origin = request.headers.get("Origin")
            if origin is not None and origin not in {f"http://{h}" for h in hosts}:
                return refuse(f"cross-origin request from {origin[:100]!r} refused", 403)
            site = request.headers.get("Sec-Fetch-Site")
            if site is not None and site not in ("same-origin", "none"):
                return refuse(f"cross-site request refused (Sec-Fetch-Site: {site[:40]})", 403)
            if request.content_length and request.mimetype != "application/json":
                return refuse("a request body must be JSON (Content-Type: application/json)", 415)
        return None

    @app.after_request
    def headers(response: Any) -> Any:
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"
        if response.mimetype == "text/html":
            response.headers["Content-Security-Policy"] = csp
        return response

    @app.errorhandler(RequestError)
    def request_error(exc: RequestError) -> Any:
        return refuse(str(exc), exc.status)

    @app.errorhandler(OutcropError)
    def outcrop_error(exc: OutcropError) -> Any:
        return refuse("; ".join(line.strip() for line in str(exc).splitlines() if line.strip()), 400)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return refuse(f"{exc.name}: {exc.description}" if exc.description else str(exc.name), exc.code or 500)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:
        log("serve: unexpected error:\n" + "".join(traceback.format_exception(exc)))
        return refuse("internal error (the server's log has the details)", 500)


def register_run_routes(app: Any, run: ServedRun, marks: MarksFile, page: str, deposits: Any) -> None:
    """``/`` (the rendered page, as bytes made once) and ``/api/run`` (what the page shows about the run)."""
    from flask import Response, jsonify

    page_bytes = page.encode("utf-8")

    @app.get("/")
    def index() -> Any:
        return Response(page_bytes, mimetype="text/html")

    @app.get("/api/run")
    def run_info() -> Any:
        return jsonify(
            {
                "results": str(run.results),
                "crs": run.crs.to_string(),
                "tiles": run.count,
                "scenes": [str(s) for s in run.scene_names],
                "index": type(run.index).__name__,
                "buffer_m": run.buffer_m,
                "exclusion_km": run.exclusion_m / 1000.0,
                "site_overlap": run.site_overlap,
                "max_top": MAX_TOP,
                "known_deposits": 0 if deposits is None else len(deposits),
                "marks": str(marks.path),
            }
        )


def register_search_routes(app: Any, run: ServedRun, marks: MarksFile, searches: Searches) -> None:
    """``/api/search`` (rank analogues of the marks and an optional place) and ``/api/export`` (a kept result)."""
    from flask import Response, jsonify

    @app.post("/api/search")
    def search() -> Any:
        req = checks.fields(request_body(), {"place", "polygon", "top"})
        top = checks.integer(req.get("top", 10), "top", 1, MAX_TOP)
        if "place" in req and "polygon" in req:
            raise RequestError("give a place or a polygon, not both")
        extra = (
            [place_of(run, req["place"], "place")]
            if "place" in req
            else [polygon_of(run, req["polygon"], "polygon")]
            if "polygon" in req
            else []
        )
        current, _ = marks.snapshot()
        positives = extra + [Place(m.name, m.geometry) for m in current if m.kind == "positive"]
        negatives = [Place(m.name, m.geometry) for m in current if m.kind == "negative"]
        ranked = run.search(positives, negatives, top)
        return jsonify(
            {
                "search": searches.keep(ranked),
                "positives": len(positives),
                "negatives": len(negatives),
                "results": result_features(ranked),
            }
        )

    @app.get("/api/export/<key>.<fmt>")
    def export(key: str, fmt: str) -> Any:
        if fmt not in FORMATS:
            raise RequestError(f"format {fmt[:20]!r}: expected one of {', '.join(FORMATS)}", 404)
        if not checks.SEARCH_ID.fullmatch(key):
            raise RequestError("search id: expected 16 hexadecimal digits", 404)
        ranked = searches.get(key)
        if ranked is None:
            raise RequestError(
                f"search {key} is not kept (the server keeps the last {KEPT_SEARCHES}); search again", 404
            )
        mimetype, suffix = FORMATS[fmt]
        response = Response(export_bytes(ranked, fmt), mimetype=mimetype)
        response.headers["Content-Disposition"] = f'attachment; filename="analogues-{key}.{suffix}"'
        return response


def register_mark_routes(app: Any, run: ServedRun, marks: MarksFile, deposits: Any) -> None:
    """``/api/marks``: list, add, undo, clear and remove marks; each answers with the marks as they now stand."""

    @app.get("/api/marks")
    def list_marks() -> Any:
        return marks_state(marks, run)

    @app.post("/api/marks")
    def add_mark() -> Any:
        req = checks.fields(request_body(), {"mark", "place", "polygon", "tile", "deposits", "name"})
        new = marks_from_request(req, run, deposits)
        run.tiles_of([Place(m.name, m.geometry) for m in new])  # OutcropError (400) naming a place that meets no tile
        marks.add(new)
        return marks_state(marks, run)

    @app.post("/api/marks/undo")
    def undo() -> Any:
        if not marks.undo():
            raise RequestError("nothing to undo", 409)
        return marks_state(marks, run)

    @app.post("/api/marks/clear")
    def clear() -> Any:
        marks.clear()
        return marks_state(marks, run)

    @app.delete("/api/marks/<int:seq>")
    def remove(seq: int) -> Any:
        try:
            marks.remove(seq)
        except KeyError:
            raise RequestError(f"no mark {seq}", 404) from None
        return marks_state(marks, run)


def create_app(run: ServedRun, marks: MarksFile, page: str, deposits: Any, *, hosts: set[str], log: Any = print) -> Any:
    """The Flask application over an opened run, its marks file and its rendered page.

    ``deposits``: the run's known deposits (GeoDataFrame in the run's CRS, or None); ``hosts``: the
    Host header values to answer (:func:`allowed_hosts`), which the caller may fill once the port is known.
    """
    from flask import Flask
    from flask.json.provider import DefaultJSONProvider

    app = Flask("outcrop.serve", static_folder=None)  # no static route: no file is ever served
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    assert isinstance(app.json, DefaultJSONProvider)  # Flask's own provider, which sorts keys unless told
    app.json.sort_keys = False
    register_guards(app, hosts, content_security_policy(page), log)
    register_run_routes(app, run, marks, page, deposits)
    register_search_routes(app, run, marks, Searches())
    register_mark_routes(app, run, marks, deposits)
    return app


def serve_page(run: ServedRun, deposits_path: Path | None, title: str) -> tuple[str, Any]:
    """The live map page of a run (the layers of ``map.html`` through the same functions, plus the
    search panel) and the run's known deposits (or None)."""
    from importlib.resources import files

    from outcrop.figures.webmap import map_data, render_page
    from outcrop.search.analogues import read_deposits

    layout = run.layout
    scenes = [str(s) for s in run.scene_names]

    def existing(paths: list[str]) -> list[Path]:
        return [Path(p) for p in paths if Path(p).is_file()]

    quicklooks = existing([layout.quicklook_tif(s) for s in scenes])
    if not quicklooks:
        raise OutcropError(f"{layout.at('quicklooks')}: no scene quicklooks; is {run.results} a finished run?")
    analogues = Path(layout.analogues_gpkg)
    data = map_data(
        quicklooks,
        existing([layout.cluster_raster(s) for s in scenes]),
        existing([layout.similarity_raster(s) for s in scenes]),
        analogues if analogues.is_file() else None,
        deposits_path,
        prepared=existing([layout.prepared(s) for s in scenes]),
        title=title,
    )
    data["live"] = True
    data["layers"] = data["layers"] | {
        "analogues": "Run's analogues (analogues.gpkg)",
        "results": "Search results",
        "marks": "Marks (right / wrong)",
    }
    data["serve"] = {"max_top": MAX_TOP, "buffer_m": run.buffer_m, "exclusion_km": run.exclusion_m / 1000.0}
    assets = files("outcrop.serve").joinpath("assets")
    page = render_page(
        data,
        extra_css=assets.joinpath("serve.css").read_text(encoding="utf-8"),
        extra_body=assets.joinpath("panel.html").read_text(encoding="utf-8"),
        extra_js=assets.joinpath("serve.js").read_text(encoding="utf-8"),
    )
    deposits = read_deposits(deposits_path, run.crs) if deposits_path is not None else None
    return page, deposits
