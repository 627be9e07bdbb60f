"""The explorer's HTTP server: the standard library's threading server, one static page
and a small JSON/PNG API. Only GET; a request names a route from ROUTES and a
checkpoint id from the catalog, never a path of this machine; bad values are a 400 with
a one-line reason (params.py).

    GET /                  the page (static/index.html, app.js, style.css)
    GET /api/checkpoints   {"checkpoints": [{id, step, ema}], "default": id}
    GET /api/info?ckpt=ID  the codes, the EMA switch, the categories' labels
    GET /api/image?ckpt=ID&gen=ema&seed=S&c1=..&c2=..            image/png
    GET /api/traversal?...&sweep=c2&rows=R&cols=C&span=A           image/png
    GET /api/reproduce?... (image or traversal parameters, + view=image|traversal)
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import render
from .catalog import Catalog
from .labels import Labels
from .params import CONT_LIMIT, SEED_MAX, BadRequest, View, parse_query

STATIC = {  # URL path -> (file in infogan_dist/explore/static, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "[::1]", "::1"}
# what the page may load: itself, and the images it fetches (blob: URLs)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def _static_files() -> dict[str, bytes]:
    folder = resources.files(__package__) / "static"
    return {name: (folder / name).read_bytes() for name, _ in STATIC.values()}


class Explorer:
    """The state behind the routes: the catalog of checkpoints and the label mappings."""

    def __init__(self, catalog: Catalog, labels: Labels):
        self.catalog, self.labels = catalog, labels
        self.static = _static_files()

    def _spaces(self) -> tuple[dict[str, Any], dict[str, Any]]:
        entries = self.catalog.refresh()
        return entries, {k: e.space for k, e in entries.items()}

    def view(self, query: str, traversal: bool) -> tuple[Any, View]:
        entries, spaces = self._spaces()
        view = parse_query(query, spaces, traversal)
        return entries[view.ckpt], view

    # --- routes: query string -> (status, content type, body) --------------------------
    def checkpoints(self, query: str) -> tuple[int, str, bytes]:
        entries = self.catalog.refresh()
        body = {"checkpoints": [{"id": e.id, "step": e.step, "ema": e.has_ema}
                                for e in entries.values()],
                "default": self.catalog.default_id()}
        return _json(body)

    def info(self, query: str) -> tuple[int, str, bytes]:
        entries = self.catalog.refresh()
        ckpt = parse_qs(query).get("ckpt", [""])
        if len(ckpt) != 1 or ckpt[0] not in entries:
            raise BadRequest(f"unknown checkpoint {ckpt[0][:60]!r}; give ckpt= once, with an "
                             "id from /api/checkpoints")
        entry = entries[ckpt[0]]
        space = entry.space
        codes: list[dict[str, Any]] = [
            {"name": n, "kind": "categorical", "classes": k}
            for n, k in zip(space.cat_names, space.categorical, strict=True)]
        codes += [{"name": n, "kind": "continuous", "prior": [-1, 1], "limit": CONT_LIMIT}
                  for n in space.cont_names]
        return _json({"id": entry.id, "step": entry.step, "ema": entry.has_ema,
                      "codes": codes, "seed_max": SEED_MAX,
                      "labels": self.labels.get(entry)})

    def image(self, query: str, traversal: bool = False) -> tuple[int, str, bytes]:
        entry, view = self.view(query, traversal)
        loaded = self.catalog.generator(entry, view.raw)
        png = render.draw(loaded, view)
        self.labels.go.set()  # the first image is out: the labels may use the CPU now
        return HTTPStatus.OK, "image/png", png

    def traversal(self, query: str) -> tuple[int, str, bytes]:
        return self.image(query, traversal=True)

    def reproduce(self, query: str) -> tuple[int, str, bytes]:
        parts = [p for p in query.split("&") if p]
        kinds = [p for p in parts if p.startswith("view=")]
        if kinds not in ([], ["view=image"], ["view=traversal"]):
            raise BadRequest("view: expected view=image or view=traversal, once")
        rest = "&".join(p for p in parts if not p.startswith("view="))
        entry, view = self.view(rest, kinds == ["view=traversal"])
        return _json(render.reproduce(entry, view, self.catalog.device))


def _json(body: Any) -> tuple[int, str, bytes]:
    return HTTPStatus.OK, "application/json", json.dumps(body).encode()


ROUTES: dict[str, Callable[[Explorer, str], tuple[int, str, bytes]]] = {
    "/api/checkpoints": Explorer.checkpoints,
    "/api/info": Explorer.info,
    "/api/image": Explorer.image,
    "/api/traversal": Explorer.traversal,
    "/api/reproduce": Explorer.reproduce,
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a slider move is one request, no connect
    # TCP_NODELAY: the headers and the PNG go out as two writes; with Nagle's algorithm the
    # second waited for the ACK of the first, which the browser delays (about 40 ms): every
    # other slider move measured about 60 ms instead of about 18 (2026-12-03)
    disable_nagle_algorithm = True
    server: Server

    def do_GET(self) -> None:
        explorer = self.server.explorer
        url = urlsplit(self.path)
        if not self.server.host_allowed(self.headers.get("Host", "")):
            return self._send(HTTPStatus.FORBIDDEN, "text/plain",
                              b"this explorer answers only requests addressed to the "
                              b"loopback name it was started on")
        try:
            if url.path in STATIC:
                name, ctype = STATIC[url.path]
                return self._send(HTTPStatus.OK, ctype, explorer.static[name])
            route = ROUTES.get(url.path)
            if route is None:
                return self._send(HTTPStatus.NOT_FOUND, "text/plain",
                                  f"no such page: {url.path[:80]}".encode())
            self._send(*route(explorer, url.query))
        except BadRequest as e:
            self._send(HTTPStatus.BAD_REQUEST, "text/plain", str(e).encode())
        except ValueError as e:  # a checkpoint that cannot be loaded (checkpoint.py's line)
            self._send(HTTPStatus.CONFLICT, "text/plain", str(e).encode())

    def do_POST(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, "text/plain", b"only GET is served")

    do_PUT = do_DELETE = do_PATCH = do_POST

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in SECURITY_HEADERS.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")


class Server(ThreadingHTTPServer):
    daemon_threads = True  # a stalled browser connection never keeps the process alive

    def __init__(self, host: str, port: int, explorer: Explorer, verbose: bool = False):
        super().__init__((host, port), Handler)
        self.explorer, self.verbose = explorer, verbose
        self.loopback = host in LOOPBACK_NAMES

    def host_allowed(self, host_header: str) -> bool:
        """Bound to the loopback, only loopback names in Host: a web page elsewhere that
        points a DNS name at 127.0.0.1 (DNS rebinding) gets nothing. Any port, so an SSH
        tunnel (ssh -L 9000:localhost:8000) works."""
        if not self.loopback:
            return True
        name = host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header
        return name in LOOPBACK_NAMES
