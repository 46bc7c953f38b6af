"""The inspection loop: frame -> model input -> trigger -> prediction -> decision -> overlay -> sinks.

:class:`Pipeline` receives built objects (a source, a detector, a trigger, a decider, sinks) and
returns a :class:`Summary`. It ends on SIGINT/SIGTERM, after ``duration`` seconds, after
``max_frames`` frames or at the end of a finite source. Under systemd it sends ``READY=1`` once
the first frame went through and ``WATCHDOG=1`` only while frames flow, so a stalled camera that
does not come back is restarted by systemd.

Per-stage timing: each frame gets ``time.perf_counter()`` stamps between the stages named in
:data:`STAGES`; the totals feed the summary and every ``hook`` receives the frame's durations
(milliseconds, an array in ``STAGES`` order) for tools like ``edge-bench``. The model runs only
on frames in which the trigger sees a product.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np

from edge.contract import INPUT_HEIGHT, INPUT_WIDTH, prepare_input, roi_pixels
from edge.decision import (
    FEW_FRAMES,
    LEARN_MOTION_FRAMES,
    SURE_FRAMES,
    BriefProducts,
    Decider,
    OccupancyTrigger,
    Trigger,
    TriggerCounts,
    TriggerState,
    no_product_hint,
)
from edge.overlay import OverlayState, draw_overlay, score_text
from edge.region import RegionFinder
from edge.runtime import look_again
from edge.sinks import FrameResult, Sink, SinkError, VerdictLog
from edge.sources import EndOfStream, FrameSource
from edge.types import Frame, Outcome, Prediction, Verdict

_log = logging.getLogger(__name__)

STAGES = (
    "capture_wait",  # waiting for the source's next frame (capture and decode run on their thread)
    "prepare",  # region of interest, resize, BGR -> RGB (contract.prepare_input)
    "trigger",
    "set_input",
    "invoke",
    "postprocess",  # output read + decode
    "decision",
    "overlay",
    "sinks",  # log, snapshots, recording, display
)
#: latency percentiles are over the most recent frames (a bounded window on a months-long run)
LATENCY_WINDOW = 1 << 16
READ_TIMEOUT_S = 0.5
#: a region of interest narrower than this (pixels) is warned about: there is little to see in it
MIN_REGION_PX = 32
#: how long a verdict stays on the overlay after the frame it was given on (the line's time: a
#: recording read as fast as possible shows it as long as the line did)
VERDICT_HOLD_S = 2.0


class Detector(Protocol):
    """A model behind one method: the 128x128x3 RGB model input -> Prediction (with timings)."""

    def predict(self, image_rgb: np.ndarray) -> Prediction: ...


class TruthProduct(Protocol):
    """A product whose right verdict is known (``edge.demo.TruthProduct``)."""

    @property
    def id(self) -> int: ...

    @property
    def stamp(self) -> bool: ...

    @property
    def expected(self) -> str: ...


class GroundTruth(Protocol):
    """What a synthetic or recorded line knows: the products that crossed between two frames
    (and those judged that entered from the first on: see ``edge.demo.DemoLine.products_between``)."""

    def products_between(
        self, first: int, last: int, judged: Collection[object] = ...
    ) -> Sequence[TruthProduct]: ...


class SystemdNotifier:
    """sd_notify over the ``NOTIFY_SOCKET`` datagram socket; does nothing outside systemd."""

    def __init__(self, env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + addr[1:] if addr.startswith("@") else addr
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        wanted = usec.isdigit() and (not pid or pid == str(os.getpid()))
        #: ping at half the watchdog period, as sd_watchdog_enabled(3) advises
        self.watchdog_interval = int(usec) / 2e6 if wanted and int(usec) > 0 else None
        self._sock: socket.socket | None = None
        self._last_ping = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, message: str) -> bool:
        if not self.address:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # never block the loop on a busy manager: a ping that does not fit is dropped
            self._sock.sendto(message.encode("utf-8"), socket.MSG_DONTWAIT, self.address)
            return True
        except OSError as exc:
            _log.debug("sd_notify failed: %s", exc)
            return False

    def watchdog(self, now: float, status: Callable[[], str] | None = None) -> None:
        """Ping the watchdog if half its period has passed (called once per processed frame)."""
        if self.watchdog_interval is None or now - self._last_ping < self.watchdog_interval:
            return
        self._last_ping = now
        self.notify("WATCHDOG=1" + (f"\nSTATUS={status()}" if status else ""))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


#: flagged products logged a second at most (a fixture station judging every frame flags many)
FLAG_LINES_PER_S = 5
#: products seen too briefly (``edge.decision.seen_too_briefly``) are said at once, then at most
#: every this many seconds, with a count
FEW_FRAMES_EVERY_S = 60.0


class FrameRate:
    """Frames per second over the last ``window_s`` of capture times: after a stall the burst of
    frames that catches up counts with the stall it followed (a mean of 1/dt over frames, as the
    overlay had, showed the burst's rate, some hundreds of fps, for a camera that had stopped)."""

    def __init__(self, window_s: float = 2.0):
        self.window_s = window_s
        self._times: deque[float] = deque()

    def add(self, t_capture: float) -> None:
        times = self._times
        if times and t_capture < times[-1]:  # a clock that went back (a new source): start again
            times.clear()
        times.append(t_capture)
        while len(times) > 2 and times[1] <= t_capture - self.window_s:
            times.popleft()

    @property
    def fps(self) -> float:
        span = self._times[-1] - self._times[0] if len(self._times) > 1 else 0.0
        return (len(self._times) - 1) / span if span > 0 else 0.0


class FewFrames:
    """Products of a trigger that spans frames seen or judged in too few (``seen_too_briefly``): a
    warning that the loop cannot keep up with the line (at once, then once a minute at most)."""

    def __init__(self) -> None:
        self.briefs = BriefProducts()
        self._said_at: float | None = None
        self._since = 0

    @property
    def count(self) -> int:
        return self.briefs.count

    def add(self, verdict: Verdict, state: TriggerState, fps: float, dropped: int) -> None:
        brief, dropping = self.briefs.add(verdict, state, dropped)
        if not brief:
            return
        self._since += 1
        now = time.monotonic()
        if self._said_at is not None and now - self._said_at < FEW_FRAMES_EVERY_S:
            return
        seen, judged = verdict.in_view or len(verdict.frames), len(verdict.frames)
        what = (
            (
                f"product {verdict.product_id} was seen in {seen} frame(s)"
                if seen < FEW_FRAMES
                else f"product {verdict.product_id} was judged on {judged} of the {seen} frames that saw it"
            )
            if self._since == 1
            else f"{self._since} products were seen, or judged, in too few frames"
        )
        if dropping:
            _log.warning(
                "%s: the loop runs at %.1f frames/s (%d frames dropped so far), too slow for the line "
                "to be sure (products then also merge); lighten it: --refine off, no --record, "
                "model.threads 2 where the CPU has a core to spare, a lower camera resolution; where "
                "products merge, trigger.exit_frames = 1",
                what,
                fps,
                dropped,
            )
        else:  # the loop keeps up: the products pass the region too fast for the camera's rate
            _log.warning(
                "%s, too few to be sure of its verdict, though the loop keeps up (%.1f frames/s): a wider "
                "region, a faster camera or a slower line gives each product more",
                what,
                fps,
            )
        self._said_at, self._since = now, 0


class FlagLines:
    """A warning line per flagged product, at most ``FLAG_LINES_PER_S`` in a second; the ones
    left out are counted in the next line (the verdict log has every one)."""

    def __init__(self) -> None:
        self._second = -1
        self._in_second = 0
        self._left_out = 0

    def add(self, verdict: Verdict, expect: str | None) -> None:
        now = int(time.monotonic())
        if now != self._second:
            self._second, self._in_second = now, 0
        if self._in_second >= FLAG_LINES_PER_S:
            self._left_out += 1
            return
        self._in_second += 1
        line = flag_line(verdict, expect)
        if self._left_out:
            line += f"; {self._left_out} more flagged before it not shown (--events logs every one)"
            self._left_out = 0
        _log.warning("%s", line)


def flag_line(verdict: Verdict, expect: str | None = None) -> str:
    """The one line a flagged product gets on the console and in the journal."""
    seen = (
        f"{verdict.hits} of {len(verdict.frames)} frames saw a stamp, best score {score_text(verdict.score)}"
    )
    if verdict.evidence is not None and verdict.evidence.name is not None:  # a photo of a folder
        seen = f"photo {verdict.evidence.name}: {seen}"
    if verdict.outcome is Outcome.WRONG:
        what = f"carries {verdict.label!r}, expected {expect!r}" if verdict.label else "its variant unknown"
        return f"product {verdict.product_id} WRONG: {what} ({seen})"
    return f"product {verdict.product_id} MISSING ({seen})"


def interrupted_line(verdict: Verdict) -> str:
    """The line a product in view when the frames stopped gets, whatever its verdict."""
    return (
        f"product {verdict.product_id} {verdict.outcome.value} on {len(verdict.frames)} frames only: no "
        f"frames for {verdict.interrupted_s:.1f} s while it was in view (check it)"
    )


@dataclass
class Summary:
    """What a run did. ``to_dict`` is the ``--summary`` JSON; ``format`` the lines printed."""

    source: str
    model_id: str
    runtime: str
    #: the second looks the model took (edge.runtime.REFINE_MODES, resolved: off, zoom, zoom-flip)
    refine: str = "off"
    #: the presence threshold the verdicts were decided with (the model's, or model.threshold)
    threshold: float = 0.0
    frames: int = 0
    dropped: int = 0
    converted: int = 0
    skipped: int = 0
    #: a video's frames that could not be decoded (a corrupt stretch: read on past it)
    undecodable: int = 0
    reopens: int = 0
    #: frames a stream handed over only when its read timed out (seconds old: dropped)
    stale: int = 0
    #: times a live source's frames stopped for its stall_s or more, and the seconds without
    #: frames in all (products that passed meanwhile were not seen)
    gaps: int = 0
    blind_s: float = 0.0
    #: products in view when the frames stopped, judged on the frames before (``interrupted_s``)
    interrupted: int = 0
    #: products seen in fewer than FEW_FRAMES frames, or judged on fewer than SURE_FRAMES while the
    #: loop dropped frames (too few to be sure of their verdicts)
    few_frames: int = 0
    #: what the trigger counted (its keys are the summary JSON's own, at its top level)
    trigger: TriggerCounts = field(default_factory=TriggerCounts)
    #: a region of one product's size in the middle of where things moved through the frame
    #: (``edge.region``; None: too little moved, or another trigger than occupancy)
    suggested_roi: tuple[float, float, float, float] | None = None
    products: int = 0
    ok: int = 0
    missing: int = 0
    #: verdicts WRONG: the stamp of another variant than ``expect``
    wrong: int = 0
    #: the variant every product must carry (``--expect``); None: any
    expect: str | None = None
    unfinished: int = 0
    #: verdicts given but not in the verdict log: its write failed (a full disk), and the run ended
    unlogged: int = 0
    duration_s: float = 0.0
    fps: float = 0.0
    latency_ms_p50: float = 0.0
    latency_ms_p99: float = 0.0
    stage_ms: dict[str, float] = field(default_factory=dict)
    end: str = ""
    truth: dict[str, object] | None = None

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data.update(data.pop("trigger"))
        truth = data.pop("truth")
        if truth is not None:
            data.update(truth)
        return data

    def format(self) -> str:
        odd = [
            f"{n} {what}"
            for n, what in (
                (self.converted, "converted"),
                (self.skipped, "skipped"),
                (self.undecodable, "undecodable"),
            )
            if n
        ]
        lines = [
            f"source      {self.source}, until {self.end}",
            f"model       {self.model_id} on {self.runtime}, threshold {self.threshold:g}, "
            f"second looks {self.refine}",
            f"frames      {self.frames} in {self.duration_s:.1f} s ({self.fps:.1f} fps), "
            f"{self.dropped} dropped"
            + (f", odd frames {' and '.join(odd)}" if odd else "")
            + (f", camera reopened {self.reopens}x" if self.reopens else "")
            + (f", {self.stale} stale (came when a read timed out)" if self.stale else "")
            + (
                f", no frames {self.gaps}x for {self.blind_s:.1f} s in all (products then unseen)"
                if self.gaps
                else ""
            ),
            f"latency     p50 {self.latency_ms_p50:.1f} ms, p99 {self.latency_ms_p99:.1f} ms "
            "(capture to result)",
            f"verdicts    {self.products} products: {self.ok} OK, {self.missing} MISSING"
            + (f", {self.wrong} WRONG (expected {self.expect})" if self.expect is not None else "")
            + (f" ({self.unfinished} in view at the end, not judged)" if self.unfinished else "")
            + (f"; {self.unlogged} not in the verdict log (it could not be written)" if self.unlogged else "")
            + (
                f"; {self.interrupted} judged on part of their frames (the frames stopped)"
                if self.interrupted
                else ""
            )
            + (
                f"; {self.few_frames} seen or judged in too few frames to be sure (fewer than "
                f"{FEW_FRAMES} seen, or {SURE_FRAMES} judged while the loop dropped frames)"
                if self.few_frames
                else ""
            ),
        ]
        t = self.trigger
        said = [
            what
            for n, what in (
                (t.relearned, f"learned the empty belt again {t.relearned}x"),
                (t.dropped_products, f"dropped {t.dropped_products} (a stopped product leaving)"),
                (t.long_products, f"{t.long_products} in view far longer than usual (merged?)"),
                (
                    t.moved_while_learning >= LEARN_MOTION_FRAMES,
                    f"things moved through the region while the empty belt was learned "
                    f"({t.moved_while_learning} frames): a product then was not judged",
                ),
                (t.flicker, f"the light flickered ({t.flicker}x; fix the camera's exposure)"),
                (t.light_steps, f"the light changed at once {t.light_steps}x (followed)"),
            )
            if n
        ]
        if said:
            lines.append(f"trigger     {'; '.join(said)}")
        if self.truth is not None:
            t = self.truth
            stamped = t["truth_products"] - t["truth_missing"]
            lines.append(
                f"truth       {t['truth_products']} products crossed: "
                + (
                    f"{stamped - t['truth_wrong']} with the expected stamp, {t['truth_wrong']} with "
                    f"another variant, {t['truth_missing']} without"
                    if t["truth_wrong"]
                    else f"{stamped} with a stamp, {t['truth_missing']} without"
                )
            )
            errors = [
                f"{t[k]} {label}"
                for k, label in (
                    ("incorrect", "wrong verdicts"),
                    ("unjudged", "products without a verdict"),
                    ("split", "products judged more than once"),
                    ("extra", "verdicts for no product"),
                )
                if t[k]
            ]
            lines.append(
                f"correct     {t['correct']}/{t['truth_products']}"
                + (f" ({', '.join(errors)})" if errors else "")
            )
        return "\n".join(lines)


def compare_with_truth(
    judged: Iterable[tuple[object | None, Outcome]], truth: Sequence[TruthProduct]
) -> dict[str, object]:
    """Verdicts (each: the truth product id it was judged on, its outcome) against the products
    that crossed: exactly one verdict per product, and the right one, is correct; ``incorrect``
    counts the products with one verdict that is not the right one. ``truth_wrong``: products
    whose right verdict is WRONG (another stamp variant than the expected one)."""
    by_id: dict[object, list[Outcome]] = {}
    extra = 0
    ids = {p.number for p in truth}
    for pid, outcome in judged:
        if pid in ids:
            by_id.setdefault(pid, []).append(outcome)
        else:
            extra += 1
    correct = incorrect = split = unjudged = 0
    for p in truth:
        got = by_id.get(p.number, [])
        if not got:
            unjudged += 1
        elif len(got) > 1:
            split += 1
        elif got[0].value == p.expected:
            correct += 1
        else:
            incorrect += 1
    return {
        "truth_products": len(truth),
        "truth_missing": sum(not p.stamp for p in truth),
        "truth_wrong": sum(p.expected == Outcome.WRONG.value for p in truth),
        "correct": correct,
        "incorrect": incorrect,
        "unjudged": unjudged,
        "split": split,
        "extra": extra,
    }


@contextlib.contextmanager
def stop_signals(on_stop: Callable[[str], object]):
    """While inside, SIGINT, SIGTERM and SIGHUP (a closed terminal or SSH session) call ``on_stop``
    with the signal's name instead of ending the process, so the summary is written and a recording
    finished (main thread only; elsewhere nothing changes; a SIGHUP already ignored, as under
    ``nohup``, stays ignored); the handlers are given back after."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        hup = getattr(signal, "SIGHUP", None)
        for sig in (signal.SIGINT, signal.SIGTERM, hup):
            if sig is None or (sig == hup and signal.getsignal(sig) == signal.SIG_IGN):
                continue
            previous[sig] = signal.signal(sig, lambda signum, _frame: on_stop(signal.Signals(signum).name))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


#: a run whose region has found no product for this long (the line's time) while things moved
#: through the frame says where they passed, once (``Pipeline._say_region``)
NO_PRODUCT_SAY_S = 60.0


@dataclass
class _Tally:
    """What one run of the loop counts, for its summary."""

    t_start: float
    end: str = "end of stream"
    frames: int = 0
    #: the frames stopped: times, seconds, products in view then
    gaps: int = 0
    blind_s: float = 0.0
    interrupted: int = 0
    #: verdicts the verdict log did not take (its disk full)
    unlogged: int = 0
    verdicts: Counter[Outcome] = field(default_factory=Counter)
    #: (the demo's product, the verdict) of each verdict, against the ground truth
    judged: list[tuple[object | None, Outcome]] = field(default_factory=list)
    first_index: int | None = None
    last_index: int | None = None
    latencies: np.ndarray = field(default_factory=lambda: np.zeros(LATENCY_WINDOW, np.float32))
    stage_total: np.ndarray = field(default_factory=lambda: np.zeros(len(STAGES)))

    def frame_done(self, frame: Frame, stage_ms: np.ndarray) -> None:
        self.latencies[self.frames % LATENCY_WINDOW] = (time.monotonic() - frame.t_capture) * 1e3
        self.frames += 1
        self.stage_total += stage_ms

    def last_latency_ms(self) -> float:
        return float(self.latencies[(self.frames - 1) % LATENCY_WINDOW]) if self.frames else 0.0

    def status_line(self, fps: float) -> str:
        """The run's counts as systemd's status line shows them."""
        wrong = self.verdicts[Outcome.WRONG]
        return (
            f"{self.verdicts.total()} inspected, {self.verdicts[Outcome.MISSING]} missing, "
            + (f"{wrong} wrong, " if wrong else "")
            + f"{fps:.1f} fps"
        )


@dataclass(frozen=True)
class RunOptions:
    """How a :class:`Pipeline` looks and what it says, besides its parts."""

    #: the region inspected (normalised x, y, w, h; None: the whole frame)
    roi: tuple[float, ...] | None = None
    #: second looks at each judged frame (``edge.runtime.look_again``)
    refine: str = "off"
    #: the model's heatmap drawn on the overlay
    heatmap: bool = False
    #: the model and interpreter, for the verdict log and the summary
    model_id: str = ""
    runtime: str = ""
    #: a station's journal lines: one per flagged product, and products seen in too few frames
    #: (off for a measurement)
    flag_lines: bool = True
    #: the source gives its frames to this run only: when the loop ends its capture stops, so a
    #: reopen still under way is not counted after the summary (edge-bench runs blocks of frames
    #: from one source: False)
    last_run: bool = True

    def __post_init__(self) -> None:
        if self.roi is not None:
            object.__setattr__(self, "roi", tuple(float(v) for v in self.roi))


class Pipeline:
    """The loop over built parts; :meth:`run` returns the :class:`Summary`."""

    def __init__(
        self,
        source: FrameSource,
        detector: Detector,
        trigger: Trigger,
        decider: Decider,
        sinks: Sequence[Sink] = (),
        options: RunOptions | None = None,
        truth: GroundTruth | None = None,
        notifier: SystemdNotifier | None = None,
        hooks: Sequence[Callable[[FrameResult, np.ndarray], None]] = (),
    ):
        options = options or RunOptions()
        self.heatmap = options.heatmap
        self.last_run = options.last_run
        #: a log line per flagged product (at most ``FLAG_LINES_PER_S`` a second)
        self.flag_lines = FlagLines() if options.flag_lines else None
        #: products seen in too few frames (a loop too slow for the line; off with flag_lines)
        self.few_frames = FewFrames() if options.flag_lines else None
        self._small_region_said = False
        #: where things moved through the frame, said once (a pipeline may run block after block)
        self._region_said = False
        #: what the last run's end had to say about products not found (:func:`no_product_hint`);
        #: said by the run itself only when it is the source's ``last_run`` (edge-bench says it
        #: once, after all its blocks)
        self.end_hint: str | None = None
        #: products judged by earlier runs with the same trigger (edge-bench's blocks), for the hint
        self.judged_before = 0
        self.refine = options.refine
        self.source = source
        self.detector = detector
        self.trigger = trigger
        self.decider = decider
        self.sinks = list(sinks)
        self.roi = options.roi
        self.truth = truth
        self.notifier = notifier or SystemdNotifier({})
        self.hooks = list(hooks)
        self.model_id = options.model_id
        self.runtime = options.runtime
        self._stop = threading.Event()
        self._stop_reason = ""
        #: the sink error that ended the last run (its summary is still returned)
        self.failure: SinkError | None = None
        # sinks that want the overlay only now and then (the web view while someone watches) say
        # so per frame; the others once
        self._draw_sometimes = [s for s in self.sinks if getattr(s, "annotated_on_demand", False)]
        self._draw = any(
            getattr(s, "needs_annotated", False) for s in self.sinks if s not in self._draw_sometimes
        )
        self._roi_px: dict[tuple[int, ...], tuple[int, int, int, int]] = {}
        #: where products pass in the whole frame, for a hint when the region finds none
        self.region = RegionFinder() if isinstance(trigger, OccupancyTrigger) else None
        self._no_product_since: float | None = None

    def _say_region(self, frame: Frame, frames: int) -> bool:
        """A run whose region found no product in its first ``NO_PRODUCT_SAY_S`` (the line's
        time) while things moved through the frame says where they passed, once: a service's run
        does not end to give the hint at its end. True once said."""
        if self._no_product_since is None:
            self._no_product_since = frame.t_on_line
            return False
        if frame.t_on_line - self._no_product_since < NO_PRODUCT_SAY_S or frames % 30:
            return False
        region = self.region
        assert region is not None  # (called only with one)
        suggested = region.suggest()
        if suggested is None:
            return False
        hint = no_product_hint(self.trigger, 0, suggested, self.roi, region.note)
        if hint is None or "--roi" not in hint:
            return False
        _log.warning("%.0f s without a product: %s", NO_PRODUCT_SAY_S, hint)
        return True

    def stop(self, reason: str = "stopped") -> None:
        self._stop_reason = self._stop_reason or reason
        self._stop.set()

    def run(self, duration: float | None = None, max_frames: int | None = None) -> Summary:
        """Process frames until stopped, ``duration`` seconds, ``max_frames``, end of stream or a
        sink that cannot write (kept in :attr:`failure`)."""
        self.failure = None
        try:
            with stop_signals(self.stop):
                return self._loop(duration, max_frames)
        finally:
            self.notifier.notify("STOPPING=1")

    def _loop(self, duration: float | None, max_frames: int | None) -> Summary:
        tally = _Tally(t_start=time.monotonic())
        stage_ms = np.zeros(len(STAGES))
        stop_counted = False  # the frames have stopped for stall_s, and that was counted in gaps
        last_frame: Frame | None = None
        last_roi = (0, 0, 0, 0)
        last_verdict: Verdict | None = None
        verdict_at = 0.0  # the line's time of the frame last_verdict was given on
        rate = FrameRate()
        ready = False
        self._no_product_since = None

        while True:
            if self._stop.is_set():
                tally.end = self._stop_reason
                break
            if duration is not None and time.monotonic() - tally.t_start >= duration:
                tally.end = f"duration {duration:g} s"
                break
            if max_frames is not None and tally.frames >= max_frames:
                tally.end = f"max frames {max_frames}"
                break
            t0 = time.perf_counter()
            try:
                frame = self.source.read(READ_TIMEOUT_S)
            except EndOfStream:
                break
            if frame is None:
                if last_frame is None:
                    continue
                now = time.monotonic()
                stopped_s = now - last_frame.t_capture
                stopped = self.source.live and stopped_s >= self.source.stall_s
                if stopped and not stop_counted:  # counted now: the frames may never come back
                    tally.gaps, stop_counted = tally.gaps + 1, True
                state = self.trigger.idle(now, stopped)
                verdict = self.decider.end(state, stopped_s) if state is not None else None
                if verdict is not None:
                    self._count(tally, verdict, state, rate.fps)
                    last_verdict, verdict_at = verdict, last_frame.t_on_line + stopped_s
                    result = FrameResult(last_frame, last_roi, None, state, verdict, stopped=True)
                    if not self._write_all(tally, result):
                        break
                continue
            t1 = time.perf_counter()
            if frame.gap_s:
                tally.gaps, tally.blind_s = tally.gaps + (not stop_counted), tally.blind_s + frame.gap_s
                if self._no_product_since is not None:  # time without frames is not time without products
                    self._no_product_since += frame.gap_s
            stop_counted = False
            image = frame.image
            roi_px = self._region_px(image.shape)
            view = prepare_input(image, self.roi)
            t2 = time.perf_counter()
            state = self.trigger.update(frame, view)
            if self.region is not None:
                self.region.update(image)
                quiet = not tally.verdicts and state.product is None and not state.learning
                if quiet and not self._region_said:
                    self._region_said = self._say_region(frame, tally.frames)
            t3 = time.perf_counter()
            prediction = self.detector.predict(view) if state.product is not None else None
            if prediction is not None and self.refine != "off":
                x, y, w, h = roi_px
                prediction = look_again(self.detector, image[y : y + h, x : x + w], prediction, self.refine)
            t4 = time.perf_counter()
            verdict = self.decider.update(frame, state, prediction)
            t5 = time.perf_counter()
            if verdict is not None:
                self._count(tally, verdict, state, rate.fps)
                last_verdict, verdict_at = verdict, frame.t_on_line
            rate.add(frame.t_capture)
            # the verdict shown, held from its frame (counted from its evidence frame, a product
            # slow to leave after its fullest view was never shown judged)
            if last_verdict is not None and frame.t_on_line - verdict_at > VERDICT_HOLD_S:
                last_verdict = None
            annotated = None
            if self._draw or any(s.needs_annotated for s in self._draw_sometimes):
                overlay = OverlayState(
                    prediction=prediction,
                    threshold=self.decider.threshold,
                    # a product judged on this very frame (every-frame) shows its verdict, not "inspecting"
                    product=state.product if state.ended != state.product else None,
                    hits=self.decider.hits_so_far(),
                    verdict=last_verdict,
                    inspected=tally.verdicts.total(),
                    missing=tally.verdicts[Outcome.MISSING],
                    wrong=tally.verdicts[Outcome.WRONG],
                    expect=getattr(self.decider, "expect", None),
                    fps=rate.fps,
                    latency_ms=tally.last_latency_ms(),
                    learning=state.learning,
                    held=state.held is not None,
                    heatmap=self.heatmap,
                )
                annotated = draw_overlay(image.copy(), roi_px, overlay)
            t6 = time.perf_counter()
            result = FrameResult(frame, roi_px, prediction, state, verdict, annotated, shown=last_verdict)
            last_frame, last_roi = frame, roi_px
            tally.first_index = frame.index if tally.first_index is None else tally.first_index
            tally.last_index = frame.index  # judged, written or not: its product counts against the truth
            if not self._write_all(tally, result):
                break
            t7 = time.perf_counter()

            timings = prediction.timings if prediction is not None else {}
            stage_ms[:] = (
                (t1 - t0) * 1e3,
                (t2 - t1) * 1e3,
                (t3 - t2) * 1e3,
                timings.get("set_input_ms", 0.0),
                timings.get("invoke_ms", (t4 - t3) * 1e3 if prediction is not None else 0.0),
                timings.get("postprocess_ms", 0.0),
                (t5 - t4) * 1e3,
                (t6 - t5) * 1e3,
                (t7 - t6) * 1e3,
            )
            tally.frame_done(frame, stage_ms)
            for hook in self.hooks:
                hook(result, stage_ms)
            if not ready:
                self.notifier.notify("READY=1")
                ready = True
            self.notifier.watchdog(time.monotonic(), lambda fps=rate.fps: tally.status_line(fps))

        if self.last_run:
            self.source.stop()
        if stop_counted and last_frame is not None:  # the frames had stopped, and did not come back
            tally.blind_s += time.monotonic() - last_frame.t_capture
        return self._summary(tally)

    def _region_px(self, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        """The region of interest in pixels of a frame of ``shape`` (a small one said once)."""
        roi_px = self._roi_px.get(shape)
        if roi_px is None:
            roi_px = self._roi_px[shape] = roi_pixels(shape, self.roi)
            if min(roi_px[2:]) < MIN_REGION_PX and not self._small_region_said:
                self._small_region_said = True
                _log.warning(
                    "the region of interest is only %dx%d pixels of the %dx%d frame; the model sees "
                    "it enlarged to its %dx%d input (check --roi, inspection.roi)",
                    roi_px[2],
                    roi_px[3],
                    shape[1],
                    shape[0],
                    INPUT_WIDTH,
                    INPUT_HEIGHT,
                )
        return roi_px

    def _count(self, tally: _Tally, verdict: Verdict, state: TriggerState, fps: float) -> None:
        """Count a verdict, and say what the journal should about it."""
        tally.verdicts[verdict.outcome] += 1
        if verdict.interrupted_s is not None:
            tally.interrupted += 1
            _log.warning("%s", interrupted_line(verdict))
        elif self.few_frames is not None:
            self.few_frames.add(verdict, state, fps, self.source.stats.dropped)
        if verdict.outcome is not Outcome.OK and self.flag_lines is not None:
            self.flag_lines.add(verdict, self.decider.expect)  # flagged: a line in the journal too
        if self.truth is not None:
            tally.judged.append((verdict.truth.get("product") if verdict.truth else None, verdict.outcome))

    def _write_all(self, tally: _Tally, result: FrameResult) -> bool:
        """Hand a result to every sink; False where one failed (e.g. a full disk: the run stops,
        but still with its summary, which counts a verdict the log did not take)."""
        done = 0
        try:
            for sink in self.sinks:
                sink.write(result)
                done += 1
        except SinkError as exc:
            self.failure = exc
            tally.end = f"error: {exc}"
            v = result.verdict
            if v is not None and any(isinstance(s, VerdictLog) for s in self.sinks[done:]):
                tally.unlogged += 1  # the journal keeps it: the operator can add it by hand
                _log.warning(
                    "product %d %s is not in the verdict log: %s", v.product_id, v.outcome.value, exc
                )
            return False
        return True

    def _summary(self, tally: _Tally) -> Summary:
        """The run's summary, and what its end has to say (a product left unjudged, a region that
        found none)."""
        elapsed = time.monotonic() - tally.t_start
        counts, frames, end = tally.verdicts, tally.frames, tally.end
        unfinished = 1 if self.decider.in_progress is not None else 0
        suggested = self.region.suggest() if self.region is not None else None
        note = self.region.note if self.region is not None else None
        self.end_hint = no_product_hint(
            self.trigger, self.judged_before + counts.total() + unfinished, suggested, self.roi, note
        )
        if self.end_hint and self.last_run:
            _log.warning(self.end_hint)
        if unfinished and self.source.live and self.last_run:  # a station stopped: it passes on unseen
            _log.warning(
                "product %d was in view when the run ended (%s): not judged, nor logged or rejected; "
                "check it by hand",
                self.decider.in_progress,
                end,
            )
        elif unfinished:
            _log.info("product %d was in view at the end: not judged", self.decider.in_progress)
        window = tally.latencies[: min(frames, LATENCY_WINDOW)]
        stats = self.source.stats
        summary = Summary(
            source=self.source.name,
            model_id=self.model_id,
            runtime=self.runtime,
            refine=self.refine,
            threshold=self.decider.threshold,
            frames=frames,
            dropped=stats.dropped,
            converted=stats.converted,
            skipped=stats.skipped,
            undecodable=getattr(self.source.device, "undecodable", 0),
            reopens=stats.reopens,
            stale=stats.stale,
            gaps=tally.gaps,
            blind_s=round(tally.blind_s, 1),
            interrupted=tally.interrupted,
            few_frames=self.few_frames.count if self.few_frames is not None else 0,
            trigger=self.trigger.counts(),
            suggested_roi=suggested,
            products=counts.total(),
            ok=counts[Outcome.OK],
            missing=counts[Outcome.MISSING],
            wrong=counts[Outcome.WRONG],
            expect=getattr(self.decider, "expect", None),
            unfinished=unfinished,
            unlogged=tally.unlogged,
            duration_s=round(elapsed, 3),
            fps=round(frames / elapsed, 2) if elapsed > 0 else 0.0,
            latency_ms_p50=round(float(np.percentile(window, 50)), 2) if frames else 0.0,
            latency_ms_p99=round(float(np.percentile(window, 99)), 2) if frames else 0.0,
            stage_ms={
                s: round(float(v) / max(frames, 1), 3) for s, v in zip(STAGES, tally.stage_total, strict=True)
            },
            end=end,
        )
        if self.truth is not None and tally.first_index is not None and tally.last_index is not None:
            judged_ids = {pid for pid, _ in tally.judged}
            crossed = self.truth.products_between(tally.first_index, tally.last_index, judged_ids)
            summary.truth = compare_with_truth(tally.judged, crossed)
        return summary
