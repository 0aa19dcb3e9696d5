"""Reading files at URLs so that a training run survives network trouble: retries with exponential
backoff for transient errors, one clear error naming the URL and the real cause once they are spent,
HTTP servers without range support, and read-ahead for sequential reads.

- http(s):// is read with the standard library (`urllib`): nothing to install, and the retry, range
  and resumption logic is this module's own. A server that answers a range request with the whole
  file (status 200, e.g. python's `http.server`) is detected: the bytes before the range are read and
  dropped (correct, but random access then costs a pass over the file: stream such folders with
  `dataset.stream=true`).
- Any other scheme (s3://, gs://, file://, memory://, ...) goes through fsspec and its backend
  (`pip install 'mbt[s3]'` / `'mbt[gcs]'`); a backend that is not installed is a one-line error naming
  the extra.

Transient (retried): connection refused / reset / aborted, timeouts, a connection closed mid-response,
HTTP 5xx, 408 and 429, and the connection errors of fsspec backends. Anything else (404, 403, a bad
URL) fails at once. A sequential read that breaks mid-file reconnects at the byte it had reached,
so a blip costs no data and a shard is never read as "truncated" because of the network (fsspec
backends retry inside their own reads).
"""

from __future__ import annotations

import http.client
import io
import queue
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

_CHUNK = 1 << 20
"""Bytes per read of a sequential stream (and per read-ahead block)."""
_BACKENDS = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs")}
"""URL scheme -> its fsspec backend package and the pip extra of mbt that installs it."""
_TRANSIENT_MODULES = ("aiohttp", "botocore", "urllib3", "requests", "google")
"""Packages of fsspec backends whose errors (other than a missing file or a refusal) are connection trouble."""


@dataclass
class ReadConfig:
    """How remote files are read (`dataset.read_*` in a training config)."""

    retries: int = 5
    """Further tries after a transient error (connection refused/reset, timeout, HTTP 5xx) before the
    read fails with an error naming the URL and the cause; 0: fail at the first."""
    backoff: float = 0.5
    """Seconds before the first retry; doubled at each further one (1, 2, 4 s, ...)."""
    max_backoff: float = 30.0
    """Longest wait between two tries (seconds)."""
    timeout: float = 60.0
    """Seconds a connection attempt or a read may block before it counts as a (transient) timeout."""
    read_ahead_mib: int = 64
    """Sequential reads of remote files (`dataset.stream`): MiB read ahead of the decoder in a
    background thread, so network and decoding overlap; 0: none."""

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < 0 or self.read_ahead_mib < 0:
            raise ValueError("read retries, backoff, max_backoff and read_ahead_mib must be >= 0")
        if not self.timeout > 0:
            raise ValueError(f"read timeout must be > 0 seconds, got {self.timeout}")

    def wait(self, attempt: int) -> float:
        """Seconds to wait before retry `attempt` (1-based)."""
        return min(self.backoff * 2 ** (attempt - 1), self.max_backoff)


class RemoteReadError(RuntimeError):
    """A remote file stayed unreadable through every retry (the server is down or unreachable).
    Not an `OSError`: `skip_bad` leaves out bad items, it must not turn an outage into skipped data."""


class _HTTPStatusError(OSError):
    def __init__(self, url: str, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status} {reason}")
        self.url, self.status = url, status


def is_url(location: str) -> bool:
    return "://" in location


def _is_http(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def transient(e: BaseException) -> bool:
    """Whether `e` is network trouble worth another try."""
    if isinstance(e, _HTTPStatusError):
        return e.status >= 500 or e.status in (408, 429)
    if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError):
        return isinstance(e.reason, (OSError, TimeoutError)) and not isinstance(e.reason, ssl.SSLCertVerificationError)
    if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, ssl.SSLCertVerificationError)):
        return False
    if isinstance(e, (ConnectionError, TimeoutError, http.client.HTTPException)):
        return True
    return type(e).__module__.split(".")[0] in _TRANSIENT_MODULES


def _cause(e: BaseException) -> str:
    if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError):
        e = e.reason if isinstance(e.reason, BaseException) else e
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def with_retries(url: str, read: Callable[[], T], cfg: ReadConfig) -> T:
    """`read()`, tried again after transient errors as `cfg` says; a `RemoteReadError` naming `url`,
    the tries and the last cause when they are spent."""
    tic = time.monotonic()
    for attempt in range(cfg.retries + 1):
        try:
            return read()
        except Exception as e:
            if not transient(e):
                raise
            if attempt == cfg.retries:
                raise RemoteReadError(
                    f"{url}: unreachable after {attempt + 1} tries over {time.monotonic() - tic:.1f} s "
                    f"(last: {_cause(e)}); the server or network is down (dataset.read_retries, read_backoff, "
                    "read_timeout set how long to wait)") from e
            time.sleep(cfg.wait(attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


# ---------------------------------------------------------------------------- http(s)
_NO_RANGE_HOSTS: set[str] = set()
"""Servers (scheme://host:port) found to ignore range requests, warned about once per process."""


def _host(url: str) -> str:
    p = urllib.parse.urlsplit(url)
    return f"{p.scheme}://{p.netloc}"


def _http_open(url: str, start: int, end: int | None, cfg: ReadConfig) -> tuple[Any, int]:
    """A response for bytes `[start, end)` (`end` None: to the end of the file) and how many leading
    bytes of its body to drop (a server that ignores the range sends the file from byte 0)."""
    headers = {} if start == 0 and end is None else {"Range": f"bytes={start}-{'' if end is None else end - 1}"}
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=cfg.timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 404:
            raise FileNotFoundError(f"{url}: HTTP 404 Not Found") from None
        if e.code == 416:  # range beyond the end: the file is shorter than expected
            return io.BytesIO(b""), 0
        raise _HTTPStatusError(url, e.code, e.reason) from None
    if headers and response.status == 200:
        if _host(url) not in _NO_RANGE_HOSTS:
            _NO_RANGE_HOSTS.add(_host(url))
            warnings.warn(f"{_host(url)} ignores HTTP range requests: each read streams its file from the start "
                          "(correct, slow for random access; dataset.stream=true reads shards whole)", stacklevel=2)
        return response, start
    return response, 0


def _read_exactly(f: Any, n: int) -> bytes:
    """Up to `n` bytes (fewer only at the end of the body)."""
    parts, left = [], n
    while left > 0:
        data = f.read(min(left, _CHUNK))
        if not data:
            break
        parts.append(data)
        left -= len(data)
    return b"".join(parts)


def _promised(response: Any) -> int | None:
    """The body length a response announced (Content-Length), if any."""
    length = response.headers.get("Content-Length") if hasattr(response, "headers") else None
    return int(length) if length is not None else None


def _skip(response: Any, n: int) -> None:
    """Drop `n` bytes of the body; a body that ends sooner than it announced is a broken transfer
    (http.client returns it short without an error), one that announced less is a shorter file."""
    done = 0
    while done < n:
        data = response.read(min(n - done, _CHUNK))
        if not data:
            promised = _promised(response)
            if promised is not None and done < promised:
                raise http.client.IncompleteRead(b"", promised - done)
            return
        done += len(data)


def _http_range(url: str, start: int, end: int | None, cfg: ReadConfig) -> bytes:
    def read() -> bytes:
        response, drop = _http_open(url, start, end, cfg)
        with response:
            _skip(response, drop)
            data = _read_exactly(response, (1 << 62) if end is None else end - start)
        promised = _promised(response)
        if promised is not None and drop + len(data) < promised and (end is None or len(data) < end - start):
            raise http.client.IncompleteRead(data, promised - drop - len(data))  # cut off mid-response
        return data

    return with_retries(url, read, cfg)


def _http_size(url: str, cfg: ReadConfig) -> int | None:
    def head() -> int | None:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=cfg.timeout) as r:
                length = r.headers.get("Content-Length")
                return int(length) if length is not None else None
        except urllib.error.HTTPError as e:
            e.close()
            if e.code == 404:
                raise FileNotFoundError(f"{url}: HTTP 404 Not Found") from None
            if e.code == 405:  # HEAD not allowed: the size is checked as the file is read
                return None
            raise _HTTPStatusError(url, e.code, e.reason) from None

    return with_retries(url, head, cfg)


class _HTTPStream(io.RawIOBase):
    """A file read front to back over HTTP; a connection lost mid-file is reopened at the byte
    reached (retried as `ReadConfig` says, the count starting over after every byte that arrives)."""

    def __init__(self, url: str, cfg: ReadConfig) -> None:
        super().__init__()
        self.url, self.cfg, self.pos = url, cfg, 0
        self.length: int | None = None
        self.response: Any = None
        self._connect()

    def _connect(self) -> None:
        def open_at() -> Any:
            response, drop = _http_open(self.url, self.pos, None, self.cfg)
            try:
                _skip(response, drop)
            except BaseException:
                response.close()
                raise
            return response

        self.response = with_retries(self.url, open_at, self.cfg)
        if self.length is None:
            promised = _promised(self.response)
            self.length = promised + self.pos if promised is not None else None

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        tic, attempt = time.monotonic(), 0
        while True:
            try:
                n = self.response.readinto(b)
                if n == 0 and self.length is not None and self.pos < self.length:
                    raise http.client.IncompleteRead(b"", self.length - self.pos)
                self.pos += n
                return n
            except Exception as e:
                if not transient(e):
                    raise
                attempt += 1
                self.response.close()
                if attempt > self.cfg.retries:
                    raise RemoteReadError(
                        f"{self.url}: connection lost at byte {self.pos} and unreachable after {attempt} tries over "
                        f"{time.monotonic() - tic:.1f} s (last: {_cause(e)}); the server or network is down") from e
                time.sleep(self.cfg.wait(attempt))
                try:
                    self._connect()
                except RemoteReadError as again:
                    raise RemoteReadError(f"{again} (connection lost at byte {self.pos})") from e

    def close(self) -> None:
        if self.response is not None:
            self.response.close()
        super().close()


# ---------------------------------------------------------------------------- fsspec
def url_fs(url: str) -> tuple[Any, str]:
    """fsspec's filesystem and path for `url`; a one-line ImportError naming the extra when the
    backend (s3fs, gcsfs, ...) is not installed."""
    scheme = url.split("://", 1)[0]
    package, extra = _BACKENDS.get(scheme, ("its fsspec backend", None))
    hint = f"pip install 'mbt[{extra}]'" if extra else "see fsspec's list of implementations"
    try:
        import fsspec

        return fsspec.core.url_to_fs(url)
    except ImportError:
        raise ImportError(f"{url}: reading {scheme}:// URLs needs {package} ({hint})") from None
    except ValueError as e:
        if "not known" in str(e):
            raise ImportError(f"{url}: no reader for {scheme}:// URLs ({e})") from None
        raise


# ---------------------------------------------------------------------------- the interface
def read_range(url: str, start: int, end: int | None, cfg: ReadConfig) -> bytes:
    """Bytes `[start, end)` of the file at `url` (`end` None: to its end)."""
    if _is_http(url):
        return _http_range(url, start, end, cfg)
    fs, path = url_fs(url)
    return with_retries(url, lambda: fs.cat_file(path, start=start or None, end=end), cfg)


def file_size(url: str, cfg: ReadConfig) -> int | None:
    """Bytes of the file at `url`, or None when the server does not say."""
    if _is_http(url):
        return _http_size(url, cfg)
    fs, path = url_fs(url)
    return int(with_retries(url, lambda: fs.size(path), cfg))


def open_sequential(url: str, cfg: ReadConfig) -> io.BufferedIOBase:
    """A binary file object reading `url` front to back, `cfg.read_ahead_mib` read ahead."""
    if _is_http(url):
        raw: io.RawIOBase = _HTTPStream(url, cfg)
    else:
        fs, path = url_fs(url)
        raw = with_retries(url, lambda: fs.open(path, "rb", block_size=_CHUNK), cfg)
    if cfg.read_ahead_mib:
        raw = _ReadAhead(raw, max(cfg.read_ahead_mib, 1))
    return io.BufferedReader(raw, _CHUNK)  # type: ignore[arg-type]


class _ReadAhead(io.RawIOBase):
    """Reads `source` in a background thread, up to `mib` MiB ahead of the consumer; its errors reach
    the consumer at the point of the stream where they happened."""

    def __init__(self, source: Any, mib: int) -> None:
        super().__init__()
        self.source = source
        self.chunks: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=mib)
        self.stop = threading.Event()
        self.left = b""
        self.done = False
        self.thread = threading.Thread(target=self._fill, daemon=True, name="mbt-read-ahead")
        self.thread.start()

    def _fill(self) -> None:
        try:
            while not self.stop.is_set():
                data = self.source.read(_CHUNK)
                self._put(data)
                if not data:
                    return
        except BaseException as e:
            self._put(e)

    def _put(self, item: bytes | BaseException) -> None:
        while not self.stop.is_set():
            try:
                self.chunks.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if not self.left and not self.done:
            item = self.chunks.get()
            if isinstance(item, BaseException):
                self.done = True
                raise item
            self.left, self.done = item, not item
        n = min(len(b), len(self.left))
        b[:n] = self.left[:n]
        self.left = self.left[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self.stop.set()
            self.thread.join(timeout=5.0)
            self.source.close()
        super().close()
