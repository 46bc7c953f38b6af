"""A live source whose frames stop (a dropped stream, a stalled camera) with a product in view:
that product is judged on what was seen of it, marked, and not merged with what comes after."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from edge.config import TriggerConfig
from edge.decision import Decider, OccupancyTrigger
from edge.demo import DemoLine
from edge.pipeline import FrameRate, Pipeline, RunOptions
from edge.runtime import TFLiteDetector
from edge.sinks import verdict_record
from edge.sources import Source
from edge.station.common import StationError
from edge.station.status import StationStatus
from edge.types import Frame


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
        self.sent: list[float] = []  # when each frame was handed over
        self._cut_at: int | None = None  # the index in sent of the first frame after the silence

    def unplanned_stalls(self, stall_s: float) -> int:
        """Times the frames stopped for ``stall_s`` besides the silence planned: a busy machine
        that did not schedule the reading thread (each one is a gap the run rightly counts)."""
        gaps = np.diff(self.sent) if len(self.sent) > 1 else np.zeros(0)
        planned = self._cut_at - 1 if self._cut_at is not None else -1  # the gap after frame cut - 1
        return sum(1 for i, gap in enumerate(gaps) if gap >= stall_s and i != planned)

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
            self._cut_at = len(self.sent)
        if self._t >= self.end:
            return None
        image = self.line.render(self._t)
        self._t += 1
        self.sent.append(time.monotonic())
        return image

    def close(self) -> None:
        pass


class Results:
    """A sink keeping what it is given (the verdicts, and whether each came with a new frame)."""

    needs_annotated = False

    def __init__(self) -> None:
        self.verdicts, self.stopped, self.frames = [], [], 0

    def write(self, result) -> None:
        self.frames += not result.stopped
        if result.verdict is not None:
            self.verdicts.append(result.verdict)
            self.stopped.append(result.stopped)


def _run_dropping(
    cut: int, resume: int, caplog, silent_s: float = 1.2, duration: float = 12.0, stall_s: float = 0.6
):
    line = DemoLine(0)  # product 1 (stamped) crosses the region in frames 79-90, 2 (unstamped) 155-165
    # the stream goes on past the frames the run takes (a busy machine drops some: the run must end
    # on max_frames or duration, not on frames that stop)
    stream = DroppingStream(line, cut=cut, resume=resume, silent_s=silent_s, end=resume + 10_000)
    detector = TFLiteDetector()
    results = Results()
    with Source(stream, threaded=True, stall_s=stall_s) as src:
        # what the web view and /metrics count, fed alike
        results.status = StationStatus(source_stats=src.stats)
        sinks = [results, results.status]
        try:
            from edge.station.metrics import PromMetrics

            results.metrics = PromMetrics(results.status)
            sinks.append(results.metrics)
        except StationError:  # prometheus-client not installed
            results.metrics = None
        pipeline = Pipeline(
            src,
            detector,
            OccupancyTrigger(TriggerConfig()),
            Decider(detector.metadata.threshold),
            sinks=sinks,
            options=RunOptions(roi=line.roi),
        )
        with caplog.at_level(logging.WARNING):
            summary = pipeline.run(duration=duration, max_frames=cut + 75)
        results.extra_gaps = stream.unplanned_stalls(src.gap_limit())
    return results, summary


def test_a_product_in_view_when_the_frames_stop_is_judged_on_its_own_frames_and_marked(caplog):
    results, summary = _run_dropping(84, 158, caplog)  # back in the middle of product 2
    verdicts = results.verdicts
    first, second = verdicts[:2]
    assert first.product_id == 1 and first.outcome.value == "OK"  # seen stamped before the drop
    # judged when the frames had stopped for stall_s, before they came back (not at the next frame)
    assert results.stopped[:2] == [True, False]
    assert first.interrupted_s is not None and 0.6 <= first.interrupted_s < 1.2
    assert max(first.frames) < 84  # only frames from before the drop (frames are numbered as read)
    assert verdict_record(first, (0, 0, 640, 480))["interrupted_s"] == round(first.interrupted_s, 1)
    # product 2 was in view when the frames came back: seen only from then on, and marked so
    assert second.product_id == 2 and second.outcome.value == "MISSING"
    assert second.interrupted_s >= 1.15 and min(second.frames) >= 84
    assert summary.gaps == 1 + results.extra_gaps and summary.blind_s >= 1.1
    assert summary.interrupted == 2 or (results.extra_gaps and summary.interrupted > 2)
    assert summary.frames == results.frames  # the verdict without a frame is not a frame
    seen = results.status.snapshot()
    assert (seen["frames"], seen["inspected"]) == (summary.frames, summary.products)
    if results.metrics is not None:
        counted = results.metrics.registry.get_sample_value
        assert counted("stampline_frames_total") == summary.frames
        assert counted("stampline_latency_seconds_count") == summary.frames
        assert (
            sum(counted("stampline_verdicts_total", {"result": r}) for r in ("OK", "MISSING", "WRONG"))
            == len(verdicts)  # (a third product ends within the frames when a busy machine drops some)
        )
    said = [r.getMessage() for r in caplog.records if "while it was in view" in r.getMessage()]
    assert said[0].startswith("product 1 OK on ") and "frames only: no frames for " in said[0]
    assert said[1].startswith("product 2 MISSING on ") and len(said) == summary.interrupted
    text = summary.format()
    assert f"no frames {summary.gaps}x for " in text and f"{summary.interrupted} judged on part of" in text
    assert np.isfinite(summary.latency_ms_p99)
    assert all(v.interrupted_s is None for v in verdicts[2:])  # products after that were seen whole


def test_a_product_in_view_when_the_frames_stop_for_good_is_judged_at_once(caplog):
    """The stream never comes back: the product in view still gets its verdict (logged, flagged
    and sent on), and the summary counts the frames stopping and the time without them."""
    results, summary = _run_dropping(84, 158, caplog, silent_s=60.0, duration=3.0)
    assert [v.product_id for v in results.verdicts] == [1] and results.stopped == [True]
    assert results.verdicts[0].interrupted_s >= 0.6
    assert summary.gaps == 1 + results.extra_gaps and summary.blind_s >= 1.5 and summary.unfinished == 0
    assert f"no frames {summary.gaps}x for " in summary.format()


def test_a_freeze_shorter_than_a_stall_between_two_products_does_not_merge_them(caplog):
    """A stream that froze for 1.5 s (under the 3 s after which it is reopened) while the unstamped
    product 2 left and the stamped product 3 came in: one verdict, OK, on both products' frames
    (nothing said). Frames lost for GAP_MIN_S are frames lost: two verdicts, each marked."""
    results, summary = _run_dropping(165, 215, caplog, silent_s=1.5, stall_s=3.0)
    by_id = {v.product_id: v for v in results.verdicts}
    second, third = by_id[2], by_id[3]
    assert second.outcome.value == "MISSING" and max(second.frames) < 165
    assert third.outcome.value == "OK" and min(third.frames) >= 165
    assert second.interrupted_s is not None and third.interrupted_s is not None
    assert third.interrupted_s >= 1.4  # seen only after the frames came back
    assert summary.gaps >= 1 and summary.blind_s >= 1.4


def test_a_product_still_in_view_when_the_frames_come_back_gets_two_marked_verdicts(caplog):
    """It cannot be told from another product: both parts are judged, and both marked to check."""
    results, summary = _run_dropping(84, 85, caplog)  # back on the next frame: product 1 again
    first, second = results.verdicts[:2]
    assert (first.product_id, second.product_id) == (1, 2)
    assert first.interrupted_s is not None and second.interrupted_s is not None
    assert summary.interrupted == 2 or (results.extra_gaps and summary.interrupted > 2)


def test_the_mark_of_the_frames_stopping_survives_a_frame_dropped_after_it():
    """A burst of frames after a stall: the marked one may be replaced before the loop takes it."""
    from edge.sources import LatestFrame, SourceStats

    slot = LatestFrame(SourceStats())
    image = np.zeros((8, 8, 3), np.uint8)
    slot.put(Frame(image, 1.0, 0, gap_s=4.2))
    slot.put(Frame(image, 1.01, 1))
    assert slot.take(0.1).gap_s == 4.2


class EveryNthFrame:
    """The demo line as a loop too slow for it sees it: only every ``n``-th frame arrives."""

    live = False
    fps = None

    def __init__(self, line: DemoLine, n: int):
        self.name, self.line, self.n, self._t = "slow loop", line, n, 0

    def open(self) -> None:
        pass

    stats = None  # the source's counts: the frames the loop never took are dropped

    def grab(self):
        image = self.line.render(self._t)
        self._t += self.n
        if self.stats is not None:
            self.stats.dropped += self.n - 1
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
        with Source(device := EveryNthFrame(line, n), threaded=False) as src:
            device.stats = src.stats
            caplog.clear()
            status = StationStatus(source_stats=src.stats)  # what the web view and /metrics show
            pipeline = Pipeline(
                src,
                detector,
                OccupancyTrigger(TriggerConfig()),
                Decider(detector.metadata.threshold),
                sinks=[status],
                options=RunOptions(roi=line.roi),
            )
            with caplog.at_level(logging.WARNING):
                summary = pipeline.run(max_frames=1200 // n)
        assert status.snapshot()["few_frames"] == summary.few_frames
        runs[n] = (
            summary,
            [r.getMessage() for r in caplog.records if "to be sure" in r.getMessage()],
        )
    summary, said = runs[1]
    assert summary.products >= 10 and summary.few_frames == 0 and not said
    summary, said = runs[6]
    assert summary.few_frames >= 3 and len(said) == 1  # at once, then not again within the minute
    assert said[0].startswith("product ") and f"fewer than {FEW_FRAMES} seen" in summary.format()
    assert "trigger.exit_frames = 1" in said[0] and "smaller region" not in said[0]  # (it made it worse)


def test_a_product_seen_long_but_judged_on_few_frames_is_said_so(caplog):
    """The loop dropping frames judges a product on its fullest few: the warning says that, not
    that it was seen in many frames and still too few."""
    from edge.decision import TriggerState
    from edge.pipeline import FewFrames
    from edge.types import Outcome, Verdict

    few = FewFrames()
    verdict = Verdict(1, 7, Outcome.OK, 0.0, 0.9, None, (3, 9), in_view=11)
    with caplog.at_level(logging.WARNING):
        few.add(verdict, TriggerState(ended=7, occupancy=0.2), fps=12.0, dropped=40)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and said[0].startswith("product 7 was judged on 2 of the 11 frames that saw it: ")
    assert "the loop runs at 12.0 frames/s (40 frames dropped so far)" in said[0]


def test_a_product_judged_on_one_frame_of_six_is_not_blamed_on_a_loop_that_keeps_up():
    """Only its fullest frames are judged: a product that only just fills the region has one."""
    from edge.decision import TriggerState, seen_too_briefly
    from edge.types import Outcome, Verdict

    def verdict(judged: int, in_view: int, interrupted_s: float | None = None) -> Verdict:
        frames = tuple(range(judged))
        return Verdict(1, 1, Outcome.OK, 0.0, 0.9, None, frames, in_view=in_view, interrupted_s=interrupted_s)

    spans = TriggerState(ended=1, occupancy=0.1)
    assert not seen_too_briefly(verdict(1, 6), spans, dropping=False)
    assert seen_too_briefly(verdict(1, 6), spans, dropping=True)  # then products merge: judged counts
    assert seen_too_briefly(verdict(2, 2), spans, dropping=False)  # seen in two frames only
    # a loop dropping frames left it 5 of the 9-13 a product has at full speed: a few looks decide
    assert seen_too_briefly(verdict(5, 5), spans, dropping=True)
    assert not seen_too_briefly(verdict(6, 6), spans, dropping=True)
    assert not seen_too_briefly(verdict(5, 5), spans, dropping=False)  # the line's pace, not the loop's
    assert not seen_too_briefly(verdict(1, 1), TriggerState(ended=1), dropping=True)  # every frame its own
    assert not seen_too_briefly(verdict(1, 1, 4.0), spans, dropping=True)  # interrupted: said so already


def test_a_station_stopped_with_a_product_in_view_names_it_in_the_journal(caplog):
    """systemctl stop or restart (to deploy a model) with a product in view: it passes on without
    a verdict, a log line or a reject pulse; the journal names it (was: an info line, unseen)."""
    line = DemoLine(0)  # product 1 crosses the region in frames 79-90
    stream = DroppingStream(line, cut=10_000, resume=10_000, silent_s=0.0, end=10_000)
    detector = TFLiteDetector()
    with Source(stream, threaded=True, stall_s=0.6) as src:
        trigger, decider = OccupancyTrigger(TriggerConfig()), Decider(detector.metadata.threshold)
        pipeline = Pipeline(src, detector, trigger, decider, options=RunOptions(roi=line.roi))
        with caplog.at_level(logging.WARNING):
            summary = pipeline.run(max_frames=85)  # ended in the middle of product 1
    assert (summary.products, summary.unfinished) == (0, 1)
    (said,) = [r.getMessage() for r in caplog.records if "was in view when the run ended" in r.getMessage()]
    assert said.startswith("product 1 ") and "(max frames 85)" in said and "check it by hand" in said


def test_on_a_slow_line_each_verdict_is_shown_for_its_hold_from_the_frame_it_was_given_on(tmp_path):
    """The overlay's verdict was held 2 s from the product's evidence (its fullest view): on a
    line 4x slower than the demo's a product takes longer than that to leave, so OK or MISSING
    was never shown; and read as fast as possible it was held 2 s of the machine's time, hundreds
    of frames. Now: from the frame the verdict was given on, in the line's time."""
    import cv2

    from edge.cli.run import build_source
    from edge.config import Config

    line = DemoLine(0)  # products 1 (stamped) and 2 (not) cross in frames 79-90 and 155-165
    video = tmp_path / "slow.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (640, 480))
    for t in range(40, 200):
        image = line.render(t)
        for _ in range(4):  # the belt at a quarter of the demo's speed
            writer.write(image)
    writer.release()
    config = Config.load(
        None, {"source.kind": "video", "source.video": str(video), "source.as_fast_as_possible": True}
    )
    shown = []

    class Shown:
        needs_annotated = False

        def write(self, result) -> None:
            shown.append((result.frame.index, result.verdict, result.shown))

    source, _ = build_source(config)
    detector = TFLiteDetector()
    with source:
        trigger, decider = OccupancyTrigger(TriggerConfig()), Decider(detector.metadata.threshold)
        Pipeline(source, detector, trigger, decider, sinks=[Shown()], options=RunOptions(roi=line.roi)).run()
    given = [(i, v) for i, v, _ in shown if v is not None]
    assert [v.outcome.value for _, v in given] == ["OK", "MISSING"]
    for i, v in given:
        held = [s for j, _, s in shown if i <= j < i + 60]  # 2 s of the line at 30 fps
        assert all(s is v for s in held), (v.product_id, [s and s.product_id for s in held])
        after = [s for j, _, s in shown if i + 62 <= j < i + 70]
        assert after and all(s is not v for s in after)  # and then no longer


def test_the_frame_rate_shown_after_a_stall_counts_the_stall():
    """30 fps, a 1 s stall, then the 30 frames it held back in 30 ms: the rate shown is the frames
    of the last 2 s over their span (about 30), not the burst's (1,000)."""
    rate = FrameRate(window_s=2.0)
    times = [i / 30 for i in range(90)]  # 3 s at 30 fps
    times += [times[-1] + 1.0 + i / 1000 for i in range(30)]
    shown = []
    for t in times:
        rate.add(t)
        shown.append(rate.fps)
    assert shown[89] == pytest.approx(30.0, rel=1e-6)
    assert 20 < shown[-1] < 40  # 60 frames in the last 2 s window, all of them received
    assert max(shown[90:]) < 40
    rate.add(0.0)  # a new source's clock starts again: no negative or stale rate
    assert rate.fps == 0.0
    rate.add(0.5)
    assert rate.fps == pytest.approx(2.0)
