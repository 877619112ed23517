"""A real HTTP server on 127.0.0.1 for tests: static files with byte ranges, plus optional routes.

GDAL reads remote COGs with HTTP range requests; the server answers them as object stores do
(``206 Partial Content`` with ``Content-Range``), logs every request so that tests can check how
much was read, and lets a test add dynamic routes (a STAC API ``/search``) as plain functions.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# A route answers (method, path, query string, body) with (status, JSON-able payload).
Route = Callable[[str, str, str, bytes], tuple[int, Any]]


@dataclass
class Request:
    method: str
    path: str
    status: int
    body: bytes = b""
    range: str = ""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Server:
    """A running server: its base URL, the folder it serves, its request log and its routes."""

    url: str
    root: Path
    log: list[Request] = field(default_factory=list)
    routes: dict[str, Route] = field(default_factory=dict)


def _handler(server: Server) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

        def _route(self, method: str) -> bool:
            path, _, query = self.path.partition("?")
            route = server.routes.get(path)
            if route is None:
                return False
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, payload = route(method, path, query, body)
            data = json.dumps(payload).encode()
            # logged before answering, so a client that got its answer finds its request logged
            server.log.append(Request(method, path, status, body, headers=dict(self.headers.items())))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return True

        def _file(self, head_only: bool) -> None:
            rel = self.path.partition("?")[0].lstrip("/")
            path = server.root / rel
            if not rel or not path.is_file():
                server.log.append(Request(self.command, self.path, 404))
                self.send_error(404)
                return
            size = os.path.getsize(path)
            asked = self.headers.get("Range", "")
            m = re.match(r"bytes=(\d+)-(\d*)$", asked)
            start, end, status = 0, size - 1, 200
            if m:
                start = int(m.group(1))
                end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
                status = 206
            server.log.append(Request(self.command, self.path, status, range=asked))
            self.send_response(status)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start + 1))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if not head_only:
                with open(path, "rb") as fh:
                    fh.seek(start)
                    self.wfile.write(fh.read(end - start + 1))

        def do_GET(self) -> None:
            if not self._route("GET"):
                self._file(False)

        def do_HEAD(self) -> None:
            self._file(True)

        def do_POST(self) -> None:
            if not self._route("POST"):
                server.log.append(Request("POST", self.path, 405))
                self.send_error(405)

    return Handler


@contextmanager
def serve(root: Path) -> Iterator[Server]:
    """Serve ``root`` on an ephemeral port of 127.0.0.1 until the block ends."""
    root.mkdir(parents=True, exist_ok=True)
    state = Server("", root)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
