"""Where products pass in the whole frame: the region suggested when the region finds none."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.cli.run import main
from edge.config import TriggerConfig
from edge.decision import Decider, OccupancyTrigger, no_product_hint
from edge.demo import ROI, DemoLine
from edge.pipeline import Pipeline, Summary
from edge.region import RegionFinder, region_iou
from edge.runtime import TFLiteDetector
from edge.sources import Source

#: the demo line shrunk to half and set in a frame of the demo's size: its products fill about a
#: quarter of the frame (too little for the whole frame as the region), its region is here
OFFSET = (250, 180)
SHRUNK_ROI = (
    (OFFSET[0] + ROI[0] * 320) / 640,
    (OFFSET[1] + ROI[1] * 240) / 480,
    ROI[2] * 320 / 640,
    ROI[3] * 240 / 480,
)


def floor(shape=(480, 640, 3)) -> np.ndarray:
    rng = np.random.default_rng(5)
    return np.clip(rng.normal(100, 8, shape), 0, 255).astype(np.uint8)


def shrunk_line(frames: int, seed: int = 3):
    """Frames of the demo line at half size on a grey floor, and the products that crossed."""
    line = DemoLine(seed)
    base = floor()
    for t in range(frames):
        image = base.copy()
        small = cv2.resize(line.render(t), (320, 240), interpolation=cv2.INTER_AREA)
        image[OFFSET[1] : OFFSET[1] + 240, OFFSET[0] : OFFSET[0] + 320] = small
        yield image


def test_the_region_suggested_is_where_the_products_pass_and_their_size():
    finder = RegionFinder()
    for image in shrunk_line(900):
        finder.update(image)
    suggested = finder.suggest()
    assert suggested is not None and region_iou(suggested, SHRUNK_ROI) >= 0.7


def test_a_line_moving_top_to_bottom_gets_a_region_turned_alike():
    finder = RegionFinder()
    for image in shrunk_line(900):
        finder.update(np.ascontiguousarray(np.rot90(image, -1)))  # the belt now runs downward
    x, y, w, h = SHRUNK_ROI
    turned = (1 - y - h, x, h, w)  # the region, turned with the frame
    suggested = finder.suggest()
    assert suggested is not None and region_iou(suggested, turned) >= 0.7


def test_nothing_is_suggested_from_an_empty_belt_or_a_product_standing_in_view():
    line = DemoLine(3)
    rng = np.random.default_rng(0)

    def noisy(image: np.ndarray) -> list[np.ndarray]:  # sensor noise: a few frames, cycled
        return [np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8) for _ in range(4)]

    finder = RegionFinder()
    empty = noisy(line.render(0))  # the lead-in: the belt, empty
    for i in range(600):
        finder.update(empty[i % 4])
    assert finder.suggest() is None
    standing = noisy(line.render(70))  # a product in view, the line stopped
    for i in range(1500):
        finder.update(standing[i % 4])
    assert finder.suggest() is None


def test_the_hint_names_a_suggested_region_only_where_it_differs_from_the_one_in_use():
    trigger = OccupancyTrigger(TriggerConfig())
    trigger.idle_peak = 0.4  # something came into the region, never to trigger.on
    hint = no_product_hint(trigger, 0, (0.51, 0.38, 0.27, 0.4), None)
    assert hint is not None and "--roi 0.51,0.38,0.27,0.4" in hint and "trigger.on" in hint
    assert "--roi 0.51" not in (
        no_product_hint(trigger, 0, (0.51, 0.38, 0.27, 0.4), (0.5, 0.38, 0.28, 0.4)) or ""
    )
    trigger.idle_peak = 0.05  # next to nothing came into it: the suggestion is all there is to say
    assert no_product_hint(trigger, 0, None, None) is None
    hint = no_product_hint(trigger, 0, (0.51, 0.38, 0.27, 0.4), (0.0, 0.0, 0.3, 0.3))
    assert hint is not None and hint.startswith("no product filled the region") and "--roi 0.51" in hint


def test_the_summary_keeps_the_suggested_region():
    s = Summary(source="s", model_id="m", runtime="r", suggested_roi=(0.5, 0.4, 0.25, 0.4))
    assert s.to_dict()["suggested_roi"] == (0.5, 0.4, 0.25, 0.4)


@pytest.mark.slow
def test_edge_run_finds_no_product_in_the_whole_frame_then_one_each_in_the_region_it_suggests(
    tmp_path: Path, caplog, monkeypatch
):
    """Said while the run goes on (a service's run does not end), then at its end; the region
    suggested finds every product."""
    import edge.pipeline

    monkeypatch.setattr(edge.pipeline, "NO_PRODUCT_SAY_S", 25.0)  # (60 s on a station)
    video = tmp_path / "far.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30, (640, 480))
    frames = 1200
    for image in shrunk_line(frames):
        writer.write(image)
    writer.release()
    crossed = len(DemoLine(3).products_between(0, frames - 1))
    assert main(["--video", str(video), "--as-fast-as-possible", "--summary", str(tmp_path / "a.json")]) == 0
    err = caplog.text
    assert "no product filled the region" in err and "--roi " in err
    during = [r.getMessage() for r in caplog.records if r.getMessage().startswith("25 s without a product: ")]
    assert len(during) == 1 and "--roi " in during[0]
    first = json.loads((tmp_path / "a.json").read_text())
    assert first["products"] == 0
    roi = ",".join(f"{v:g}" for v in first["suggested_roi"])
    assert f"--roi {roi}" in err
    summary = tmp_path / "b.json"
    argv = ["--video", str(video), "--as-fast-as-possible", "--roi", roi, "--summary", str(summary)]
    assert main([*argv, "--refine", "off"]) == 0
    second = json.loads(summary.read_text())
    assert second["products"] + second["unfinished"] == crossed >= 12


def test_products_merged_in_a_region_larger_than_a_product_get_the_suggestion_too():
    trigger = OccupancyTrigger(TriggerConfig())
    assert no_product_hint(trigger, 8, (0.23, 0.12, 0.53, 0.77), (0.0, 0.0, 1.0, 1.0)) is None
    trigger.long_products = 1
    hint = no_product_hint(trigger, 8, (0.23, 0.12, 0.53, 0.77), (0.0, 0.0, 1.0, 1.0))
    assert (
        hint is not None and hint.startswith("1 product(s) were in view far longer") and "--roi 0.23" in hint
    )
    assert no_product_hint(trigger, 8, (0.23, 0.12, 0.53, 0.77), (0.25, 0.1, 0.5, 0.8)) is None  # about it


def moving_boxes(sizes, frames: int, speed: int = 6, edge_arm: bool = False):
    """Boxes of the given sizes (cycled) crossing a grey 320x240 frame left to right, one at a
    time; or (``edge_arm``) something reaching in from the left edge and back, over and over."""
    base = floor((240, 320, 3))
    pitch, t0 = 400, 0
    for t in range(frames):
        image = base.copy()
        if edge_arm:
            reach = int(120 * max(0.0, np.sin(2 * np.pi * t / 90)))
            if reach:
                image[100:140, :reach] = (40, 60, 200)
        else:
            k, pos = divmod(t * speed - t0, pitch)
            side = sizes[k % len(sizes)]
            x = pos - side
            if x < 320:
                image[120 - side // 2 : 120 + side // 2, max(0, x) : max(0, x + side)] = (30, 140, 220)
        yield image


def test_products_of_very_different_sizes_are_said_with_the_suggestion():
    finder = RegionFinder()
    for image in moving_boxes([40, 110], 2400):
        finder.update(image)
    assert finder.suggest() is not None
    assert finder.note is not None and "smaller products?" in finder.note
    finder = RegionFinder()
    for image in moving_boxes([100, 110], 2400):
        finder.update(image)
    assert finder.suggest() is not None and finder.note is None


def test_an_arm_reaching_in_now_and_then_does_not_move_the_suggestion():
    """An operator's arm comes in from the frame's edge for 1.5 s every 5 s while products pass:
    it touches the edge, so it is not taken for a product (centre and size come from what passed
    wholly inside the frame)."""
    finder = RegionFinder()
    for t, image in enumerate(moving_boxes([100], 2400)):
        if t % 150 < 45:
            image[150:240, 200:260] = (200, 180, 170)  # from the bottom edge, below the boxes' lane
        finder.update(image)
    suggested = finder.suggest()
    lane = (110 / 320, 70 / 240, 100 / 320, 100 / 240)  # a box's size, in the middle of its path
    assert suggested is not None and region_iou(suggested, lane) >= 0.6, suggested


class SilentWhile:
    """The hardware boundary: a live camera on the shrunk line (``frames``, cycled) every
    ``every_s``, silent for ``silent_s`` after ``before`` frames."""

    live, fps, name = True, None, "camera"

    def __init__(self, frames: list[np.ndarray], before: int, silent_s: float, every_s: float = 0.003):
        self.frames, self.before, self.silent_s, self.every_s = frames, before, silent_s, every_s
        self.sent, self._silent_until = 0, None

    def open(self) -> None:  # a reopen does not rewind a live camera
        pass

    def close(self) -> None:
        pass

    def grab(self):
        time.sleep(self.every_s)
        if self.sent == self.before and self._silent_until is None:
            self._silent_until = time.monotonic() + self.silent_s
        if self._silent_until is not None and time.monotonic() < self._silent_until:
            return None
        image = self.frames[self.sent % len(self.frames)]
        self.sent += 1
        return image.copy()


class SeenAt(logging.Handler):
    """The line's time of the last frame the run saw when it said each line."""

    def __init__(self, seen: list[float]) -> None:
        super().__init__()
        self.seen, self.said = seen, []
        self.then = lambda: None  # (the run stopped once a line was said)

    def emit(self, record) -> None:
        self.said.append((record.getMessage(), self.seen[-1] if self.seen else None))
        self.then()


def test_time_without_frames_is_not_counted_as_time_without_a_product(monkeypatch):
    """A camera silent for longer than the wait before the region's hint does not bring the hint
    forward: it comes after that long of frames without a product, the silence left out."""
    import edge.pipeline

    monkeypatch.setattr(edge.pipeline, "NO_PRODUCT_SAY_S", 1.0)  # (60 s on a station)
    frames = list(shrunk_line(300))  # a suggestion needs about 270 frames: none before the silence
    camera = SilentWhile(frames, before=200, silent_s=1.5)
    seen: list[float] = []
    gaps: list[float] = []

    class Seen:
        needs_annotated = False

        def write(self, result) -> None:
            if not result.stopped:
                seen.append(result.frame.t_on_line)
                gaps.append(result.frame.gap_s)

    handler = SeenAt(seen)
    logging.getLogger("edge.pipeline").addHandler(handler)
    try:
        with Source(camera, threaded=True, stall_s=0.3) as src:
            detector = TFLiteDetector()
            pipeline = Pipeline(
                src, detector, OccupancyTrigger(TriggerConfig()), Decider(0.5), sinks=[Seen()]
            )
            handler.then = pipeline.stop
            pipeline.run(duration=15.0)  # (stopped once the hint is said: 3-4 s here)
    finally:
        logging.getLogger("edge.pipeline").removeHandler(handler)
    said = [(m, t) for m, t in handler.said if m.startswith("1 s without a product: ")]
    assert max(gaps) >= 1.0, "the silence was not seen as one"
    assert len(said) == 1 and "--roi " in said[0][0], handler.said
    at = said[0][1]
    blind = sum(g for g, t in zip(gaps, seen, strict=True) if t <= at)
    assert blind >= 1.0  # said after the silence ...
    assert at - seen[0] - blind >= 1.0 - 0.05  # ... once a second of frames had come without a product
