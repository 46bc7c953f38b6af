"""``edge-run``'s typed configuration: a TOML file (``--config``), command-line flags override it.

Every key has a type and a check; an unknown section or key, a wrong type or a value out of
range is a :class:`ConfigError` that names the key (``trigger.on: expected a number in (0, 1),
got 1.5``). TOML has no null: leave a key out to keep its default. ``systemd/stampline.toml`` is
the documented example of every key.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.runtime import MAX_THREADS, REFINE_MODES

SOURCE_KINDS = ("camera", "picamera", "video", "url", "images", "demo")
TRIGGER_KINDS = ("occupancy", "every-frame", "gpio")
RUNTIMES = ("ai_edge_litert", "tflite_runtime")


class ConfigError(ValueError):
    """A config file or flag value that cannot be used; the message names the key."""


Check = Callable[[Any], str | None]  # returns what was expected, or None when the value is fine


def _opt(default: Any, check: Check | None = None, secret: bool = False) -> Any:
    """A key's default and check; a ``secret`` key's value is never shown in an error."""
    return field(default=default, metadata={"check": check, "secret": secret})


def _positive(v: Any) -> str | None:
    return None if v > 0 else "a number > 0"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else "a number >= 0"


#: the longest a time setting may be, s (a day): a longer wait overflows the platform's clock in
#: Python's timers (a pusher delay of 1e10 s killed the GPIO timer thread and hung the stop)
MAX_SECONDS = 86400.0


def _seconds(lowest: float = 0.0, above: bool = False) -> Check:
    """A time in seconds, > ``lowest`` (``above``) or >= it, and at most ``MAX_SECONDS``."""

    def check(v: Any) -> str | None:
        ok = (v > lowest if above else v >= lowest) and v <= MAX_SECONDS
        return (
            None if ok else f"seconds {'>' if above else '>='} {lowest:g} and at most {MAX_SECONDS:g} (a day)"
        )

    return check


def _address_text(v: Any) -> str | None:
    return (
        None if v.strip() and v == v.strip() else "an address (rtsp://..., http://...), no spaces around it"
    )


def _open_unit(v: Any) -> str | None:
    return None if 0.0 < v < 1.0 else "a number in (0, 1)"


def _unit(v: Any) -> str | None:
    return None if 0.0 <= v <= 1.0 else "a number in [0, 1]"


def _thread_count(v: Any) -> str | None:
    return None if 1 <= v <= MAX_THREADS else f"a whole number from 1 to {MAX_THREADS}"


def _one_of(*choices: str | int) -> Check:
    def check(v: Any) -> str | None:
        return None if v in choices else "one of " + ", ".join(repr(c) for c in choices)

    return check


def _number_or_auto(numbers: Check) -> Check:
    """A number ``numbers`` accepts, or the text ``"auto"``."""

    def check(v: Any) -> str | None:
        expected = numbers(0.0 if isinstance(v, str) else v)
        if isinstance(v, str):
            return None if v == "auto" else f'{expected or "a number"} or "auto"'
        return None if expected is None else f'{expected} or "auto"'

    return check


def _byte(v: Any) -> str | None:
    return None if 0 <= v <= 255 else "a grey level in 0..255"


def _label(v: Any) -> str | None:
    ok = v == v.strip() and v.isprintable()
    return None if ok else "a stamp label (printable, no leading or trailing spaces)"


#: the verdict log's rotated files are numbered 1..this (``output.events_keep`` at most this); a
#: copy with a number of four digits or more (a year, a date: verdicts.jsonl.2026) is an archive,
#: left alone (9999 until 2026-12-04: a copy named .2026 was renamed, then removed, by rotation)
MAX_ROTATED_LOGS = 999


def _keep_count(v: Any) -> str | None:
    return None if 1 <= v <= MAX_ROTATED_LOGS else f"a whole number in 1..{MAX_ROTATED_LOGS}"


def _size_mb(v: Any) -> str | None:
    return None if v == 0 or v >= 0.001 else "0 (never) or a size >= 0.001 MB"


#: edge.synth.VARIANTS holds this many procedural variants (not imported: config stays light)
MAX_VARIANTS = 6


def _variant_count(v: Any) -> str | None:
    return None if 1 <= v <= MAX_VARIANTS else f"a whole number in 1..{MAX_VARIANTS}"


def check_roi(v: Any) -> str | None:
    """A region of interest ``(x, y, w, h)`` normalised to the frame, inside it, not empty."""
    if len(v) != 4:
        return "4 numbers x, y, w, h"
    x, y, w, h = v
    if not (0 <= x < 1 and 0 <= y < 1 and 0 < w <= 1 and 0 < h <= 1):
        pixels = " (shares of the frame's width and height, not pixels)" if max(v) > 1 else ""
        return f"x, y in [0, 1) and w, h in (0, 1]{pixels}"
    if x + w > 1 + 1e-9 or y + h > 1 + 1e-9:
        return "a region inside the frame (x + w <= 1, y + h <= 1)"
    return None


def camera_device(camera: int | str) -> int | str:
    """A V4L2 camera as OpenCV opens it: an index (``0``, also given as the text ``"0"``, which
    OpenCV would take for a file name) or a device path."""
    return int(camera) if isinstance(camera, str) and camera.strip().isdigit() else camera


@dataclass(frozen=True)
class SourceConfig:
    #: camera | picamera | video | url | images | demo
    kind: str = _opt("camera", _one_of(*SOURCE_KINDS))
    #: V4L2 camera: index (0) or device path (/dev/v4l/by-id/...); picamera: the camera's number
    #: (0; 1 for the second camera port of a Raspberry Pi 5 or Compute Module)
    camera: int | str = 0
    video: Path | None = None
    url: str | None = _opt(None, _address_text)
    images: Path | None = None
    #: requested frame size and rate; left out: the device's own (picamera: near the model input)
    width: int | None = _opt(None, _positive)
    height: int | None = _opt(None, _positive)
    fps: float | None = _opt(None, _positive)
    #: a video file: play it at this rate instead of its own (a raw stream's guessed rate, a wrong
    #: header; ``edge-run --video FILE --fps N``); left out: the file's timestamps
    pace_fps: float | None = _opt(None, _positive)
    #: video files, image folders and the demo: every frame as fast as possible, none dropped
    as_fast_as_possible: bool = False
    #: a live source that delivers nothing for this long is closed and reopened (with back-off)
    stall_s: float = _opt(3.0, _seconds(above=True))
    #: a stream (``url``): how long opening it may take, its first key frame included (an IP
    #: camera sends one every few seconds, a "smart codec" up to every 10 s or more; the picture
    #: size comes with it where the camera does not state it beforehand)
    open_timeout_s: float = _opt(15.0, _seconds(above=True))
    #: cameras: a fixed exposure time in ms, short enough that a moving product does not smear;
    #: under lights on the mains, a whole number of their flicker periods (10 ms at 50 Hz, 8.33 ms
    #: at 60 Hz) or frames pulse. "auto": the camera's automatic exposure. Left out: not touched
    #: (a USB camera keeps what it was last given until it is unplugged)
    exposure_ms: float | str | None = _opt(None, _number_or_auto(_positive))
    #: cameras: a fixed gain (picamera: analogue gain, 1.0 none; a V4L2 camera: its own gain
    #: control's units, `v4l2-ctl -L`), or "auto"; left out: not touched
    gain: float | str | None = _opt(None, _number_or_auto(_non_negative))
    #: cameras: the mains frequency of the lights (50 or 60): automatic exposure keeps to whole
    #: flicker periods; left out: not touched
    mains_hz: int | None = _opt(None, _one_of(50, 60))


@dataclass(frozen=True)
class ModelConfig:
    #: left out: the bundled model
    path: Path | None = None
    threads: int = _opt(2, _thread_count)
    #: left out: ai_edge_litert, else tflite_runtime
    runtime: str | None = _opt(None, _one_of(*RUNTIMES))
    #: presence threshold; left out: the one in the model's metadata
    threshold: float | None = _opt(None, _open_unit)
    #: second looks at each judged frame: off | zoom (a box model: a crop around the first box,
    #: one more invoke) | zoom-flip (the crop and its mirror image, two more) | tiles (a centre
    #: model with a heatmap: the view's four corner tiles, four more) | auto (what edge-convert
    #: stored in the model; see edge.runtime.REFINE_MODES)
    refine: str = _opt("auto", _one_of(*REFINE_MODES))


@dataclass(frozen=True)
class InspectionConfig:
    #: the region inspected, x, y, w, h normalised to the frame; left out: the whole frame
    #: (the demo line uses its own region unless one is given)
    roi: tuple[float, ...] | None = _opt(None, check_roi)


@dataclass(frozen=True)
class TriggerConfig:
    #: occupancy (software, against a learned empty belt) | every-frame (one verdict per frame)
    kind: str = _opt("occupancy", _one_of(*TRIGGER_KINDS))
    #: share of the region that must differ from the empty belt for a product to begin ...
    on: float = _opt(0.5, _open_unit)
    #: ... and below which it ends (hysteresis; must be < on)
    off: float = _opt(0.2, _open_unit)
    #: frames in a row below ``off`` that end a product
    exit_frames: int = _opt(2, _positive)
    #: grey-level difference from the empty belt that counts a cell as occupied
    level: int = _opt(30, _byte)
    #: set (e.g. 12): each cell's threshold follows the empty belt's own noise from ``level`` down
    #: to this, so products that differ little from a steady plain belt are seen; not for belts
    #: with splices or stains, or products casting soft shadows (``edge.decision.NOISE_K``);
    #: left out: ``level`` everywhere
    level_min: int | None = _opt(None, _byte)
    #: frames averaged (median) into the empty-belt reference at start
    learn_frames: int = _opt(10, _positive)
    #: how fast the reference follows slow light changes while the belt is empty
    adapt_rate: float = _opt(0.02, _unit)
    #: a product in view longer than this is judged, and the region held until it matches the
    #: empty belt again or still frames give a new one (``edge.decision.OccupancyTrigger``)
    max_product_s: float = _opt(30.0, _seconds(above=True))


@dataclass(frozen=True)
class DecisionConfig:
    #: frames (of those judged) that must see the stamp for OK; a product with fewer judged
    #: frames needs all of them
    min_hits: int = _opt(2, _positive)
    #: ... and at least this share of the judged frames
    min_hit_share: float = _opt(0.3, _unit)
    #: judged frames: occupancy >= this share of the product's peak occupancy (occupancy trigger)
    judge_share: float = _opt(0.8, _unit)
    #: the stamp variant every product must carry (a label of the model's class head): a product
    #: whose stamp is another variant is WRONG; left out: any variant is OK
    expect: str | None = _opt(None, _label)


@dataclass(frozen=True)
class OutputConfig:
    #: the verdict log (JSON lines, appended across restarts)
    events: Path | None = None
    #: the verdict log rotates at this size (to ``<events>.1``; 0: never) ...
    events_max_mb: float = _opt(100.0, _size_mb)
    #: ... keeping this many older files (``.1`` newest)
    events_keep: int = _opt(20, _keep_count)
    #: snapshots of every MISSING or WRONG product (clean and annotated frame)
    snapshots: Path | None = None
    snapshot_max_count: int = _opt(1000, _positive)
    snapshot_max_mb: float = _opt(500.0, _positive)
    #: the run's summary as JSON
    summary: Path | None = None
    #: the annotated stream as a video file (.mp4)
    record: Path | None = None
    #: a window with the annotated stream (needs a display)
    display: bool = False
    #: blend the model's heatmap over the region in the annotated stream
    heatmap: bool = False


@dataclass(frozen=True)
class RunConfig:
    #: seconds; left out: until stopped
    duration: float | None = _opt(None, _positive)
    max_frames: int | None = _opt(None, _positive)


@dataclass(frozen=True)
class DemoConfig:
    seed: int = _opt(0, _non_negative)
    #: products carry one of the first N procedural stamp variants (edge.synth.VARIANTS): most
    #: the expected one (decision.expect, else the first), a known share another; left out: the
    #: single default stamp
    variants: int | None = _opt(None, _variant_count)
    #: ... or one of the stamp images in this folder (labels: file stems)
    stamps: Path | None = None


# -- the station: GPIO, web view, MQTT, watchdogs (edge/station/) -------------------------------

#: the Raspberry Pi header's GPIO lines (BCM numbering) and physical pins
BCM_PINS = range(28)
BOARD_PINS = range(1, 41)
#: the 40-pin header's physical pins that are GPIO lines -> their BCM numbers (the others are
#: 3.3 V, 5 V or ground)
BOARD_TO_BCM = {
    3: 2, 5: 3, 7: 4, 8: 14, 10: 15, 11: 17, 12: 18, 13: 27, 15: 22, 16: 23, 18: 24, 19: 10,
    21: 9, 22: 25, 23: 11, 24: 8, 26: 7, 27: 0, 28: 1, 29: 5, 31: 6, 32: 12, 33: 13, 35: 19,
    36: 16, 37: 26, 38: 20, 40: 21,
}  # fmt: skip
PIN_EXPECTED = "a BCM GPIO number 0..27 or a gpiozero pin name like 'GPIO17', 'BCM17', 'BOARD11'"
_PIN_NAME = re.compile(r"(?:(GPIO|BCM)(\d{1,2})|(BOARD|J8:)(\d{1,2}))", re.IGNORECASE)
_HOST = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")
_TOPIC_LEVEL = re.compile(r"[^/+#\s]{1,64}")
#: process exit status when one model invoke ran longer than watchdog.inference_timeout_s
EXIT_INFERENCE_STALLED = 3


def pin_key(v: int | str) -> str | None:
    """The GPIO line a pin names, as gpiozero names it (``17``, ``BCM17``, ``BOARD11`` ->
    ``GPIO17``), or None when it is not a GPIO line (a power or ground pin is not)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int) or (isinstance(v, str) and v.strip().isdigit()):
        n = int(v)
        return f"GPIO{n}" if n in BCM_PINS else None
    if not isinstance(v, str):
        return None
    m = _PIN_NAME.fullmatch(v.strip())
    if m is None:
        return None
    if m.group(1):
        n = int(m.group(2))
        return f"GPIO{n}" if n in BCM_PINS else None
    n = int(m.group(4))
    return f"GPIO{BOARD_TO_BCM[n]}" if n in BOARD_TO_BCM else None


def check_pin(v: Any) -> str | None:
    """None for a GPIO line, else what was expected (saying so when it names a power pin)."""
    if pin_key(v) is not None:
        return None
    m = _PIN_NAME.fullmatch(v.strip()) if isinstance(v, str) else None
    if m is not None and m.group(3) and int(m.group(4)) in BOARD_PINS:
        return f"{PIN_EXPECTED} (physical pin {int(m.group(4))} is a power or ground pin, not a GPIO)"
    return PIN_EXPECTED


def parse_endpoint(text: str, default_host: str | None, default_port: int | None) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``; ``:PORT`` or ``PORT`` alone with a default host; ``HOST`` alone
    with a default port) -> (host, port); ValueError saying what was expected."""
    want = (
        "HOST:PORT, :PORT or PORT (port 0..65535)"
        if default_host is not None
        else "HOST or HOST:PORT (port 1..65535)"
    )
    text = str(text).strip()
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[: end + 1], text[end + 1 :]
        if end < 0 or (rest and not rest.startswith(":")):
            raise ValueError(f"expected {want}, got {text!r}")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.isdigit() and default_host is not None:
        host, port_text = "", text
    if not host:
        if default_host is None:
            raise ValueError(f"expected {want}, got {text!r}")
        host = default_host
    if not _HOST.fullmatch(host):
        raise ValueError(f"expected {want}, got {text!r}")
    if not port_text:
        if default_port is None:
            raise ValueError(f"expected {want}, got {text!r}")
        port = default_port
    else:
        if not port_text.isdigit():
            raise ValueError(f"expected {want}, got {text!r}")
        port = int(port_text)
    low = 0 if default_host is not None else 1
    if not low <= port <= 65535:
        raise ValueError(f"expected {want}, got {text!r}")
    return host.strip("[]"), port


def _endpoint_check(default_host: str | None, default_port: int | None) -> Check:
    def check(v: Any) -> str | None:
        try:
            parse_endpoint(v, default_host, default_port)
        except ValueError as exc:
            return str(exc).removeprefix("expected ").split(", got ")[0]
        return None

    return check


def _topic_level(v: Any) -> str | None:
    return None if _TOPIC_LEVEL.fullmatch(v) else "one MQTT topic level (no '/', '+', '#' or spaces)"


_TOKEN = re.compile(r"[A-Za-z0-9._~-]{8,}")


def token_problem(v: Any) -> str | None:
    # characters a cookie and a URL carry as they are (a ';', a quote or an accent broke the login)
    return None if _TOKEN.fullmatch(v) else "at least 8 characters, each a letter, digit or one of . _ ~ -"


def _port_or_percent(lo: int, hi: int) -> Check:
    def check(v: Any) -> str | None:
        return None if lo <= v <= hi else f"a whole number in {lo}..{hi}"

    return check


@dataclass(frozen=True)
class GpioConfig:
    """Pins by BCM number (``17``) or gpiozero name (``"GPIO17"``, ``"BOARD11"``); left out: unused."""

    #: the photo-eye (``trigger.kind = "gpio"``, or ``--trigger gpio:PIN``)
    trigger_pin: int | str | None = _opt(None, check_pin)
    #: the input's pull resistor: up (an NPN / open-collector sensor pulls the line low) | down | none
    pull: str = _opt("up", _one_of("up", "down", "none"))
    #: the level the photo-eye drives when a product is in front of it
    active: str = _opt("low", _one_of("low", "high"))
    #: edges closer than this to the last accepted one are contact bounce, ignored
    debounce_s: float = _opt(0.02, _seconds())
    #: a product is judged on the frames captured from window_delay_s after the trigger edge ...
    window_delay_s: float = _opt(0.0, _seconds())
    #: ... for window_s
    window_s: float = _opt(0.3, _seconds(above=True))
    #: the pusher (or reject light): pulsed for MISSING and WRONG verdicts
    reject_pin: int | str | None = _opt(None, check_pin)
    #: from the trigger edge (software trigger: from the verdict) to the pulse: the product's travel
    reject_delay_s: float = _opt(0.5, _seconds())
    reject_pulse_s: float = _opt(0.1, _seconds(above=True))
    #: a trigger whose window saw no frame (camera lost) is rejected too: never pass an unseen product
    reject_unjudged: bool = True
    #: stack lights: the last verdict (green OK, red MISSING or WRONG) and FAULT (camera, model)
    ok_pin: int | str | None = _opt(None, check_pin)
    missing_pin: int | str | None = _opt(None, check_pin)
    fault_pin: int | str | None = _opt(None, check_pin)
    #: on while a product is being judged (trigger edge or product in view, until its verdict)
    busy_pin: int | str | None = _opt(None, check_pin)
    #: toggles at each look of the fault monitor (4 a second) while the station inspects: frames
    #: flow (the last within 0.5 s, or three frame intervals of a slower camera), the belt is not
    #: being learned, nothing is at fault; still when not, and when edge-run stops, hangs or dies
    #: (a pin may keep its last level then, high or low, so a steady "ready" level could not say
    #: so). For a relay that watches the pulses, or a PLC that counts them
    heartbeat_pin: int | str | None = _opt(None, check_pin)
    #: how long the OK / MISSING light stays on after a verdict; 0: until the next verdict
    light_hold_s: float = _opt(0.0, _seconds())
    #: outputs drive the pin high when on (false: low, for active-low relay boards)
    outputs_active_high: bool = True


@dataclass(frozen=True)
class HttpConfig:
    #: the web view, HOST:PORT; ":8080" or "8080" listens on 127.0.0.1 only; left out: off
    listen: str | None = _opt(None, _endpoint_check("127.0.0.1", None))
    #: a token the page, the API and /metrics ask for (?token=, a cookie, or Authorization: Bearer);
    #: /healthz stays open. Left out: none (keep the web view on loopback then)
    token: str | None = _opt(None, token_problem, secret=True)
    #: or a file holding the token (readable by the service only; systemd's LoadCredential= makes one)
    token_file: Path | None = None
    #: the live stream's frame rate cap (frames are encoded only while someone watches)
    stream_fps: float = _opt(10.0, _positive)
    #: stream frames are scaled down to at most this width
    stream_width: int = _opt(640, _port_or_percent(64, 4096))
    jpeg_quality: int = _opt(70, _port_or_percent(10, 100))
    #: streams served at once (each more costs network, not encoding)
    max_viewers: int = _opt(4, _positive)


def _keepalive(v: Any) -> str | None:
    return None if 1 <= v <= 65535 else "a whole number of seconds in 1..65535 (MQTT's limit)"


def _mqtt_text(v: Any) -> str | None:
    ok = 0 < len(v.encode("utf-8")) <= 65535 and v.isprintable()
    return None if ok else "printable text of at most 65535 bytes (MQTT's limit)"


@dataclass(frozen=True)
class MqttConfig:
    #: the plant's broker, HOST[:PORT] (port 1883); left out: off. Needs output.events
    broker: str | None = _opt(None, _endpoint_check(None, 1883))
    #: this station's name in the topics stampline/<station>/...; left out: the host name
    station: str | None = _opt(None, _topic_level)
    topic_prefix: str = _opt("stampline", _topic_level)
    #: left out: stampline-<station>
    client_id: str | None = _opt(None, _mqtt_text)
    username: str | None = None
    #: a file holding the password (readable by the service only)
    password_file: Path | None = None
    #: connect over TLS (port 8883 when the broker has none), the broker's certificate checked
    #: against the system's CA certificates, or ca_file's
    tls: bool = False
    #: the CA certificate (PEM) that signed the broker's; left out: the system's
    ca_file: Path | None = None
    #: this station's certificate (PEM), for a broker that asks for one ...
    cert_file: Path | None = None
    #: ... and its private key, without a passphrase (readable by the service only); left out: in cert_file
    key_file: Path | None = None
    keepalive_s: int = _opt(30, _keepalive)
    #: the stats message (counts, fps, latency) every this many seconds
    stats_interval_s: float = _opt(60.0, _seconds(above=True))
    #: reconnect back-off doubles from 0.5 s up to this
    reconnect_max_s: float = _opt(30.0, _seconds(0.5))
    #: verdicts published but not yet acknowledged at once
    max_inflight: int = _opt(20, _positive)
    #: on stop, wait this long for unsent verdicts (the rest go after the next start)
    flush_s: float = _opt(5.0, _seconds())


@dataclass(frozen=True)
class WatchdogConfig:
    #: no frame through the loop for this long: FAULT light on, /healthz answers 503
    stall_s: float = _opt(5.0, _seconds(above=True))
    #: one model invoke running longer than this ends the process with status 3 (systemd restarts it)
    inference_timeout_s: float = _opt(10.0, _seconds(above=True))


#: the ``[gpio]`` keys that name an output pin, and all that name a pin
OUTPUT_PINS = ("reject_pin", "ok_pin", "missing_pin", "fault_pin", "busy_pin", "heartbeat_pin")
GPIO_PINS = ("trigger_pin", *OUTPUT_PINS)


def check_station(config: Any) -> None:
    """What needs two keys: a GPIO trigger needs its pin, MQTT needs the verdict log, one pin each."""
    if config.trigger.kind == "gpio" and config.gpio.trigger_pin is None:
        raise ConfigError(
            "gpio.trigger_pin: expected a pin for trigger.kind = 'gpio' (or --trigger gpio:PIN)"
        )
    if config.mqtt.broker is not None and config.output.events is None:
        raise ConfigError(
            "mqtt.broker: expected output.events too (the verdict log is what is published, --events FILE)"
        )
    if config.http.token is not None and config.http.token_file is not None:
        raise ConfigError("http.token_file: expected http.token or http.token_file, not both")
    for name in ("ca_file", "cert_file", "key_file"):
        if getattr(config.mqtt, name) is not None and not config.mqtt.tls:
            raise ConfigError(f"mqtt.{name}: expected mqtt.tls = true too")
    if config.mqtt.key_file is not None and config.mqtt.cert_file is None:
        raise ConfigError("mqtt.key_file: expected mqtt.cert_file too (the certificate of that key)")
    seen: dict[str, str] = {}
    for name in GPIO_PINS:
        value = getattr(config.gpio, name)
        if value is None:
            continue
        key = pin_key(value)
        if key in seen:
            raise ConfigError(
                f"gpio.{name}: expected a pin of its own, got {value!r} (also gpio.{seen[key]})"
            )
        seen[key] = name


@dataclass(frozen=True)
class Config:
    source: SourceConfig = field(default_factory=SourceConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    inspection: InspectionConfig = field(default_factory=InspectionConfig)
    trigger: TriggerConfig = field(default_factory=TriggerConfig)
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    run: RunConfig = field(default_factory=RunConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    gpio: GpioConfig = field(default_factory=GpioConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)

    def __post_init__(self) -> None:
        if self.trigger.off >= self.trigger.on:
            raise ConfigError(
                f"trigger.off: expected a number below trigger.on ({self.trigger.on}), got {self.trigger.off}"
            )
        if self.trigger.level_min is not None and self.trigger.level_min > self.trigger.level:
            raise ConfigError(
                f"trigger.level_min: expected at most trigger.level ({self.trigger.level}), got "
                f"{self.trigger.level_min}"
            )
        if self.demo.variants is not None and self.demo.stamps is not None:
            raise ConfigError("demo.stamps: expected either demo.variants or demo.stamps, got both")
        src = self.source
        needs = {"video": src.video, "url": src.url, "images": src.images}
        if src.kind in needs and needs[src.kind] is None:
            raise ConfigError(f"source.{src.kind}: expected a value for source.kind = {src.kind!r}")
        if src.kind == "picamera" and (
            isinstance(src.camera, bool) or not isinstance(src.camera, int) or src.camera < 0
        ):
            raise ConfigError(
                f"source.camera: expected the Pi camera's number (0, or 1 for a second camera port) "
                f"for source.kind = 'picamera', got {_show(src.camera)}"
            )
        check_station(self)

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], overrides: Mapping[str, Any] | None = None, base: Path | None = None
    ) -> Config:
        """A config from parsed TOML, with ``{"section.key": value}`` overrides applied on top.

        ``base``: the config file's folder; a relative path in ``data`` (``model.path = "m.tflite"``)
        is taken relative to it, wherever the process runs (a service's working directory is
        not the engineer's). Paths in ``overrides`` (flags) stay relative to the working directory.
        """
        merged: dict[str, dict[str, Any]] = {}
        sections = {f.name: f for f in dataclasses.fields(cls)}
        for name, table in data.items():
            if name not in sections:
                raise ConfigError(f"unknown section [{name}] (expected one of {', '.join(sections)})")
            if not isinstance(table, Mapping):
                raise ConfigError(f"{name}: expected a [{name}] table, got {_show(table)}")
            merged[name] = dict(table)
            if base is not None:
                merged[name] = _from_base(merged[name], sections[name].default_factory, base)  # type: ignore[arg-type]
        for key, value in (overrides or {}).items():
            section, _, name = key.partition(".")
            if name in merged.get(section, {}):  # the file's value must be good on its own too:
                # the service started without the flag will read it
                try:
                    _checked_value(section, sections[section].default_factory, name, merged[section][name])  # type: ignore[arg-type]
                except ConfigError as exc:
                    raise _FileValueError(
                        f"{exc} (a flag overrides it here, but not in a run without the flag)"
                    ) from None
            merged.setdefault(section, {})[name] = value
        if merged.get("source", {}).get("kind") == "images" and "kind" not in merged.get("trigger", {}):
            # photos of products, not frames of a belt: each one is a product unless told otherwise
            merged.setdefault("trigger", {})["kind"] = "every-frame"
        built = {}
        for name, f in sections.items():
            section_cls = f.default_factory  # type: ignore[misc]
            built[name] = _build_section(name, section_cls, merged.get(name, {}))  # type: ignore[arg-type]
        return cls(**built)

    @classmethod
    def load(cls, path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> Config:
        data: Mapping[str, Any] = {}
        if path is not None:
            path = Path(path)
            data = read_config_file(path)
        try:
            return cls.from_mapping(data, overrides, base=path.parent if path is not None else None)
        except ConfigError as exc:
            from_flag = not isinstance(exc, _FileValueError)
            if from_flag and str(exc).split(":", 1)[0] in (overrides or {}):  # the bad value came from a flag
                raise ConfigError(f"{exc} (from the command line)") from None
            if path is None:
                raise
            raise ConfigError(f"{path}: {exc}") from None


def read_config_file(path: Path) -> dict[str, Any]:
    """A config file's TOML as it is written (no defaults, nothing checked); ConfigError naming
    the file when it cannot be read or is not TOML."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # Notepad may start it with a BOM
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except RecursionError:  # (Python's TOML parser recurses into each nested list)
        raise ConfigError(f"{path}: not a config: its values are nested too deeply") from None


#: source keys and the source kinds that read them (the rest are read by every kind)
SOURCE_KEY_KINDS = {
    "camera": ("camera", "picamera"),
    "video": ("video",),
    "url": ("url",),
    "images": ("images",),
    "width": ("camera", "picamera"),
    "height": ("camera", "picamera"),
    "fps": ("camera", "picamera"),
    "pace_fps": ("video",),
    "as_fast_as_possible": ("video", "images", "demo"),
    "stall_s": ("camera", "picamera", "url"),
    "exposure_ms": ("camera", "picamera"),
    "gain": ("camera", "picamera"),
    "mains_hz": ("camera", "picamera"),
}
_GPIO_TRIGGER_KEYS = ("pull", "active", "debounce_s", "window_delay_s", "window_s", "reject_unjudged")
#: the trigger keys only the occupancy trigger reads (all but the kind)
_OCCUPANCY_KEYS = tuple(f.name for f in dataclasses.fields(TriggerConfig) if f.name != "kind")
#: where the heatmap is drawn: the stream's frames (a snapshot's annotated frame shows the verdict)
_HEATMAP_ON = "output.record, output.display or http.listen"


def _changed(section: Any) -> list[str]:
    """The keys of a config section whose value is not the default (given in the file or a flag)."""
    out = []
    for f in dataclasses.fields(section):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if getattr(section, f.name) != default:
            out.append(f.name)
    return out


def idle_settings(config: Config) -> list[tuple[str, str, str]]:
    """A warning for each key (or flag) set to something that this configuration never reads:
    a camera's exposure for a video file, a web-view token without the web view, a heatmap
    nothing draws. A setting that does nothing is a mistake more often than not (a key put
    in the wrong section, a flag for another source), and passing it silently hides that.
    Each warning as (key, what is wrong, the key whose value leaves it unused)."""
    kind, trigger, o = config.source.kind, config.trigger.kind, config.output
    out: list[tuple[str, str, str]] = []

    def unused(section: str, keys: Sequence[str] | None, why: str, because: str) -> None:
        """The keys of ``section`` among ``keys`` (None: all) that were set: unused, ``why``."""
        for name in _changed(getattr(config, section)):
            if keys is None or name in keys:
                out.append((f"{section}.{name}", why, because))

    for name in _changed(config.source):
        kinds = SOURCE_KEY_KINDS.get(name, (kind,))
        if kind not in kinds:
            why = f"not used by the {kind} source (only by {' and '.join(kinds)})"
            if kind == "video" and name == "fps":  # (a video's own rate is another key)
                why += "; a video's frame rate is source.pace_fps"
            out.append((f"source.{name}", why, "source.kind"))
    # (a video's pace_fps read as fast as possible is still its time base: the line's clock)
    if kind != "demo":
        unused("demo", None, f"not used by the {kind} source (only by the demo line)", "source.kind")
    if trigger != "occupancy":
        why = f"not used by the {trigger} trigger (only by occupancy)"
        unused("trigger", _OCCUPANCY_KEYS, why, "trigger.kind")
    if trigger != "gpio":
        why = "not used without the gpio trigger (trigger.kind = 'gpio')"
        unused("gpio", _GPIO_TRIGGER_KEYS, why, "trigger.kind")
    if config.gpio.reject_pin is None:
        why = "does nothing without gpio.reject_pin"
        unused("gpio", ("reject_delay_s", "reject_pulse_s"), why, "gpio.reject_pin")
    if config.http.listen is None:
        unused("http", None, "does nothing without the web view (http.listen)", "http.listen")
    if config.mqtt.broker is None:  # (the station's name titles the web view's page too)
        keys = [k for k in _changed(config.mqtt) if k != "station" or config.http.listen is None]
        unused("mqtt", keys, "does nothing without a broker (mqtt.broker)", "mqtt.broker")
    if o.events is None:
        why = "does nothing without the verdict log (output.events)"
        unused("output", ("events_max_mb", "events_keep"), why, "output.events")
    if o.snapshots is None:
        why = "does nothing without output.snapshots"
        unused("output", ("snapshot_max_count", "snapshot_max_mb"), why, "output.snapshots")
    if not (o.record or o.display or config.http.listen):  # (snapshots are drawn without it)
        why = f"does nothing without annotated frames to draw it on ({_HEATMAP_ON})"
        unused("output", ("heatmap",), why, "output.record")
    return out


def secret_warnings(config: Config) -> list[str]:
    """What exposes the station's secrets, said at every start and by --check-config (a security
    review: silent before): an MQTT password sent without TLS, and a secret file every user of the
    machine can read."""
    out = []
    m = config.mqtt
    if m.broker is not None and m.password_file is not None and not m.tls:
        out.append(
            "mqtt.password_file: without mqtt.tls the password goes over the network in clear text "
            "(anyone on it can read it and publish as this station); set mqtt.tls = true (the broker "
            "on its TLS port, usually 8883)"
        )
    for key, path in (
        ("http.token_file", config.http.token_file),
        ("mqtt.password_file", m.password_file),
        ("mqtt.key_file", m.key_file),
    ):
        try:
            mode = path.stat().st_mode if path is not None else 0
        except OSError:
            continue  # (a missing file is the loader's error)
        if mode & 0o004:
            out.append(
                f"{key} {path}: every user of this machine can read it (mode {mode & 0o777:o}); "
                "make it the service's only: chmod 640 and group stampline, or chmod 600"
            )
    return out


def _from_base(values: dict[str, Any], cls: type, base: Path) -> dict[str, Any]:
    """``values`` with each relative path of a path-typed key taken relative to ``base``
    (``~`` expands to the home folder); anything else, bad values included, is left for
    ``_build_section`` to check."""
    hints = typing.get_type_hints(cls)
    out = dict(values)
    for key, value in values.items():
        hint = hints.get(key)
        if isinstance(value, str) and value and (hint is Path or Path in typing.get_args(hint)):
            path = Path(value).expanduser()
            out[key] = str(path if path.is_absolute() else base / path)
    return out


class _FileValueError(ConfigError):
    """A bad value in the config file under a key a flag overrides."""


def _checked_value(section: str, cls: type, key: str, value: Any) -> Any:
    """``value`` for ``section.key`` of the section class ``cls``, converted and checked."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if key not in fields:
        raise ConfigError(f"unknown key '{section}.{key}' (expected one of {', '.join(sorted(fields))})")
    where = f"{section}.{key}"
    secret = fields[key].metadata.get("secret")
    try:
        value = _coerce(value, typing.get_type_hints(cls)[key], where)
    except ConfigError:
        if not secret or value == "":  # (an empty secret has nothing to hide)
            raise
        # (a token of another type was shown whole: token = 98765432101234)
        kind = {bool: "true or false", int: "number", float: "number", dict: "table", list: "list"}
        raise ConfigError(
            f"{where}: expected a string, got a {kind.get(type(value), 'value of another type')}"
        ) from None
    check = fields[key].metadata.get("check")
    if value is not None and check is not None:
        expected = check(value)
        if expected is not None:
            shown = _secret_shown(value) if secret else _show(value)
            raise ConfigError(f"{where}: expected {expected}, got {shown}")
    return value


def _build_section(section: str, cls: type, values: Mapping[str, Any]) -> Any:
    return cls(**{key: _checked_value(section, cls, key, value) for key, value in values.items()})


def _secret_shown(value: Any) -> str:
    """A secret as an error may show it: its length and the characters that do not belong."""
    if not isinstance(value, str):
        return "another type"
    odd = sorted({c for c in value if not _TOKEN.fullmatch(c * 8)})
    return f"{len(value)} characters" + (f", with {' '.join(repr(c) for c in odd)}" if odd else "")


#: a value shown in an error is cut to this many characters (a 70,000-character client id)
SHOWN = 80


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    text = repr(value) if not isinstance(value, Path) else repr(str(value))
    return text if len(text) <= SHOWN else f"{text[: SHOWN - 14]}... ({len(text)} characters)"


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """A TOML (or flag) value -> the field's type, or ConfigError naming the key."""
    if value is None:
        return None
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(value, option, where)
            except ConfigError as exc:
                errors.append(exc)
        raise (
            errors[0]
            if len(options) == 1
            else ConfigError(
                f"{where}: expected {' or '.join(_name(o) for o in options)}, got {_show(value)}"
            )
        )
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > MAX_WHOLE:  # (10**20 frames to learn from: an OverflowError deep inside)
                raise ConfigError(f"{where}: expected at most {MAX_WHOLE:,}, got {_show(value)}")
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif hint is str:
        if isinstance(value, str) and value:
            return value
    elif hint is Path:
        if isinstance(value, str | Path) and str(value):
            return Path(value)
    elif typing.get_origin(hint) is tuple:
        if isinstance(value, list | tuple):
            return tuple(_coerce(v, args[0], where) for v in value)
    raise ConfigError(f"{where}: expected {_name(hint)}, got {_show(value)}")


#: the largest whole number a key or flag takes (what C's int holds: OpenCV's and numpy's calls)
MAX_WHOLE = 2**31 - 1


def _name(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        return "a list of " + {float: "numbers", int: "whole numbers"}.get(item, "strings")
    return {
        bool: "true or false",
        int: "a whole number",
        float: "a number",
        str: "a non-empty string",
        Path: "a path",
    }.get(hint, str(hint))
