"""Where products pass in the whole frame: the region suggested when the region finds none."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.cli.run import main
from edge.config import TriggerConfig
from edge.decision import OccupancyTrigger, no_product_hint
from edge.demo import ROI, DemoLine
from edge.pipeline import Summary
from edge.region import RegionFinder, region_iou

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
