"""A local HTTP server that records what it is sent: the receiving end of a webhook, or a
stand-in for an HTTP API (GitHub's) answering from a handler the test gives it."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or None


# (request) -> (status, JSON answer)
Answer = Callable[[Received], tuple[int, Any]]


@contextmanager
def http_receiver(answer: Answer | None = None) -> Iterator[tuple[str, list[Received]]]:
    """``(base URL, requests received)`` while the server runs on a free local port."""
    received: list[Received] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            request = Received(self.command, self.path, dict(self.headers.items()),
                               json.loads(raw) if raw else None)
            with lock:
                received.append(request)
            status, payload = answer(request) if answer else (200, {})
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = _handle

        def log_message(self, *_: Any) -> None:  # keep the test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
