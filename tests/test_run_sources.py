"""Frame sources: odd frames, the newest-frame hand-over, reopening, bad devices and files."""

from __future__ import annotations

import itertools
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest

from edge.config import Config, ConfigError
from edge.sources import (
    GREY_WARNING,
    MAX_SIDE,
    EndOfStream,
    ImageFolder,
    OpenCVCamera,
    PiCamera,
    Source,
    SourceError,
    SourceStats,
    StreamURL,
    VideoFile,
    normalize_image,
    shown_url,
    why_no_stream,
)

RNG = np.random.default_rng(0)
BGR = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("raw", "shape", "converted"),
    [
        (BGR, (48, 64, 3), False),
        (BGR[:, :, 0], (48, 64, 3), True),  # grey
        (BGR[:, :, :1], (48, 64, 3), True),  # one channel, HxWx1
        (np.dstack([BGR, np.full((48, 64), 255, np.uint8)]), (48, 64, 3), True),  # BGRA
        (BGR.astype(np.uint16) * 257, (48, 64, 3), True),  # 16-bit
        (BGR[:, ::2], (48, 32, 3), True),  # odd strides
        (BGR[::-1], (48, 64, 3), True),  # negative strides
        (np.zeros((10, 5000, 3), np.uint8), None, True),  # tiny in one side: skipped
        (np.zeros((20, 5000, 3), np.uint8), (16, MAX_SIDE, 3), True),  # huge: downscaled
        (np.zeros((8, 8, 3), np.uint8), None, True),  # tiny
        (np.zeros((0, 0, 3), np.uint8), None, True),  # empty
        (BGR.astype(np.float32), None, True),  # another dtype
        (BGR[None], None, True),  # a batch
        (np.zeros((48, 64, 2), np.uint8), None, True),  # two channels
        ("not an image", None, True),
    ],
)
def test_odd_frames_are_converted_or_skipped(raw, shape, converted):
    image, was_converted = normalize_image(raw)
    if shape is None:
        assert image is None
    else:
        assert image.shape == shape and image.dtype == np.uint8 and image.flags.c_contiguous
        assert was_converted == converted


def test_grey_and_bgra_convert_to_the_same_colours():
    grey, _ = normalize_image(BGR[:, :, 1])
    assert np.array_equal(grey[:, :, 0], BGR[:, :, 1]) and np.array_equal(grey[:, :, 2], BGR[:, :, 1])
    bgra, _ = normalize_image(np.dstack([BGR, np.zeros((48, 64), np.uint8)]))
    assert np.array_equal(bgra, BGR)
    for bits in (12, 16):  # a 12-bit camera's frames (values up to 4095) as bright as the scene
        frame = (BGR.astype(np.uint32) * ((1 << bits) - 1) // 255).astype(np.uint16)
        frame[0, 0] = (1 << bits) - 1
        image, _ = normalize_image(frame)
        assert np.abs(image[1:].astype(int) - BGR[1:]).max() <= 1


class FakeCamera:
    """The hardware boundary: a live camera delivering ``rate`` frames/s, silent after ``stall_after``."""

    live = True
    fps = None

    def __init__(self, rate: float = 500.0, stall_after: int | None = None, frames: list | None = None):
        self.name = "fake camera"
        self.rate = rate
        self.stall_after = stall_after
        self.frames = frames
        self.opened = 0
        self.grabs = 0

    def open(self) -> None:
        self.opened += 1
        self.stall_after = None if self.opened > 1 else self.stall_after  # reopening cures it

    def grab(self):
        time.sleep(1.0 / self.rate)
        if self.stall_after is not None and self.grabs >= self.stall_after:
            return None
        self.grabs += 1
        if self.frames is not None:
            return self.frames[(self.grabs - 1) % len(self.frames)]
        return np.full((32, 32, 3), self.grabs % 256, np.uint8)

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("frames", "warned"),
    [
        ([BGR[:, :, 0]], True),  # a monochrome camera delivering one channel
        ([np.dstack([BGR[:, :, 1]] * 3)], True),  # ... or three equal ones
        ([BGR], False),
        # a colour camera looking at a grey belt: equal but for chroma noise
        (
            [
                np.clip(
                    np.dstack([BGR[:, :, 1]] * 3).astype(int) + RNG.integers(-2, 3, BGR.shape), 0, 255
                ).astype(np.uint8)
            ],
            False,
        ),
        ([np.dstack([BGR[:, :, 1]] * 3)] * 4 + [BGR], False),  # colour within the first five frames
    ],
)
def test_a_source_without_colour_is_reported_once(caplog, frames, warned):
    with Source(FakeCamera(rate=2000, frames=frames), threaded=False) as src:
        for _ in range(12):
            src.read(timeout=1.0)
    messages = [r.getMessage() for r in caplog.records if "no colour" in r.getMessage()]
    assert messages == (["fake camera: " + GREY_WARNING] if warned else [])


def test_grey_photos_in_a_folder_are_named_each_up_to_a_few(tmp_path: Path, caplog):
    """Photos are each their own: one grey photo among colour ones is missed as surely."""
    grey = np.dstack([BGR[:, :, 1]] * 3)
    for i, image in enumerate([BGR, grey, BGR, grey, grey, grey, grey]):
        cv2.imwrite(str(tmp_path / f"{i}.png"), image)
    with Source(ImageFolder(tmp_path), threaded=False) as src, pytest.raises(EndOfStream):
        while True:
            src.read()
    messages = [r.getMessage() for r in caplog.records if "no colour" in r.getMessage()]
    assert [m.split(":")[1] for m in messages] == [f" photo {i}.png has no colour" for i in (1, 3, 4)]
    assert messages[-1].endswith("grey ones; further grey photos are not named")


def test_a_slow_consumer_gets_the_newest_frame_and_drops_are_counted():
    with Source(FakeCamera(rate=500), threaded=True) as src:
        taken = []
        for _ in range(5):
            time.sleep(0.05)  # a slow consumer: ~25 frames arrive meanwhile
            frame = src.read(timeout=1.0)
            assert frame is not None
            taken.append((frame.index, src.stats.captured))
    indices = [i for i, _ in taken]
    assert indices == sorted(indices) and len(set(indices)) == 5
    # the frame handed over is the newest captured (at most one more arrived since)
    assert all(captured - index <= 2 for index, captured in taken)
    # every frame captured and not handed over was counted dropped (one may wait in the slot)
    assert src.stats.delivered == 5 and src.stats.dropped >= 10
    assert src.stats.captured - src.stats.delivered - src.stats.dropped in (0, 1)


def read_frames(src: Source, n: int, within_s: float = 5.0) -> list:
    """Up to ``n`` frames from a threaded source, reading until they came or ``within_s`` passed."""
    seen = []
    deadline = time.monotonic() + within_s
    while len(seen) < n and time.monotonic() < deadline:
        frame = src.read(timeout=0.1)
        if frame is not None:
            seen.append(frame)
    return seen


def journal_of(device, caplog, stall_s: float, within_s: float = 1.5) -> tuple[SourceStats, list[str]]:
    """A threaded source on ``device`` read for ``within_s``: its counts and the journal's lines."""
    with caplog.at_level(logging.WARNING, logger="edge.sources"):
        with Source(device, threaded=True, stall_s=stall_s) as src:
            read_frames(src, 10_000, within_s=within_s)
    return src.stats, [r.getMessage() for r in caplog.records]


def test_a_live_source_that_stalls_is_reopened_and_keeps_delivering():
    cam = FakeCamera(rate=200, stall_after=5)
    with Source(cam, threaded=True, stall_s=0.2) as src:
        seen = [f.index for f in read_frames(src, 10)]
    assert len(seen) == 10
    assert cam.opened >= 2 and src.stats.reopens >= 1


class SlowToReopen(FakeCamera):
    """The hardware boundary as a camera that stalls and then takes ``open_s`` to open again."""

    def __init__(self, open_s: float):
        super().__init__(rate=200, stall_after=3)
        self.open_s = open_s
        self.reopening = threading.Event()

    def open(self) -> None:
        if self.opened:
            self.reopening.set()
            time.sleep(self.open_s)
        super().open()


class GoneCamera(FakeCamera):
    """The hardware boundary as a camera that stalls, then fails to open ``fails`` times."""

    def __init__(self, fails: int):
        super().__init__(rate=200, stall_after=3)
        self.fails = fails

    def open(self) -> None:
        if self.opened and self.fails:
            self.fails -= 1
            raise OSError("no such device")
        super().open()


def test_a_long_outage_is_retried_at_a_capped_pace_and_said_a_few_times_then_once_a_minute(
    monkeypatch, caplog
):
    """Attempts backed off to 30 s (the station blind up to 30 s after its camera was back), and
    each failed one was a journal line. The back-off is capped (5 s) and after the first few
    failures one line a minute says the attempts go on (times scaled down here)."""
    import edge.sources

    assert edge.sources.BACKOFF_MAX_S <= 5.0
    monkeypatch.setattr(edge.sources, "BACKOFF_START_S", 0.1)
    monkeypatch.setattr(edge.sources, "BACKOFF_MAX_S", 0.4)
    monkeypatch.setattr(edge.sources, "REOPEN_SAY_EVERY_S", 1.0)
    cam = GoneCamera(fails=8)  # waits 0.1, 0.2, then 0.4 s: 2.7 s in all
    with caplog.at_level(logging.WARNING, logger="edge.sources"):
        with Source(cam, threaded=True, stall_s=0.1) as src:
            seen = read_frames(src, 6, within_s=10.0)
    assert len(seen) == 6 and src.stats.failed_reopens == 8 and src.stats.reopens == 1
    failed = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    waits = [m.split("next in ")[1].split(" s")[0] for m in failed]
    assert waits[:5] == ["0.1", "0.2", "0.4", "0.4", "0.4"], failed  # doubling, capped
    assert "said once a minute from now on" in failed[4]
    assert 6 <= len(failed) <= 7, failed  # then one a "minute" (1 s here): not all eight


class CrashingServer(FakeCamera):
    """The hardware boundary as a stream server crashing in a loop: 3 frames a connection, then
    silence; after that, two refused connections before it is back."""

    def __init__(self):
        super().__init__(rate=200)
        self.refusals = 0

    def open(self) -> None:
        if self.opened and self.refusals < 2:
            self.refusals += 1
            raise OSError("connection refused")
        self.refusals = 0
        super().open()
        self.stall_after, self.grabs = 3, 0


def test_a_server_crashing_in_a_loop_is_said_a_few_times_then_once_a_minute(monkeypatch, caplog):
    """Failed attempts were thinned within one reopening only: each crash of a server restarting in
    a loop said its first attempts again, unbounded (18 lines a minute in a helper's run)."""
    import edge.sources

    monkeypatch.setattr(edge.sources, "BACKOFF_START_S", 0.005)
    monkeypatch.setattr(edge.sources, "REOPEN_SAY_EVERY_S", 30.0)
    stats, said = journal_of(CrashingServer(), caplog, stall_s=0.03)
    assert stats.reopens >= 8, stats.reopens
    assert len([m for m in said if "; reopening" in m]) == 5
    assert len([m for m in said if "failed" in m]) == 5 * 2, said


def test_a_reopen_that_completes_after_the_run_ended_is_neither_counted_nor_said(caplog):
    """The summary is out when the run ends: a reopen finishing later would contradict it."""
    cam = SlowToReopen(open_s=0.5)
    with caplog.at_level(logging.WARNING, logger="edge.sources"):
        with Source(cam, threaded=True, stall_s=0.1) as src:
            read_frames(src, 3)
            assert cam.reopening.wait(5.0)
            assert src.stats.reopening  # said by the FAULT line while the open takes its time
            src.stop()  # the loop's end (Pipeline.run); the source closes later, after the outputs
            time.sleep(0.8)
            assert cam.opened == 2  # it did open again, after the run ended
            assert src.stats.reopens == 0 and not src.stats.reopening
    assert src.stats.reopens == 0
    assert "reopening" in caplog.text and "reopened" not in caplog.text


def test_a_stop_while_a_slow_open_goes_on_does_not_wait_it_out(caplog):
    """A stream's open may take its 15 s timeout: a stop (systemd gives 20 s) does not wait for
    it, and says so rather than blaming a stuck driver."""
    cam = SlowToReopen(open_s=4.0)
    with caplog.at_level(logging.WARNING, logger="edge.sources"):
        src = Source(cam, threaded=True, stall_s=0.1)
        with src:
            read_frames(src, 3)
            assert cam.reopening.wait(5.0)
            began = time.monotonic()
        took = time.monotonic() - began
    assert took < 2.5, took
    assert "stopped while reopening it; the open under way ends with the process" in caplog.text
    assert "did not stop" not in caplog.text


class FreezingStream(FakeCamera):
    """The hardware boundary as an RTSP camera through FFmpeg that freezes after ``freeze_after``
    frames: each read then waits for the read timeout and hands over a frame the decoder still
    held, seconds old; reopening brings fresh frames."""

    def __init__(self, timeout_s: float, freeze_after: int):
        super().__init__(rate=200)
        self.timeout_s, self.freeze_after = timeout_s, freeze_after
        self.read_timeout_s = timeout_s  # as StreamURL's: its reads time out

    def grab(self):
        if self.opened == 1 and self.grabs >= self.freeze_after:
            time.sleep(self.timeout_s)
            self.grabs += 1
            return np.full((32, 32, 3), 255, np.uint8)  # white: a stale frame
        return super().grab()


def test_frames_a_stream_hands_over_when_its_read_times_out_are_dropped_and_it_is_reopened():
    cam = FreezingStream(timeout_s=0.3, freeze_after=5)
    with Source(cam, threaded=True, stall_s=0.3) as src:
        seen = read_frames(src, 12)
    assert len(seen) == 12
    assert not any((f.image == 255).all() for f in seen)  # none of the stale ones
    assert src.stats.stale == 1 and src.stats.reopens == 1 and cam.opened == 2
    # the first fresh frame after the freeze is marked: the frames stopped for stall_s or more
    assert seen[5].gap_s >= 0.3 and not any(f.gap_s for f in seen[:5] + seen[6:])


class ClosingStream(FakeCamera):
    """The hardware boundary as a stream through FFmpeg whose server closes the connection after
    ``close_after`` frames (a restart): reads then fail at once, not after the read timeout.
    ``cured``: reopening brings frames again; else every connection closes before its first frame."""

    def __init__(self, close_after: int, cured: bool = True, connect_s: float = 0.6):
        super().__init__(rate=200, stall_after=close_after)
        self.cured, self.connect_s = cured, connect_s
        self.read_timeout_s = 2.0  # as StreamURL's: its reads time out

    def open(self) -> None:
        if self.opened:
            time.sleep(self.connect_s)  # connecting again
        super().open()
        if not self.cured:
            self.stall_after = 0


def test_a_stream_its_server_closed_is_reopened_at_once_not_after_a_stall():
    """A stream closed by its server waited ``stall_s`` (3 s) for its reopening: products passed
    unseen meanwhile. Reads that fail at once, in a row, after frames came, reopen it at once; the
    frames lost while it reconnects are a gap (the product in view judged on what was seen)."""
    cam = ClosingStream(close_after=10)
    with Source(cam, threaded=True, stall_s=3.0) as src:
        seen = read_frames(src, 15, within_s=2.0)
    assert len(seen) == 15 and src.stats.reopens == 1 and cam.opened == 2
    assert seen[10].gap_s >= 0.5 and not any(f.gap_s for f in seen[:10] + seen[11:])


def test_a_stream_that_closes_before_any_frame_is_reopened_only_at_each_stall(caplog):
    """A server that takes the connection and closes it before a frame: reopening at once would
    hammer it; its reopenings keep the stall's pace."""
    cam = ClosingStream(close_after=0, cured=False, connect_s=0.0)
    with caplog.at_level(logging.WARNING, logger="edge.sources"):
        with Source(cam, threaded=True, stall_s=0.3) as src:
            assert read_frames(src, 1, within_s=1.0) == []
    assert 1 <= cam.opened - 1 <= 4
    said = [r.getMessage() for r in caplog.records if "reopening" in r.getMessage()]
    assert said and not [m for m in said if "failed at once" in m], said  # (a review's stronger check)


class ScriptedStream:
    """The hardware boundary as a stream following a script per connection: 'f' a frame at once,
    'x' a read failing at once, 's' a frame after ``slow_s`` (what FFmpeg's decoder held when its
    read timed out); after the script, reads fail at once (a server closing before any frame)."""

    live = True
    fps = None
    name = "scripted stream"

    def __init__(self, scripts: list[str], slow_s: float, timeout_s: float):
        self.scripts, self.slow_s, self.read_timeout_s = scripts, slow_s, timeout_s
        self.opened, self.opened_at, self.left = 0, [], ""

    def open(self) -> None:
        self.opened_at.append(time.monotonic())
        self.left = self.scripts[self.opened] if self.opened < len(self.scripts) else ""
        self.opened += 1

    def grab(self):
        step, self.left = (self.left[:1], self.left[1:])
        time.sleep(0.002)
        if step == "s":
            time.sleep(self.slow_s)
        return np.zeros((32, 32, 3), np.uint8) if step in ("f", "s") else None

    def close(self) -> None:
        pass


def test_after_a_stale_frames_reopen_a_connection_without_frames_waits_for_a_stall(caplog):
    """Fast failures counted before a stale frame's reopen made the next connection's first
    failing read a 'closed stream' at once (a review's finding): the count starts afresh."""
    # 1: a frame, 3 fast failures (closed: reopened at once); 2: a frame, fast failures (within
    # stall_s of the last such reopen: not again), then a stale frame (reopened); 3: no frame
    cam = ScriptedStream(["fxxx", "fxxxxs", ""], slow_s=0.2, timeout_s=0.2)
    with caplog.at_level(logging.WARNING, logger="edge.sources"):
        with Source(cam, threaded=True, stall_s=1.0) as src:
            read_frames(src, 100, within_s=1.6)
    said = [r.getMessage() for r in caplog.records if "reopening" in r.getMessage()]
    assert cam.opened >= 3, said
    assert cam.opened == 3 or cam.opened_at[3] - cam.opened_at[2] >= 0.9, (said, np.diff(cam.opened_at))


class SnapshotStream(FakeCamera):
    """The hardware boundary as a camera's snapshot address (or a server crashing in a loop): each
    connection gives one frame, then its reads fail at once."""

    def __init__(self):
        super().__init__(rate=200)
        self.read_timeout_s = 2.0
        self.given = 0

    def open(self) -> None:
        super().open()
        self.given = 0

    def grab(self):
        time.sleep(1.0 / self.rate)
        if self.given:
            return None
        self.given += 1
        return np.full((32, 32, 3), self.opened % 256, np.uint8)


def test_a_server_that_closes_after_every_frame_is_reopened_at_the_stalls_pace():
    """Reopening a closed stream at once hammered a server that gives a frame and closes: 357
    reopens in 8 s, two warnings each, against a snapshot address. One reopen at once a stall_s."""
    cam = SnapshotStream()
    with Source(cam, threaded=True, stall_s=0.3) as src:
        read_frames(src, 1000, within_s=1.0)
    assert 2 <= src.stats.reopens <= 5, src.stats.reopens


def test_reopenings_are_said_a_few_times_then_once_a_minute_with_a_count(monkeypatch, caplog):
    """A server that closes after every frame is reopened once a stall_s for good, two journal
    lines each (40 a minute at 3 s; a review's finding): the first five are said, then one line a
    minute with how many were not (times scaled down here)."""
    import edge.sources

    monkeypatch.setattr(edge.sources, "REOPEN_SAY_EVERY_S", 0.6)
    stats, said = journal_of(SnapshotStream(), caplog, stall_s=0.05)
    reopening = [m for m in said if "; reopening" in m]
    assert stats.reopens >= 12, stats.reopens
    assert 6 <= len(reopening) <= 5 + 3, reopening
    assert "further reopenings said once a minute" in reopening[4]
    assert "more reopening(s) since the last said" in reopening[5]
    assert len([m for m in said if ": reopened (attempt" in m]) in (len(reopening), len(reopening) - 1)


def test_a_slow_camera_whose_reads_do_not_time_out_keeps_every_frame():
    """One frame every 0.95 x stall_s (a slow camera, a busy machine): frames, not a stall."""
    cam = FakeCamera(rate=1 / 0.19)
    with Source(cam, threaded=True, stall_s=0.2) as src:
        seen = [f.index for f in read_frames(src, 6)]
    assert seen == list(range(6)) and src.stats.stale == 0 and src.stats.reopens == 0


def test_odd_frames_from_a_device_are_counted():
    frames = [BGR, BGR[:, :, 0], np.zeros((4, 4, 3), np.uint8), BGR[:, ::2]]

    class Finite(FakeCamera):
        live = False

        def grab(self):
            if self.grabs >= len(frames):
                return None
            self.grabs += 1
            return frames[self.grabs - 1]

    with Source(Finite(), threaded=False) as src:
        got = []
        with pytest.raises(EndOfStream):
            while True:
                got.append(src.read())
    assert [f.index for f in got] == [0, 1, 3]
    assert (src.stats.captured, src.stats.converted, src.stats.skipped) == (4, 2, 1)


def test_image_folder_in_sorted_order_skipping_unreadable(tmp_path: Path, caplog):
    for name, value in (("b.png", 20), ("a.png", 10), ("c.jpg", 30)):
        cv2.imwrite(str(tmp_path / name), np.full((40, 40, 3), value, np.uint8))
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "._a.png").write_bytes(b"\x00\x05\x16\x07")  # macOS AppleDouble: not an image
    (tmp_path / "later").mkdir()
    (tmp_path / ".thumbs").mkdir()  # hidden: not the user's photos
    cv2.imwrite(str(tmp_path / ".thumbs" / "t.png"), np.full((40, 40, 3), 50, np.uint8))
    cv2.imwrite(str(tmp_path / "later" / "d.png"), np.full((40, 40, 3), 40, np.uint8))
    for _ in range(3):  # as edge-bench reads it: once per model, thread count and baseline
        with Source(ImageFolder(tmp_path), threaded=False) as src:
            means = []
            with pytest.raises(EndOfStream):
                while True:
                    means.append(round(float(src.read().image.mean())))
        assert means == [10, 20, 30]
        assert src.stats.skipped == 1
    warnings = [r.getMessage() for r in caplog.records if "broken.jpg" in r.getMessage()]
    assert warnings == [f"{tmp_path / 'broken.jpg'}: not a readable image (OpenCV cannot decode it)"]
    said = [r.getMessage() for r in caplog.records if "subfolders" in r.getMessage()]
    assert (
        said[0]
        == f"{tmp_path}: the images in its subfolders (later/) are not read: --images reads the folder itself"
    )


@pytest.mark.parametrize(
    ("device", "message"),
    [
        (lambda tmp: VideoFile(tmp / "nope.mp4"), "video file not found"),
        (lambda tmp: VideoFile(tmp / "corrupt.mp4"), "not a readable video"),
        (lambda tmp: ImageFolder(tmp / "nope"), "image folder not found"),
        (lambda tmp: ImageFolder(tmp / "corrupt.mp4"), "expected a folder of images, found a file"),
        (lambda tmp: VideoFile(tmp), "expected a video file, found a folder"),
        (lambda tmp: ImageFolder(tmp), r"no image files \(.*\)$"),
        (lambda tmp: ImageFolder(tmp / "set"), r"no image files .*; its subfolder images/ holds some"),
        (lambda tmp: OpenCVCamera(97), "camera 97: cannot open"),
        (lambda tmp: OpenCVCamera(str(tmp / "video97")), "cannot open"),
    ],
)
def test_sources_that_cannot_open_say_why(tmp_path: Path, device, message):
    (tmp_path / "corrupt.mp4").write_bytes(RNG.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (tmp_path / "set" / "images").mkdir(parents=True)  # a data set's layout: the photos one level down
    cv2.imwrite(str(tmp_path / "set" / "images" / "a.jpg"), BGR)
    with pytest.raises(SourceError, match=message), Source(device(tmp_path), threaded=False):
        pass


def test_picamera_without_picamera2_gives_the_apt_hint():
    try:
        import picamera2  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("picamera2 is installed here")
    with pytest.raises(SourceError, match=r"sudo apt install python3-picamera2.*system-site-packages"):
        PiCamera().open()


class FakePicamera2:
    """The hardware boundary: picamera2's camera object, recording which camera was asked for."""

    opened: ClassVar[list[int]] = []

    def __init__(self, camera_num: int = 0):
        self.opened.append(camera_num)

    def create_video_configuration(self, **kwargs):
        return kwargs

    def configure(self, config) -> None:
        self.size = config["main"]["size"]

    def start(self) -> None:
        pass

    def capture_array(self, name: str):
        return np.zeros((self.size[1], self.size[0], 3), np.uint8)

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("argv", "number"), [(["--picamera"], 0), (["--picamera", "1"], 1)])
def test_the_pi_camera_opened_is_the_one_asked_for(monkeypatch, argv, number):
    """A Raspberry Pi 5 or Compute Module has two camera ports: two lines on one board."""
    import types

    from edge.cli.run import build_parser, build_source, overrides_from

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=FakePicamera2))
    FakePicamera2.opened = []
    config = Config.load(None, overrides_from(build_parser().parse_args(argv)))
    assert (config.source.kind, config.source.camera) == ("picamera", number)
    source, _line = build_source(config)
    with source:
        frame = source.read(timeout=2.0)
    assert frame is not None and FakePicamera2.opened == [number]


def test_a_pi_camera_is_named_by_its_number_in_the_config(tmp_path: Path):
    path = tmp_path / "line2.toml"
    path.write_text("[source]\nkind = 'picamera'\ncamera = '/dev/video0'\n")
    with pytest.raises(ConfigError, match=r"line2\.toml: source\.camera: expected the Pi camera's number"):
        Config.load(path)


def _mjpg_video(path: Path, frames: int) -> list[int]:
    """A small MJPG video of numbered grey frames; the byte offsets of its frame chunks."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 64))
    for i in range(frames):
        image = np.full((64, 96, 3), 4 * i, np.uint8)
        cv2.putText(image, str(i), (10, 50), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 2)
        writer.write(image)
    writer.release()
    data = path.read_bytes()
    movi = data.index(b"movi")
    chunks, at = [], movi + 4
    while data[at : at + 4] == b"00dc":
        chunks.append(at)
        size = int.from_bytes(data[at + 4 : at + 8], "little")
        at += 8 + size + size % 2
    return chunks


def test_a_truncated_video_ends_where_it_is_cut_and_says_the_header_promised_more(tmp_path: Path, caplog):
    whole = tmp_path / "whole.avi"
    chunks = _mjpg_video(whole, 40)
    assert len(chunks) == 40
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: chunks[25]])
    for path, expected, warned in ((whole, 40, False), (cut, 25, True)):
        video = VideoFile(path)
        video.open()
        n = 0
        while video.grab() is not None:
            n += 1
        assert n == expected and video.declared_frames == 40
        said = [r.getMessage() for r in caplog.records if "header declares" in r.getMessage()]
        assert bool(said) == warned, said
    assert "ended after 25 of the 40 frames its header declares" in said[0]


class _Capture:
    """OpenCV's capture as far as VideoFile uses it, failing the reads named in ``bad``; frame
    ``i``'s timestamp is ``times_ms[i]`` (default: none, as a raw stream gives)."""

    def __init__(
        self, frames: int, bad: set[int] = frozenset(), times_ms: list[float] | None = None, side: int = 8
    ):
        self.frames, self.bad, self.at, self.times_ms, self.side = frames, bad, 0, times_ms, side

    def read(self):
        i, self.at = self.at, self.at + 1
        if i >= self.frames or i in self.bad:
            return False, None
        return True, np.full((self.side, self.side, 3), i, np.uint8)

    def get(self, prop):
        assert prop == cv2.CAP_PROP_POS_MSEC
        return self.times_ms[self.at - 1] if self.times_ms else 0.0

    def release(self):
        pass


def _positions(video: VideoFile, capture: _Capture) -> list[float | None]:
    """``position_s`` of every frame ``video`` reads from ``capture`` (its first read as open's)."""
    video._cap, video._first = capture, None
    video.decoded, video.position_s, video._start_s, video._timed = 0, None, None, not video.pace_fps
    out = []
    while video.grab() is not None:
        out.append(video.position_s)
    return out


def test_a_video_is_paced_by_its_timestamps_or_else_by_its_frame_rate(tmp_path: Path):
    _mjpg_video(tmp_path / "v.avi", 12)  # 10 fps
    video = VideoFile(tmp_path / "v.avi")
    video.open()
    seen = []
    while video.grab() is not None:
        seen.append(video.position_s)
    assert seen == pytest.approx([i / 10 for i in range(12)])
    # a variable-rate file: 60 fps, then 30 fps, starting at 1.5 s
    times = [1500 + 1000 * i / 60 for i in range(6)] + [1600 + 1000 * i / 30 for i in range(1, 4)]
    assert _positions(video, _Capture(9, times_ms=times)) == pytest.approx([t / 1000 - 1.5 for t in times])
    # a raw stream (no timestamps) and a pace asked for (--fps): paced by frame number
    assert _positions(video, _Capture(5)) == [0.0, None, None, None, None]
    assert _positions(VideoFile(tmp_path / "v.avi", fps=5), _Capture(3, times_ms=[0, 100, 200])) == [None] * 3


def test_a_recording_read_as_fast_as_possible_keeps_the_lines_own_clock(tmp_path: Path):
    """Read unpaced, a recording's frames come faster than the line ran; the trigger's timings (a
    product in view too long) go by ``t_line``, its timestamps, so a replay judges as live did.
    Paced, and from a live camera, the line's clock is the capture time."""
    _mjpg_video(tmp_path / "v.avi", 12)  # 10 fps
    with Source(VideoFile(tmp_path / "v.avi"), threaded=False, pace=False) as src:
        frames = [src.read() for _ in range(12)]
    lines = [f.t_on_line - frames[0].t_on_line for f in frames]
    assert lines == pytest.approx([i / 10 for i in range(12)], abs=1e-6)
    assert frames[-1].t_capture - frames[0].t_capture < 0.5 < lines[-1]  # read faster than it ran
    with Source(VideoFile(tmp_path / "v.avi"), threaded=False, pace=True) as src:
        frame = src.read()
    assert frame.t_line is None and frame.t_on_line == frame.t_capture


def test_a_video_reads_on_past_frames_it_cannot_decode(tmp_path: Path, caplog):
    chunks = _mjpg_video(tmp_path / "v.avi", 3)
    assert len(chunks) == 3
    video = VideoFile(tmp_path / "v.avi")
    video.open()
    video._first, video._cap = None, _Capture(100, bad={10, 11, 12, 50})  # what OpenCV reads after
    video._timed = False
    video.decoded = 0
    seen = []
    while (image := video.grab()) is not None:
        seen.append(int(image[0, 0, 0]))
    assert seen == [i for i in range(100) if i not in {10, 11, 12, 50}]
    assert video.undecodable == 4 and video.decoded == 96
    said = [r.getMessage() for r in caplog.records]
    assert any("3 frame(s) could not be decoded after frame 9 (corrupt?); going on" in m for m in said), said


def test_a_file_whose_count_overstates_its_frames_is_not_called_truncated_if_it_reaches_its_end(
    tmp_path: Path, caplog
):
    """A variable-rate file's header count is its length times its highest rate: 2 s at 60 fps and
    10 s at 10 fps declare 714 frames at 60 fps, and hold 220. Truncated, it ends early in time."""
    _mjpg_video(tmp_path / "v.avi", 3)
    times = [1000 * i / 60 for i in range(120)] + [2000 + 100 * i for i in range(1, 101)]
    for end, warned in ((220, False), (150, True)):
        caplog.clear()
        video = VideoFile(tmp_path / "v.avi")
        video.open()
        video.declared_frames, video.fps = 714, 60.0
        assert len(_positions(video, _Capture(end, times_ms=times))) == end
        said = [r.getMessage() for r in caplog.records if "header declares" in r.getMessage()]
        assert bool(said) == warned, said


def test_a_jump_ahead_in_a_files_timestamps_is_not_waited_out():
    """Recordings joined end to end (a DVR's segments) jump minutes ahead: go on, do not sleep."""

    joined = _Timed([i / 30 + (600.0 if i >= 3 else 0.0) for i in range(6)])
    t0 = time.monotonic()
    with Source(joined, threaded=False, pace=True) as src:
        frames = 0
        with pytest.raises(EndOfStream):
            while True:
                src.read(1.0)
                frames += 1
    assert frames == 6 and time.monotonic() - t0 < 60  # not the 600 s the timestamps jump


@pytest.fixture
def http_folder(tmp_path: Path):
    """A local HTTP server on a folder (an IP camera's stream, a recording served as a file)."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_stream_that_does_not_open_says_why(http_folder):
    _folder, base = http_folder
    port = _closed_port()
    cases = [
        (f"{base}/none.ts", "the server answered 404"),
        (f"http://127.0.0.1:{port}/live.ts", f"connection refused: nothing listens on 127.0.0.1:{port}"),
        ("foo://camera/live", "unknown scheme 'foo'; expected rtsp://"),
        (f"rtsp://admin:s3cret@127.0.0.1:{port}/cam", "connection refused"),
    ]
    for url, why in cases:
        with pytest.raises(SourceError) as err, Source(StreamURL(url), threaded=False):
            pass
        assert f": cannot open ({why}" in str(err.value), str(err.value)
        assert "s3cret" not in str(err.value)  # a camera's password stays out of the journal
    assert shown_url("rtsp://admin:s3cret@cam.local:554/h264") == "rtsp://admin:***@cam.local:554/h264"
    assert shown_url("rtsp://admin:s3cr@t@cam/live") == "rtsp://admin:***@cam/live"  # FFmpeg: the last @
    assert (
        shown_url("http://cam/video.cgi?user=admin&PWD=s3cret&ch=1")
        == "http://cam/video.cgi?user=admin&PWD=***&ch=1"
    )


def test_an_http_server_that_closes_at_once_is_said_to_have_closed_without_answering():
    """A web server that takes the connection and closes it (a camera's full connection table, a
    proxy with no backend): "there, but no video stream could be read" sent one to the path."""
    import socket
    import threading

    from edge.sources import why_no_stream

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]

        def close_each() -> None:
            for reads in (True, False):  # the request read (http), or none sent (tcp)
                conn, _ = listener.accept()
                if reads:
                    conn.recv(1024)
                conn.close()

        thread = threading.Thread(target=close_each, daemon=True)
        thread.start()
        said = why_no_stream(f"http://127.0.0.1:{port}/video.mjpg")
        assert said == f"127.0.0.1:{port} closed the connection without answering an HTTP request"
        said = why_no_stream(f"tcp://127.0.0.1:{port}")
        assert said == f"127.0.0.1:{port} closed the connection without sending anything"
        thread.join(5.0)


def test_a_silent_port_is_said_to_have_sent_nothing_within_the_time_waited():
    """A port that takes the connection and never answers: FFmpeg waits out its open timeout, and
    the look behind the error then waited 2 s more and said "no answer within 2 s" after 7 s."""
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        with pytest.raises(SourceError) as err:
            StreamURL(f"http://127.0.0.1:{port}/live.mjpg", timeout_ms=1000).open()
        # a raw tcp:// stream's server sends at once: one that does not was called "there, but no
        # video stream could be read from it"
        assert (
            why_no_stream(f"tcp://127.0.0.1:{port}", 0.2) == f"no answer from 127.0.0.1:{port} within 0.2 s"
        )
    # the open timeout, then a short look (0.5 s, not 2 s more)
    said = f"cannot open: no stream within 1 s (no answer from 127.0.0.1:{port} within 0.5 s)"
    assert said in str(err.value), str(err.value)


def test_a_camera_that_asks_for_a_password_is_asked_with_the_addresses_own(tmp_path):
    """The look behind "cannot open" sends the address's user and password, as FFmpeg does: a
    wrong password is named as the server's 401, a right one is not blamed."""
    import base64
    import http.server
    import threading

    class Camera(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            want = "Basic " + base64.b64encode(b"admin:p@ss:w0rd").decode()
            ok = self.headers.get("Authorization") == want
            self.send_response(200 if ok else 401)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"not a video\n")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Camera)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"127.0.0.1:{server.server_address[1]}/video.cgi"
    try:
        for url, why in [
            (f"http://admin:wrong@{base}", "the server answered 401"),
            (f"http://admin:p%40ss%3Aw0rd@{base}", "the server is there, but no video stream"),
        ]:
            with pytest.raises(SourceError) as err, Source(StreamURL(url, timeout_ms=2000), threaded=False):
                pass
            assert f": cannot open ({why}" in str(err.value), str(err.value)
            assert "wrong" not in str(err.value) and "w0rd" not in str(err.value)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def rtsp_camera():
    """An RTSP server's front door (the hardware boundary): it answers DESCRIBE for /live only,
    after a Digest challenge, to user admin with password p@ss:w0rd (no video behind it)."""
    import hashlib
    import socketserver
    import threading

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    class Camera(socketserver.StreamRequestHandler):
        def handle(self):
            while True:
                lines = []
                while (line := self.rfile.readline()) not in (b"\r\n", b""):
                    lines.append(line.decode().strip())
                if not lines:
                    return
                method, uri, _ = lines[0].split(" ")
                headers = dict(line.split(": ", 1) for line in lines[1:])
                cseq = headers.get("CSeq", "0")
                auth = headers.get("Authorization", "")
                # RFC 2617 with qop="auth", as many cameras ask
                cnonce = re.search(r'cnonce="([^"]*)"', auth)
                ha1, ha2 = md5("admin:cam:p@ss:w0rd"), md5(f"{method}:{uri}")
                want = md5(f"{ha1}:n0nce:00000001:{cnonce.group(1) if cnonce else ''}:auth:{ha2}")
                if (
                    f'response="{want}"' not in auth
                    or 'username="admin"' not in auth
                    or "nc=00000001" not in auth
                ):
                    extra = 'WWW-Authenticate: Digest realm="cam", nonce="n0nce", qop="auth"\r\n'
                    self.wfile.write(f"RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\n{extra}\r\n".encode())
                elif not uri.endswith("/live"):
                    self.wfile.write(f"RTSP/1.0 404 Not Found\r\nCSeq: {cseq}\r\n\r\n".encode())
                else:  # a stream description OpenCV cannot play: no video behind it
                    self.wfile.write(f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n".encode())

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Camera)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_rtsp_camera_that_refuses_says_whether_the_password_or_the_path_is_wrong(rtsp_camera):
    from edge.sources import why_no_stream

    cases = [
        (f"rtsp://{rtsp_camera}/live", "the server asks for a user name and password"),
        (f"rtsp://admin:wrong@{rtsp_camera}/live", "the server refused the user name or password"),
        (f"rtsp://admin:p%40ss%3Aw0rd@{rtsp_camera}/nope", "the server has no stream at '/nope'"),
        # a camera that takes its password in the path: masked in the reason too
        (
            f"rtsp://admin:p%40ss%3Aw0rd@{rtsp_camera}/user=admin&password=s3cret&channel=1",
            "the server has no stream at '/user=admin&password=***&channel=1'",
        ),
        (f"rtsp://{rtsp_camera}/kamera-łódź", "the server asks for a user name and password"),  # UTF-8
        (f"rtsp://admin:p%40ss%3Aw0rd@{rtsp_camera}/live", "the server has that stream, but no video"),
        # a password with a / not percent-encoded: the address cannot be read, and it is not shown
        (f"rtsp://admin:a/b@{rtsp_camera}/live", "the port is not a number (a / ? # or @ in the password"),
        # ... or one whose first part reads as a port: the user name is taken for the host
        ("rtsp://op.invalid:12/3@cam/live", "unknown host 'op.invalid' (if that is the user name: a / ?"),
    ]
    for url, why in cases:
        assert why_no_stream(url).startswith(why), (url, why_no_stream(url))
    assert why_no_stream("rtsp://op.invalid:12/live") == "unknown host 'op.invalid'"  # no @: no hint
    assert why_no_stream("rtsp://127.0.0.1:99999/x") == "port 99999 is out of range (expected 1-65535)"
    assert why_no_stream("rtsp://127.0.0.1:8x/x") == "the port is not a number"
    # an @ in the path of an address without a user name: no hint either
    assert why_no_stream("rtsp://cam.invalid/live@2") == "unknown host 'cam.invalid'"
    assert shown_url(f"rtsp://admin:a/b@{rtsp_camera}/live") == f"rtsp://admin:***@{rtsp_camera}/live"
    assert shown_url("rtsp://admin:a#b?c@cam/live") == "rtsp://admin:***@cam/live"
    assert shown_url("rtsp://admin:12/3@cam/live") == "rtsp://admin:***@cam/live"  # '12' reads as a port
    # an @ in the path or query of an address without a password: left as it is
    assert shown_url("rtsp://cam.local/live?owner=ops@plant") == "rtsp://cam.local/live?owner=ops@plant"


LOOK = "analyzeduration;15000000|probesize;32000000"  # the open's 15 s, for a late key frame


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (None, f"rtsp_transport;tcp|{LOOK}"),
        ("fflags;nobuffer", f"fflags;nobuffer|rtsp_transport;tcp|{LOOK}"),  # alone, it made FFmpeg use UDP
        ("rtsp_transport;udp", f"rtsp_transport;udp|{LOOK}"),  # asked for: kept
        (
            "analyzeduration;2000000|rtsp_transport;udp",
            "analyzeduration;2000000|rtsp_transport;udp|probesize;32000000",
        ),
    ],
)
def test_rtsp_goes_over_tcp_and_waits_for_a_key_frame_unless_ffmpegs_options_say_otherwise(
    monkeypatch, options, expected
):
    from edge.sources import ffmpeg_options

    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", options or "")  # put back as it was after
    if options is None:
        monkeypatch.delenv("OPENCV_FFMPEG_CAPTURE_OPTIONS")
    ffmpeg_options(15000)
    assert os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] == expected
    ffmpeg_options(15000)  # at each reopening: nothing added twice
    assert os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] == expected
    ffmpeg_options(25000)  # a stream with a longer open timeout: ours follows it, the user's stays
    longer = expected.replace("analyzeduration;15000000", "analyzeduration;25000000")
    assert os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] == longer


@pytest.mark.parametrize("url", ["/data/line.mp4", "file:///data/line.mp4", "line.mp4"])
def test_a_file_given_as_a_stream_points_to_video(url):
    with (
        pytest.raises(SourceError, match=r"(given|give it) with --video"),
        Source(StreamURL(url), threaded=False),
    ):
        pass


def test_a_recording_served_over_http_is_said_not_to_be_a_live_camera(http_folder, caplog):
    folder, base = http_folder
    writer = cv2.VideoWriter(str(folder / "line.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30, (160, 120))
    for i in range(20):
        writer.write(np.full((120, 160, 3), 10 * i, np.uint8))
    writer.release()
    with Source(StreamURL(f"{base}/line.avi"), threaded=False) as src:
        assert src.read(1.0) is not None
    said = [r.getMessage() for r in caplog.records if "has a length" in r.getMessage()]
    assert len(said) == 1 and "not a live camera" in said[0] and "(20 frames)" in said[0]


def test_a_cameras_snapshot_address_is_said_to_be_one_picture(http_folder, caplog):
    """A camera's snapshot address gives one picture a connection: it was called "a recording
    served as a file" with the advice to use --video."""
    folder, base = http_folder
    cv2.imwrite(str(folder / "snapshot.jpg"), np.full((120, 160, 3), 90, np.uint8))
    with Source(StreamURL(f"{base}/snapshot.jpg"), threaded=False) as src:
        assert src.read(1.0) is not None
    said = [r.getMessage() for r in caplog.records if "snapshot" in r.getMessage()]
    assert len(said) == 1 and "a single picture (a camera's snapshot address?)" in said[0], said
    assert "--video" not in said[0]


def test_a_stream_ffmpeg_opens_without_a_picture_it_can_decode_is_refused_at_once(http_folder):
    """A stream FFmpeg opens but finds no picture size in (here an MP4 whose index is at its end,
    from a web server that cannot send parts of a file; a helper's garbage MJPEG parts alike) read
    nothing, waited for stalls and reopened for good: a run of 8 s took 12.6 s to end, every
    reopen costing FFmpeg's 4 s probe again. It is refused when opened, in one line."""
    folder, base = http_folder
    (folder / "line.mp4").write_bytes((Path(__file__).parent / "fixtures" / "demo_line.mp4").read_bytes())
    with pytest.raises(SourceError, match=r"cannot open \(no video it can decode"):
        StreamURL(f"{base}/line.mp4").open()


def test_an_image_folder_is_read_in_the_order_of_the_frame_numbers(tmp_path: Path):
    """Frames numbered without zero padding (ffmpeg's frame_%d.jpg) come in number order, not
    1, 10, 100, 11, ...: a product judged over frames read out of order would split in two."""
    from edge.sources import ImageFolder

    for i in (1, 2, 9, 10, 11, 100):
        cv2.imwrite(str(tmp_path / f"frame_{i}.png"), np.full((32, 32, 3), i, np.uint8))
    folder = ImageFolder(tmp_path)
    folder.open()
    assert [p.name for p in folder.files] == [
        "frame_1.png",
        "frame_2.png",
        "frame_9.png",
        "frame_10.png",
        "frame_11.png",
        "frame_100.png",
    ]
    assert [int(folder.grab()[0, 0, 0]) for _ in range(3)] == [1, 2, 9]


class _Timed:
    """A device whose frames carry times (a recording's timestamps, or a camera's capture times
    through a fake clock): the hardware boundary."""

    live = False

    def __init__(self, times: list[float], fps: float | None = 30.0, decode_s: float = 0.0):
        self.name, self.fps, self.times, self.i, self.position_s = "timed", fps, times, 0, None
        self.decode_s = decode_s

    def open(self):
        pass

    def close(self):
        pass

    def grab(self):
        if self.i >= len(self.times):
            return None
        time.sleep(self.decode_s)
        self.position_s = self.times[self.i]
        self.i += 1
        return BGR


def _gaps(device) -> list[float]:
    with Source(device, threaded=False) as src:
        out = []
        with pytest.raises(EndOfStream):
            while True:
                out.append(src.read(1.0).gap_s)
    return out


def test_frames_lost_for_half_a_second_are_a_gap_though_shorter_than_a_stall(monkeypatch):
    """A recording whose timestamps jump 1.5 s (its recorder lost the frames), or a camera whose
    frames stopped for 1.5 s: frames lost, though under the 3 s after which a camera is reopened
    (two products merged into one verdict across such a hole). A slow camera's usual intervals
    are not gaps."""
    times = [i / 30 for i in range(10)] + [9 / 30 + 1.5 + i / 30 for i in range(10)]
    gaps = _gaps(_Timed(times))
    assert gaps[10] == pytest.approx(1.5) and sum(g > 0 for g in gaps) == 1
    assert _gaps(_Timed([i / 30 for i in range(20)])) == [0.0] * 20  # no hole: no gap
    # a live camera of unknown rate delivering every 0.6 s: its rhythm, learnt, is not a gap;
    # a stop of 8 of its intervals (4.8 s, past the 3 s stall too) is one
    clock = iter([0.6 * i for i in range(12)] + [6.6 + 4.8 + 0.6 * i for i in range(3)])
    monkeypatch.setattr(time, "monotonic", lambda: next(clock))
    camera = _Timed([0.0] * 15, fps=None)
    camera.live = True
    with Source(camera, threaded=False) as src:
        gaps = [src.read(1.0).gap_s for _ in range(15)]
    assert gaps[:12] == [0.0] * 12 and gaps[12] == pytest.approx(4.8) and gaps[13:] == [0.0, 0.0]


def test_a_runs_summary_counts_the_frames_its_video_could_not_decode(tmp_path: Path):
    """29 frames of 900 lost to a corrupt stretch were 29 warnings and nothing in the summary."""
    from edge.decision import Decider, EveryFrameTrigger
    from edge.pipeline import Pipeline
    from edge.runtime import TFLiteDetector

    _mjpg_video(tmp_path / "v.avi", 3)
    video = VideoFile(tmp_path / "v.avi")
    with Source(video, threaded=False) as src:
        video._first, video._cap = None, _Capture(40, bad={10, 11, 12, 30}, side=64)  # OpenCV's reads
        video._timed, video.decoded = False, 0
        summary = Pipeline(src, TFLiteDetector(), EveryFrameTrigger(), Decider(0.5)).run()
    assert summary.frames == 36 and summary.undecodable == 4
    assert "4 undecodable" in summary.format() and summary.to_dict()["undecodable"] == 4


def test_a_pattern_of_numbered_images_given_as_a_video_points_to_its_folder(tmp_path: Path):
    with pytest.raises(SourceError, match=rf"frame_%05d.jpg: video file not found .*--images {tmp_path}\)$"):
        VideoFile(tmp_path / "frame_%05d.jpg").open()


def test_a_file_read_slower_than_its_own_rate_is_said_to_play_in_slow_motion(caplog):
    """A 4K file decoded at half its rate played in slow motion with nothing said (3 dropped)."""

    slow = _Timed([i / 200 for i in range(120)], fps=200.0, decode_s=0.02)  # four intervals a frame
    with caplog.at_level(logging.WARNING, logger="edge.sources"):
        with Source(slow, threaded=False, pace=True) as src:
            with pytest.raises(EndOfStream):
                while True:
                    src.read(1.0)
    said = [r.getMessage() for r in caplog.records if "slow motion" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("timed: read slower than its own frame rate")


def test_a_paced_demo_line_drawn_too_slowly_leaves_frames_out_and_keeps_the_lines_pace(caplog):
    """On a slow CPU (a Pi 3 drawing the demo line) the paced demo played in slow motion: fewer
    products crossed a minute than on the line, each in more frames than a camera would give, so
    its verdicts overstated a slow station. Frames are now left out as a camera's would be lost
    (counted as dropped), each with its own frame's truth, and the line keeps its time."""
    from edge.demo import DemoCamera, DemoLine

    class SlowCPU(DemoCamera):  # the hardware boundary: a CPU that draws a frame in 2.5 intervals
        grabs = 0

        def grab(self):
            self.grabs += 1  # and one of them (a product's first picture) in over a second
            time.sleep(1.2 if self.grabs == 4 else 2.5 / self.fps)
            return super().grab()

    line = DemoLine(0)
    with caplog.at_level(logging.WARNING, logger="edge.sources"):
        with Source(SlowCPU(line), threaded=True, pace=True, truth=line.truth_at) as src:
            frames = read_frames(src, 12, within_s=6.0)
            began, first = frames[1].t_capture, frames[1].index  # (the first anchors the line's time)
    assert len(frames) == 12
    steps = [b.index - a.index for a, b in itertools.pairwise(frames)]
    assert all(s >= 1 for s in steps) and sum(steps) >= 2 * len(steps), steps  # frames left out
    # the line's time: the frame numbers follow the clock, not the drawing
    span = (frames[-1].t_capture - began) * line.fps
    assert abs((frames[-1].index - first) - span) <= 3, (frames[-1].index - first, span)  # no slow motion
    assert all(f.truth == line.truth_at(f.index) for f in frames)
    assert src.stats.dropped >= sum(s - 1 for s in steps)
    said = [r.getMessage() for r in caplog.records]
    assert any("frames are left out as a camera's would be lost" in m for m in said), said
    assert not any("slow motion" in m for m in said)
