"""The station around the loop: GPIO, the web view, /metrics, MQTT and the watchdogs, built from
the config and opened as one context manager (``edge.cli.run`` uses it).

Each part exists only when configured; what is always there is cheap: :class:`StationStatus`
(a few counters per frame) and the fault monitor (a look four times a second), so a hung model
invoke always ends the process. Opening checks everything that can be checked before the model
is loaded: pins, the listening port, the libraries, the MQTT password file.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable

from edge.config import OUTPUT_PINS, Config
from edge.runtime import ModelFileWatch
from edge.sources import SourceStats
from edge.station.common import StationError, host_name
from edge.station.status import StationStatus
from edge.station.watchdog import FaultMonitor, WatchedDetector

_log = logging.getLogger(__name__)

#: the heartbeat stops when the last frame is older than this (or three frame intervals)
HEARTBEAT_MAX_AGE_S = 0.5


def _loopback(host: str) -> bool:
    name = host_name(host)
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return name == "localhost"


class Station:
    """The configured station parts; ``sinks`` go after the verdict log in the loop's sinks."""

    def __init__(
        self,
        config: Config,
        source_stats: SourceStats | None = None,
        pin_factory: object | None = None,
        exit: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config
        self._pin_factory = pin_factory
        self._exit = exit
        self._clock = clock
        from edge.station.mqtt import station_name

        self.name = station_name(config.mqtt)
        self.status = StationStatus(source_stats, self.name, config.watchdog.stall_s, clock)
        self.trigger = None
        self.outputs = None
        self.web = None
        self.metrics = None
        self.publisher = None
        self.monitor: FaultMonitor | None = None
        self.detector: WatchedDetector | None = None
        self._model_file: ModelFileWatch | None = None
        self._stack = contextlib.ExitStack()

    @property
    def sinks(self) -> list:
        parts = [self.status, self.metrics, self.outputs, self.publisher, self.web]
        return [p for p in parts if p is not None]

    def __enter__(self) -> Station:
        c = self.config
        try:
            if c.trigger.kind == "gpio":
                from edge.station.gpio import GpioTrigger

                self.trigger = self._stack.enter_context(
                    GpioTrigger(c.gpio, pin_factory=self._pin_factory, clock=self._clock)
                )
            from edge.station.gpio import GpioOutputs

            outputs = GpioOutputs(
                c.gpio,
                pin_factory=self._pin_factory,
                edge_time=self.trigger.edge_time if self.trigger is not None else None,
                pending=(lambda: self.trigger.pending) if self.trigger is not None else None,
                clock=self._clock,
            )
            if outputs.enabled:
                self.outputs = self._stack.enter_context(outputs)
            if self.trigger is not None:
                self.trigger.on_unjudged.append(lambda pid, t: self.status.count_unjudged())
                if self.outputs is not None:
                    self.trigger.on_edge.append(self.outputs.edge)
                    self.trigger.on_unjudged.append(self.outputs.unjudged)
            if c.mqtt.broker is not None:
                from edge.station.mqtt import VerdictPublisher

                assert c.output.events is not None  # Config checks it
                self.publisher = VerdictPublisher(c.mqtt, c.output.events, self.status, clock=self._clock)
            if c.http.listen is not None:
                from edge.station.metrics import PromMetrics
                from edge.station.web import WebView

                self.metrics = PromMetrics(
                    self.status, self.publisher.health if self.publisher is not None else None
                )
                self.web = self._stack.enter_context(WebView(c.http, self.status, self.metrics.render))
            if self.publisher is not None:
                self._stack.enter_context(self.publisher)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def describe(self) -> list[str]:
        """One line per part that is on, for the start of the run."""
        lines = []
        c = self.config
        if self.trigger is not None:
            g = c.gpio
            lines.append(
                f"photo-eye on {self.trigger.pin} (pull {g.pull}, active {g.active}, debounce "
                f"{g.debounce_s * 1e3:g} ms), judging the frames {g.window_delay_s:g}-"
                f"{g.window_delay_s + g.window_s:g} s after each edge"
            )
        if self.outputs is not None:
            g = c.gpio
            pins = [
                f"{k.removesuffix('_pin')} {getattr(g, k)}" for k in OUTPUT_PINS if getattr(g, k) is not None
            ]
            lines.append(
                f"outputs {', '.join(pins)}"
                + (
                    f"; reject pulse {g.reject_pulse_s * 1e3:g} ms, {g.reject_delay_s:g} s after the "
                    + ("trigger edge" if self.trigger is not None else "verdict")
                    if g.reject_pin is not None
                    else ""
                )
            )
        if self.web is not None:
            where = "every interface" if self.web.host in ("0.0.0.0", "::") else self.web.host
            if self.web.token is None and not _loopback(self.web.host):
                _log.warning(
                    "the web view listens on %s without a token: anyone on the network sees the line; "
                    "set http.token (--http-token)",
                    where,
                )
            lines.append(
                f"web view on {self.web.url} ({where}{', token required' if self.web.token else ''}); "
                f"/metrics, /healthz, /api/status"
            )
        if self.publisher is not None:
            p = self.publisher
            lines.append(
                f"mqtt to {p.host}:{p.port} as {p.topic_verdict} (QoS 1), "
                f"{p.unsent_at_start} verdicts from before this start to send"
            )
        return lines

    def watch(self, detector, runtime: str = "") -> WatchedDetector:
        """The detector, watched; starts the fault monitor (call right before the loop runs)."""
        self.detector = WatchedDetector(detector, clock=self._clock)
        self.status.model_id = getattr(detector, "model_id", "")
        path = getattr(detector, "path", None)
        self._model_file = (
            ModelFileWatch(path, self.status.model_id, clock=self._clock) if path is not None else None
        )
        self.status.runtime = runtime
        self.status.started = self._clock()
        kwargs = {"exit": self._exit} if self._exit is not None else {}
        self.monitor = FaultMonitor(
            self.status,
            self.detector,
            self.config.watchdog.inference_timeout_s,
            on_fault=self._on_fault,
            on_tick=self._tick,
            on_exit=self.outputs.all_off_but_fault if self.outputs is not None else None,
            clock=self._clock,
            **kwargs,
        )
        self.detector.on_error = self.monitor.check
        self._stack.enter_context(self.monitor)
        return self.detector

    def _on_fault(self, on: bool) -> None:
        if self.outputs is not None:
            self.outputs.fault(on)

    def _tick(self, now: float) -> None:
        if self._model_file is not None:
            self.status.model_file = self._model_file.check(now)
        if self.trigger is not None:
            self.trigger.expire(now)
        if self.outputs is not None:
            self.status.rejects = self.outputs.rejects
            self.outputs.heartbeat(self._inspecting(now))

    def _inspecting(self, now: float) -> bool:
        """Frames flow (the last within half a second, or three frame intervals of a slower
        camera), the trigger is not learning the belt and nothing is at fault: what the
        heartbeat output says."""
        s = self.status
        if s.last_frame_t is None or s.faults or s.learning:
            return False
        return s.frame_age(now) <= max(HEARTBEAT_MAX_AGE_S, 3.0 * s.frame_interval())


__all__ = ["Station", "StationError"]
