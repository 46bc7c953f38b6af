"""The live web view (``--http HOST:PORT``): the annotated stream, counters, verdicts, health.

Endpoints (stdlib ``ThreadingHTTPServer``, one thread per request, nothing fetched from outside):

- ``/``: the page (one HTML file with its CSS and script; readable on a phone).
- ``/stream.mjpg``: the annotated stream as MJPEG (``multipart/x-mixed-replace``).
- ``/thumb/<seq>.jpg``: the evidence frame of a recent verdict that was not OK.
- ``/api/status``: the station's status as JSON (:meth:`StationStatus.snapshot`).
- ``/metrics``: Prometheus text format (:mod:`edge.station.metrics`).
- ``/healthz``: 200 while frames flow and no fault is active, else 503; the body says why.

Watching does not slow the inspection: the loop draws the overlay only for a frame the stream
wants (someone watches, and ``1 / stream_fps`` has passed since the last one), hands the drawn
frame over by reference, and one encoder thread scales and JPEG-encodes it for every viewer;
thumbnails are encoded by the request's thread. With no viewer nothing is drawn or encoded.

Access: loopback unless a host is given (``0.0.0.0:8080`` for every interface). With
``http.token`` every endpoint but ``/healthz`` needs it: ``?token=`` (the page then sets a
cookie, so a bookmarked link works), the cookie, or ``Authorization: Bearer``.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import html
import ipaddress
import json
import logging
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlencode, urlsplit

import cv2
import numpy as np

from edge.config import HttpConfig, parse_endpoint
from edge.sinks import FrameResult
from edge.station.common import StationError, host_name, http_token
from edge.station.status import StationStatus

_log = logging.getLogger(__name__)

COOKIE = "stampline_token"
THUMB_WIDTH = 192
#: a viewer that takes no data for this long is dropped
SEND_TIMEOUT_S = 10.0
#: connections served at once; more are closed at once (each is a thread and a file handle: without
#: a cap, clients that never finish their request took every file handle of the process, and the
#: snapshots of rejected products failed with "Too many open files")
MAX_CONNECTIONS = 32
#: connections one address may hold at once: one host's idle connections (32 of them locked
#: every viewer, /healthz and /metrics out) leave the others room
MAX_PER_CLIENT = 8
#: refused connections are said in the journal at most this often (s)
REFUSED_SAY_S = 60.0
#: a request's line and headers must arrive within this, however slowly they trickle in
HEADER_DEADLINE_S = 5.0
_THUMB = re.compile(r"/thumb/([0-9]{1,12})\.jpg")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64  # a burst of connections is accepted (and those over the cap closed) at once

    def __init__(self, address: tuple[str, int], view: WebView):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.view = view
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.refused = 0
        self._per_client: dict[str, int] = {}
        self._per_client_lock = threading.Lock()
        self._refused_said: tuple[float, int] | None = None  # (when, refused then)
        #: connections still reading a request's headers -> when they must be done
        self._reading: dict[socket.socket, float] = {}
        self._reading_lock = threading.Lock()
        self._closed = threading.Event()
        super().__init__(address, _Handler)
        threading.Thread(target=self._cut_slow_requests, name="http deadlines", daemon=True).start()

    def process_request(self, request, client_address) -> None:
        host = client_address[0]
        with self._per_client_lock:  # (only this, the accepting thread, adds; handler threads take away)
            crowded = self._per_client.get(host, 0) >= MAX_PER_CLIENT
        if crowded or not self._slots.acquire(blocking=False):
            self._refuse(host)
            self.shutdown_request(request)
            return
        with self._per_client_lock:
            self._per_client[host] = self._per_client.get(host, 0) + 1
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            self._leave(host)
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()
            self._leave(client_address[0])

    def _leave(self, host: str) -> None:
        with self._per_client_lock:
            left = self._per_client.get(host, 1) - 1
            if left > 0:
                self._per_client[host] = left
            else:
                self._per_client.pop(host, None)

    def _refuse(self, host: str) -> None:
        """Count a refused connection; say so in the journal now and then (a flood of them locks
        viewers and checks out, and was silent)."""
        self.refused += 1
        now = time.monotonic()
        if self._refused_said is None or now - self._refused_said[0] >= REFUSED_SAY_S:
            since = self.refused - (self._refused_said[1] if self._refused_said else 0)
            self._refused_said = (now, self.refused)
            _log.warning(
                "web view: refused %d connection(s) (at most %d at once, %d from one address; the last "
                "from %s): a client or a scan holding connections open?",
                since,
                MAX_CONNECTIONS,
                MAX_PER_CLIENT,
                host,
            )

    def handle_error(self, request, client_address) -> None:
        """A request that failed: one line in the journal, not the standard library's traceback on
        stderr (27 lines for each phone or scraper that drops its connection mid-answer)."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):  # the client went away: nothing wrong here
            _log.debug("http %s: %s", client_address[0], exc)
        else:
            _log.warning("http %s: the request failed: %r", client_address[0], exc)

    def reading(self, conn: socket.socket, done: bool = False) -> None:
        """``conn`` begins (or, ``done``, ends) reading a request's line and headers."""
        with self._reading_lock:
            if done:
                self._reading.pop(conn, None)
            else:
                self._reading[conn] = time.monotonic() + HEADER_DEADLINE_S

    def _cut_slow_requests(self) -> None:
        while not self._closed.wait(0.25):
            now = time.monotonic()
            with self._reading_lock:
                late = [conn for conn, due in self._reading.items() if due < now]
                for conn in late:
                    del self._reading[conn]
            for conn in late:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def server_close(self) -> None:
        self._closed.set()
        super().server_close()


def _is_local_name(host: str) -> bool:
    """A ``Host`` header's name that is this machine's, or an address (or none: an HTTP/1.0
    client): what a page of another site (DNS rebinding: its own name pointed at this machine)
    cannot send."""
    name = host_name(host)
    if not name:
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    return name == "localhost" or name.endswith(".localhost") or name in _own_names()


@functools.lru_cache(maxsize=1)
def _own_names() -> frozenset[str]:
    """This machine's names: its host name, fully qualified and ``.local``."""
    me = socket.gethostname().lower()
    names = {me, f"{me}.local"}
    with contextlib.suppress(OSError):
        names.add(socket.getfqdn().lower().rstrip("."))
    return frozenset(names)


def _peer_gone(conn: socket.socket) -> bool:
    """Has the client of a stream closed its end? (It sends nothing after its request, so its
    socket turns readable only when it closes or resets.)"""
    import select

    try:
        readable, _, _ = select.select([conn], [], [], 0)
        return bool(readable) and not conn.recv(1, socket.MSG_PEEK)
    except (OSError, ValueError):
        return True


class WebView:
    """The web server and the stream's encoder; a sink fed by the loop."""

    #: the loop asks ``needs_annotated`` per frame
    annotated_on_demand = True

    def __init__(
        self,
        config: HttpConfig,
        status: StationStatus,
        metrics: Callable[[], tuple[bytes, str]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if config.listen is None:
            raise ValueError("WebView: http.listen is not set")
        self.config = config
        self.host, self.port = parse_endpoint(config.listen, "127.0.0.1", None)
        self.status = status
        self.metrics = metrics
        self.token = http_token(config)
        self._clock = clock
        self._interval = 1.0 / config.stream_fps
        self._cond = threading.Condition()
        self._raw: np.ndarray | None = None  # the newest drawn frame, not yet encoded
        self._jpeg: bytes | None = None
        self._jpeg_n = 0
        self._last_wanted = -1e9
        self._viewers = 0
        self._stopped = threading.Event()
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._thumbs: dict[int, bytes] = {}
        self.encoded = 0
        #: milliseconds spent scaling and encoding stream frames, in all (the encoder thread)
        self.encode_ms_total = 0.0
        self._page = self._load_page()

    def _load_page(self) -> bytes:
        text = resources.files("edge.station").joinpath("page.html").read_text(encoding="utf-8")
        return text.replace("{station}", html.escape(self.status.station or "")).encode("utf-8")

    @property
    def cookie_name(self) -> str:
        """The token's cookie, named for the port: a browser keeps cookies per host, not per port,
        so two lines' views on one Pi (edge-run@line1, @line2) overwrote each other's."""
        return f"{COOKIE}_{self.port}"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @property
    def viewers(self) -> int:
        return self._viewers

    def __enter__(self) -> WebView:
        try:
            self._server = _Server((self.host, self.port), self)
        except OSError as exc:
            raise StationError(
                f"http.listen: cannot listen on {self.host}:{self.port} ({exc.strerror or exc})"
            ) from None
        self.port = self._server.server_address[1]
        for target, name in ((self._server.serve_forever, "http server"), (self._encode_loop, "mjpeg")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stopped.set()
        with self._cond:
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for thread in self._threads:
            thread.join(timeout=5.0)
        self._threads.clear()

    # -- the sink (the loop's thread) -----------------------------------------------------------

    @property
    def needs_annotated(self) -> bool:
        return self._viewers > 0 and self._clock() - self._last_wanted >= self._interval

    def write(self, result: FrameResult) -> None:
        if result.annotated is None or not self.needs_annotated:
            return
        self._last_wanted = self._clock()
        with self._cond:
            self._raw = result.annotated  # drawn for us on a copy: handed over, not copied again
            self._cond.notify_all()

    # -- the encoder thread ---------------------------------------------------------------------

    def _encode_loop(self) -> None:
        quality = [cv2.IMWRITE_JPEG_QUALITY, int(self.config.jpeg_quality)]
        while not self._stopped.is_set():
            with self._cond:
                while self._raw is None and not self._stopped.is_set():
                    self._cond.wait(1.0)
                raw, self._raw = self._raw, None
            if raw is None:
                continue
            t0 = time.perf_counter()
            h, w = raw.shape[:2]
            if w > self.config.stream_width:
                size = (self.config.stream_width, max(round(h * self.config.stream_width / w), 1))
                raw = cv2.resize(raw, size, interpolation=cv2.INTER_AREA)
            ok, buf = cv2.imencode(".jpg", raw, quality)
            if not ok:
                continue
            self.encode_ms_total += (time.perf_counter() - t0) * 1e3
            with self._cond:
                self._jpeg = buf.tobytes()
                self._jpeg_n += 1
                self.encoded += 1
                self._cond.notify_all()

    def next_jpeg(self, after: int, timeout: float) -> tuple[bytes | None, int]:
        """The newest encoded frame newer than number ``after`` (None after ``timeout``)."""
        with self._cond:
            if self._jpeg_n <= after and not self._stopped.is_set():
                self._cond.wait(timeout)
            if self._jpeg_n <= after:
                return None, after
            return self._jpeg, self._jpeg_n

    def add_viewer(self) -> bool:
        with self._cond:
            if self._viewers >= self.config.max_viewers:
                return False
            self._viewers += 1
            return True

    def remove_viewer(self) -> None:
        with self._cond:
            self._viewers -= 1

    def thumbnail(self, seq: int) -> bytes | None:
        cached = self._thumbs.get(seq)
        if cached is not None:
            return cached
        frame = self.status.evidence(seq)
        if frame is None:
            return None
        image = frame.image
        h, w = image.shape[:2]
        size = (THUMB_WIDTH, max(round(h * THUMB_WIDTH / w), 1))
        ok, buf = cv2.imencode(".jpg", cv2.resize(image, size, interpolation=cv2.INTER_AREA))
        if not ok:
            return None
        data = buf.tobytes()
        live = {v["seq"] for v in self.status.snapshot()["recent"]}
        self._thumbs = {k: v for k, v in self._thumbs.items() if k in live}
        self._thumbs[seq] = data
        return data

    def authorized(self, query: dict[str, list[str]], headers) -> tuple[bool, bool]:
        """(allowed, set the cookie): the token from the query, the cookie or a bearer header."""
        if self.token is None:
            return True, False
        given = query.get("token", [None])[0]
        if given is not None:
            ok = hmac.compare_digest(given.encode(), self.token.encode())
            return ok, ok
        scheme, _, credentials = headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() == "bearer":  # (the scheme's name is case-insensitive)
            return hmac.compare_digest(credentials.strip().encode(), self.token.encode()), False
        cookie = cookie_value(headers.get("Cookie", ""), self.cookie_name)
        if cookie is not None:
            return hmac.compare_digest(cookie.encode(), self.token.encode()), False
        return False, False


def cookie_value(header: str, name: str) -> str | None:
    """The value of cookie ``name`` in a Cookie header, None if absent. Each ``name=value`` pair on
    its own: the standard library's parser stopped at the first cookie it could not parse (another
    web app's on the same host, ``pref={"theme":"dark"}``), so the token after it went unseen."""
    for pair in header.split(";"):
        key, sep, value = pair.strip().partition("=")
        if sep and key.strip() == name:
            value = value.strip()
            return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    return None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "stampline"
    timeout = SEND_TIMEOUT_S
    _head = False

    def log_message(self, format: str, *args: object) -> None:
        _log.debug("http %s: " + format, self.address_string(), *args)

    def version_string(self) -> str:
        return self.server_version  # the Server header names no Python version

    def handle_one_request(self) -> None:
        self._head = False  # one handler serves every request of a kept-alive connection
        self.server.reading(self.connection)
        try:
            super().handle_one_request()
        finally:
            self.server.reading(self.connection, done=True)

    def parse_request(self) -> bool:
        ok = super().parse_request()
        self.server.reading(self.connection, done=True)
        return ok

    def do_HEAD(self) -> None:
        self._head = True
        self.do_GET()

    def do_GET(self) -> None:
        view = self.server.view
        lengths = self.headers.get_all("Content-Length") or []
        if (
            any(v.strip() not in ("", "0") for v in lengths)
            or len(lengths) > 1  # two lengths: a proxy in front may read the other (smuggling)
            or "Transfer-Encoding" in self.headers
        ):
            self.close_connection = True  # a body is not read: it would be taken for the next request
            self._send(HTTPStatus.BAD_REQUEST, "a GET takes no body\n", "text/plain")
            return
        url = urlsplit(self.path)
        path = url.path
        if path == "/healthz":
            healthy, why = view.status.health()
            self._send(HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE, why + "\n", "text/plain")
            return
        if view.token is None and not _is_local_name(self.headers.get("Host", "")):
            self._send(  # without a token only this machine's names: no other site's page reads the view
                HTTPStatus.FORBIDDEN,
                "this view answers to its address or host name only (set http.token to open it wider)\n",
                "text/plain",
            )
            return
        query = parse_qs(url.query)
        allowed, set_cookie = view.authorized(query, self.headers)
        if not allowed:
            self._send(
                HTTPStatus.UNAUTHORIZED,
                "a token is needed: open the page as /?token=...\n",
                "text/plain",
                extra={"WWW-Authenticate": 'Bearer realm="stampline"'},
            )
            return
        cookie = {}
        if set_cookie:
            # Lax: a link to the view on a wiki or dashboard (another site) opens it; the view only reads
            # (Secure where a proxy in front says the browser came over HTTPS: never sent in clear)
            https = self.headers.get("X-Forwarded-Proto", "").strip().lower() == "https"
            cookie["Set-Cookie"] = f"{view.cookie_name}={view.token}; Path=/; HttpOnly; SameSite=Lax" + (
                "; Secure" if https else ""
            )
            if path in ("/", "/index.html"):  # the token off the address bar (history, screenshots)
                rest = {k: v for k, v in query.items() if k != "token"}
                target = "./" + (
                    "?" + urlencode(rest, doseq=True) if rest else ""
                )  # relative: a proxy's path
                self._send(HTTPStatus.SEE_OTHER, "", "text/plain", extra={**cookie, "Location": target})
                return
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, view._page, "text/html; charset=utf-8", extra=cookie)
        elif path == "/api/status":
            data = view.status.snapshot()
            data["stream"] = {
                "viewers": view.viewers,
                "fps_cap": view.config.stream_fps,
                "encoded": view.encoded,
            }
            self._send(HTTPStatus.OK, json.dumps(data), "application/json", extra=cookie)
        elif path == "/metrics":
            if view.metrics is None:
                self._send(HTTPStatus.NOT_FOUND, "no metrics\n", "text/plain")
            else:
                body, kind = view.metrics()
                self._send(HTTPStatus.OK, body, kind)
        elif path == "/stream.mjpg":
            self._stream(view)
        elif thumb := _THUMB.fullmatch(path):
            data = view.thumbnail(int(thumb.group(1)))
            if data is None:
                self._send(HTTPStatus.NOT_FOUND, "no such thumbnail\n", "text/plain")
            else:
                self._send(HTTPStatus.OK, data, "image/jpeg", extra={"Cache-Control": "private, no-store"})
        else:
            self._send(HTTPStatus.NOT_FOUND, "not found\n", "text/plain")

    def _send(
        self, code: HTTPStatus, body: bytes | str, kind: str, extra: dict[str, str] | None = None
    ) -> None:
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")  # the page is not to be framed by another site
        self.send_header("Content-Security-Policy", "frame-ancestors 'none'")
        if "Cache-Control" not in (extra or {}):
            self.send_header("Cache-Control", "no-store")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self._head:
            return
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass

    def _stream(self, view: WebView) -> None:
        if self._head:
            self._send(HTTPStatus.OK, b"", "multipart/x-mixed-replace; boundary=frame")
            return
        if not view.add_viewer():
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, "too many viewers\n", "text/plain")
            return
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            n = 0
            while not view._stopped.is_set():
                jpeg, n = view.next_jpeg(n, timeout=1.0)
                if jpeg is None:
                    if _peer_gone(self.connection):  # no frames (a stalled camera): free the slot now
                        break
                    continue
                head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                self.wfile.write(head + jpeg + b"\r\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError, OSError):
            pass
        finally:
            view.remove_viewer()
