"""MQTT (``--mqtt HOST[:PORT]``, paho-mqtt): every verdict to the plant's broker, none lost.

The verdict log (``--events``, fsync-ed per line by :class:`edge.sinks.VerdictLog`) is the source
of truth; :class:`VerdictPublisher` follows it on a thread of its own and publishes each line,
as written (it carries ``seq``), to ``<prefix>/<station>/verdict`` with QoS 1, in log order.
The last verdict the broker acknowledged (its ``seq``, and the file and offset after it) is kept
in a small state file beside the log (``verdicts.jsonl.mqtt``). When the broker is unreachable
the verdicts simply stay in the log; after reconnecting, and after a restart of ``edge-run``, the
publisher goes on from the line after the last acknowledged one, in order. When the log is rotated
(``verdicts.jsonl.1``, ...) the publisher finishes the rotated file before it goes on in the new
one. (Verdicts that rotation removed before the broker acknowledged them, the broker away for
longer than the kept files last, are lost to MQTT; the journal gives their numbers.) A verdict published
but not acknowledged when the connection broke is sent again: a consumer drops duplicates by
``seq``.

Each connection is a fresh client (clean session), so paho never replays its own queue behind
ours. ``<prefix>/<station>/status`` is retained: ``online`` on connecting, ``offline`` on a clean
stop and, through the last will, when the connection dies. ``<prefix>/<station>/stats`` carries
the station's counts every ``stats_interval_s`` (QoS 0).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from edge.config import MqttConfig, parse_endpoint
from edge.sinks import FrameResult, last_record_in, parse_verdict_line, rotated_files, rotated_log
from edge.station.common import StationError, missing, read_secret
from edge.station.status import StationStatus

_log = logging.getLogger(__name__)

BACKOFF_START_S = 0.5
#: a connection that lasted less than this was dropped at once: the next one waits as after a
#: failed one (a broker that accepts and closes made 541 reconnects and journal lines in 25 s)
STABLE_SESSION_S = 10.0
#: this many such connections in a row get a journal line on why (another client of the same id)
BRIEF_SESSIONS = 3
CONNECT_TIMEOUT_S = 5.0
#: the state file is rewritten at most this often (a lost update only means a duplicate)
STATE_EVERY_S = 0.2
READ_CHUNK = 1 << 16


def read_password(config: MqttConfig) -> str | None:
    """The password of ``mqtt.password_file`` (None without one); StationError naming the key."""
    return None if config.password_file is None else read_secret(config.password_file, "mqtt.password_file")


class _Encrypted(Exception):
    pass


def _no_passphrase() -> str:
    raise _Encrypted  # OpenSSL would otherwise prompt on the terminal (and a service has none)


def tls_context(config: MqttConfig) -> ssl.SSLContext | None:
    """The TLS settings of ``mqtt.tls`` (None: plain MQTT): the broker's certificate checked against
    ``ca_file`` or the system's CA certificates, and its name against the broker's host; this
    station's certificate when ``cert_file`` is set. StationError naming the key of a file that
    cannot be read or is not what it should be."""
    if not config.tls:
        return None

    def problem(key: str, path: Path, exc: Exception, want: str) -> StationError:
        if isinstance(exc, ssl.SSLError):
            return StationError(f"mqtt.{key}: {path} is not {want} ({exc.reason or exc})")
        return StationError(f"mqtt.{key}: cannot read {path} ({exc.strerror or exc})")

    try:
        context = ssl.create_default_context(cafile=config.ca_file)
    except OSError as exc:  # ssl.SSLError is one
        raise problem("ca_file", config.ca_file, exc, "a PEM certificate") from None
    if config.cert_file is not None:
        key = (
            ("key_file", config.key_file) if config.key_file is not None else ("cert_file", config.cert_file)
        )
        for name, path, want, marker in (
            ("cert_file", config.cert_file, "a PEM certificate", b"-----BEGIN CERTIFICATE-----"),
            (*key, "a PEM private key", b"PRIVATE KEY-----"),
        ):
            try:
                text = path.read_bytes()
            except OSError as exc:
                raise problem(name, path, exc, "") from None
            if marker not in text:
                raise StationError(
                    f"mqtt.{name}: {path} is not {want} (no {marker.decode().strip('-')} in it)"
                )
        try:
            context.load_cert_chain(config.cert_file, config.key_file, password=_no_passphrase)
        except _Encrypted:
            name, path = key
            raise StationError(
                f"mqtt.{name}: {path} holds a key with a passphrase; "
                "expected one without (openssl pkey -in KEY -out PLAIN_KEY)"
            ) from None
        except OSError as exc:
            name, path = key
            if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
                whose = "mqtt.cert_file's certificate" if name == "key_file" else "the certificate in it"
                raise StationError(
                    f"mqtt.{name}: {path} holds a key that is not the key of {whose}"
                ) from None
            raise problem(name, path, exc, "a PEM private key this station can read") from None
    return context


def connect_problem(exc: BaseException) -> str:
    """Why a connection to the broker failed, in a few words, with what to do about a TLS one."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or exc.reason or "not trusted"
        if "hostname" in why.lower() or "ip address mismatch" in why.lower():
            return f"TLS: {why}; connect by a name or address the certificate carries"
        if "not yet valid" in why.lower() or "expired" in why.lower():
            now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            return (
                f"TLS: the broker's certificate (or its CA's) is not valid now ({why}) by this "
                f"station's clock, which reads {now}; if that is wrong, set the clock (a Raspberry Pi "
                "has none of its own: NTP, or a real-time clock), else renew the certificate"
            )
        return f"TLS: the broker's certificate is not trusted ({why}); mqtt.ca_file names its CA"
    if isinstance(exc, ssl.SSLError):
        if exc.reason in ("WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "RECORD_LAYER_FAILURE"):
            return "TLS: the port does not speak TLS (the broker's TLS port is usually 8883)"
        if exc.reason and "CERTIFICATE_REQUIRED" in exc.reason:
            return "TLS: the broker asks for this station's certificate (mqtt.cert_file)"
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "no answer"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def station_name(config: MqttConfig) -> str:
    name = config.station or socket.gethostname().split(".")[0] or "station"
    return "".join(c if c not in "/+# " else "_" for c in name)


def client_id(config: MqttConfig) -> str:
    """The MQTT client id: ``mqtt.client_id``, else ``stampline-<station>``."""
    return config.client_id or f"stampline-{station_name(config)}"


#: where the publisher is in the log: (inode of the file, byte offset in it); inode None: the
#: start of the oldest file there is when the follower first looks (no log existed before)
Position = tuple[int | None, int]


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


class LogFollower:
    """Complete JSON lines of the verdict log, oldest first across its rotated files, after a
    position: (seq, line, position after it).

    The file followed is held open, so it is read to its end even after a rotation has moved or
    removed it, and its inode (which names it in a position) cannot be reused meanwhile. At its
    end the follower goes on in the file that holds the next verdicts: the one whose first
    ``seq`` is the lowest above the last one returned (``seq`` rises through the log), chosen by
    opening the files, so a rename under way cannot mislead it. Only verdicts newer than the last
    one returned come out, so starting again at the oldest file repeats nothing; verdicts that
    are gone before they were read are counted in :attr:`lost` and logged with their numbers
    (``expect_first``: the first verdict there should be, when none was returned yet).
    """

    def __init__(self, path: Path, quiet: bool = False):
        self.path = path
        self.quiet = quiet
        self.ino: int | None = None
        self.offset = 0
        #: the last verdict returned (or acknowledged before ``seek``): only newer ones come out
        self.last_seq = 0
        self.expect_first: int | None = None
        self.lost = 0
        self._buf = b""
        self._f = None
        self._check = False

    @property
    def position(self) -> Position:
        return self.ino, self.offset

    def seek(self, position: Position, seq: int = 0) -> None:
        """Go on after ``position``, which ``seq`` ends (checked: a file of that inode may since
        have been replaced by another)."""
        self.close()
        self.ino, self.offset = position
        self.last_seq = seq
        self._buf = b""
        self._check = self.offset > 0

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def _warn(self, message: str, *args: object) -> None:
        if not self.quiet:
            _log.warning(message, *args)

    def has_more(self) -> bool:
        """Whether there is anything after the position now."""
        if b"\n" in self._buf:
            return True
        if self._f is None:
            return bool(rotated_files(self.path)[0])
        if os.fstat(self._f.fileno()).st_size > self.offset + len(self._buf):
            return True
        return _inode(self.path) != self.ino  # rotated away: newer files follow

    def next(self) -> tuple[int, bytes, Position] | None:
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if not self._read_more():
                    return None
                continue
            line, self._buf = self._buf[:nl], self._buf[nl + 1 :]
            self.offset += nl + 1
            seq = _seq_of(line + b"\n")
            if seq is None:
                continue  # not a verdict line: nothing to publish
            if seq <= self.last_seq:
                continue  # returned before (the follower started again at an older file)
            first = self.last_seq + 1 if self.last_seq else self.expect_first
            if first is not None and seq > first:
                self.lost += seq - first
                self._warn(
                    "mqtt: verdicts %d-%d are no longer in the verdict log (rotated away or moved "
                    "before the broker acknowledged them)",
                    first,
                    seq - 1,
                )
            self.last_seq = seq
            return seq, line, self.position

    def _next_file(self, after: int) -> tuple[bool, int, object] | None:
        """One look for the file that holds the verdicts after ``after`` (0: from the oldest),
        newest files having the lowest numbers: (whether it starts right after ``after``, its
        inode, it opened) or None. Files are opened before they are judged, so a rename under
        way cannot swap them."""
        files = rotated_files(self.path)[0]
        mine = next((n for n, ino in files.items() if ino == self.ino), None)
        best = None
        for number in sorted((n for n in files if mine is None or n < mine), reverse=True):
            try:
                f = open(rotated_log(self.path, number), "rb")  # returned open
            except OSError:
                continue
            ino = os.fstat(f.fileno()).st_ino
            first = _seq_of(f.readline())
            last = (last_record_in(f.fileno()) or {}).get("seq") if first is not None else None
            if ino == self.ino or (last is not None and last <= after):
                f.close()  # the one followed, or older
                continue
            if first is not None and (not after or first <= after + 1):
                if best is not None:
                    best[2].close()
                return True, ino, f
            if best is None or (first is not None and (best[0] is None or first < best[0])):
                if best is not None:
                    best[2].close()
                best = (first, ino, f)
            else:
                f.close()
        return (False, best[1], best[2]) if best is not None else None

    def _switch(self, after: int) -> bool:
        """Go on in the file that holds the verdicts after ``after``. One that does not start
        right after it (a gap, or a new log without lines yet) is taken only when three looks
        10 ms apart agree: a folder listed while a rotation renames its files may miss one."""
        agreed, previous = 0, None
        for _ in range(50):
            found = self._next_file(after)
            if found is None:
                return False
            whole, ino, f = found
            agreed = agreed + 1 if ino == previous else 1
            previous = ino
            if whole or agreed >= 3:
                self.close()
                self._f, self.ino, self.offset, self._buf, self._check = f, ino, 0, b"", False
                return True
            f.close()
            time.sleep(0.01)
        return False

    def _open(self) -> bool:
        """Open the file of the position (or the oldest), checking a saved offset."""
        if self.ino is None:
            return self._switch(0)
        files = rotated_files(self.path)[0]
        number = next((n for n, ino in files.items() if ino == self.ino), None)
        f = None
        if number is not None:
            try:
                f = open(rotated_log(self.path, number), "rb")  # held open while followed
            except OSError:
                f = None
            if f is not None and os.fstat(f.fileno()).st_ino != self.ino:  # renamed meanwhile
                f.close()
                f = None
        if f is not None and self._check:  # the line before the position must be the last one sent
            last = _line_before(rotated_log(self.path, number), self.offset)
            if last is None or last.get("seq") != self.last_seq:
                f.close()
                f = None
        self._check = False
        if f is None:  # gone, or replaced: the file with the next verdicts
            return self._switch(self.last_seq)
        self._f = f
        return True

    def _read_more(self) -> bool:
        """Read on in the file followed, or move to the next; False: nothing more now."""
        if self._f is None and not self._open():
            return False
        chunk = os.pread(self._f.fileno(), READ_CHUNK, self.offset + len(self._buf))
        if chunk:
            self._buf += chunk
            return True
        if _inode(self.path) == self.ino:
            return False  # the end of the log itself: wait for more
        # rotated away: what was written before the rotation is in this file, read it first
        chunk = os.pread(self._f.fileno(), READ_CHUNK, self.offset + len(self._buf))
        if chunk:
            self._buf += chunk
            return True
        # on to the next file (a torn last line is left behind)
        return self._switch(self.last_seq)


def _seq_of(line: bytes) -> int | None:
    """The ``seq`` of a whole verdict line, else None."""
    rec = parse_verdict_line(line) if line.endswith(b"\n") else None
    return rec["seq"] if rec is not None else None


def _line_before(path: Path, offset: int) -> dict | None:
    """The JSON line that ends at ``offset`` (exclusive of nothing: offset is after its newline)."""
    if offset <= 0:
        return None
    try:
        with open(path, "rb") as f:
            start = max(offset - READ_CHUNK, 0)
            f.seek(start)
            data = f.read(offset - start)
    except OSError:
        return None
    if not data.endswith(b"\n"):
        return None
    return parse_verdict_line(data[:-1].rsplit(b"\n", 1)[-1])


class VerdictPublisher:
    """Follows the verdict log and publishes it (a sink only to be woken by new verdicts)."""

    needs_annotated = False

    def __init__(
        self,
        config: MqttConfig,
        events: Path,
        status: StationStatus | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if config.broker is None:
            raise ValueError("VerdictPublisher: mqtt.broker is not set")
        self.config = config
        self.host, self.port = parse_endpoint(config.broker, None, 8883 if config.tls else 1883)
        self.events = Path(events)
        self.state_path = self.events.with_name(self.events.name + ".mqtt")
        self.status = status
        self.station = station_name(config)
        base = f"{config.topic_prefix}/{self.station}"
        self.topic_verdict = f"{base}/verdict"
        self.topic_status = f"{base}/status"
        self.topic_stats = f"{base}/stats"
        self.client_id = client_id(config)
        self._clock = clock
        self._mqtt = None
        self._password: str | None = None
        self._tls: ssl.SSLContext | None = None
        #: why the last connection failed (the journal's outage line says it)
        self.problem = ""
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._flush_deadline: float | None = None
        self._thread: threading.Thread | None = None
        self._follower = LogFollower(self.events)
        self.acked_seq = 0
        self.acked_pos: Position = (None, 0)
        self._state_saved_at = 0.0
        self._state_dirty = False
        self.last_logged_seq = 0
        self.unsent_at_start = 0
        self.connected = False
        self.connections = 0
        self.published = 0
        self.acked = 0

    # -- life -----------------------------------------------------------------------------------

    def __enter__(self) -> VerdictPublisher:
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise missing("paho", "mqtt.broker") from None
        self._mqtt = mqtt
        self._password = read_password(self.config)
        self._tls = tls_context(self.config)
        #: verdicts logged before this start, still in the log and not yet acknowledged
        self.unsent_at_start = self._load_state()
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Send what is still unsent (for up to ``flush_s``), say ``offline``, disconnect."""
        if self._thread is None:
            return
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=self.config.flush_s + CONNECT_TIMEOUT_S + 5.0)
        self._thread = None
        self._save_state(force=True)
        unsent = self.unsent
        if unsent:
            _log.warning(
                "mqtt: %d verdicts not yet sent; those the log still holds go out after the next start",
                unsent,
            )
        self._follower.close()

    def write(self, result: FrameResult) -> None:
        if result.verdict is not None:
            if self._follower.expect_first is None:  # what to miss if nothing was ever sent
                self._follower.expect_first = result.verdict.seq
            self.last_logged_seq = max(self.last_logged_seq, result.verdict.seq)
            self._wake.set()

    @property
    def unsent(self) -> int:
        return max(self.last_logged_seq - self.acked_seq, 0)

    def health(self) -> tuple[bool, int]:
        return self.connected, self.unsent

    # -- state ----------------------------------------------------------------------------------

    def _load_state(self) -> int:
        """Where to go on from: the state file, checked against the log and its rotated files.
        Returns how many verdicts the log holds after it."""
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
            seq, offset, ino = int(state["seq"]), int(state["offset"]), state.get("inode")
            ino = None if ino is None else int(ino)
        except FileNotFoundError:
            seq, offset, ino = 0, 0, None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            _log.warning("mqtt: %s unreadable (%s): sending the whole log again", self.state_path, exc)
            seq, offset, ino = 0, 0, None
        files = rotated_files(self.events)[0]
        position: Position = (None, 0)  # the oldest file
        for number in sorted(files) if offset else ():  # newest first
            last = _line_before(rotated_log(self.events, number), offset)
            if (ino is None or files[number] == ino) and last is not None and last.get("seq") == seq:
                position = (files[number], offset)
                break
        else:
            if offset:
                # the log was replaced or cut: go through it from the start, sending what is newer
                # than the acknowledged verdict, or all of it if the log started again below it
                _log.warning("mqtt: %s does not match the verdict log; scanning the log", self.state_path)
                follower = LogFollower(self.events, quiet=True)
                top = max((item[0] for item in iter(follower.next, None)), default=0)
                follower.close()
                seq = seq if top >= seq else 0
        self.acked_seq, self.acked_pos = seq, position
        self.last_logged_seq = seq
        follower = LogFollower(self.events, quiet=True)
        follower.seek(position, seq)
        pending = 0
        while (item := follower.next()) is not None:
            self.last_logged_seq = max(self.last_logged_seq, item[0])
            pending += 1
        follower.close()
        return pending

    def _save_state(self, force: bool = False) -> None:
        now = self._clock()
        if not self._state_dirty or (not force and now - self._state_saved_at < STATE_EVERY_S):
            return
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        try:
            ino, offset = self.acked_pos
            tmp.write_text(json.dumps({"seq": self.acked_seq, "offset": offset, "inode": ino}) + "\n")
            os.replace(tmp, self.state_path)
        except OSError as exc:
            _log.warning("mqtt: cannot write %s (%s)", self.state_path, exc.strerror)
            return
        self._state_saved_at = now
        self._state_dirty = False

    # -- the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        delay = BACKOFF_START_S
        outage_logged = False
        was_down = False  # the journal said the broker was lost or out of reach: say it is back
        brief = 0  # connections in a row dropped soon after they were made
        while True:
            stopping = self._stopping.is_set()
            if stopping and self.unsent == 0:
                return
            client = self._connect()
            if client is None:
                if stopping:
                    return  # the broker is away: what is unsent goes after the next start
                if not outage_logged:
                    _log.warning(
                        "mqtt: cannot reach %s:%d (%s); verdicts wait in the log (retrying)",
                        self.host,
                        self.port,
                        self.problem,
                    )
                    outage_logged = was_down = True
                delay = self._back_off(delay)
                continue
            outage_logged = False
            (_log.warning if was_down else _log.info)(
                "mqtt: connected to %s:%d%s; %d verdicts behind (those still in the verdict log are sent)",
                self.host,
                self.port,
                " again" if was_down else "",
                self.unsent,
            )
            began = self._clock()
            self._session(client)
            self.connected = False
            was_down = True  # the session ended: lost (said so), or stopping
            if stopping or self._stopping.is_set():
                if self.unsent == 0 or not self._flush_left():
                    return
            if self._clock() - began >= STABLE_SESSION_S:
                delay, brief = BACKOFF_START_S, 0
            else:  # dropped as soon as it was up (a broker or firewall that closes at once): back off
                brief += 1
                if brief == BRIEF_SESSIONS and not self._stopping.is_set():
                    _log.warning(
                        "mqtt: %s:%d dropped the last %d connections within %g s of making them: "
                        "another client may be connected as %r (two stations of one name: give each "
                        "its own mqtt.station or mqtt.client_id), or the broker does not let this one "
                        "publish to %s/",
                        self.host,
                        self.port,
                        brief,
                        STABLE_SESSION_S,
                        self.client_id,
                        self.topic_verdict.rsplit("/", 1)[0],
                    )
                delay = self._back_off(delay)

    def _back_off(self, delay: float) -> float:
        """Wait ``delay`` before the next connection (stopping: no longer than the flush time left);
        the delay after that."""
        if self._stopping.is_set() and self._flush_deadline is not None:
            time.sleep(max(0.0, min(delay, self._flush_deadline - self._clock())))
        else:
            self._stopping.wait(delay)
        return min(delay * 2, self.config.reconnect_max_s)

    def _flush_left(self) -> bool:
        """On stop: is there time left to send what is unsent?"""
        if self._flush_deadline is None:
            self._flush_deadline = self._clock() + self.config.flush_s
        return self._clock() < self._flush_deadline

    def _connect(self):
        mqtt = self._mqtt
        self.problem = ""
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        client.connect_timeout = CONNECT_TIMEOUT_S
        if self._tls is not None:
            client.tls_set_context(self._tls)
        client.max_inflight_messages_set(self.config.max_inflight)
        client.will_set(self.topic_status, "offline", qos=1, retain=True)
        if self.config.username is not None:
            client.username_pw_set(self.config.username, self._password)
        result = {"rc": None}

        def on_connect(client, userdata, flags, reason_code, properties) -> None:
            result["rc"] = reason_code

        client.on_connect = on_connect
        try:
            client.connect(self.host, self.port, keepalive=self.config.keepalive_s)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            self.problem = connect_problem(exc)
            _log.debug("mqtt: connect failed: %s", exc)
            return None
        deadline = self._clock() + CONNECT_TIMEOUT_S
        closed = False
        try:
            while result["rc"] is None and self._clock() < deadline:
                if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
                    closed = True
                    break
        except OSError as exc:  # a TLS alert after the handshake (a client certificate refused)
            self.problem = connect_problem(exc)
        rc = result["rc"]
        if rc is None or rc.is_failure:
            if rc is not None:
                self.problem = f"refused: {rc}"
                _log.warning("mqtt: %s:%d refused the connection (%s)", self.host, self.port, rc)
            elif not self.problem and not closed:
                self.problem = f"no answer to the connection within {CONNECT_TIMEOUT_S:g} s"
            elif not self.problem:
                self.problem = "closed before accepting the connection"
                if self._tls is not None and self.config.cert_file is None:
                    self.problem += (
                        "; as a broker does that asks for this station's certificate (mqtt.cert_file)"
                    )
                elif self._tls is None and self.port == 8883:
                    self.problem += "; a TLS port? (mqtt.tls = true)"
            try:
                client.disconnect()
            except Exception:
                pass
            return None
        return client

    def _session(self, client) -> None:
        """Publish from the line after the last acknowledged one until the connection breaks."""
        mqtt = self._mqtt
        sent: deque[tuple[int, int, Position]] = deque()  # (mid, seq, position after the line), in order
        in_flight: set[int] = set()  # the message ids of ``sent``
        acked_mids: set[int] = set()

        def on_publish(client, userdata, mid, reason_code, properties) -> None:
            # a verdict's acknowledgement only: paho also reports the stats (QoS 0, when sent) and the
            # status, and its ids wrap at 65535, so a stale id would acknowledge a later verdict
            if mid in in_flight:
                acked_mids.add(mid)

        client.on_publish = on_publish
        self._follower.seek(self.acked_pos, self.acked_seq)
        client.publish(self.topic_status, "online", qos=1, retain=True)
        self.connected = True
        self.connections += 1
        next_stats = self._clock() + self.config.stats_interval_s
        while True:
            if self._stopping.is_set():
                if not sent and (self.unsent == 0 or not self._follower.has_more()):
                    break
                if not self._flush_left():
                    break
            while len(sent) < self.config.max_inflight:
                item = self._follower.next()
                if item is None:
                    break
                seq, line, position = item
                self.last_logged_seq = max(self.last_logged_seq, seq)
                if seq <= self.acked_seq and not sent:
                    self.acked_pos = position  # acknowledged before (log scanned from its start)
                    continue
                info = client.publish(self.topic_verdict, line, qos=1)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    _log.warning("mqtt: publish failed (%s); reconnecting", mqtt.error_string(info.rc))
                    return
                sent.append((info.mid, seq, position))
                in_flight.add(info.mid)
                self.published += 1
            if self.status is not None and self._clock() >= next_stats:
                next_stats = self._clock() + self.config.stats_interval_s
                stats = self.status.snapshot()
                stats.pop("recent", None)
                stats["mqtt"] = {"unsent": self.unsent, "connections": self.connections}
                client.publish(self.topic_stats, json.dumps(stats), qos=0)
            rc = client.loop(timeout=0.05)
            while sent and sent[0][0] in acked_mids:
                mid, seq, position = sent.popleft()
                acked_mids.discard(mid)
                in_flight.discard(mid)
                self.acked_seq, self.acked_pos = seq, position
                self.acked += 1
                self._state_dirty = True
            self._save_state()
            if rc != mqtt.MQTT_ERR_SUCCESS:
                _log.warning(
                    "mqtt: lost %s:%d (%s); %d verdicts wait in the log",
                    self.host,
                    self.port,
                    mqtt.error_string(rc),
                    self.unsent,
                )
                self._save_state(force=True)
                return
            if not sent and not self._follower.has_more():
                self._wake.wait(0.05)
                self._wake.clear()
        # a clean stop: offline (retained), then disconnect, so the will is not needed
        self._save_state(force=True)
        info = client.publish(self.topic_status, "offline", qos=1, retain=True)
        end = self._clock() + 2.0
        with contextlib.suppress(RuntimeError):  # paho raises it for a connection already lost
            while not info.is_published() and self._clock() < end:
                if client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                    break
        client.disconnect()
        client.loop(timeout=0.05)
