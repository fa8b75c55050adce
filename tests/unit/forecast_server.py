"""A real HTTP server on 127.0.0.1 serving recorded provider answers to the forecast tests."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "forecasts"


@dataclass
class Route:
    """What the server answers on paths starting with a prefix."""

    body: bytes
    status: int = 200
    fail_first: int = 0
    fail_status: int = 503
    delay_s: float = 0.0
    hits: int = 0


@dataclass
class Seen:
    """One request the server received."""

    path: str
    query: dict[str, list[str]]
    headers: dict[str, str] = field(default_factory=dict)


class FixtureServer:
    """Serves fixture files by path prefix; records requests; can fail or stall on purpose."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                parts = urlsplit(self.path)
                outer.seen.append(Seen(parts.path, parse_qs(parts.query), dict(self.headers)))
                match = [p for p in outer.routes if parts.path.startswith(p)]
                if not match:
                    self._reply(404, b'{"error": "no such route"}')
                    return
                route = outer.routes[max(match, key=len)]
                route.hits += 1
                if route.delay_s:
                    time.sleep(route.delay_s)
                if route.hits <= route.fail_first:
                    self._reply(route.fail_status, b'{"error": "try again"}')
                    return
                self._reply(route.status, route.body)

            def _reply(self, status: int, body: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def route(
        self,
        prefix: str,
        *,
        fixture: str | None = None,
        body: Any = None,
        status: int = 200,
        fail_first: int = 0,
        fail_status: int = 503,
        delay_s: float = 0.0,
    ) -> Route:
        if fixture is not None:
            raw = (FIXTURES / fixture).read_bytes()
        else:
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        route = Route(raw, status, fail_first, fail_status, delay_s)
        self.routes[prefix] = route
        return route

    def __enter__(self) -> FixtureServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
