"""The small HTTP peers the tests run in-process (a client's callback, a metadata document host, a downstream API,
an authorization server of another make, an OTLP collector): a threaded `http.server` on a free loopback port.

A peer subclasses `LocalHttpServer`, defines its handler (usually a `QuietHandler` closing over the peer), and
calls `super().__init__(Handler)`; it is started and stopped with `with peer:` or `start()` / `stop()`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class QuietHandler(BaseHTTPRequestHandler):
    """No access log on the test's stderr; `answer` sends a whole response in one call."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def answer(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def answer_json(self, status: int, document: Any, headers: Mapping[str, str] | None = None) -> None:
        self.answer(status, json.dumps(document).encode(), headers=headers)


class LocalHttpServer:
    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
