"""Latency on the device, stage by stage: the maths, the report and the loops behind ``edge-bench``.

The pure part (percentiles, ratios, the report's schema and table) takes numbers and returns
numbers or text. The measuring part drives the real runtime: :class:`PipelineRun` runs
:class:`edge.pipeline.Pipeline` (the loop ``edge-run`` runs) with a hook that records every
frame's stage durations; :class:`TextbookRun` is the deliberately plain loop of the public
TensorFlow Lite Raspberry Pi example (blocking read, resize, invoke, draw, one thread) on the same
source and detector, for comparison; :func:`run_invoke_block` times the interpreter alone.

Percentiles are numpy's default (linear interpolation between the closest ranks) over the frames
measured; the first frames of every block (warm-up: thread start, first invokes, caches) are not
measured.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge import contract
from edge.pipeline import STAGES as PIPELINE_STAGES
from edge.runtime import REFINE_LOOKS
from edge.sinks import FrameResult

_log = logging.getLogger(__name__)

SCHEMA = "stampline.bench/1"
STAT_KEYS = ("min", "p50", "p90", "p99", "max")
_QUANTILES = (0.0, 50.0, 90.0, 99.0, 100.0)
#: ours: ``decode`` runs on the capture thread (or in the loop without one); the rest in the loop
STAGES = ("decode", *PIPELINE_STAGES)
#: the textbook loop, named like ours where the work is the same
TEXTBOOK_STAGES = ("decode", "prepare", "set_input", "invoke", "postprocess", "overlay")
#: the stages that run only on frames the model sees (all of them with the every-frame trigger)
MODEL_STAGES = ("set_input", "invoke", "postprocess")
OVERLAY = PIPELINE_STAGES.index("overlay")
#: OpenCV's V4L2 backend queues this many frames: a blocking read behind the camera returns the
#: oldest of them (opencv/opencv#13145), and the camera drops new frames while they are all full
DRIVER_BUFFERS = 4

# -- maths ----------------------------------------------------------------------------------------


def stage_stats(values_ms: Sequence[float] | np.ndarray) -> dict[str, float | None]:
    """min, p50, p90, p99, max of durations in ms (None for each when there are none)."""
    a = np.asarray(values_ms, dtype=np.float64).reshape(-1)
    if a.size == 0:
        return dict.fromkeys(STAT_KEYS)
    return {k: round(float(v), 4) for k, v in zip(STAT_KEYS, np.percentile(a, _QUANTILES), strict=True)}


def per_second(count: int, seconds: float) -> float | None:
    """Events per second (None when no time passed)."""
    return count / seconds if seconds > 0 else None


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """ours / theirs, None when either is missing or theirs is zero."""
    if ours is None or theirs is None or theirs == 0 or not math.isfinite(theirs):
        return None
    return ours / theirs


def overhead_ratio(wall_ms_per_frame: float | None, decode_p50: float | None, invoke_p50: float | None):
    """Wall time per processed frame / (decode p50 + invoke p50): what the rest of the loop costs.

    1.0: the loop costs nothing beyond decoding and the model; below 1: decoding overlaps the
    model on another core.
    """
    if wall_ms_per_frame is None or decode_p50 is None or invoke_p50 is None:
        return None
    return ratio(wall_ms_per_frame, decode_p50 + invoke_p50)


# -- the report -----------------------------------------------------------------------------------

#: key -> (types allowed, required); the documented schema of one entry of ``runs``
RUN_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "model": ((str,), True),
    "model_id": ((str,), True),
    "threads": ((int,), True),
    "amx_denied": ((bool,), True),
    "refine": ((str,), False),
    "frames": ((int,), True),
    "fps": ((float, int), True),
    "invoke_ms_p50": ((float, int, type(None)), True),  # null: the model never ran (a warning says so)
    "invoke_ms_p99": ((float, int, type(None)), True),
    "overhead_ratio": ((float, int, type(None)), True),
    "frame_age_ms_p50": ((float, int, type(None)), True),
    "frame_age_ms_p99": ((float, int, type(None)), True),
    "stages": ((dict,), True),
    "wall_ms_per_frame": ((float, int), False),
    "decode_ms_p50": ((float, int, type(None)), False),
    "frame_age_ms": ((dict,), False),
    "cpu_cores": ((float, int, type(None)), False),
    "cpu_ms_per_frame": ((float, int, type(None)), False),
    "rss_mb": ((float, int, type(None)), False),
    "dropped": ((int,), False),
    "baseline_fps": ((float, int), False),
    "baseline_frame_age_ms_p50": ((float, int), False),
    "baseline_frame_age_ms_p99": ((float, int), False),
    "baseline_stages": ((dict,), False),
    "baseline_cpu_cores": ((float, int, type(None)), False),
    "fps_ratio": ((float, int, type(None)), False),
    "frame_age_p99_ratio": ((float, int, type(None)), False),
    "cold_start_s": ((dict,), False),
}
BASELINE_KEYS = ("baseline_fps", "baseline_frame_age_ms_p99")


def validate_report(report: Mapping[str, object]) -> list[str]:
    """What is wrong with a report against the documented schema (empty: nothing)."""
    errors: list[str] = []
    if report.get("schema") != SCHEMA:
        errors.append(f"schema: expected {SCHEMA!r}, got {report.get('schema')!r}")
    runs = report.get("runs")
    if not isinstance(runs, list) or not runs:
        return [*errors, f"runs: expected a non-empty list, got {type(runs).__name__}"]
    # (an interrupted run may have stopped before a model's textbook block ended: no baseline keys)
    baseline = bool(report.get("baseline")) and not report.get("interrupted")
    for i, run in enumerate(runs):
        if not isinstance(run, Mapping):
            errors.append(f"runs[{i}]: expected an object, got {type(run).__name__}")
            continue
        for key, (types, required) in RUN_FIELDS.items():
            if key not in run:
                if required or (baseline and key in BASELINE_KEYS):
                    errors.append(f"runs[{i}].{key}: missing")
                continue
            value = run[key]
            if isinstance(value, bool) and bool not in types:
                errors.append(f"runs[{i}].{key}: expected a number, got {value!r}")
            elif not isinstance(value, types):
                errors.append(
                    f"runs[{i}].{key}: expected {'/'.join(t.__name__ for t in types)}, got {value!r}"
                )
        for name, st in (run.get("stages") or {}).items():
            if not isinstance(st, Mapping) or set(st) != set(STAT_KEYS):
                errors.append(f"runs[{i}].stages.{name}: expected keys {list(STAT_KEYS)}, got {st!r}")
                continue
            known = [st[k] for k in STAT_KEYS if st[k] is not None]
            if any(not isinstance(v, float | int) for v in known):
                errors.append(f"runs[{i}].stages.{name}: expected numbers or null, got {st!r}")
            elif known != sorted(known):
                errors.append(
                    f"runs[{i}].stages.{name}: expected min <= p50 <= p90 <= p99 <= max, got {st!r}"
                )
    return errors


def _f(value: float | None, fmt: str = ".2f", none: str = "-") -> str:
    return none if value is None else format(value, fmt)


def format_run(run: Mapping[str, object]) -> str:
    """One run's stage table and headline figures."""
    threads = run["threads"]
    head = f"{Path(str(run['model'])).name} ({run['model_id']}), {threads} thread{'s' * (threads != 1)}"
    if run.get("refine", "off") != "off":
        head += f", refine {run['refine']} (up to {REFINE_LOOKS.get(run['refine'], 2)} looks a frame)"
    if run.get("frame_age_ms_p99") is None and run.get("wall_ms_per_frame") is None:  # invoke-only
        lines = [f"{head}: {_f(run['fps'], '.1f')} invokes/s over {run['frames']} invokes"]
    else:
        lines = [
            f"{head}: {_f(run['fps'], '.1f')} fps over {run['frames']} frames, "
            f"overhead {_f(run.get('overhead_ratio'))}, frame age p50 {_f(run.get('frame_age_ms_p50'))} "
            f"p99 {_f(run.get('frame_age_ms_p99'))} ms, CPU {_f(run.get('cpu_cores'))} cores "
            f"({_f(run.get('cpu_ms_per_frame'))} ms/frame), RSS {_f(run.get('rss_mb'), '.0f')} MB"
            + (f", {run['dropped']} dropped" if run.get("dropped") else "")
        ]
    lines.append(stage_table(run["stages"], run.get("baseline_stages")))
    if "baseline_fps" in run:
        lines.append(
            f"  textbook loop: {_f(run['baseline_fps'], '.1f')} fps, frame age p50 "
            f"{_f(run.get('baseline_frame_age_ms_p50'))} p99 {_f(run['baseline_frame_age_ms_p99'])} ms, "
            f"CPU {_f(run.get('baseline_cpu_cores'))} cores -> ours/textbook: fps "
            f"{_f(run.get('fps_ratio'))}x, frame age p99 {_f(run.get('frame_age_p99_ratio'))}x"
        )
    cold = run.get("cold_start_s")
    if cold:
        lines.append(
            f"  cold start (process start to first verdict): min {_f(cold['min'], '.3f')} "
            f"p50 {_f(cold['p50'], '.3f')} max {_f(cold['max'], '.3f')} s over {cold['n']} starts"
        )
    return "\n".join(lines)


def stage_table(
    stages: Mapping[str, Mapping[str, float | None]],
    textbook: Mapping[str, Mapping[str, float | None]] | None = None,
) -> str:
    """Stages as rows of min/p50/p90/p99/max ms (and the textbook loop's p50, p99 beside them)."""
    cols = [*STAT_KEYS] + (["tb p50", "tb p99"] if textbook else [])
    width = max(len(s) for s in [*stages, "stage ms"])
    lines = [f"  {'stage ms':<{width}}" + "".join(f"{c:>9}" for c in cols)]
    for name, st in stages.items():
        row = [_f(st[k], ".3f") for k in STAT_KEYS]
        if textbook:
            tb = textbook.get(name)
            row += [_f(tb["p50"], ".3f"), _f(tb["p99"], ".3f")] if tb else ["", ""]
        lines.append(f"  {name:<{width}}" + "".join(f"{c:>9}" for c in row))
    return "\n".join(lines)


def summary_table(runs: Sequence[Mapping[str, object]]) -> str:
    """The runs side by side, one line each."""
    baseline = any("baseline_fps" in r for r in runs)
    cols = ["model", "threads", "fps", "invoke p50", "invoke p99", "overhead", "age p99"]
    cols += ["tb fps", "tb age p99", "x fps", "x age"] if baseline else []
    rows = []
    for r in runs:
        row = [
            Path(str(r["model"])).name,
            str(r["threads"]),
            _f(r["fps"], ".1f"),
            _f(r["invoke_ms_p50"], ".3f"),
            _f(r["invoke_ms_p99"], ".3f"),
            _f(r.get("overhead_ratio")),
            _f(r.get("frame_age_ms_p99")),
        ]
        if baseline:
            row += [
                _f(r.get("baseline_fps"), ".1f"),
                _f(r.get("baseline_frame_age_ms_p99")),
                _f(r.get("fps_ratio")),
                _f(r.get("frame_age_p99_ratio")),
            ]
        rows.append(row)
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    fmt = [f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths)]
    out = ["  ".join(f.format(c) for f, c in zip(fmt, cols, strict=True))]
    out += ["  ".join(f.format(c) for f, c in zip(fmt, row, strict=True)) for row in rows]
    return "\n".join(out)


def format_report(report: Mapping[str, object]) -> str:
    """The whole report as the table ``edge-bench`` prints."""
    runs = report["runs"]
    lines = [str(report.get("title", "edge-bench")), ""]
    for run in runs:
        lines += [format_run(run), ""]
    lines.append(summary_table(runs))
    return "\n".join(lines)


# -- measuring ------------------------------------------------------------------------------------


class TimedDevice:
    """A :class:`edge.sources.Device` whose ``grab`` (read and decode) is timed, frame by frame.

    ``grab_ms[i]`` is the time frame ``i`` took (the source numbers frames in grab order).
    """

    def __init__(self, device):
        self.device = device
        self.name = device.name
        self.live = device.live
        self.grab_ms: list[float] = []

    @property
    def fps(self) -> float | None:
        return self.device.fps

    @property
    def position_s(self) -> float | None:
        """The device's timestamp of the frame just read (paced video files keep to it)."""
        return getattr(self.device, "position_s", None)

    def open(self) -> None:
        self.device.open()

    def close(self) -> None:
        self.device.close()

    def grab(self) -> np.ndarray | None:
        t = time.perf_counter()
        image = self.device.grab()
        if image is not None:
            self.grab_ms.append((time.perf_counter() - t) * 1e3)
        return image


class DrawEveryFrame:
    """A sink that asks the loop for the overlay on every frame and throws it away.

    Stands in for ``--display``/``--record`` (the window or the encoder is not what is measured).
    """

    needs_annotated = True

    def __enter__(self) -> DrawEveryFrame:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def write(self, result: FrameResult) -> None:
        pass


@dataclass
class Block:
    """What one block of frames measured (warm-up frames left out)."""

    stages: np.ndarray  # frames x len(names), ms
    names: tuple[str, ...]
    #: per frame: the model ran on it (its set_input/invoke/postprocess are real)
    modelled: np.ndarray
    age_ms: np.ndarray
    wall_s: float
    cpu_s: float
    dropped: int = 0
    rss_mb: float | None = None
    #: why the loop ended early (``SIGINT``, ``SIGTERM``), else ""
    stopped: str = ""

    @property
    def frames(self) -> int:
        return self.stages.shape[0]


class _Recorder:
    """Pipeline hook: each frame's stage durations, age at its result, end time.

    :meth:`start` begins a block: ``warmup`` frames passed over, then ``frames`` recorded.
    """

    def __init__(self) -> None:
        self.start(0, 0)

    def start(self, warmup: int, frames: int) -> None:
        self.warmup = warmup
        n = warmup + frames
        self.stages = np.zeros((n, len(PIPELINE_STAGES)))
        self.index = np.zeros(n, np.int64)
        self.modelled = np.zeros(n, bool)
        self.age_ms = np.zeros(n)
        self.n = 0
        self.t_start = self.t_end = 0.0
        self.cpu_start = self.cpu_end = 0.0

    def __call__(self, result: FrameResult, stage_ms: np.ndarray) -> None:
        now = time.monotonic()
        i = self.n
        if i >= len(self.age_ms):
            return
        self.stages[i] = stage_ms
        if result.annotated is None:  # nothing was drawn: no overlay time to report
            self.stages[i, OVERLAY] = np.nan
        self.index[i] = result.frame.index
        self.modelled[i] = result.prediction is not None
        self.age_ms[i] = (now - result.frame.t_capture) * 1e3
        self.n = i + 1
        if self.n == self.warmup:
            self.t_start, self.cpu_start = time.perf_counter(), time.process_time()
        elif self.n > self.warmup:
            self.t_end, self.cpu_end = time.perf_counter(), time.process_time()


def rss_mb() -> float | None:
    """This process's resident memory now (Linux), MB."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def cpu_seconds() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine, CPU seconds of this process and its children) now.

    The difference between two readings, over the wall time between them, is how many cores
    something else kept busy meanwhile: the noise a figure was measured under (Linux).
    """
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        ticks = [int(v) for v in fields]
    except (OSError, ValueError):
        return None
    busy = sum(ticks[:8]) - ticks[3] - ticks[4]  # all but idle and iowait (guest is in user)
    t = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), t.user + t.system + t.children_user + t.children_system


def background_cores(start: tuple[float, float] | None, end: tuple[float, float] | None, wall_s: float):
    """Cores other processes kept busy between two :func:`cpu_seconds` readings (None off Linux)."""
    if start is None or end is None or wall_s <= 0:
        return None
    return max((end[0] - start[0]) - (end[1] - start[1]), 0.0) / wall_s


def peak_rss_mb() -> float | None:
    """This process's peak resident memory so far, MB."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Linux
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


@dataclass
class PipelineParts:
    """What :class:`PipelineRun` needs to build one run of ours."""

    #: () -> (source, truth) not yet opened; the source's device gets timed
    build_source: Callable[[], tuple[object, object]]
    detector: object
    make_trigger: Callable[[], object]
    make_decider: Callable[[], object]
    #: () -> sinks to enter (context managers)
    make_sinks: Callable[[float | None], list] = field(default=lambda fps: [])
    roi: Sequence[float] | None = None
    #: second looks (edge.runtime.REFINE_MODES)
    refine: str = "off"
    #: frames decoded ahead on a capture thread when the source is read as fast as possible
    prefetch: int = 0
    #: a video file's FFmpeg decoder threads (None: OpenCV's default)
    decode_threads: int | None = None


def with_decode_threads(device, threads: int | None):
    """``device``, or the same video file decoded with ``threads`` FFmpeg threads."""
    from edge.sources import VideoFile

    if threads and isinstance(device, VideoFile):
        return VideoFile(device.path, decode_threads=threads, fps=device.pace_fps)
    return device


def _timed_source(source, prefetch: int, decode_threads: int | None):
    from edge.sources import Source

    timed = TimedDevice(with_decode_threads(source.device, decode_threads))
    ahead = prefetch if not source.threaded else 0
    new = Source(
        timed, source.threaded, pace=source.pace, stall_s=source.stall_s, truth=source.truth, prefetch=ahead
    )
    return new, timed


class PipelineRun:
    """Ours for one model and thread count, block after block.

    The trigger and decider live as long as the run (a learned empty belt carries over). A
    source read as fast as possible (``keep_open``) stays open between blocks, so the blocks walk
    through a video or the demo line and its capture thread just waits in between; at its end it
    is opened again. A paced or live source is opened for each block (a capture thread going on
    in the background would load the other runs; a camera opens once at a time).
    """

    def __init__(self, parts: PipelineParts, keep_open: bool):
        self.parts = parts
        self.keep_open = keep_open
        self.trigger = parts.make_trigger()
        self.decider = parts.make_decider()
        self._recorder = _Recorder()
        self._stack: contextlib.ExitStack | None = None
        self._pipeline = None
        self._source = None
        self._timed: TimedDevice | None = None
        #: what the last block's end had to say about products not found, said once by the caller
        #: (counting the products the blocks before judged: the trigger lives across the blocks)
        self.end_hint: str | None = None
        self._judged = 0

    def _open(self) -> None:
        from edge.pipeline import Pipeline, RunOptions

        source, truth = self.parts.build_source()
        source, self._timed = _timed_source(source, self.parts.prefetch, self.parts.decode_threads)
        roi = self.parts.roi if self.parts.roi is not None else getattr(truth, "roi", None)
        with contextlib.ExitStack() as stack:
            stack.enter_context(source)
            sinks = [stack.enter_context(s) for s in self.parts.make_sinks(source.fps)]
            self._pipeline = Pipeline(
                source,
                self.parts.detector,
                self.trigger,
                self.decider,
                sinks,
                RunOptions(
                    roi=roi,
                    refine=self.parts.refine,
                    flag_lines=False,  # a measurement, not a station: no journal line per product
                    last_run=False,  # blocks of frames from one source
                ),
                hooks=[self._recorder],
            )
            self._stack, self._source = stack.pop_all(), source

    def close(self) -> None:
        if self._stack is not None:
            stack, self._stack, self._pipeline, self._source = self._stack, None, None, None
            stack.close()

    def block(self, frames: int, warmup: int) -> Block:
        """``warmup`` + ``frames`` frames through :class:`edge.pipeline.Pipeline`; the last
        ``frames`` measured (fewer if a finite source ends first)."""
        if self._stack is None:
            self._open()
        recorder, source, timed = self._recorder, self._source, self._timed
        recorder.start(warmup, frames)
        dropped = source.stats.dropped
        self._pipeline.judged_before = self._judged
        summary = self._pipeline.run(max_frames=warmup + frames)
        self._judged += summary.products
        self.end_hint = self._pipeline.end_hint
        rss = rss_mb()
        if not self.keep_open or summary.end == "end of stream":
            self.close()
        n = recorder.n
        measured = slice(warmup, n)
        stages = np.column_stack(
            [decode_times(timed.grab_ms, recorder.index[measured]), recorder.stages[measured]]
        )
        return Block(
            stages=stages,
            names=STAGES,
            modelled=recorder.modelled[measured].copy(),
            age_ms=recorder.age_ms[measured].copy(),
            wall_s=max(recorder.t_end - recorder.t_start, 0.0) if n > warmup else 0.0,
            cpu_s=max(recorder.cpu_end - recorder.cpu_start, 0.0) if n > warmup else 0.0,
            dropped=source.stats.dropped - dropped,
            rss_mb=rss,
            stopped=summary.end if summary.end.startswith("SIG") else "",
        )


def say_end_hints(runners: Sequence[object]) -> list[str]:
    """Say once, after all blocks, what the runs' ends had to say about products not found (each
    block's end would repeat it); the distinct hints, in order."""
    hints = list(dict.fromkeys(h for r in runners if (h := getattr(r, "end_hint", None))))
    for hint in hints:
        _log.warning(hint)
    return hints


def decode_times(grab_ms: Sequence[float], indices: np.ndarray) -> np.ndarray:
    """Each frame's decode time, by its index (NaN where the device has no time for it)."""
    grabs = np.append(np.asarray(grab_ms, dtype=np.float64), np.nan)
    idx = np.asarray(indices, dtype=np.int64)
    return grabs[np.where((idx >= 0) & (idx < len(grabs) - 1), idx, len(grabs) - 1)]


class CameraClock:
    """When the frames of a paced source reach a blocking read that may fall behind.

    A camera captures a frame every ``1/fps`` s into a driver queue of ``buffers`` frames and
    drops new frames while the queue is full; a blocking read returns the oldest queued frame, or
    waits for the next one. :meth:`next` says when the frame the read returns was captured.
    """

    def __init__(self, fps: float, buffers: int = DRIVER_BUFFERS):
        self.interval = 1.0 / fps
        self.buffers = buffers
        self._t0: float | None = None
        self._k = 0
        self._queue: deque[float] = deque()
        self.dropped = 0

    def next(self, now: float) -> float:
        """Capture time of the frame a read at ``now`` returns (> now: the read waits until then)."""
        if self._t0 is None:
            self._t0 = now
        while (due := self._t0 + self._k * self.interval) <= now:
            if len(self._queue) < self.buffers:
                self._queue.append(due)
            else:
                self.dropped += 1
            self._k += 1
        if self._queue:
            return self._queue.popleft()
        self._k += 1
        return due


def _draw_textbook(image: np.ndarray, roi_px, pred, threshold: float, fps: float) -> None:
    """What the example's ``utils.visualize`` and its FPS line do: every frame, in place."""
    if pred.box is not None and pred.presence >= threshold:
        rx, ry, rw, rh = roi_px
        x0, y0, x1, y1 = pred.box
        p0 = (round(rx + x0 * rw), round(ry + y0 * rh))
        p1 = (round(rx + x1 * rw), round(ry + y1 * rh))
        cv2.rectangle(image, p0, p1, (255, 0, 0), 3)
        cv2.putText(
            image,
            f"stamp ({pred.presence:.2f})",
            (p0[0] + 10, p0[1] + 20),
            cv2.FONT_HERSHEY_PLAIN,
            1,
            (0, 0, 255),
            1,
        )
    cv2.putText(image, f"FPS = {fps:.1f}", (24, 20), cv2.FONT_HERSHEY_PLAIN, 1, (0, 0, 255), 1)


class TextbookRun:
    """The textbook loop for one model and thread count: blocking read, resize, invoke, draw, in
    one thread, block after block.

    As in the TensorFlow Lite Raspberry Pi example (``while cap.isOpened(): cap.read(); cvtColor;
    detect; visualize``), with the region of interest cropped (a view) so the model sees what it
    sees in ours. ``make_device`` builds the device (not yet opened); it stays open between blocks
    when ``keep_open``, as ours does. ``pace``: the device stands for a camera at its frame rate
    (:class:`CameraClock`); a frame's age counts from when it was captured, so it includes any time
    it sat in the camera's queue.
    """

    def __init__(self, make_device, detector, roi: Sequence[float] | None, pace: bool, keep_open: bool):
        self.make_device = make_device
        self.detector = detector
        self.roi = roi
        self.pace = pace
        self.keep_open = keep_open
        self._device = None
        self._clock: CameraClock | None = None
        self._fps, self._t_prev = 0.0, None

    def close(self) -> None:
        if self._device is not None:
            device, self._device = self._device, None
            device.close()

    def block(self, frames: int, warmup: int) -> Block:
        """``warmup`` + ``frames`` frames; the last ``frames`` measured (fewer at a source's end)."""
        if self._device is None:
            device = self.make_device()
            device.open()
            self._device = device
            self._clock = CameraClock(device.fps) if self.pace and device.fps else None
            self._t_prev = None
        device, clock, detector = self._device, self._clock, self.detector
        dropped = clock.dropped if clock is not None else 0
        threshold = detector.metadata.threshold
        n = warmup + frames
        stages = np.zeros((n, len(TEXTBOOK_STAGES)))
        age_ms = np.zeros(n)
        count = 0
        t_start = t_end = cpu_start = cpu_end = 0.0
        roi_px = None
        ended = False
        while count < n:
            t0 = time.monotonic()
            due = None
            if clock is not None:
                due = clock.next(t0)
                if due > t0:
                    time.sleep(due - t0)
                t0 = time.monotonic()
            image = device.grab()  # the blocking cap.read()
            if image is None:
                ended = True
                break
            if image.size == 0:  # an unreadable file of an image folder: skipped, as ours does
                continue
            t1 = time.monotonic()
            t_capture = due + (t1 - t0) if due is not None else t1
            if roi_px is None:
                roi_px = contract.roi_pixels(image.shape, self.roi)
            x, y, w, h = roi_px
            small = cv2.resize(image[y : y + h, x : x + w], (contract.INPUT_WIDTH, contract.INPUT_HEIGHT))
            rgb = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
            t2 = time.monotonic()
            detector.set_input(rgb)
            t3 = time.monotonic()
            detector.invoke()
            t4 = time.monotonic()
            pred = contract.decode_outputs(detector.read_outputs(), detector.metadata)
            t5 = time.monotonic()
            if self._t_prev is not None and t5 > self._t_prev:
                rate = 1.0 / (t5 - self._t_prev)
                self._fps = 0.9 * self._fps + 0.1 * rate if self._fps else rate
            self._t_prev = t5
            _draw_textbook(image, roi_px, pred, threshold, self._fps)
            t6 = time.monotonic()
            stages[count] = np.array([t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5]) * 1e3
            age_ms[count] = (t6 - t_capture) * 1e3
            count += 1
            if count == warmup:
                t_start, cpu_start = time.perf_counter(), time.process_time()
            elif count > warmup:
                t_end, cpu_end = time.perf_counter(), time.process_time()
        rss = rss_mb()
        if ended or not self.keep_open:
            self.close()
        measured = slice(warmup, count)
        return Block(
            stages=stages[measured],
            names=TEXTBOOK_STAGES,
            modelled=np.ones(max(count - warmup, 0), bool),
            age_ms=age_ms[measured],
            wall_s=max(t_end - t_start, 0.0) if count > warmup else 0.0,
            cpu_s=max(cpu_end - cpu_start, 0.0) if count > warmup else 0.0,
            dropped=(clock.dropped - dropped) if clock is not None else 0,
            rss_mb=rss,
        )


def run_invoke_block(detector, image_rgb: np.ndarray, frames: int, warmup: int) -> Block:
    """The interpreter alone: ``invoke`` on one input, ``warmup`` + ``frames`` times."""
    detector.set_input(image_rgb)
    invoke = detector.invoke
    clock = time.perf_counter
    times = np.zeros(warmup + frames)
    for i in range(warmup):
        t = clock()
        invoke()
        times[i] = clock() - t
    cpu0, t_start = time.process_time(), clock()
    for i in range(warmup, warmup + frames):
        t = clock()
        invoke()
        times[i] = clock() - t
    wall, cpu = clock() - t_start, time.process_time() - cpu0
    ms = times[warmup:] * 1e3
    return Block(
        stages=ms[:, None],
        names=("invoke",),
        modelled=np.ones(frames, bool),
        age_ms=np.zeros(0),
        wall_s=wall,
        cpu_s=cpu,
        rss_mb=rss_mb(),
    )


@dataclass
class Totals:
    """Blocks of one arm (one model, thread count and loop) put together."""

    names: tuple[str, ...] = ()
    blocks: list[Block] = field(default_factory=list)

    def add(self, block: Block) -> None:
        self.names = block.names
        self.blocks.append(block)

    @property
    def frames(self) -> int:
        return sum(b.frames for b in self.blocks)

    @property
    def wall_s(self) -> float:
        # a block's wall time runs from its last warm-up frame to its last frame: frames - 0 intervals
        return sum(b.wall_s for b in self.blocks)

    def stage(self, name: str) -> np.ndarray:
        if not self.blocks:
            return np.zeros(0)
        j = self.names.index(name)
        parts = []
        for b in self.blocks:
            col = b.stages[:, j]
            if name in MODEL_STAGES:
                col = col[b.modelled]
            parts.append(col[np.isfinite(col)])
        return np.concatenate(parts)

    def stages(self) -> dict[str, dict[str, float | None]]:
        return {name: stage_stats(self.stage(name)) for name in self.names}

    def age(self) -> np.ndarray:
        return np.concatenate([b.age_ms for b in self.blocks]) if self.blocks else np.zeros(0)

    def summary(self, measure_overhead: bool) -> dict[str, object]:
        """fps, stage stats, frame age, CPU and memory of the arm."""
        frames, wall = self.frames, self.wall_s
        cpu = sum(b.cpu_s for b in self.blocks)
        stages = self.stages()
        age = stage_stats(self.age())
        fps = per_second(frames, wall) or 0.0
        wall_ms = wall * 1e3 / frames if frames else None
        decode_p50 = stages.get("decode", {}).get("p50")
        invoke = stages["invoke"]
        rss = [b.rss_mb for b in self.blocks if b.rss_mb is not None]
        return {
            "frames": frames,
            "fps": round(fps, 2),
            "wall_ms_per_frame": round(wall_ms, 4) if wall_ms is not None else None,
            "invoke_ms_p50": invoke["p50"],
            "invoke_ms_p99": invoke["p99"],
            "decode_ms_p50": decode_p50,
            "overhead_ratio": rounded(overhead_ratio(wall_ms, decode_p50, invoke["p50"]))
            if measure_overhead
            else None,
            "frame_age_ms_p50": age["p50"],
            "frame_age_ms_p99": age["p99"],
            "frame_age_ms": age,
            "cpu_cores": rounded(ratio(cpu, wall)),
            "cpu_ms_per_frame": rounded(cpu * 1e3 / frames) if frames else None,
            "rss_mb": rounded(max(rss), 1) if rss else None,
            "dropped": sum(b.dropped for b in self.blocks),
            "stages": stages,
        }


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)
