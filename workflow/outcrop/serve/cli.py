"""``outcrop serve RESULTS``: the command that starts the web application over a finished run.

Why Flask served by waitress: a search is CPU work in numpy and FAISS, which release the GIL, so a
fixed pool of plain threads runs searches side by side on the cores; waitress's pool (``--threads``)
bounds how many run at once, and so the memory a burst of clicks can take, and it refuses oversized
request bodies before the application reads them. Both are maintained, pure-Python packages with
no compiled parts of their own. An asynchronous stack (Starlette with uvicorn) would hand every
search to a thread pool anyway, of 40 threads by default: more searches contending for two cores,
not faster ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from collections.abc import Callable
from typing import Any

LOCAL = ("127.0.0.1", "localhost", "::1")


def default_marks(results: Path) -> Path:
    """``<results>-marks.gpkg`` beside the results folder: outside everything the workflow writes,
    and named after the run it was made on."""
    results = Path(results).resolve()
    return results.parent / f"{results.name}-marks.gpkg"


def check_marks_path(marks: Path, results: Path) -> Path:
    """The marks file, refused inside the results folder (the workflow owns it) or as a folder."""
    from outcrop import OutcropError

    marks, results = Path(marks).resolve(), Path(results).resolve()
    if marks == results or results in marks.parents:
        raise OutcropError(f"--marks {marks}: inside the results folder {results}, which the workflow writes; "
                           "keep the marks beside it (the default is <results>-marks.gpkg)")
    if marks.is_dir():
        raise OutcropError(f"--marks {marks}: is a folder")
    if marks.suffix.lower() != ".gpkg":
        raise OutcropError(f"--marks {marks}: a marks file is a GeoPackage (.gpkg)")
    if not marks.parent.is_dir():
        raise OutcropError(f"--marks {marks}: folder {marks.parent} does not exist")
    return marks


def open_server(results: Path, *, marks: Path | None = None, deposits: Path | None = None,
                host: str = "127.0.0.1", port: int = 8765, threads: int = 4, buffer_m: float, exclusion_km: float,
                site_overlap: float | None, title: str = "", log: Callable[[str], Any] = print) -> Any:
    """Open the run, its marks and its page, and bind the server (not yet serving: call ``run()``).

    ``deposits`` defaults to the demo's for a demo run, ``marks`` to :func:`default_marks`.
    Returns the waitress server, its ``marks_path`` and the address to open as attributes.
    """
    import waitress

    from outcrop import OutcropError
    from outcrop.serve.app import SERVER_MAX_BODY, allowed_hosts, create_app, serve_page
    from outcrop.serve.engine import ServedRun
    from outcrop.serve.marks import MarksFile

    results = Path(results)
    if not results.is_dir():
        raise OutcropError(f"{results}: not a folder (give a finished run's results folder)")
    marks_path = check_marks_path(marks or default_marks(results), results)
    demo = results / "demo" / "deposits.gpkg"
    if deposits is None and demo.is_file():
        deposits = demo
    run = ServedRun(results, buffer_m=buffer_m, exclusion_km=exclusion_km, site_overlap=site_overlap, log=log)
    store = MarksFile(marks_path, run.crs)
    page, known = serve_page(run, deposits, title or f"outcrop serve: {results.resolve().name}")
    hosts: set[str] = set()
    app = create_app(run, store, page, known, hosts=hosts, log=log)
    try:
        server = waitress.create_server(app, host=host, port=port, threads=threads,
                                        max_request_body_size=SERVER_MAX_BODY, channel_timeout=30,
                                        connection_limit=100, ident="outcrop", clear_untrusted_proxy_headers=True)
    except OSError as exc:
        raise OutcropError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    bound = int(server.effective_port)  # type: ignore[union-attr]
    hosts.update(allowed_hosts(host, bound))
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else f"[{host}]" if ":" in host else host
    server.url = f"http://{shown}:{bound}/"  # type: ignore[union-attr]
    server.marks_path = marks_path  # type: ignore[union-attr]
    log(f"serve: marks saved in {marks_path} ({len(store.marks)} already there)")
    return server


def cmd_serve(args: argparse.Namespace) -> None:
    from outcrop.cli import _log, _site_overlap

    if args.host not in LOCAL:
        print(f"outcrop serve: warning: listening on {args.host}, not on this machine only: anyone who can "
              "reach it can read the run and change the marks", file=sys.stderr, flush=True)
    server = open_server(Path(args.results), marks=Path(args.marks) if args.marks else None,
                         deposits=Path(args.deposits) if args.deposits else None, host=args.host, port=args.port,
                         threads=args.threads, buffer_m=args.buffer_m, exclusion_km=args.exclusion_km,
                         site_overlap=_site_overlap(args.site_overlap), title=args.title, log=_log)
    _log(f"serve: open {server.url} (Ctrl-C stops)")
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


def serve_parser(sub: Any) -> None:
    """Register ``outcrop serve`` on the command line's subparsers."""
    from outcrop.cli import _add, finite_float, non_negative_float, positive_int
    from outcrop.config import default

    p = _add(sub, "serve", cmd_serve, "search a finished run from a live map: click, mark right and wrong, "
             "search again, export (a local web application)", "outcrop serve results", False)
    p.add_argument("results", nargs="?", default=default("results"), help="a finished run's results folder")
    p.add_argument("--marks", default="", help="the marks GeoPackage, saved as you mark "
                   "(default: <results>-marks.gpkg beside the results folder)")
    p.add_argument("--deposits", default="", help="the run's known deposits, shown on the map "
                   "(default: the demo's, for a demo run)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                   "only; another address is warned about)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--threads", type=positive_int, default=4, help="searches answered at once (default 4)")
    p.add_argument("--title", default="", help="the page title")
    p.add_argument("--buffer-m", type=non_negative_float, default=default("analogues.buffer_m"),
                   help="a clicked or marked point selects the tiles within this distance (as analogues.buffer_m)")
    p.add_argument("--exclusion-km", type=non_negative_float, default=default("analogues.exclusion_km"),
                   help="no result this close to a positive (as analogues.exclusion_km)")
    p.add_argument("--site-overlap", type=finite_float, default=default("analogues.site_overlap"),
                   help="one result per site (as analogues.site_overlap; 0: every tile)")
