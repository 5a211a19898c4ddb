"""The local web server: the page and its assets from the package, and the JSON
endpoints of :mod:`~descent.playground.api`. Standard library only; it listens on
127.0.0.1 and fetches nothing from anywhere."""

from __future__ import annotations

import json
import math
import mimetypes
import sys
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from . import api
from .requests import BadRequest

#: The largest request body read (a race request is a few hundred bytes).
MAX_BODY = 1 << 16


def static_files() -> dict[str, bytes]:
    """Every file the page needs, by URL path, read from the package."""
    root = resources.files("descent.playground") / "static"
    out = {}
    for item in root.iterdir():
        if item.is_file() and not item.name.startswith("."):
            out["/" + item.name] = item.read_bytes()
    out["/"] = out["/index.html"]
    return out


def _clean(value: Any) -> Any:
    """NaN and inf as null, for a body that ``json.dumps(allow_nan=False)`` refused."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def encode(value: Any) -> bytes:
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except ValueError:
        text = json.dumps(_clean(value), allow_nan=False, separators=(",", ":"))
    return text.encode("utf-8")


class Handler(BaseHTTPRequestHandler):
    server: PlaygroundServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value: Any) -> None:
        self._send(status, encode(value), "application/json; charset=utf-8")

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/api/catalog":
            self._json(HTTPStatus.OK, self.server.catalog)
            return
        body = self.server.files.get(path)
        if body is None:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {path}"})
            return
        kind = mimetypes.guess_type(path if path != "/" else "/index.html")[0] or "application/octet-stream"
        if kind.startswith("text/") or kind.endswith("javascript"):
            kind += "; charset=utf-8"
        self._send(HTTPStatus.OK, body, kind)

    def do_POST(self) -> None:
        routes = {
            "/api/surface": api.surface,
            "/api/race": self.server.app.race,
            "/api/tune": self.server.app.tune,
        }
        handler = routes.get(self.path)
        if handler is None:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {self.path}"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY:
                raise BadRequest(f"request body of {length} bytes (expected 1 … {MAX_BODY})")
            try:
                data = json.loads(self.rfile.read(length))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise BadRequest(f"the request body is not JSON: {exc}") from None
            self._json(HTTPStatus.OK, handler(data))
        except BadRequest as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        except Exception as exc:  # a bug: say so on the page, and in the terminal
            traceback.print_exc(file=sys.stderr)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error: {exc!r}"})


class PlaygroundServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0, verbose: bool = False):
        super().__init__((host, port), Handler)
        self.verbose = verbose
        self.app = api.Playground()
        self.files = static_files()
        self.catalog = api.catalog()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"
