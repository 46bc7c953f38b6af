"""Frame sources: cameras, files, streams and folders behind one interface.

A source is a context manager; ``read(timeout)`` returns the next :class:`~edge.types.Frame`,
``None`` when none arrived within ``timeout`` (a live source that is stalled or reopening), and
raises :class:`EndOfStream` when a finite source is exhausted.

Live sources (``--camera``, ``--picamera``, ``--url``) and paced files capture on their own
thread (:class:`LatestFrame`) that keeps only the newest frame: a frame that was not taken before
the next one arrived is dropped and counted, so the consumer never works on a backlog. OpenCV's
own buffer is set to one frame (``CAP_PROP_BUFFERSIZE``) and drained by that thread. A live source
that delivers nothing for ``stall_s`` seconds is closed and reopened with back-off (0.5 s doubling
to ``BACKOFF_MAX_S``), logged (failed attempts: the first few, then once a minute); the run goes
on. On a device whose reads time out (a stream: its
``read_timeout_s``), a frame that came only when the read timed out (``STALE_READ`` of it or
longer) is a stall too, not a frame: when a stream goes silent, FFmpeg's read times out and hands
over what its decoder still held, seconds old (it would have been judged as a new product, and
each such frame put the reopening off by another ``stall_s``). It is dropped, counted
(``SourceStats.stale``), and the device reopened at once. On such a device, reads that fail at
once (``CLOSED_READS`` in a row, after frames came) are a stream its server closed: reopened at
once too, not after ``stall_s`` (a product passed unseen in those seconds).

``prefetch`` (files, folders and the demo read as fast as possible): a capture thread decodes up
to that many frames ahead into a FIFO (:class:`FrameQueue`) and waits when it is full, so
decoding overlaps the model on another core and still no frame is dropped.

Frames of unexpected form (grey, BGRA, 16-bit, non-contiguous strides, larger than
``MAX_SIDE``) are converted; frames that cannot be (tiny, empty, another dtype or layout) are
skipped. Both are counted in :class:`SourceStats`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

import cv2
import numpy as np

from edge.config import camera_device
from edge.datasets import (
    IMAGE_EXTENSIONS,
    DatasetError,
    hidden_file,
    image_files,
    read_image,
    to_uint8,
    unread_photos,
    unread_photos_line,
)
from edge.files import opencv_problem
from edge.types import Frame

_log = logging.getLogger(__name__)
#: warnings about a source's content already given: edge-bench opens its source again for each
#: block of each model, thread count and baseline, and one bad file, one grey video or one
#: folder of subfolders is worth one warning in a process
_said: set[str] = set()


def _say_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        _log.warning("%s", message)


#: frames with a side below this are skipped (nothing to inspect), above MAX_SIDE downscaled
MIN_SIDE = 16
#: frames that stop for this long, or for GAP_FRAMES of the source's usual intervals where that is
#: longer (at most ``stall_s``), are frames lost: the product in view is judged on what was seen
#: of it and marked, and the frames after begin afresh. With ``stall_s`` alone (3 s), a stream
#: that froze for 1.5 s while one product left and the next came in merged the two into one
#: verdict: an unstamped product passed on the stamped one's frames, and nothing was said
GAP_MIN_S = 0.5
GAP_FRAMES = 8
MAX_SIDE = 4096
DEFAULT_VIDEO_FPS = 30.0
BACKOFF_START_S = 0.5
#: the longest wait between attempts to reopen a live source: the station is blind for up to this
#: long after the camera or its server is back (at 30 s, a 10 s outage of a stream server cost
#: 5.5 s more; an attempt at a refused port or a missing device costs next to nothing)
BACKOFF_MAX_S = 5.0
#: failed reopen attempts said one by one; after them, one line a minute
REOPEN_FAILURES_SAID = 5
#: reopenings said one by one; after them, one line a minute with how many were not said
REOPENS_SAID = 5
REOPEN_SAY_EVERY_S = 60.0
#: picamera2: ask the ISP for a 4:3 stream about twice the model's input, so the ISP does the
#: downscaling and our resize starts near its own 2x step (see contract.RESIZE_METHOD)
PICAMERA_DEFAULT_SIZE = (320, 240)
PICAMERA_HINT = (
    "picamera2 is not installed; on Raspberry Pi OS: `sudo apt install python3-picamera2`, "
    "then create the venv with `python3 -m venv --system-site-packages`"
)


#: apt's picamera2 on Raspberry Pi OS Bookworm imports apt's simplejpeg, built for Debian's numpy 1;
#: under the venv's numpy 2 it fails with "numpy.dtype size changed" (raspberrypi/picamera2#1211)
PICAMERA_NUMPY_HINT = (
    "on Raspberry Pi OS, apt's simplejpeg was built for Debian's numpy 1 and the venv has numpy 2: "
    "reinstall it in the venv, `pip install --force-reinstall simplejpeg`"
)


def picamera_problem() -> str | None:
    """Why ``picamera2`` cannot be imported here (None: it can): not installed, or installed but
    failing as it loads (a traceback, and a service restarting every 10 s, before this)."""
    try:
        import picamera2  # noqa: F401
    except ImportError:
        return PICAMERA_HINT
    except Exception as exc:  # whatever a broken install raises, said in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        hint = f"; {PICAMERA_NUMPY_HINT}" if "numpy" in first or "dtype" in first else ""
        return f"picamera2 is installed but fails to load ({type(exc).__name__}: {first}){hint}"
    return None


#: a read that took this share of its device's read timeout or more returned a stale frame
STALE_READ = 0.9
#: reads in a row that failed at once (well within the read timeout), after frames came, on a
#: device whose reads time out: its server closed the stream (a restart, a dropped connection)
CLOSED_READS = 3


@dataclass(frozen=True)
class CameraControls:
    """What a station fixes on its camera rather than leave to the camera (``source.exposure_ms``,
    ``source.gain``, ``source.mains_hz``). None: not touched (a USB camera keeps what it was
    last given, by this or by ``v4l2-ctl``, until it is unplugged; a Pi camera starts on its
    automatic settings at every opening); ``"auto"``: the camera's automatic exposure or gain.

    A camera left on automatic exposure brightens and darkens the belt as dark and light
    products pass (the trigger and the model see the whole frame change), and in dim light it
    picks long exposures that smear a moving product. Lights on the mains flicker at twice its
    frequency; an exposure that is not a whole number of flicker periods shows that as frames
    that pulse or bands that roll through them.
    """

    exposure_ms: float | str | None = None
    #: picamera: analogue gain (1.0: none); a V4L2 camera: its own ``gain`` control's units
    gain: float | str | None = None
    #: 50 or 60: automatic exposure keeps to whole flicker periods of lights on these mains
    mains_hz: int | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.exposure_ms, self.gain, self.mains_hz))


def flicker_period_ms(mains_hz: int) -> float:
    """Lights on the mains brighten and dim twice per cycle: 10 ms at 50 Hz, 8.33 ms at 60 Hz."""
    return 1000.0 / (2 * mains_hz)


def exposure_warnings(exposure_ms: float | str | None, mains_hz: int | None, fps: float | None) -> list[str]:
    """What a fixed exposure (as the camera took it) means: under lights on the mains, fine when
    it is a whole number of flicker periods (each frame then gathers the same light), else frames
    pulse or bands roll; longer than a frame, the camera shortens it or slows down."""
    if not isinstance(exposure_ms, int | float):
        return []
    out = []
    if mains_hz is not None:
        period = flicker_period_ms(mains_hz)
        periods = exposure_ms / period
        if not (round(periods) >= 1 and abs(periods - round(periods)) <= 0.05):
            whole = ", ".join(f"{k * period:.3g}" for k in (1, 2, 3))
            out.append(
                f"source.exposure_ms: exposure {exposure_ms:g} ms is not a whole number of the lights' "
                f"flicker periods at {mains_hz} Hz ({period:.3g} ms): under lights on the mains, frames "
                f"pulse or bands roll through them, which the trigger may take for products; use {whole} "
                "ms, or lights that do not flicker (LEDs on a DC supply)"
            )
    if fps and exposure_ms > 1000.0 / fps * 1.01:
        out.append(
            f"source.exposure_ms: exposure {exposure_ms:g} ms is longer than a frame at {fps:g} fps "
            f"({1000.0 / fps:.3g} ms): the camera shortens it to a frame, or delivers fewer frames"
        )
    return out


def controls_said(taken: Mapping[str, float | str]) -> list[str]:
    """The start line's words for the camera settings in force."""
    said = []
    if "mains_hz" in taken:
        said.append(f"mains {taken['mains_hz']} Hz")
    if "exposure_ms" in taken:
        e = taken["exposure_ms"]
        said.append("automatic exposure" if e == "auto" else f"exposure {e:g} ms")
    if "gain" in taken:
        g = taken["gain"]
        said.append("automatic gain" if g == "auto" else f"gain {g:g}")
    return said


class _CameraSettings:
    """A camera's settings as it took them (``applied``, for the start line: ``describe``), and
    the warnings about them: each said once, at the opening that first finds it (a reopened
    camera that now refuses a setting is said then)."""

    name: str
    applied: tuple[str, ...] = ()
    _said: set[str] | None = None

    def describe(self) -> str:
        return ", ".join(self.applied)

    def _say(self, warnings: list[str]) -> None:
        if self._said is None:
            self._said = set()
        for warning in warnings:
            if warning not in self._said:
                self._said.add(warning)
                _log.warning("%s: %s", self.name, warning)


class SourceError(RuntimeError):
    """A source that cannot be opened or read (reported on one line, exit status 2)."""


class EndOfStream(Exception):
    """A finite source (video file, image folder, bounded demo) has no more frames."""


@dataclass
class SourceStats:
    """What a source did: frames handed over, dropped, converted, skipped; reopenings."""

    captured: int = 0
    delivered: int = 0
    dropped: int = 0
    converted: int = 0
    skipped: int = 0
    reopens: int = 0
    #: attempts to reopen a stalled live device that failed (its back-off going on)
    failed_reopens: int = 0
    #: frames that came only when a live device's read timed out (dropped: seconds old)
    stale: int = 0
    #: a reopening of the live device is under way (closing, opening, backing off)
    reopening: bool = False


class FrameSource(Protocol):
    """Where frames come from. Used as a context manager; ``stats`` counts what happened.
    ``live``: a camera or stream, whose frames can stop; ``stall_s``: for how long they may before
    that is a stall."""

    stats: SourceStats
    name: str
    live: bool
    stall_s: float

    def read(self, timeout: float) -> Frame | None: ...

    def stop(self) -> None:
        """No more frames are wanted (the run is ending): capture stops reopening the device."""


class Device(Protocol):
    """The hardware (or file) boundary one :class:`Source` wraps.

    ``grab`` returns the next image as it comes (any layout; the source normalises it) or ``None``:
    no frame now for a live device, the end for a finite one.
    """

    name: str
    live: bool
    fps: float | None

    def open(self) -> None: ...

    def grab(self) -> np.ndarray | None: ...

    def close(self) -> None: ...


# -- odd frames -----------------------------------------------------------------------------------


#: a source whose first frames all have no colour gets GREY_WARNING once
GREY_CHECK_FRAMES = 5
GREY_WARNING = (
    "the frames have no colour (a monochrome camera?); a model trained on colour images, as the "
    "bundled one is, misses stamps in grey frames: train on photos from this camera"
)


#: photos (a folder of them) without colour get a warning each, this many at the most
GREY_NAMED = 3
GREY_PHOTO = "a model trained on colour images, as the bundled one is, misses stamps in grey ones"


def is_grey(image: np.ndarray) -> bool:
    """No colour at all: the three channels of a BGR image equal (sampled on a grid), as a
    monochrome camera or a grey file gives. A colour camera looking at a grey belt still has
    some chroma noise."""
    view = image[::8, ::8]
    return bool(np.array_equal(view[..., 0], view[..., 1]) and np.array_equal(view[..., 1], view[..., 2]))


def normalize_image(raw: object) -> tuple[np.ndarray | None, bool]:
    """Any captured image -> (HxWx3 uint8 BGR contiguous, converted?) or (None, True) if skipped.

    Grey, single-channel, BGRA, 16-bit, non-contiguous and oversized images are converted; empty,
    tiny, other dtypes and layouts are skipped.
    """
    if not isinstance(raw, np.ndarray):
        return None, True
    image = raw
    converted = False
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        return None, True
    if min(image.shape[:2]) < MIN_SIDE:
        return None, True
    if image.dtype == np.uint16:
        image = to_uint8(image)
        converted = True
    elif image.dtype != np.uint8:
        return None, True
    if not image.flags.c_contiguous:
        image = np.ascontiguousarray(image)
        converted = True
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        converted = True
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        converted = True
    h, w = image.shape[:2]
    if max(h, w) > MAX_SIDE:
        scale = MAX_SIDE / max(h, w)
        size = (max(round(w * scale), 1), max(round(h * scale), 1))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        converted = True
    return image, converted


# -- capture thread -------------------------------------------------------------------------------


class LatestFrame:
    """A one-frame slot filled by a capture thread and emptied by the consumer.

    ``put`` replaces an untaken frame (counting it dropped); ``take`` waits for a new frame.
    """

    def __init__(self, stats: SourceStats):
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self._error: BaseException | None = None
        self._stats = stats

    def put(self, frame: Frame) -> None:
        with self._cond:
            if self._frame is not None:
                self._stats.dropped += 1
                if self._frame.gap_s > frame.gap_s:  # the frames stopped before the one dropped
                    frame = dataclasses.replace(frame, gap_s=self._frame.gap_s)
            self._frame = frame
            self._cond.notify()

    def close(self, error: BaseException | None = None) -> None:
        with self._cond:
            self._closed = True
            self._error = error
            self._cond.notify_all()

    def take(self, timeout: float) -> Frame | None:
        """The newest frame; None after ``timeout``; EndOfStream once closed and empty."""
        with self._cond:
            if self._frame is None and not self._closed:
                self._cond.wait(timeout)
            frame, self._frame = self._frame, None
            if frame is None and self._closed:
                if self._error is not None:
                    raise SourceError(str(self._error))
                raise EndOfStream()
            return frame


class FrameQueue:
    """A bounded FIFO filled by a capture thread: nothing dropped, ``put`` waits while it is full.

    ``take`` has :class:`LatestFrame`'s contract: a frame, None after ``timeout``, EndOfStream
    once closed and drained.
    """

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"FrameQueue size: expected >= 1, got {size}")
        self.size = int(size)
        self._cond = threading.Condition()
        self._frames: deque[Frame] = deque()
        self._closed = False
        self._error: BaseException | None = None

    def put(self, frame: Frame) -> None:
        with self._cond:
            while len(self._frames) >= self.size and not self._closed:
                self._cond.wait()
            if self._closed:
                return  # the consumer has gone: nobody will take it
            self._frames.append(frame)
            self._cond.notify_all()

    def close(self, error: BaseException | None = None) -> None:
        with self._cond:
            if not self._closed:
                self._closed = True
                self._error = error
            self._cond.notify_all()

    def take(self, timeout: float) -> Frame | None:
        with self._cond:
            if not self._frames and not self._closed:
                self._cond.wait(timeout)
            if self._frames:
                frame = self._frames.popleft()
                self._cond.notify_all()
                return frame
            if self._closed:
                if self._error is not None:
                    raise SourceError(str(self._error))
                raise EndOfStream()
            return None


class Source:
    """A :class:`Device` as a :class:`FrameSource`: normalises frames, counts, paces, reopens.

    ``threaded`` captures on a thread through :class:`LatestFrame` (live devices, paced files);
    otherwise ``read`` grabs in the caller's thread and nothing is dropped. ``pace`` holds a
    file or synthetic device to its ``fps``. ``prefetch`` > 0 (unthreaded only) decodes that many
    frames ahead on a capture thread through :class:`FrameQueue`: nothing dropped either.
    """

    def __init__(
        self,
        device: Device,
        threaded: bool,
        pace: bool = False,
        stall_s: float = 3.0,
        truth: Callable[[int], Mapping[str, object] | None] | None = None,
        prefetch: int = 0,
    ):
        if prefetch and threaded:
            raise ValueError("Source: prefetch is for unthreaded sources (threaded keeps the newest frame)")
        self.device = device
        self._frame_name = getattr(device, "frame_name", None)  # image folders name their frames
        self.name = device.name
        self.threaded = threaded
        self.pace = pace
        #: t_capture of the first frame less its offset in the recording (``Frame.t_line``)
        self._line_t0: float | None = None
        self.stall_s = float(stall_s)
        self.truth = truth
        self.stats = SourceStats()
        self._index = 0
        self._last_t: float | None = None  # when the last frame was captured (a file's: its timestamp)
        self._intervals: deque[float] = deque(maxlen=31)  # the usual ones between frames
        self._grey_frames = 0  # of the first GREY_CHECK_FRAMES (of photos: of all) those without colour
        self.prefetch = int(prefetch)
        self._slot: LatestFrame | FrameQueue = FrameQueue(prefetch) if prefetch else LatestFrame(self.stats)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0: float | None = None
        self._left_out = 0  # frames a paced device that can leave frames out (the demo) left out
        self._reopenings = 0  # for the journal: the first few said, then once a minute
        self._reopen_said_at = -float("inf")
        self._reopens_unsaid = 0

    @property
    def fps(self) -> float | None:
        return self.device.fps

    @property
    def live(self) -> bool:
        return self.device.live

    def __enter__(self) -> Source:
        self.device.open()
        return self

    def stop(self) -> None:
        self._stop.set()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            if self.prefetch:
                self._slot.close()  # wakes a capture thread waiting for room in the queue
            # an open under way is not waited out (a stream's may take its open timeout, 15 s, and
            # systemd's stop gives the service 20 s in all)
            opening = self.stats.reopening
            self._thread.join(timeout=1.0 if opening else 10.0)
            if self._thread.is_alive():  # in a driver call: releasing under it could crash
                left = (
                    "stopped while reopening it; the open under way ends with the process"
                    if opening
                    else "capture thread did not stop; leaving the device to the OS"
                )
                _log.warning("%s: %s", self.name, left)
                return
        self.device.close()

    def read(self, timeout: float = 1.0) -> Frame | None:
        if self.threaded or self.prefetch:
            if self._thread is None:  # capture starts with the first read: nothing dropped before
                self._thread = threading.Thread(target=self._run, name=f"capture {self.name}", daemon=True)
                self._thread.start()
            frame = self._slot.take(timeout)
            if frame is not None:
                self.stats.delivered += 1
            return frame
        while True:
            raw = self._grab_paced()
            if raw is None:
                raise EndOfStream()
            frame = self._to_frame(raw)
            if frame is not None:
                self.stats.delivered += 1
                return frame

    def _position(self, index: int) -> float:
        """Frame ``index``'s time in the file: its timestamp where the device gives one (a
        variable-rate file), else its number over ``fps``."""
        offset = getattr(self.device, "position_s", None)
        return index / self.device.fps if offset is None else offset

    def _grab_paced(self) -> np.ndarray | None:
        """The next frame, held back to its time in the file (its timestamp where the device
        gives one, as a variable-rate file needs, else its number over ``fps``)."""
        if not (self.pace and self.device.fps):
            return self.device.grab()
        skip = getattr(self.device, "skip", None)  # a device that can leave frames out (the demo)
        if skip is not None and self._t0 is not None:
            late = int((time.monotonic() - self._t0 - self._position(self._index)) * self.device.fps)
            if late >= 1:  # as a camera's frames are lost to a reader too slow for them
                skip(late)
                self._index += late
                self.stats.dropped += late
                self._left_out += late
                if self._left_out >= self.device.fps:  # a second's frames, not a hiccup's few
                    _say_once(
                        f"{self.name}: drawn slower than its {self.device.fps:g} frames/s here: frames "
                        "are left out as a camera's would be lost, and the line keeps its pace"
                    )
        raw = self.device.grab()
        if raw is None:
            return None
        offset = self._position(self._index)
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now - offset
        due = self._t0 + offset
        if due - now > max(1.0, 3.0 / self.device.fps):
            self._t0 = now - offset  # a jump ahead in the timestamps (joined recordings): go on now
        elif due > now:
            self._stop.wait(due - now)
        elif now - due > 1.0 and skip is None:  # (one that can leave frames out catches up so)
            self._t0 = now - offset  # fell behind: do not race to catch up
            _say_once(
                f"{self.name}: read slower than its own frame rate (over 1 s behind): it plays in slow "
                "motion, and a live camera of this size would lose frames here; --as-fast-as-possible "
                "judges every frame of a file"
            )
        return raw

    def _to_frame(self, raw: np.ndarray) -> Frame | None:
        t = time.monotonic()
        index = self._index
        self._index += 1
        self.stats.captured += 1
        image, converted = normalize_image(raw)
        if image is None:
            self.stats.skipped += 1
            shape = getattr(raw, "shape", None)
            unread = shape is not None and 0 in shape[:2]  # a file that could not be read: said already
            if self._frame_name is not None and not unread:  # a photo, its own product: say which
                why = (
                    f"{shape[1]}x{shape[0]} px, smaller than {MIN_SIDE} px on a side"
                    if shape is not None and len(shape) >= 2 and min(shape[:2]) < MIN_SIDE
                    else f"not a colour or grey image ({shape}, {getattr(raw, 'dtype', type(raw).__name__)})"
                )
                _say_once(f"{self.device.name}: photo {self._frame_name(index)} skipped: {why}")
            return None
        if converted:
            self.stats.converted += 1
        name = self._frame_name(index) if self._frame_name is not None else None
        if name is not None:  # photos, each its own: every grey one counts (the first few named)
            if is_grey(image):
                self._grey_frames += 1
                if self._grey_frames <= GREY_NAMED:
                    more = "; further grey photos are not named" if self._grey_frames == GREY_NAMED else ""
                    _say_once(f"{self.device.name}: photo {name} has no colour: {GREY_PHOTO}{more}")
        elif index < GREY_CHECK_FRAMES:
            self._grey_frames += is_grey(image)
            if index == GREY_CHECK_FRAMES - 1 and self._grey_frames == GREY_CHECK_FRAMES:
                _say_once(f"{self.device.name}: {GREY_WARNING}")
        truth = self.truth(index) if self.truth is not None else None
        gap = self._gap(t)
        t_line = None
        if not (self.pace or self.device.live) and self.device.fps:  # a recording, as fast as possible
            offset = self._position(index)
            if self._line_t0 is None:
                self._line_t0 = t - offset
            t_line = self._line_t0 + offset
        scale = max(raw.shape[:2]) / max(image.shape[:2])  # a frame above MAX_SIDE was shrunk
        return Frame(
            image=image,
            t_capture=t,
            index=index,
            truth=truth,
            name=name,
            gap_s=gap,
            t_line=t_line,
            source_scale=scale if scale > 1.0 else 1.0,
        )

    def gap_limit(self) -> float:
        """How long the frames may stop before frames count as lost (``GAP_MIN_S``)."""
        if len(self._intervals) >= 5:
            usual = float(np.median(self._intervals))
        elif self.device.fps:
            usual = 1.0 / self.device.fps
        else:  # not yet known (a camera's first frames): only a stall
            return self.stall_s
        return min(self.stall_s, max(GAP_MIN_S, GAP_FRAMES * usual))

    def _gap(self, t: float) -> float:
        """For how long frames were lost before this one (0: none): a live source's frames that
        stopped (a stall, a dropped stream, a reopen), or a recording's timestamps that jump (its
        recorder lost them)."""
        if self.device.live:
            now = t
        else:  # a file's own time, where its frames carry timestamps
            now = getattr(self.device, "position_s", None)
            if now is None:
                self._last_t = None
                return 0.0
        gap = now - self._last_t if self._last_t is not None else 0.0
        self._last_t = now
        if gap <= 0.0:
            return 0.0
        if gap >= min(GAP_MIN_S, self.stall_s) and gap >= self.gap_limit():  # (the median: rarely)
            return gap
        self._intervals.append(gap)
        return 0.0

    def _run(self) -> None:
        last_frame = time.monotonic()
        opened = True  # the first read after opening may wait for the device: not a stale frame
        timeout = getattr(self.device, "read_timeout_s", None)  # a device whose reads time out
        failed_at_once = 0  # reads in a row that failed at once since the last frame
        had_frame = False  # since the device was (re)opened: else its failing reads wait for a stall
        closed_at = -float("inf")  # the last reopen of a closed stream: at most one a stall_s at once
        try:
            while not self._stop.is_set():
                began = time.monotonic()
                try:
                    raw = self._grab_paced()
                except Exception as exc:  # a driver error is a stall, not the end of the run
                    _log.warning("%s: capture failed (%s)", self.name, exc)
                    raw = None
                first, opened = opened, False
                why = None  # a reason to reopen the device ("": no frame for stall_s)
                if (
                    raw is not None
                    and timeout
                    and not first
                    and time.monotonic() - began >= STALE_READ * timeout
                ):
                    self.stats.stale += 1  # what the decoder held when the read timed out
                    why = f"a frame came only when the read timed out ({timeout:g} s): the stream froze"
                elif raw is None:
                    if not self.device.live:
                        break
                    if timeout and had_frame and time.monotonic() - began < STALE_READ * timeout:
                        failed_at_once += 1
                    if failed_at_once >= CLOSED_READS and began - closed_at >= self.stall_s:
                        # (a server that closes each connection after a frame or a few, a camera's
                        # snapshot address, is reopened at the stall's pace, not hammered)
                        closed_at, why = began, f"{CLOSED_READS} reads failed at once: the stream was closed"
                    elif time.monotonic() - last_frame >= self.stall_s:
                        why = ""
                    else:
                        self._stop.wait(0.01)
                        continue
                if why is not None:  # each reopen starts the counts afresh
                    self._reopen(why)
                    last_frame, opened, had_frame, failed_at_once = time.monotonic(), True, False, 0
                    continue
                last_frame, failed_at_once, had_frame = time.monotonic(), 0, True
                frame = self._to_frame(raw)
                if frame is not None:
                    self._slot.put(frame)
        except BaseException as exc:
            self._slot.close(exc)
            return
        self._slot.close()

    def _reopen(self, why: str = "") -> None:
        """Close and reopen a stalled live device, backing off until it opens or we stop."""
        # each reopening said the first few times, then once a minute with a count (a server that
        # closes after every frame is reopened once a stall_s for good: two lines each)
        self._reopenings += 1
        now = time.monotonic()
        say = self._reopenings <= REOPENS_SAID or now - self._reopen_said_at >= REOPEN_SAY_EVERY_S
        if say:
            more = (
                f" ({self._reopens_unsaid} more reopening(s) since the last said)"
                if self._reopens_unsaid
                else ""
            )
            then = "; further reopenings said once a minute" if self._reopenings == REOPENS_SAID else ""
            reason = why or f"no frame for {self.stall_s:.1f} s"
            _log.warning("%s: %s; reopening%s%s", self.name, reason, more, then)
            self._reopen_said_at, self._reopens_unsaid = now, 0
        else:
            self._reopens_unsaid += 1
        self.stats.reopening = True
        try:
            self._reopen_attempts(say)
        finally:
            self.stats.reopening = False

    def _reopen_attempts(self, say: bool) -> None:
        """Close and open the device until it opens (backing off) or the run ends."""
        delay, attempt = BACKOFF_START_S, 0
        while not self._stop.is_set():
            attempt += 1
            try:
                self.device.close()
                self.device.open()
            except Exception as exc:
                self.stats.failed_reopens += 1
                now = time.monotonic()
                # the first few of a reopening that was said; else one line a minute, shared with
                # the reopenings' (a server crashing in a loop gave three lines every cycle)
                if (
                    say and attempt <= REOPEN_FAILURES_SAID
                ) or now - self._reopen_said_at >= REOPEN_SAY_EVERY_S:
                    self._reopen_said_at = now
                    then = (
                        "; said once a minute from now on" if say and attempt == REOPEN_FAILURES_SAID else ""
                    )
                    _log.warning(
                        "%s: reopen attempt %d failed (%s); next in %.1f s%s",
                        self.name,
                        attempt,
                        exc,
                        delay,
                        then,
                    )
                self._stop.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            if self._stop.is_set():  # opened while the run ended: its summary is already out
                return
            self.stats.reopens += 1
            if say:
                _log.warning("%s: reopened (attempt %d)", self.name, attempt)
            return


# -- devices --------------------------------------------------------------------------------------


def _quiet_opencv() -> None:
    # OpenCV and FFmpeg print their own warnings when a device or file does not open; we report
    # one line ourselves instead (unless logging at INFO, for debugging a stream)
    if _log.isEnabledFor(logging.INFO):
        return
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET; read when FFmpeg starts
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:  # pragma: no cover - very old OpenCV
        pass


class _OpenCVCapture:
    """What every ``cv2.VideoCapture`` device shares: read a frame, release."""

    _cap: cv2.VideoCapture | None = None

    def grab(self) -> np.ndarray | None:
        if self._cap is None:
            return None
        ok, image = self._cap.read()
        return image if ok else None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class OpenCVCamera(_OpenCVCapture, _CameraSettings):
    """A V4L2 camera through OpenCV: MJPG when offered, one-frame driver buffer."""

    live = True

    def __init__(
        self,
        camera: int | str,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        controls: CameraControls | None = None,
    ):
        self.camera = camera_device(camera)
        self.name = f"camera {camera}"
        self.width, self.height, self.fps = width, height, fps
        self.format = ""
        self.controls = controls or CameraControls()

    def open(self) -> None:
        _quiet_opencv()
        backend = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        cap = cv2.VideoCapture(self.camera, backend)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.name}: cannot open (no such camera, or it is busy or not permitted)")
        # the format first: on V4L2, size and rate are negotiated per format
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
        if self.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        if self.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        if self.fps:
            cap.set(cv2.CAP_PROP_FPS, self.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        code = int(cap.get(cv2.CAP_PROP_FOURCC))
        self.format = "".join(chr((code >> 8 * i) & 0xFF) for i in range(4)).strip("\0") or "?"
        got_fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(got_fps) if got_fps and got_fps > 0 else self.fps
        _log.info(
            "%s: %dx%d %s at %s fps",
            self.name,
            int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            self.format,
            self.fps,
        )
        self._cap = cap
        self._apply_controls()

    def _apply_controls(self) -> None:
        """Fixed exposure, gain and the mains' flicker, set on the device after its format (a
        reopened camera gets them again: a replugged one starts from its defaults)."""
        c = self.controls
        if not c:
            return
        warnings: list[str] = []
        taken: dict[str, float | str] = {}
        if sys.platform.startswith("linux"):
            from edge import v4l2

            taken, warnings = v4l2.apply(
                self.camera, exposure_ms=c.exposure_ms, gain=c.gain, mains_hz=c.mains_hz
            )
        else:
            warnings.append(
                "source.exposure_ms, source.gain and source.mains_hz are set on Linux (V4L2) only"
            )
        self.applied = tuple(controls_said(taken))
        self._say(warnings + exposure_warnings(taken.get("exposure_ms"), c.mains_hz, self.fps))


#: the stream schemes FFmpeg reads that edge-run expects (others are refused with this list)
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt", "rtp")
_TCP_PORTS = {"rtsp": 554, "rtsps": 322, "rtmp": 1935, "http": 80, "https": 443}


def shown_url(url: str) -> str:
    """``url`` for logs and messages: a password in it masked, after the user name
    (``rtsp://user:secret@camera/``; the last ``@`` before the path ends it, as for FFmpeg; where
    a password not percent-encoded may hold a / ? or #, the last ``@`` at all) or in the query or
    path, as cheap cameras take it (``?user=admin&password=...``)."""
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    try:
        _ = parts.port  # a ValueError where what follows the first ':' does not read as a port
        readable = True
    except ValueError:
        readable = False
    after = url.split(parts.netloc, 1)[-1] if parts.netloc else ""
    if readable and ("@" in parts.netloc or ":" not in parts.netloc or "@" not in after):
        # the user part as FFmpeg reads it: the address's authority, up to its last @
        url = re.sub(r"(://[^/:@]*):[^/]*@", r"\1:***@", url)
    else:  # a / ? or # in a password, not percent-encoded (admin:12/3@cam): to the last @, to be safe
        url = re.sub(r"(://[^/:@]*):.*@(?=[^@]*$)", r"\1:***@", url)
    return re.sub(r"([?&](?:password|passwd|pwd|pass|token|key)=)[^&#]*", r"\1***", url, flags=re.IGNORECASE)


def why_no_stream(url: str, timeout_s: float = 2.0) -> str:
    """Why a stream's address does not open, as far as a look at the network tells (FFmpeg's own
    reason stays inside OpenCV): an unknown scheme or host, a refused or silent port, an HTTP
    error; else that the server is there but no video stream could be read from it."""
    import socket
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in STREAM_SCHEMES:
        return f"unknown scheme {parts.scheme!r}; expected {', '.join(s + '://' for s in STREAM_SCHEMES)}"
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        if "@" in url.split("://", 1)[-1]:
            return "the port is not a number (a / ? # or @ in the password is written %2F %3F %23 %40)"
        given = parts.netloc.rsplit(":", 1)[-1] if ":" in parts.netloc else ""
        if given.isdigit():
            return f"port {given} is out of range (expected 1-65535)"
        return "the port is not a number"
    if not host:
        return "no host in the address"
    if scheme in ("udp", "rtp", "srt"):
        return f"nothing arrived within the open timeout (is the sender sending to this {scheme} port?)"
    port = port or _TCP_PORTS.get(scheme)
    if port is None:
        return "no port in the address"
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        if ":" in parts.netloc and "@" not in parts.netloc and "@" in url.split(parts.netloc, 1)[-1]:
            # admin:12/3@camera: the user name read as the host, the password's start as the port
            return (
                f"unknown host {host!r} (if that is the user name: a / ? # or @ in the password is"
                " written %2F %3F %23 %40)"
            )
        return f"unknown host {host!r}"
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as conn:
            if scheme == "http":
                target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                auth = ""
                if parts.username is not None:  # as FFmpeg sends them: the server judges them, not us
                    auth = f"Authorization: {_basic(*_credentials(parts))}\r\n"
                conn.sendall(f"GET {target} HTTP/1.0\r\nHost: {host}\r\n{auth}\r\n".encode())
                answer = conn.recv(256)
                if not answer:
                    return f"{host}:{port} closed the connection without answering an HTTP request"
                status = answer.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
                if len(status) >= 2 and status[1].isdigit() and int(status[1]) >= 400:
                    return f"the server answered {' '.join(status[1:])}"
            if scheme == "tcp" and not conn.recv(1):  # a raw stream's server sends at once
                return f"{host}:{port} closed the connection without sending anything"
            if scheme == "rtsp":
                try:
                    why = _rtsp_refusal(conn, parts)
                except (UnicodeError, ValueError):
                    why = None
                if why:
                    return why
    except ConnectionRefusedError:
        return f"connection refused: nothing listens on {host}:{port}"
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout_s:g} s"
    except OSError as exc:
        return f"{host}:{port}: {exc.strerror or exc}"
    return "the server is there, but no video stream could be read from it (path, credentials or codec?)"


def _credentials(parts) -> tuple[str, str]:
    """The user name and password of a split address, percent-decoded."""
    import urllib.parse

    return urllib.parse.unquote(parts.username or ""), urllib.parse.unquote(parts.password or "")


def _basic(user: str, password: str) -> str:
    import base64

    return f"Basic {base64.b64encode(f'{user}:{password}'.encode()).decode()}"


def _digest(challenge: dict[str, str], user: str, password: str, method: str, uri: str) -> str:
    """An RFC 2617 Digest answer (MD5; ``qop="auth"`` where the challenge asks for it)."""
    import hashlib
    import secrets

    def md5(text: str) -> str:
        return hashlib.md5(text.encode("utf-8")).hexdigest()

    realm, nonce = challenge.get("realm", ""), challenge.get("nonce", "")
    ha1, ha2 = md5(f"{user}:{realm}:{password}"), md5(f"{method}:{uri}")
    answer = f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}"'
    if "auth" in [q.strip() for q in challenge.get("qop", "").split(",")]:
        cnonce = secrets.token_hex(8)
        answer += f', qop=auth, nc=00000001, cnonce="{cnonce}"'
        response = md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")
    else:
        response = md5(f"{ha1}:{nonce}:{ha2}")
    if "opaque" in challenge:
        answer += f', opaque="{challenge["opaque"]}"'
    return answer + f', response="{response}"'


def _rtsp_answer(conn, request: str) -> tuple[int, dict[str, str]]:
    """Send one RTSP request; the answer's status code (0: not RTSP) and headers (lower-case)."""
    conn.sendall(request.encode("utf-8"))  # as FFmpeg sends an address: its bytes
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 16384:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    code = int(status[1]) if len(status) >= 2 and status[0].startswith("RTSP/") and status[1].isdigit() else 0
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers.setdefault(key.strip().lower(), value.strip())
    return code, headers


def _rtsp_refusal(conn, parts) -> str | None:
    """Why an RTSP server will not serve the stream, from a DESCRIBE as FFmpeg sends it (with the
    address's user and password, Digest or Basic as the server asks): a user name or password it
    refuses, a path it has no stream at, another error, or that it would serve it; None where it
    does not answer as an RTSP server."""
    import urllib.parse

    netloc = parts.netloc.rsplit("@", 1)[-1]
    uri = urllib.parse.urlunsplit(("rtsp", netloc, parts.path or "/", parts.query, ""))
    ask = f"DESCRIBE {uri} RTSP/1.0\r\nCSeq: {{cseq}}\r\nAccept: application/sdp\r\n{{auth}}\r\n"
    code, headers = _rtsp_answer(conn, ask.format(cseq=1, auth=""))
    if code == 401:
        if parts.username is None:
            return "the server asks for a user name and password (rtsp://USER:PASSWORD@host/...)"
        challenge = headers.get("www-authenticate", "")
        if challenge.lower().startswith("digest"):
            fields = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
            answer = _digest(fields, *_credentials(parts), "DESCRIBE", uri)
        else:
            answer = _basic(*_credentials(parts))
        auth = f"Authorization: {answer}\r\n"
        try:
            code, headers = _rtsp_answer(conn, ask.format(cseq=2, auth=auth))
        except OSError:  # it closed the connection after its challenge: no telling
            return None
        if code == 401:
            return "the server refused the user name or password"
    if code == 404:  # the path as logged: a camera that takes its password in the path, masked
        return f"the server has no stream at {urllib.parse.urlsplit(shown_url(uri)).path or '/'!r}"
    if code >= 400:
        return f"the server answered {code}"
    if 200 <= code < 300:
        return "the server has that stream, but no video could be read from it (its codec?)"
    return None


#: the most of a stream FFmpeg reads while it looks for the picture size (bytes): its default, 5 MB,
#: is 5 s of a 8 Mbit/s camera, too little to reach a late key frame
PROBE_BYTES = 32_000_000

#: the FFmpeg options :func:`ffmpeg_options` set, and to what (the others are the user's)
_OPTIONS_SET: dict[str, str] = {}


def ffmpeg_options(open_timeout_ms: int) -> None:
    """Say to FFmpeg, through OpenCV's options, what it does not do by itself, unless those options
    say otherwise (a service sets them in its unit's ``Environment=``):

    - RTSP over TCP: OpenCV asks for TCP only while ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` is unset, and
      any other option there made it UDP, which a firewall may drop (every open then succeeded
      and no frame ever came);
    - look for the picture size as long as the open may take (``analyzeduration``, and enough
      bytes for it): a camera that states no size beforehand gives it with its first key frame,
      which may come seconds later (FFmpeg's 5 s made such a camera be refused at every open)."""
    options = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS", "")
    parts = [part.split(";", 1) for part in options.split("|") if part.strip()]  # key;value|key;value
    given = {kv[0].strip(): i for i, kv in enumerate(parts)}
    for key, value in (
        ("rtsp_transport", "tcp"),
        ("analyzeduration", str(int(open_timeout_ms) * 1000)),  # microseconds
        ("probesize", str(PROBE_BYTES)),
    ):
        if key not in given:
            parts.append([key, value])
        elif _OPTIONS_SET.get(key) == parts[given[key]][-1]:  # ours, from an open with another timeout
            parts[given[key]] = [key, value]
        else:
            continue
        _OPTIONS_SET[key] = value
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "|".join(";".join(kv) for kv in parts)


class StreamURL(OpenCVCamera):
    """An RTSP/HTTP stream through OpenCV's FFmpeg backend, with open and read timeouts: a read
    that waits longer than ``read_timeout_ms`` (give the source's ``stall_s``) gives up, so a stream
    that stalls is noticed then (with FFmpeg's default of 5 s, a 3 s ``stall_s`` took 8 s); an
    open may take ``timeout_ms``, the wait for the first key frame included (see
    :func:`ffmpeg_options`)."""

    def __init__(self, url: str, timeout_ms: int = 15000, read_timeout_ms: int | None = None):
        super().__init__(camera=url)
        self.name = f"stream {shown_url(url)}"
        self.timeout_ms = int(timeout_ms)
        self.read_timeout_ms = int(read_timeout_ms) if read_timeout_ms else self.timeout_ms
        self.read_timeout_s = self.read_timeout_ms / 1000
        self._said_length = False

    def open(self) -> None:
        _quiet_opencv()
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            self.timeout_ms,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            self.read_timeout_ms,
        ]
        url = str(self.camera)
        scheme = re.match(r"([a-z][a-z0-9+.-]*)://", url, re.IGNORECASE)
        if scheme is None:
            expected = ", ".join(s + "://" for s in STREAM_SCHEMES[:4])
            raise SourceError(
                f"{shown_url(url)}: not a stream's address ({expected}...); a video file is given with "
                "--video (source.video)"
            )
        if scheme.group(1).lower() == "file":
            raise SourceError(f"{url}: a file, not a stream's address: give it with --video (source.video)")
        ffmpeg_options(self.timeout_ms)
        began = time.monotonic()
        cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
        waited_out = time.monotonic() - began >= 0.9 * self.timeout_ms / 1000  # the open's whole time
        if not cap.isOpened():
            cap.release()
            if waited_out:  # a short look behind it
                why = why_no_stream(url, timeout_s=0.5)
                raise SourceError(
                    f"{self.name}: cannot open: no stream within {self.timeout_ms / 1000:g} s ({why})"
                )
            raise SourceError(f"{self.name}: cannot open ({why_no_stream(url)})")
        if not cap.get(cv2.CAP_PROP_FRAME_WIDTH) or not cap.get(cv2.CAP_PROP_FRAME_HEIGHT):
            cap.release()  # FFmpeg opened it but found no picture size: nothing in it decodes
            if waited_out:  # looked for it till the end
                raise SourceError(
                    f"{self.name}: cannot open (no picture size within {self.timeout_ms / 1000:g} s: no "
                    "key frame came, or no video it can decode; a camera that sends a key frame less "
                    "often needs a longer source.open_timeout_s)"
                )
            raise SourceError(
                f"{self.name}: cannot open (no video it can decode: the stream gives no picture size; "
                "its codec or content?)"
            )
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        got_fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(got_fps) if got_fps and 0 < got_fps < 1000 else None
        length = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        # a live stream has no length; an RTSP server plays a recording at its own pace (it may
        # give its length), a web server hands over the file as fast as it is read
        served_file = scheme.group(1).lower() in ("http", "https")
        picture = Path(urllib.parse.urlsplit(url).path).suffix.lower() in IMAGE_EXTENSIONS
        if served_file and (length == 1 or picture) and not self._said_length:  # a snapshot address
            self._said_length = True
            _log.warning(
                "%s: a single picture (a camera's snapshot address?), not a video stream: each one is "
                "a reconnection, a few seconds apart; give the camera's video stream (RTSP or MJPEG)",
                self.name,
            )
        elif length and length > 0 and served_file and not self._said_length:
            self._said_length = True
            _log.warning(
                "%s: has a length (%d frames): a recording served as a file, not a live camera; it is "
                "read as fast as it comes and again from the start when it ends (a file: --video)",
                self.name,
                int(length),
            )
        self._cap = cap


#: failed decodes in a row after which a video file is taken to have ended
MAX_BAD_READS = 50


class VideoFile(_OpenCVCapture):
    """A video file through OpenCV; checked readable (first frame decoded) when opened.

    ``decode_threads``: FFmpeg's decoder threads (None: OpenCV's default, one per core). A
    source that decodes on its own capture thread wants 1: FFmpeg's frame threads would only
    compete with the model for the cores.
    """

    live = False

    def __init__(self, path: str | Path, decode_threads: int | None = None, fps: float | None = None):
        self.path = Path(path)
        self.name = f"video {self.path}"
        self.decode_threads = decode_threads
        #: ``fps``: the pace, instead of the file's own rate (a raw stream's guessed one, a wrong header)
        self.pace_fps = fps
        self.fps: float | None = None
        self._header_fps: float | None = None
        self._first: np.ndarray | None = None
        #: frames the container says it holds (None: it does not say), decoded and skipped ones
        self.declared_frames: int | None = None
        #: the time of the frame just read in the file, in seconds (None: pace by frame number)
        self.position_s: float | None = None
        self._start_s: float | None = None
        self._timed = False
        self.decoded = 0
        self.undecodable = 0

    def open(self) -> None:
        _quiet_opencv()
        if self.path.is_dir():
            raise SourceError(f"{self.path}: expected a video file, found a folder (--images reads a folder)")
        if not self.path.exists():
            scheme = re.match(rf"({'|'.join(STREAM_SCHEMES)}):/+", str(self.path), re.IGNORECASE)
            if scheme:  # a path keeps one slash of "rtsp://"
                url = f"{scheme.group(1)}://{str(self.path)[scheme.end() :]}"
                raise SourceError(
                    f"{shown_url(url)}: a stream's address, not a file: give it with --url (source.url)"
                )
            if "%" in self.path.name and self.path.parent.is_dir():  # frame_%05d.jpg, as FFmpeg writes
                raise SourceError(
                    f"{self.path}: video file not found (a pattern of numbered images? give their "
                    f"folder: --images {self.path.parent})"
                )
            raise SourceError(f"{self.path}: video file not found")
        if not self.path.is_file():
            raise SourceError(f"{self.path}: not a regular file (expected a video file)")
        if self.path.suffix.lower() in IMAGE_EXTENSIONS:  # FFmpeg plays it as a one-frame video
            raise SourceError(
                f"{self.path}: is an image, expected a video (--images DIR reads a folder of images)"
            )
        if problem := opencv_problem(self.path):
            raise SourceError(problem)
        params = [cv2.CAP_PROP_N_THREADS, int(self.decode_threads)] if self.decode_threads else []
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG, params)
        ok, first = cap.read() if cap.isOpened() else (False, None)
        if not ok:
            cap.release()
            raise SourceError(f"{self.path}: not a readable video (OpenCV cannot decode a frame of it)")
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else DEFAULT_VIDEO_FPS
        self._header_fps = float(fps) if fps and fps >= 1000 else None  # not believed
        if self.pace_fps:
            self.fps = float(self.pace_fps)
        declared = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.declared_frames = int(declared) if declared and declared > 0 else None
        self.decoded, self.undecodable = 1, 0
        self._cap, self._first = cap, first
        self._start_s, self._timed = None, not self.pace_fps
        self._note_position()

    def describe(self) -> str:
        """The frames it delivers, for the start-up line: size (as decoded: a file with rotation
        metadata comes turned) and rate."""
        size = f"{self._first.shape[1]}x{self._first.shape[0]}, " if self._first is not None else ""
        if self.pace_fps:
            return f"{size}{self.fps:g} fps (pace given)"
        if self._header_fps:  # (a 1000 fps header: its frames are paced by their timestamps)
            return (
                f"{size}its header's {self._header_fps:g} fps not believed: paced by its timestamps, "
                f"else {self.fps:g} fps (--fps gives its rate)"
            )
        return f"{size}{self.fps:g} fps"

    def _note_position(self) -> None:
        """``position_s`` of the frame just read: its timestamp from the file's first, while the
        file gives timestamps that do not go back (a raw stream gives 0 throughout: then None,
        and the pace is the frame rate's)."""
        if not self._timed or self._cap is None:
            self.position_s = None
            return
        t = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        if self._start_s is None:
            self._start_s = t
        t -= self._start_s
        last = self.position_s
        if last is not None and (t < last or t == 0):
            self._timed, t = False, None  # no usable timestamps: paced by frame number from here
        self.position_s = t

    def grab(self) -> np.ndarray | None:
        if self._first is not None:
            image, self._first = self._first, None
            return image
        if self._cap is None:
            return None
        for failed in range(MAX_BAD_READS + 1):  # a corrupt stretch: read on past it
            ok, image = self._cap.read()
            if ok:
                if failed:
                    self.undecodable += failed
                    _log.warning(
                        "%s: %d frame(s) could not be decoded after frame %d (corrupt?); going on",
                        self.name,
                        failed,
                        self.decoded - 1,  # the last good one, numbered from 0 as frames are
                    )
                self._note_position()
                self.decoded += 1
                return image
        if self._ended_short():
            _say_once(
                f"{self.name}: ended after {self.decoded} of the {self.declared_frames} frames its header "
                "declares (truncated or corrupt?)"
            )
        self.close()
        return None

    def _ended_short(self) -> bool:
        """The file ended well before its header said: fewer frames than it declares and, where
        its frames carry timestamps, earlier than its length (a variable-rate file's declared
        count is its length times its highest rate, so the count alone would mislead)."""
        declared = self.declared_frames
        if not declared or declared - self.decoded <= max(2, declared // 100):
            return False
        if self.position_s is None or not self.fps:
            return True
        return declared / self.fps - self.position_s > max(1.0, 2.0 / self.fps)


def _holds_images(folder: Path) -> bool:
    """A subfolder, not hidden, with image files in it (one that cannot be read: no)."""
    try:
        return folder.is_dir() and not hidden_file(folder) and bool(image_files(folder))
    except OSError:  # lost+found on a USB stick, owned by root
        return False


def frame_order(path: Path) -> tuple:
    """Sort key of a frame file: its name with runs of digits compared as numbers, so that
    ``frame_2.jpg`` comes before ``frame_10.jpg`` (frames numbered without zero padding, as
    ``ffmpeg ... frame_%d.jpg`` and many camera tools write them), then the name itself."""
    parts = re.split(r"(\d+)", path.name)
    return tuple((1, int(p), p) if i % 2 else (0, 0, p.casefold()) for i, p in enumerate(parts)), path.name


class ImageFolder:
    """The image files of a folder in the order of their numbers (:func:`frame_order`); unreadable
    ones are skipped and counted."""

    live = False
    fps = None

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.name = f"images {self.folder}"
        self.files: list[Path] = []
        self._next = 0
        self.unreadable = 0

    def open(self) -> None:
        if self.folder.is_file():
            raise SourceError(f"{self.folder}: expected a folder of images, found a file")
        if not self.folder.is_dir():
            raise SourceError(f"{self.folder}: image folder not found")
        self.files = sorted(image_files(self.folder), key=frame_order)
        holding = sorted(d.name for d in self.folder.iterdir() if _holds_images(d))
        unread = unread_photos(self.folder)
        if not self.files:
            inside = f"; its subfolder {holding[0]}/ holds some (give that folder)" if holding else ""
            if unread and not inside:
                inside = f"; {unread_photos_line(unread)}"
            raise SourceError(f"{self.folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}){inside}")
        if unread:  # an iPhone's .heic among the JPEGs: one product fewer, and nothing said
            _say_once(f"{self.folder}: {unread_photos_line(unread)}")
        if holding:
            subfolders = ", ".join(f"{d}/" for d in holding[:5]) + (", ..." if len(holding) > 5 else "")
            _say_once(
                f"{self.folder}: the images in its subfolders ({subfolders}) are not read: --images reads "
                "the folder itself"
            )

    def grab(self) -> np.ndarray | None:
        while self._next < len(self.files):
            path = self.files[self._next]
            self._next += 1
            try:
                return read_image(path)
            except DatasetError as exc:
                self.unreadable += 1
                _say_once(str(exc))
                # an unreadable file becomes a skipped frame, so the counts stay in one place
                return np.zeros((0, 0, 3), np.uint8)
        return None

    def frame_name(self, index: int) -> str | None:
        """The file frame ``index`` was read from (every file, readable or not, is one frame)."""
        return self.files[index].name if 0 <= index < len(self.files) else None

    def close(self) -> None:
        pass


class PiCamera(_CameraSettings):
    """A Raspberry Pi camera through picamera2 (imported when opened).

    The ISP scales to a stream near the model's input size, so the CPU resizes little.
    """

    live = True

    def __init__(
        self,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        number: int = 0,
        controls: CameraControls | None = None,
    ):
        self.number = number  # picamera2's camera_num: 1 is a second camera port (Pi 5, CM4)
        self.name = "picamera" if number == 0 else f"picamera {number}"
        self.size = (width or PICAMERA_DEFAULT_SIZE[0], height or PICAMERA_DEFAULT_SIZE[1])
        self.fps = fps
        self.controls = controls or CameraControls()
        self._cam = None

    def _libcamera_controls(self, offered: Mapping[str, tuple]) -> tuple[dict[str, object], list[str]]:
        """libcamera's controls for ``self.controls``, within the ranges the camera offers
        (``Picamera2.camera_controls``: name -> (min, max, default)), and warnings of what it
        lacks or what was clamped."""
        c = self.controls
        out: dict[str, object] = {}
        warnings: list[str] = []

        def within(name: str, key: str, value: float, unit: str, scale: float) -> float | None:
            if name not in offered:
                warnings.append(f"{key}: the camera has no {name} control; its own setting is used")
                return None
            low, high = offered[name][0], offered[name][1]
            if low is None or high is None or not high > low:  # a range it does not know (yet)
                return value
            kept = min(max(value, low), high)
            if kept != value:
                warnings.append(
                    f"{key}: {value / scale:g}{unit} is outside the camera's range "
                    f"{low / scale:g}-{high / scale:g}{unit}; {kept / scale:g}{unit} is used"
                )
            return kept

        # newer libcamera takes a fixed value only with its mode manual (older has no mode: AE
        # keeps off what is fixed); "auto": automatic, as every opening starts anyway
        if c.exposure_ms == "auto":
            if "ExposureTimeMode" in offered:
                out["ExposureTimeMode"] = 0
        elif c.exposure_ms is not None:
            us = within("ExposureTime", "source.exposure_ms", round(float(c.exposure_ms) * 1000), " ms", 1000)
            if us is not None:
                out["ExposureTime"] = int(us)
                if "ExposureTimeMode" in offered:
                    out["ExposureTimeMode"] = 1
        if c.gain == "auto":
            if "AnalogueGainMode" in offered:
                out["AnalogueGainMode"] = 0
        elif c.gain is not None:
            if (g := within("AnalogueGain", "source.gain", float(c.gain), "", 1)) is not None:
                out["AnalogueGain"] = float(g)
                if "AnalogueGainMode" in offered:
                    out["AnalogueGainMode"] = 1
        if c.mains_hz is not None:
            if "AeFlickerMode" in offered and "AeFlickerPeriod" in offered:
                out["AeFlickerMode"] = 1  # libcamera's FlickerManual: keep to the period given
                out["AeFlickerPeriod"] = round(flicker_period_ms(c.mains_hz) * 1000)
            else:
                warnings.append(
                    "source.mains_hz: this libcamera has no flicker control (AeFlickerMode); update "
                    "Raspberry Pi OS (`sudo apt full-upgrade`), or fix the exposure to whole flicker periods"
                )
        return out, warnings

    def _taken(self, asked: Mapping[str, object], metadata: Mapping[str, object]) -> dict[str, float | str]:
        """What the camera took: the exposure and gain of its first frame where fixed (its
        metadata), else what was asked."""
        c, taken = self.controls, {}
        if "AeFlickerMode" in asked:
            taken["mains_hz"] = c.mains_hz
        if c.exposure_ms == "auto":
            taken["exposure_ms"] = "auto"
        elif "ExposureTime" in asked:
            us = metadata.get("ExposureTime", asked["ExposureTime"])
            taken["exposure_ms"] = round(float(us) / 1000, 3)  # type: ignore[arg-type]
        if c.gain == "auto":
            taken["gain"] = "auto"
        elif "AnalogueGain" in asked:
            taken["gain"] = round(float(metadata.get("AnalogueGain", asked["AnalogueGain"])), 2)  # type: ignore[arg-type]
        return taken

    def open(self) -> None:
        if problem := picamera_problem():
            raise SourceError(problem)
        from picamera2 import Picamera2

        warnings: list[str] = []
        asked: dict[str, object] = {}
        try:
            cam = Picamera2(self.number)
            controls: dict[str, object] = {"FrameRate": float(self.fps)} if self.fps else {}
            if self.controls:
                asked, warnings = self._libcamera_controls(cam.camera_controls)
                controls.update(asked)
            # "RGB888" is B, G, R in memory: what OpenCV calls BGR
            config = cam.create_video_configuration(
                main={"size": self.size, "format": "RGB888"}, buffer_count=2, controls=controls
            )
            cam.configure(config)
            cam.start()
        except Exception as exc:
            raise SourceError(f"{self.name}: cannot open ({exc})") from None
        self._cam = cam
        if self.controls:
            metadata: Mapping[str, object] = {}
            if "ExposureTime" in asked or "AnalogueGain" in asked:
                try:  # the first frame's, as the sensor took them
                    metadata = cam.capture_metadata()
                except Exception as exc:  # a driver's error: said, and the values asked shown
                    warnings.append(f"cannot read the camera's settings back ({exc})")
            taken = self._taken(asked, metadata)
            self.applied = tuple(controls_said(taken))
            self._say(
                warnings + exposure_warnings(taken.get("exposure_ms"), self.controls.mains_hz, self.fps)
            )

    def grab(self) -> np.ndarray | None:
        if self._cam is None:
            return None
        return self._cam.capture_array("main")

    def close(self) -> None:
        if self._cam is not None:
            try:
                self._cam.stop()
                self._cam.close()
            finally:
                self._cam = None
