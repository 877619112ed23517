"""The server behind ``outcrop serve RESULTS``: the web application over a finished run, bound to its address.

Why Flask served by waitress: a search is CPU work in numpy and FAISS, which release the GIL, so a
fixed pool of plain threads runs searches side by side on the cores; waitress's pool (``--threads``)
bounds how many run at once, and so the memory a burst of clicks can take, and it refuses oversized
request bodies before the application reads them. Both are maintained, pure-Python packages with
no compiled parts of their own. An asynchronous stack (Starlette with uvicorn) would hand every
search to a thread pool anyway, of 40 threads by default: more searches contending for two cores,
not faster ones.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

LOCAL = ("127.0.0.1", "localhost", "::1")


def default_marks(results: Path) -> Path:
    """``<results>-marks.gpkg`` beside the results folder: outside everything the workflow writes,
    and named after the run it was made on."""
    results = Path(results).resolve()
    return results.parent / f"{results.name}-marks.gpkg"


def check_marks_path(marks: Path, results: Path) -> Path:
    """The marks file, refused inside the results folder (the workflow owns it) or as a folder."""
    from outcrop.errors import OutcropError

    marks, results = Path(marks).resolve(), Path(results).resolve()
    if marks == results or results in marks.parents:
        raise OutcropError(
            f"--marks {marks}: inside the results folder {results}, which the workflow writes; "
            "keep the marks beside it (the default is <results>-marks.gpkg)"
        )
    if marks.is_dir():
        raise OutcropError(f"--marks {marks}: is a folder")
    if marks.suffix.lower() != ".gpkg":
        raise OutcropError(f"--marks {marks}: a marks file is a GeoPackage (.gpkg)")
    if not marks.parent.is_dir():
        raise OutcropError(f"--marks {marks}: folder {marks.parent} does not exist")
    return marks


def open_server(
    results: Path,
    *,
    marks: Path | None = None,
    deposits: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    threads: int = 4,
    buffer_m: float,
    exclusion_km: float,
    site_overlap: float | None,
    title: str = "",
    log: Callable[[str], Any] = print,
) -> Any:
    """Open the run, its marks and its page, and bind the server (not yet serving: call ``run()``).

    ``deposits`` defaults to the demo's for a demo run, ``marks`` to :func:`default_marks`.
    Returns the waitress server, its ``marks_path`` and the address to open as attributes.
    """
    from waitress.server import create_server

    from outcrop.errors import OutcropError
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
        # Any: the server carries the attributes set below (url, marks_path) for the caller.
        server: Any = create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            max_request_body_size=SERVER_MAX_BODY,
            channel_timeout=30,
            connection_limit=100,
            ident="outcrop",
            clear_untrusted_proxy_headers=True,
        )
    except OSError as exc:
        raise OutcropError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    bound = int(server.effective_port)
    hosts.update(allowed_hosts(host, bound))
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else f"[{host}]" if ":" in host else host
    server.url = f"http://{shown}:{bound}/"
    server.marks_path = marks_path
    log(f"serve: marks saved in {marks_path} ({len(store.marks)} already there)")
    return server
