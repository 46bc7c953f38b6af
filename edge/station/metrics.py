"""``/metrics``: the loop's figures in Prometheus's text format, through prometheus-client.

Counters and histograms are updated by :class:`PromMetrics` (a sink, a few increments per frame on
the loop's thread); gauges and the source's counts are read at scrape time. Everything lives in a
registry of its own, not the library's global one.

Exposed: ``stampline_frames_total``, ``stampline_inferences_total``,
``stampline_frames_dropped_total``, ``stampline_frames_skipped_total``,
``stampline_camera_reopens_total``, ``stampline_verdicts_total{result}``,
``stampline_unjudged_total``, ``stampline_interrupted_total``, ``stampline_few_frames_total``,
``stampline_rejects_total``, ``stampline_invoke_seconds`` and
``stampline_latency_seconds`` (histograms: one model invoke; capture to result),
``stampline_camera_connected``, ``stampline_healthy``, ``stampline_fault{kind}``,
``stampline_fps``, ``stampline_frame_age_seconds``, ``stampline_mqtt_connected``,
``stampline_mqtt_unsent`` and ``stampline_model_info{model_id, runtime, station}``.
"""

from __future__ import annotations

from collections.abc import Callable

from edge.sinks import FrameResult
from edge.station.common import missing
from edge.station.status import StationStatus
from edge.types import Outcome

INVOKE_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
FAULT_KINDS = ("camera", "inference", "model", "trigger")


class PromMetrics:
    """The station's Prometheus registry, fed as a sink."""

    needs_annotated = False

    def __init__(self, status: StationStatus, mqtt: Callable[[], tuple[bool, int]] | None = None):
        try:
            import prometheus_client as pc
            from prometheus_client import core
        except ImportError:
            raise missing("prometheus_client", "http.listen (/metrics)") from None
        self._pc = pc
        self.status = status
        self.registry = pc.CollectorRegistry(auto_describe=True)
        r = self.registry
        self.frames = pc.Counter("stampline_frames", "Frames through the inspection loop", registry=r)
        self.inferences = pc.Counter("stampline_inferences", "Model invokes", registry=r)
        self.verdicts = pc.Counter("stampline_verdicts", "Verdicts, one per product", ["result"], registry=r)
        for outcome in Outcome:
            self.verdicts.labels(outcome.value)
        self.invoke = pc.Histogram(
            "stampline_invoke_seconds", "One model invoke", buckets=INVOKE_BUCKETS, registry=r
        )
        self.latency = pc.Histogram(
            "stampline_latency_seconds",
            "Capture to result, end to end",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        r.register(_Live(core, status, mqtt))

    def __enter__(self) -> PromMetrics:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def write(self, result: FrameResult) -> None:
        if not result.stopped:  # else no new frame, only a verdict
            self.frames.inc()
            self.latency.observe(max(self.status.now() - result.frame.t_capture, 0.0))
        pred = result.prediction
        if pred is not None:
            self.inferences.inc()
            invoke = pred.timings.get("invoke_ms")
            if invoke is not None:
                self.invoke.observe(invoke / 1e3)
        if result.verdict is not None:
            self.verdicts.labels(result.verdict.outcome.value).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return self._pc.generate_latest(self.registry), self._pc.CONTENT_TYPE_LATEST


class _Live:
    """What is read at scrape time: the source's counts, health, faults, MQTT, the model."""

    def __init__(self, core, status: StationStatus, mqtt: Callable[[], tuple[bool, int]] | None):
        self._core = core  # prometheus_client.core, imported by PromMetrics
        self.status = status
        self.mqtt = mqtt

    def collect(self):
        core, s = self._core, self.status
        stats = s.source_stats
        snap_faults = dict(s.faults)
        healthy, _ = s.health()
        age = s.frame_age()
        for name, doc, value in (
            (
                "stampline_frames_dropped",
                "Frames the camera delivered that the loop never took",
                stats.dropped,
            ),
            ("stampline_frames_skipped", "Frames of unusable form, skipped", stats.skipped),
            ("stampline_camera_reopens", "Times a silent camera was reopened", stats.reopens),
            ("stampline_unjudged", "Triggered products no frame saw", s.unjudged),
            (
                "stampline_interrupted",
                "Products judged on the frames before the frames stopped",
                s.interrupted,
            ),
            ("stampline_few_frames", "Products judged on too few frames (the loop too slow)", s.few_frames),
            ("stampline_rejects", "Reject pulses scheduled", s.rejects),
        ):
            yield core.CounterMetricFamily(name, doc, value=value)
        camera_ok = "camera" not in snap_faults and s.last_frame_t is not None and age <= s.stall_s
        for name, doc, value in (
            ("stampline_camera_connected", "1 while the camera delivers frames", float(camera_ok)),
            ("stampline_healthy", "1 while frames flow and no fault is active", float(healthy)),
            ("stampline_fps", "Frames per second through the loop (last seconds)", s.fps()),
            ("stampline_frame_age_seconds", "Since the loop last finished a frame", age),
        ):
            yield core.GaugeMetricFamily(name, doc, value=value)
        fault = core.GaugeMetricFamily("stampline_fault", "1 while this fault is active", labels=["kind"])
        for kind in FAULT_KINDS:
            fault.add_metric([kind], float(kind in snap_faults))
        yield fault
        if self.mqtt is not None:
            connected, unsent = self.mqtt()
            yield core.GaugeMetricFamily(
                "stampline_mqtt_connected", "1 while the broker is connected", value=float(connected)
            )
            yield core.GaugeMetricFamily(
                "stampline_mqtt_unsent", "Logged verdicts the broker has not acknowledged", value=unsent
            )
        info = core.InfoMetricFamily("stampline_model", "The model and runtime in use")
        info.add_metric([], {"model_id": s.model_id, "runtime": s.runtime, "station": s.station})
        yield info
