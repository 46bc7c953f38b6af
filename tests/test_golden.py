"""Golden test: the committed bundled model on committed images gives the recorded outputs.

Catches any change in preprocessing, output binding, dequantization or decoding on the device
path. Regenerate with scripts/make_golden.py when the bundled model changes on purpose.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge import contract
from edge.metrics import iou
from edge.runtime import BUNDLED_MODEL, TFLiteDetector

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())


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


def test_golden_set_is_mostly_right(detector):
    """The recorded outputs are not just stable but correct on most of these images."""
    rows = EXPECTED["images"]
    right = [(r["presence"] >= 0.5) == r["truth_present"] for r in rows]
    assert np.mean(right) >= 0.75
    pos = [r for r in rows if r["truth_present"] and r["presence"] >= 0.5]
    ious = iou(np.array([r["box"] for r in pos]), np.array([r["truth_box"] for r in pos]))
    assert pos and np.mean(ious) > 0.5
