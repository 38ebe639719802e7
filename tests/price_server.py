"""A JSON price endpoint on 127.0.0.1 that tests script: what it answers, how late, what it got."""

from __future__ import annotations

import json
import threading
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FeedServer:
    """A JSON endpoint the test scripts: what it answers, how late, and what it was sent."""

    def __init__(self) -> None:
        self.status = 200
        self.body = b"[]"
        self.delay_s = 0.0
        self.echo = False  # answer with the request's headers, as some error pages do
        self.requests: list[Message] = []
        self._release = threading.Event()
        feed = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
                feed.requests.append(self.headers)
                if self.path == "/moved":
                    self.send_response(302)
                    self.send_header("Location", "/prices")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if feed.delay_s:
                    feed._release.wait(feed.delay_s)
                body = str(self.headers).encode() if feed.echo else feed.body
                self.send_response(feed.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.handle_error = lambda request, address: None  # the client left after a timeout
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/prices"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        self._stopped = False

    def serve(self, document: Any, status: int = 200) -> None:
        self.body, self.status = json.dumps(document).encode(), status

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._release.set()
            self._server.shutdown()
            self._server.server_close()
