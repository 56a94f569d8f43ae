"""A threaded HTTP server on 127.0.0.1 with scripted misbehaviour, for download tests.

    with HostileServer() as server:
        server.add("/a.png", data)                      # served with ETag and Range support
        server.add("/flaky.png", data, fail_first=2)    # HTTP 500 twice, then the file
        server.add("/cut.png", data, cut_first=1)       # first response cut mid-body
        server.add("/rst.png", data, cut_first=1, reset=True)  # ... by a TCP reset
        url = server.url("/a.png")                      # unknown paths answer 404
"""
from __future__ import annotations

import hashlib
import re
import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    data: bytes
    fail_first: int = 0      # answer this many requests with HTTP 500
    cut_first: int = 0       # then cut this many responses after half the body
    reset: bool = False      # cut with a TCP reset (ECONNRESET) instead of a clean close
    ranges: bool = True      # honour Range requests
    etag: bool = True
    requests: list[dict] = field(default_factory=list)  # each request's Range / If-Range headers


class HostileServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> HostileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def add(self, path: str, data: bytes, **behaviour) -> str:
        self.routes[path] = Route(data, **behaviour)
        return self.url(path)

    def url(self, path: str) -> str:
        from urllib.parse import quote

        return f"http://127.0.0.1:{self.httpd.server_address[1]}{quote(path)}"

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                from urllib.parse import unquote

                route = server.routes.get(unquote(self.path.split("?", 1)[0]))
                if route is None:
                    return self._plain(404, b"not found")
                with server.lock:
                    route.requests.append({"range": self.headers.get("Range"),
                                           "if_range": self.headers.get("If-Range")})
                    n = len(route.requests)
                if n <= route.fail_first:
                    return self._plain(500, b"scripted failure")
                etag = '"' + hashlib.sha256(route.data).hexdigest()[:16] + '"'
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if_range = self.headers.get("If-Range")
                if route.ranges and match and (if_range is None or if_range == etag):
                    start = int(match[1])
                    if start >= len(route.data):
                        return self._plain(416, b"range not satisfiable")
                body = route.data[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(route.data) - 1}/{len(route.data)}")
                if route.etag:
                    self.send_header("ETag", etag)
                if route.ranges:
                    self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                cut = n <= route.fail_first + route.cut_first
                if cut:
                    self.send_header("Connection", "close")
                self.end_headers()
                if cut:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    if route.reset:  # SO_LINGER 0 and close now (no FIN first): the peer gets RST
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                   struct.pack("ii", 1, 0))
                        self.connection.close()
                    return
                self.wfile.write(body)

            def _plain(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
