"""A file server on 127.0.0.1 (ephemeral port, a daemon thread) whose failures a test chooses: the first
requests answered 503 or cut off, range requests honoured or ignored (as python's `http.server`), and
the whole server killed after some bytes."""

from __future__ import annotations

import http.server
import os
import re
import socket
import threading
from pathlib import Path


class FileServer:
    """Serves `root` at `url` until `stop()`.

    - `fail_first`: that many requests answered `fail_with` ('503': HTTP 503; 'reset': the
      connection closed without an answer), then normal service;
    - `ranges`: honour `Range: bytes=a-b` (206) or ignore it (200 with the whole file);
    - `kill_after`: after this many body bytes in total, the connection is dropped and the server
      shuts down (later connections are refused).
    """

    def __init__(self, root: Path, *, fail_first: int = 0, fail_with: str = "503", ranges: bool = True,
                 kill_after: int | None = None) -> None:
        self.root, self.fail_first, self.fail_with, self.ranges = Path(root), fail_first, fail_with, ranges
        self.kill_after = kill_after
        self.requests = 0
        self.failed = 0
        self.range_requests = 0
        self.sent = 0
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"
            timeout = 10

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                with server.lock:
                    server.requests += 1
                    fail = server.failed < server.fail_first
                    server.failed += fail
                if fail:
                    if server.fail_with == "reset":
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                        self.close_connection = True
                        return
                    self.send_error(503, "Service Unavailable")
                    return
                path = server.root / self.path.lstrip("/").split("?")[0]
                if not path.is_file() or ".." in self.path:
                    self.send_error(404, "Not Found")
                    return
                size = path.stat().st_size
                start, end, status = 0, size, 200
                match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
                if match:
                    with server.lock:
                        server.range_requests += 1
                    if server.ranges:
                        start = int(match.group(1))
                        end = min(int(match.group(2)) + 1, size) if match.group(2) else size
                        status = 206
                self.send_response(status)
                self.send_header("Content-Length", str(end - start))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
                self.end_headers()
                if not body:
                    return
                with open(path, "rb") as f:
                    f.seek(start)
                    data = f.read(end - start)
                step = 4096 if server.kill_after is not None else 1 << 16
                for k in range(0, len(data), step):
                    chunk = data[k: k + step]
                    with server.lock:
                        kill = server.kill_after is not None and server.sent + len(chunk) > server.kill_after
                        server.sent += len(chunk)
                    if kill:
                        self.wfile.flush()
                        threading.Thread(target=server.stop, daemon=True).start()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    self.wfile.write(chunk)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.stopped = False

    def stop(self) -> None:
        with self.lock:
            if self.stopped:
                return
            self.stopped = True
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> FileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.thread.join(timeout=5)


def folder_url(server: FileServer, root: Path, folder: Path) -> str:
    return f"{server.url}/{os.path.relpath(folder, root)}"
