"""A real HTTP server on 127.0.0.1 for tests that need an answer MLflow's own server never gives: an
authenticating proxy's 401, 403 or login page, in front of nothing or in front of a real `mlflow server`."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Answer = tuple[int, str, bytes]  # status, content type, body


@dataclass
class Request:
    method: str
    path: str
    authorization: str | None
    content_type: str | None
    body: bytes


class Endpoint:
    """Answers every request with answer(request); keeps every request it saw, in order."""

    def __init__(self, answer: Callable[[Request], Answer]):
        self.answer, self.requests = answer, []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = Request(
                    self.command,
                    self.path,
                    self.headers.get("Authorization"),
                    self.headers.get("Content-Type"),
                    body,
                )
                endpoint.requests.append(request)
                status, kind, payload = endpoint.answer(request)
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _reply

            def log_message(self, *args):  # keeps test output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Endpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def forward(upstream: str, request: Request) -> Answer:
    """The upstream server's answer to the same request (a transparent proxy)."""
    headers = {"Content-Type": request.content_type} if request.content_type else {}
    call = urllib.request.Request(
        upstream + request.path, data=request.body or None, method=request.method, headers=headers
    )
    try:
        with urllib.request.urlopen(call, timeout=30) as response:
            return response.status, response.headers.get("Content-Type", "application/json"), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", "text/plain"), exc.read()
