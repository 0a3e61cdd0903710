"""A canary HTTP server on a loopback address: it answers every GET with a small task list carrying a marker and
records the paths it was asked for, so a test can tell whether Label Studio (or anything) fetched from it."""

from __future__ import annotations

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Canary:
    """``with Canary("127.0.0.2") as canary``: serving on ``canary.url``; ``canary.requests`` lists the paths asked."""

    def __init__(self, address: str = "127.0.0.1") -> None:
        self.requests: list[str] = []
        self.marker = f"canary-{os.getpid()}-{id(self)}"
        canary = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                canary.requests.append(self.path)
                body = f'[{{"data": {{"image": "{canary.marker}", "text": "{canary.marker}"}}}}]'.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((address, 0), Handler)  # OSError where the address is not local
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://{address}:{self.port}"

    def __enter__(self) -> "Canary":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
