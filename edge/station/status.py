"""What the station knows about itself: counts, rates, latency, recent verdicts, faults.

:class:`StationStatus` is a sink: the loop hands it every frame's result, and it keeps a few
numbers under a lock (no image is copied; a MISSING verdict's evidence frame is kept by
reference for its thumbnail). The web view, ``/metrics``, the MQTT stats and the fault monitor
read it from their own threads through :meth:`snapshot` and :meth:`health`.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge.decision import BriefProducts
from edge.sinks import FrameResult, iso_time
from edge.sources import SourceStats
from edge.types import Frame, Outcome, Verdict

#: verdicts kept for the web view
RECENT_VERDICTS = 12
#: latency and invoke figures in the status are percentiles over the most recent frames
WINDOW = 300
#: products per minute are counted over this many seconds
RATE_WINDOW_S = 60.0


@dataclass(frozen=True, eq=False)
class RecentVerdict:
    seq: int
    product_id: int
    outcome: Outcome
    wall_time: float
    score: float
    hits: int
    frames: int
    #: the evidence frame of a product that was not OK (for its thumbnail), else None
    evidence: Frame | None = None
    #: the stamp's variant (a model of several; None: a single-stamp model, or no stamp)
    label: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "product_id": self.product_id,
            "verdict": self.outcome.value,
            "time": iso_time(self.wall_time),
            "score": round(self.score, 3),
            "hits": self.hits,
            "frames": self.frames,
            "thumbnail": self.evidence is not None,
            "label": self.label,
        }


class StationStatus:
    """Counts and rates of the running loop, safe to read from other threads."""

    needs_annotated = False

    def __init__(
        self,
        source_stats: SourceStats | None = None,
        station: str = "",
        stall_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.stall_s = float(stall_s)
        self.source_stats = source_stats or SourceStats()
        self.station = station
        self.model_id = ""
        self.runtime = ""
        #: what is wrong with the model file the running model was loaded from (replaced or gone:
        #: it takes effect at the next start), None while it is the one loaded
        self.model_file: str | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self.started = clock()
        self.frames = 0
        self.inferences = 0
        self.counts: Counter[Outcome] = Counter()
        #: monotonic time the loop last finished a frame (None: not yet)
        self.last_frame_t: float | None = None
        #: the trigger is learning the empty belt (nothing is judged)
        self.learning = False
        #: why the trigger judges no product though the region is not empty (None: it judges)
        self.trigger_held: str | None = None
        self._frame_times: deque[float] = deque(maxlen=64)
        self._latency_ms: deque[float] = deque(maxlen=WINDOW)
        self._invoke_ms: deque[float] = deque(maxlen=WINDOW)
        self._verdict_times: deque[float] = deque()
        self.recent: deque[RecentVerdict] = deque(maxlen=RECENT_VERDICTS)
        self.unjudged = 0
        self.rejects = 0
        #: products judged on the frames before the frames stopped, and on too few frames
        self.interrupted = 0
        self._briefs = BriefProducts()
        #: active faults, name -> why (set by the fault monitor)
        self.faults: dict[str, str] = {}
        self.verdict_listeners: list[Callable[[Verdict], None]] = []

    def __enter__(self) -> StationStatus:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def write(self, result: FrameResult) -> None:
        now = self._clock()
        latency_ms = (now - result.frame.t_capture) * 1e3
        pred = result.prediction
        verdict = result.verdict
        with self._lock:
            if not result.stopped:  # else no new frame, only a verdict
                self.frames += 1
                self.last_frame_t = now
                self.learning = result.trigger.learning
                held = result.trigger.held
                self.trigger_held = held
                if held is not None and result.trigger.held_moving:  # products may pass unjudged
                    self.faults["trigger"] = held
                else:
                    self.faults.pop("trigger", None)
                self._frame_times.append(now)
                self._latency_ms.append(latency_ms)
            if pred is not None:
                self.inferences += 1
                invoke = pred.timings.get("invoke_ms")
                if invoke is not None:
                    self._invoke_ms.append(float(invoke))
            if verdict is not None:
                self.counts[verdict.outcome] += 1
                self.interrupted += verdict.interrupted_s is not None
                self._briefs.add(verdict, result.trigger, self.source_stats.dropped)
                self._verdict_times.append(now)
                self._forget_old_verdicts(now)  # bounded even where nothing asks for the rate
                self.recent.appendleft(
                    RecentVerdict(
                        verdict.seq,
                        verdict.product_id,
                        verdict.outcome,
                        verdict.wall_time,
                        verdict.score,
                        verdict.hits,
                        len(verdict.frames),
                        verdict.evidence if verdict.outcome is not Outcome.OK else None,
                        verdict.label,
                    )
                )
        if verdict is not None:
            for listener in self.verdict_listeners:
                listener(verdict)

    @property
    def few_frames(self) -> int:
        """Products seen too briefly to be sure of (``edge.decision.seen_too_briefly``)."""
        return self._briefs.count

    def now(self) -> float:
        return self._clock()

    def count_unjudged(self) -> None:
        with self._lock:
            self.unjudged += 1

    def set_fault(self, name: str, why: str | None) -> None:
        with self._lock:
            if why is None:
                self.faults.pop(name, None)
            else:
                self.faults[name] = why

    def frame_age(self, now: float | None = None) -> float:
        """Seconds since the loop last finished a frame (since start before the first)."""
        now = self._clock() if now is None else now
        last = self.last_frame_t
        return now - (last if last is not None else self.started)

    def frame_interval(self) -> float:
        """Seconds between the last two frames through the loop (0: fewer than two yet)."""
        with self._lock:
            times = self._frame_times
            return times[-1] - times[-2] if len(times) >= 2 else 0.0

    def fps(self, now: float | None = None) -> float:
        """Frames per second through the loop over the last few seconds."""
        now = self._clock() if now is None else now
        with self._lock:
            times = [t for t in self._frame_times if now - t <= 3.0]
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def health(self, now: float | None = None) -> tuple[bool, str]:
        """(healthy, why): frames flow and no fault is active."""
        age = self.frame_age(now)
        with self._lock:
            faults = dict(self.faults)
            started = self.last_frame_t is not None
        if faults:
            return False, "; ".join(f"{k}: {v}" for k, v in sorted(faults.items()))
        if not started:
            return False, "starting: no frame yet"
        if age > self.stall_s:
            return False, f"stalled: no frame through the loop for {age:.1f} s"
        return True, "ok: frames flow"

    def _forget_old_verdicts(self, now: float) -> None:
        """Drop the verdict times older than the rate's window (the lock held)."""
        while self._verdict_times and now - self._verdict_times[0] > RATE_WINDOW_S:
            self._verdict_times.popleft()

    def snapshot(self, now: float | None = None) -> dict[str, object]:
        """The status as plain data (``/api/status``, the MQTT stats)."""
        now = self._clock() if now is None else now
        fps = self.fps(now)
        healthy, why = self.health(now)
        with self._lock:
            self._forget_old_verdicts(now)
            span = min(now - self.started, RATE_WINDOW_S)
            rate = len(self._verdict_times) * 60.0 / span if span >= 1.0 else 0.0
            lat = np.asarray(self._latency_ms) if self._latency_ms else None
            inv = np.asarray(self._invoke_ms) if self._invoke_ms else None
            counts = {o.value: self.counts[o] for o in Outcome}
            data: dict[str, object] = {
                "station": self.station,
                "model_id": self.model_id,
                "model_file": self.model_file,
                "trigger_held": self.trigger_held,
                "runtime": self.runtime,
                "uptime_s": round(now - self.started, 1),
                "healthy": healthy,
                "health": why,
                "faults": dict(self.faults),
                "frames": self.frames,
                "inferences": self.inferences,
                "dropped": self.source_stats.dropped,
                "camera_reopens": self.source_stats.reopens,
                "frame_age_s": round(self.frame_age(now), 2),
                "fps": round(fps, 1),
                "latency_ms_p50": round(float(np.percentile(lat, 50)), 1) if lat is not None else None,
                "latency_ms_p99": round(float(np.percentile(lat, 99)), 1) if lat is not None else None,
                "invoke_ms_p50": round(float(np.percentile(inv, 50)), 2) if inv is not None else None,
                "inspected": sum(counts.values()),
                "counts": counts,
                "missing": counts[Outcome.MISSING.value],
                "rate_per_min": round(rate, 1),
                "unjudged": self.unjudged,
                "interrupted": self.interrupted,
                "few_frames": self.few_frames,
                "rejects": self.rejects,
                "recent": [v.as_dict() for v in self.recent],
            }
        return data

    def evidence(self, seq: int) -> Frame | None:
        with self._lock:
            return next((v.evidence for v in self.recent if v.seq == seq), None)
