"""MQTT (``--mqtt HOST[:PORT]``, paho-mqtt): every verdict to the plant's broker, none lost.

The verdict log (``--events``, fsync-ed per line by :class:`edge.sinks.VerdictLog`) is the source
of truth; :class:`VerdictPublisher` follows it on a thread of its own and publishes each line,
as written (it carries ``seq``), to ``<prefix>/<station>/verdict`` with QoS 1, in log order.
The last verdict the broker acknowledged (its ``seq`` and the log offset after it) is kept in a
small state file beside the log (``verdicts.jsonl.mqtt``). When the broker is unreachable the
verdicts simply stay in the log; after reconnecting, and after a restart of ``edge-run``, the
publisher goes on from the line after the last acknowledged one, in order. A verdict published
but not acknowledged when the connection broke is sent again: a consumer drops duplicates by
``seq``.

Each connection is a fresh client (clean session), so paho never replays its own queue behind
ours. ``<prefix>/<station>/status`` is retained: ``online`` on connecting, ``offline`` on a clean
stop and, through the last will, when the connection dies. ``<prefix>/<station>/stats`` carries
the station's counts every ``stats_interval_s`` (QoS 0).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from edge.config import MqttConfig, parse_endpoint
from edge.sinks import FrameResult
from edge.station.common import StationError, missing
from edge.station.status import StationStatus

_log = logging.getLogger(__name__)

BACKOFF_START_S = 0.5
CONNECT_TIMEOUT_S = 5.0
#: the state file is rewritten at most this often (a lost update only means a duplicate)
STATE_EVERY_S = 0.2
READ_CHUNK = 1 << 16


def station_name(config: MqttConfig) -> str:
    name = config.station or socket.gethostname().split(".")[0] or "station"
    return "".join(c if c not in "/+# " else "_" for c in name)


class LogFollower:
    """Complete JSON lines of the verdict log from a byte offset: (seq, line, offset after it)."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self._buf = b""

    def seek(self, offset: int) -> None:
        self.offset = offset
        self._buf = b""

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def next(self) -> tuple[int, bytes, int] | None:
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                try:
                    with open(self.path, "rb") as f:
                        f.seek(self.offset + len(self._buf))
                        chunk = f.read(READ_CHUNK)
                except FileNotFoundError:
                    return None
                if not chunk:
                    return None
                self._buf += chunk
                continue
            line, self._buf = self._buf[:nl], self._buf[nl + 1 :]
            self.offset += nl + 1
            try:
                rec = json.loads(line)
                seq = int(rec["seq"])
            except (ValueError, KeyError, TypeError):
                continue  # not a verdict line: nothing to publish
            return seq, line, self.offset


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
    line = data[:-1].rsplit(b"\n", 1)[-1]
    try:
        return json.loads(line)
    except ValueError:
        return None


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
        self.host, self.port = parse_endpoint(config.broker, None, 1883)
        self.events = Path(events)
        self.state_path = self.events.with_name(self.events.name + ".mqtt")
        self.status = status
        self.station = station_name(config)
        base = f"{config.topic_prefix}/{self.station}"
        self.topic_verdict = f"{base}/verdict"
        self.topic_status = f"{base}/status"
        self.topic_stats = f"{base}/stats"
        self.client_id = config.client_id or f"stampline-{self.station}"
        self._clock = clock
        self._mqtt = None
        self._password: str | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._flush_deadline: float | None = None
        self._thread: threading.Thread | None = None
        self._follower = LogFollower(self.events)
        self.acked_seq = 0
        self.acked_offset = 0
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
        if self.config.password_file is not None:
            try:
                self._password = self.config.password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise StationError(
                    f"mqtt.password_file: cannot read {self.config.password_file} ({exc.strerror})"
                ) from None
        self._load_state()
        #: verdicts logged before this start and not yet acknowledged (``unsent`` moves on as
        #: soon as the sending thread runs)
        self.unsent_at_start = self.unsent
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
            _log.warning("mqtt: %d verdicts not yet sent; they go out after the next start", unsent)

    def write(self, result: FrameResult) -> None:
        if result.verdict is not None:
            self.last_logged_seq = max(self.last_logged_seq, result.verdict.seq)
            self._wake.set()

    @property
    def unsent(self) -> int:
        return max(self.last_logged_seq - self.acked_seq, 0)

    def health(self) -> tuple[bool, int]:
        return self.connected, self.unsent

    # -- state ----------------------------------------------------------------------------------

    def _load_state(self) -> None:
        """Where to go on from: the state file, checked against the log."""
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
            seq, offset = int(state["seq"]), int(state["offset"])
        except FileNotFoundError:
            seq, offset = 0, 0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            _log.warning("mqtt: %s unreadable (%s): sending the whole log again", self.state_path, exc)
            seq, offset = 0, 0
        last = _line_before(self.events, offset)
        if offset and (last is None or last.get("seq") != seq):
            # the log was replaced or cut: go through it from the start, sending what is newer
            # than the acknowledged verdict, or all of it if the log started again below it
            _log.warning("mqtt: %s does not match the verdict log; scanning the log", self.state_path)
            follower = LogFollower(self.events)
            top = 0
            while (item := follower.next()) is not None:
                top = max(top, item[0])
            seq = seq if top >= seq else 0
            offset = 0
        self.acked_seq, self.acked_offset = seq, offset
        self.last_logged_seq = seq
        follower = LogFollower(self.events)
        follower.seek(offset)
        while (item := follower.next()) is not None:
            self.last_logged_seq = max(self.last_logged_seq, item[0])

    def _save_state(self, force: bool = False) -> None:
        now = self._clock()
        if not self._state_dirty or (not force and now - self._state_saved_at < STATE_EVERY_S):
            return
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        try:
            tmp.write_text(json.dumps({"seq": self.acked_seq, "offset": self.acked_offset}) + "\n")
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
                        "mqtt: cannot reach %s:%d; verdicts wait in the log (retrying)", self.host, self.port
                    )
                    outage_logged = True
                self._stopping.wait(delay)
                delay = min(delay * 2, self.config.reconnect_max_s)
                continue
            delay = BACKOFF_START_S
            outage_logged = False
            _log.info("mqtt: connected to %s:%d; %d verdicts to send", self.host, self.port, self.unsent)
            self._session(client)
            self.connected = False
            if stopping or self._stopping.is_set():
                if self.unsent == 0 or not self._flush_left():
                    return

    def _flush_left(self) -> bool:
        """On stop: is there time left to send what is unsent?"""
        if self._flush_deadline is None:
            self._flush_deadline = self._clock() + self.config.flush_s
        return self._clock() < self._flush_deadline

    def _connect(self):
        mqtt = self._mqtt
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        client.connect_timeout = CONNECT_TIMEOUT_S
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
        except (OSError, ValueError) as exc:
            _log.debug("mqtt: connect failed: %s", exc)
            return None
        deadline = self._clock() + CONNECT_TIMEOUT_S
        while result["rc"] is None and self._clock() < deadline:
            if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
                break
        rc = result["rc"]
        if rc is None or rc.is_failure:
            if rc is not None:
                _log.warning("mqtt: %s:%d refused the connection (%s)", self.host, self.port, rc)
            try:
                client.disconnect()
            except Exception:
                pass
            return None
        return client

    def _session(self, client) -> None:
        """Publish from the line after the last acknowledged one until the connection breaks."""
        mqtt = self._mqtt
        sent: deque[tuple[int, int, int]] = deque()  # (mid, seq, offset after the line), in order
        acked_mids: set[int] = set()

        def on_publish(client, userdata, mid, reason_code, properties) -> None:
            acked_mids.add(mid)

        client.on_publish = on_publish
        self._follower.seek(self.acked_offset)
        client.publish(self.topic_status, "online", qos=1, retain=True)
        self.connected = True
        self.connections += 1
        next_stats = self._clock() + self.config.stats_interval_s
        while True:
            if self._stopping.is_set():
                if not sent and (self.unsent == 0 or self._follower.size() <= self.acked_offset):
                    break
                if not self._flush_left():
                    break
            while len(sent) < self.config.max_inflight:
                item = self._follower.next()
                if item is None:
                    break
                seq, line, offset = item
                self.last_logged_seq = max(self.last_logged_seq, seq)
                if seq <= self.acked_seq and not sent:
                    self.acked_offset = offset  # acknowledged before (log scanned from its start)
                    continue
                info = client.publish(self.topic_verdict, line, qos=1)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    _log.warning("mqtt: publish failed (%s); reconnecting", mqtt.error_string(info.rc))
                    return
                sent.append((info.mid, seq, offset))
                self.published += 1
            if self.status is not None and self._clock() >= next_stats:
                next_stats = self._clock() + self.config.stats_interval_s
                stats = self.status.snapshot()
                stats.pop("recent", None)
                stats["mqtt"] = {"unsent": self.unsent, "connections": self.connections}
                client.publish(self.topic_stats, json.dumps(stats), qos=0)
            rc = client.loop(timeout=0.05)
            while sent and sent[0][0] in acked_mids:
                mid, seq, offset = sent.popleft()
                acked_mids.discard(mid)
                self.acked_seq, self.acked_offset = seq, offset
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
            if not sent and self._follower.size() <= self._follower.offset:
                self._wake.wait(0.05)
                self._wake.clear()
        # a clean stop: offline (retained), then disconnect, so the will is not needed
        self._save_state(force=True)
        info = client.publish(self.topic_status, "offline", qos=1, retain=True)
        end = self._clock() + 2.0
        while not info.is_published() and self._clock() < end:
            if client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                break
        client.disconnect()
        client.loop(timeout=0.05)
