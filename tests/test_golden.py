"""Golden test: the committed bundled model on committed images gives the recorded outputs.

The model inputs (NN.png) catch a change in output binding, dequantization or decoding; the demo
line's camera frames (frame_NNNN.jpg) go the whole device path as edge-run does (the region cut
and scaled by the contract, BGR to RGB, the first look, the model's own second looks), with frames
the model is unsure of, where a change of preprocessing or rounding shows first. Regenerate with
scripts/make_golden.py when the bundled model changes on purpose (--frames-only: the frames alone).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge import contract
from edge.metrics import iou
from edge.runtime import BUNDLED_MODEL, TFLiteDetector, look_again

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())
FRAMES = EXPECTED["frames"]
#: an int8 presence moves in steps of 1/256: two of them
PRESENCE_TOL = 0.008
BOX_TOL = 0.01


@pytest.fixture(scope="module")
def detector():
    return TFLiteDetector()


def test_bundled_model_is_the_one_the_golden_outputs_came_from(detector):
    assert detector.model_id == EXPECTED["model_id"], "bundled model changed: run scripts/make_golden.py"


def test_bundled_model_metadata(detector):
    meta = detector.metadata
    assert meta.kind == "box" and meta.labels == ("stamp",)
    assert meta.contract_version == contract.CONTRACT_VERSION
    expected = {"training_data", "seed", "trained", "validation", "calibration", "agreement"}
    assert expected <= set(meta.provenance)
    assert BUNDLED_MODEL.stat().st_size <= 600_000


@pytest.mark.parametrize("row", EXPECTED["images"], ids=lambda r: r["image"])
def test_golden_outputs(detector, row):
    image = cv2.cvtColor(cv2.imread(str(GOLDEN / row["image"])), cv2.COLOR_BGR2RGB)
    assert image.shape == contract.INPUT_SHAPE
    pred = detector.predict(image)
    assert pred.presence == pytest.approx(row["presence"], abs=0.03)
    assert np.allclose(pred.box, row["box"], atol=0.02)


def test_golden_set_is_right(detector):
    """The model's outputs now (not the recorded ones) are right on every one of these images,
    with boxes as close to the truth as when they were recorded (mean IoU 0.94)."""
    rows = EXPECTED["images"]
    preds = [
        detector.predict(cv2.cvtColor(cv2.imread(str(GOLDEN / r["image"])), cv2.COLOR_BGR2RGB)) for r in rows
    ]
    assert [p.presence >= 0.5 for p in preds] == [r["truth_present"] for r in rows]
    pos = [(p, r) for p, r in zip(preds, rows, strict=True) if r["truth_present"]]
    ious = iou(np.array([p.box for p, _ in pos]), np.array([r["truth_box"] for _, r in pos]))
    assert len(pos) >= 4 and np.mean(ious) >= 0.9 and min(ious) >= 0.75, ious


@pytest.mark.parametrize("row", FRAMES["rows"], ids=lambda r: f"{r['image']}-{r['kind']}")
def test_the_device_path_on_camera_frames(detector, row):
    """A 640x480 BGR frame as the camera gives it, through what edge-run does with it."""
    frame = cv2.imread(str(GOLDEN / row["image"]))
    assert frame.shape == (480, 640, 3)
    roi = tuple(FRAMES["roi"])
    first = detector.predict(contract.prepare_input(frame, roi))
    assert first.presence == pytest.approx(row["presence"], abs=PRESENCE_TOL)
    assert np.allclose(first.box, row["box"], atol=BOX_TOL), first.box
    assert detector.metadata.refine == FRAMES["refine"]  # the second looks edge-run takes by default
    x, y, w, h = contract.roi_pixels(frame.shape, roi)
    again = look_again(detector, frame[y : y + h, x : x + w], first, FRAMES["refine"])
    assert again.presence == pytest.approx(row["refined_presence"], abs=PRESENCE_TOL)
    assert np.allclose(again.box, row["refined_box"], atol=BOX_TOL), again.box
    # and the frames are what their kind says (the recorded outputs were not wrong to begin with)
    if row["kind"] == "stamped":
        assert again.presence >= 0.9
    elif row["kind"] in ("unstamped", "belt"):
        assert again.presence < 0.1
    else:
        assert 0.2 < first.presence < 0.9


def test_the_golden_frames_hold_each_kind():
    kinds = [r["kind"] for r in FRAMES["rows"]]
    assert {"stamped", "unstamped", "belt", "unsure"} <= set(kinds) and kinds.count("unsure") >= 2
