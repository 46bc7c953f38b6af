"""A live source whose frames stop (a dropped stream, a stalled camera) with a product in view:
that product is judged on what was seen of it, marked, and not merged with what comes after."""

from __future__ import annotations

import logging
import time

import numpy as np

from edge.config import TriggerConfig
from edge.decision import Decider, OccupancyTrigger
from edge.demo import DemoLine
from edge.pipeline import Pipeline
from edge.runtime import TFLiteDetector
from edge.sinks import verdict_record
from edge.sources import Source


class DroppingStream:
    """The hardware boundary: the demo line as a live stream that goes silent at frame ``cut`` for
    ``silent_s`` and comes back at frame ``resume`` (what passed meanwhile was never sent)."""

    live = True
    fps = None

    def __init__(self, line: DemoLine, cut: int, resume: int, silent_s: float, end: int):
        self.name = "dropping stream"
        self.line, self.cut, self.resume, self.silent_s, self.end = line, cut, resume, silent_s, end
        self._t = 0
        self._silent_until: float | None = None

    def open(self) -> None:  # a reopen does not rewind a live stream
        pass

    def grab(self):
        time.sleep(0.002)
        if self._t == self.cut and self._silent_until is None:
            self._silent_until = time.monotonic() + self.silent_s
        if self._silent_until is not None and time.monotonic() < self._silent_until:
            return None
        if self._t == self.cut:
            self._t = self.resume
        if self._t >= self.end:
            return None
        image = self.line.render(self._t)
        self._t += 1
        return image

    def close(self) -> None:
        pass


def test_a_product_in_view_when_the_frames_stop_is_judged_on_its_own_frames_and_marked(caplog):
    line = DemoLine(0)  # product 1 (stamped) crosses the region in frames 79-90, 2 (unstamped) 155-165
    stream = DroppingStream(line, cut=84, resume=158, silent_s=0.6, end=240)
    detector = TFLiteDetector()
    verdicts = []
    with Source(stream, threaded=True, stall_s=0.3) as src:
        pipeline = Pipeline(
            src,
            detector,
            OccupancyTrigger(TriggerConfig()),
            Decider(detector.metadata.threshold),
            roi=line.roi,
            hooks=[lambda result, _ms: verdicts.append(result.verdict) if result.verdict else None],
        )
        with caplog.at_level(logging.WARNING):
            summary = pipeline.run(duration=8.0, max_frames=160)
    first, second = verdicts[:2]
    assert first.product_id == 1 and first.outcome.value == "OK"  # seen stamped before the drop
    assert first.interrupted_s is not None and first.interrupted_s >= 0.55
    assert max(first.frames) < 84  # only frames from before the drop (frames are numbered as read)
    assert verdict_record(first, (0, 0, 640, 480))["interrupted_s"] == round(first.interrupted_s, 1)
    assert second.product_id == 2 and second.outcome.value == "MISSING" and second.interrupted_s is None
    assert min(second.frames) > 84 and "interrupted_s" not in verdict_record(second, (0, 0, 640, 480))
    assert (summary.gaps, summary.interrupted) == (1, 1) and summary.blind_s >= 0.5
    said = [r.getMessage() for r in caplog.records if "while it was in view" in r.getMessage()]
    assert said and said[0].startswith("product 1 OK on ") and "frames only: no frames for 0." in said[0]
    assert "no frames 1x for " in summary.format() and "1 judged on part of their frames" in summary.format()
    assert np.isfinite(summary.latency_ms_p99)


class EveryNthFrame:
    """The demo line as a loop too slow for it sees it: only every ``n``-th frame arrives."""

    live = False
    fps = None

    def __init__(self, line: DemoLine, n: int):
        self.name, self.line, self.n, self._t = "slow loop", line, n, 0

    def open(self) -> None:
        pass

    def grab(self):
        image = self.line.render(self._t)
        self._t += self.n
        return image

    def close(self) -> None:
        pass


def test_products_judged_on_too_few_frames_say_the_loop_is_too_slow_for_the_line(caplog):
    from edge.decision import FEW_FRAMES
    from edge.station.status import StationStatus

    line = DemoLine(0)
    detector = TFLiteDetector()
    runs = {}
    for n in (1, 6):  # every frame: 9-14 judged frames a product; every 6th: one or two
        with Source(EveryNthFrame(line, n), threaded=False) as src:
            caplog.clear()
            status = StationStatus()  # what the web view and /metrics show
            pipeline = Pipeline(
                src,
                detector,
                OccupancyTrigger(TriggerConfig()),
                Decider(detector.metadata.threshold),
                sinks=[status],
                roi=line.roi,
            )
            with caplog.at_level(logging.WARNING):
                summary = pipeline.run(max_frames=1200 // n)
        assert status.snapshot()["few_frames"] == summary.few_frames
        runs[n] = (
            summary,
            [r.getMessage() for r in caplog.records if "too slow for the line" in r.getMessage()],
        )
    summary, said = runs[1]
    assert summary.products >= 10 and summary.few_frames == 0 and not said
    summary, said = runs[6]
    assert summary.few_frames >= 3 and len(said) == 1  # at once, then not again within the minute
    assert said[0].startswith("product ") and f"judged on fewer than {FEW_FRAMES} frames" in summary.format()
