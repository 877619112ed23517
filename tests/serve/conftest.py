"""A real ``outcrop serve`` (waitress on a free loopback port, in a thread of the test process) and a
raw HTTP client that sends exactly what a test writes: any Host header, any path, any body."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from outcrop.serve.server import open_server


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Live:
    """A running server: its URL, port, marks file, and a raw client."""

    url: str
    port: int
    marks: Path
    server: Any

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | dict | None = None,
        headers: dict[str, str] | None = None,
        host: str | None = None,
    ) -> Answer:
        """Send one request as written (the path is not normalised); Host is this server's unless given."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        sent = {"Host": host if host is not None else f"127.0.0.1:{self.port}"}
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for key, value in sent.items():
                if value is not None:
                    conn.putheader(key, value)
            data = body.encode() if isinstance(body, str) else body
            if data is not None and "Content-Length" not in sent:
                conn.putheader("Content-Length", str(len(data)))
            try:
                conn.endheaders(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered (and closed) before the whole body was sent: read its answer
            try:
                response = conn.getresponse()
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                return Answer(0, {}, b"")  # closed without an answer
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Answer:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Answer:
        return self.request("POST", path, body, **kw)


@contextmanager
def live_server(results: Path, **options: Any) -> Iterator[Live]:
    """``outcrop serve`` on ``results`` at a free port, stopped at the end."""
    options.setdefault("buffer_m", 100.0)
    options.setdefault("exclusion_km", 1.0)
    options.setdefault("site_overlap", 0.25)
    server = open_server(Path(results), port=0, log=lambda *_: None, **options)

    def serve() -> None:
        try:
            server.run()
        except OSError:  # the socket closed under the loop's select at the end: stopped
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield Live(server.url, int(server.effective_port), Path(server.marks_path), server)
    finally:
        server.close()
        thread.join(10)
