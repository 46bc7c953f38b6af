"""Sinks and the overlay: the verdict log, snapshot retention, recording, the display check."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.decision import TriggerState
from edge.overlay import OverlayState, box_to_pixels, draw_overlay
from edge.sinks import FrameResult, SinkError, SnapshotSink, VerdictLog, VideoRecorder, display_available
from edge.types import Frame, Outcome, Prediction, Verdict

ROI_PX = (160, 48, 320, 384)


def make_result(seq: int, outcome: Outcome = Outcome.MISSING, t: float = 1.8e9) -> FrameResult:
    rng = np.random.default_rng(seq)
    frame = Frame(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), t_capture=seq, index=seq)
    pred = Prediction(presence=0.2, box=(0.1, 0.2, 0.3, 0.4))
    verdict = Verdict(
        seq=seq,
        product_id=100 + seq,
        outcome=outcome,
        wall_time=t + seq,
        score=0.2,
        box=pred.box,
        frames=(seq, seq + 1),
        evidence=frame,
        evidence_prediction=pred,
        hits=0,
        model_id="abc",
    )
    return FrameResult(frame, ROI_PX, pred, TriggerState(ended=100 + seq), verdict)


@pytest.mark.parametrize(
    ("box", "roi_px", "expected"),
    [
        ((0.0, 0.0, 1.0, 1.0), (0, 0, 640, 480), (0, 0, 640, 480)),
        ((0.0, 0.0, 1.0, 1.0), ROI_PX, (160, 48, 480, 432)),
        ((0.25, 0.5, 0.75, 1.0), ROI_PX, (240, 240, 400, 432)),
        ((0.5, 0.5, 0.5, 0.5), (10, 20, 100, 50), (60, 45, 60, 45)),
    ],
)
def test_boxes_map_from_the_region_to_frame_pixels(box, roi_px, expected):
    assert box_to_pixels(box, roi_px) == expected


def test_overlay_draws_in_place_and_only_there():
    image = np.zeros((480, 640, 3), np.uint8)
    state = OverlayState(prediction=Prediction(0.9, box=(0.25, 0.5, 0.75, 1.0)), inspected=3, missing=1)
    out = draw_overlay(image, ROI_PX, state)
    assert out is image
    # the stamp box is green at its mapped corners
    assert tuple(image[240, 300]) == (60, 200, 60)
    assert image.any()


def test_verdict_log_appends_across_restarts_and_repairs_a_torn_line(tmp_path: Path):
    path = tmp_path / "log" / "verdicts.jsonl"
    with VerdictLog(path) as log:
        assert (log.next_seq, log.next_product) == (1, 1)
        for seq in (1, 2):
            log.write(make_result(seq))
        log.write(FrameResult(make_result(3).frame, ROI_PX, None, TriggerState()))  # no verdict: no line
    with open(path, "ab") as f:
        f.write(b'{"seq": 3, "product_id": 10')  # a power cut mid-line
    with VerdictLog(path) as log:
        assert (log.next_seq, log.next_product) == (3, 103)
        log.write(make_result(3, Outcome.OK))
    lines = path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["seq"] for r in records] == [1, 2, 3]
    first = records[0]
    assert first["verdict"] == "MISSING" and first["product_id"] == 101 and first["model_id"] == "abc"
    assert first["box"] == [0.1, 0.2, 0.3, 0.4] and first["box_px"] == [192, 125, 256, 202]
    assert first["frames"] == 2 and first["epoch"] == pytest.approx(1.8e9 + 1)
    assert dt.datetime.fromisoformat(first["time"]).timestamp() == pytest.approx(first["epoch"], abs=1e-3)
    assert records[2]["verdict"] == "OK"


def test_snapshots_of_missing_products_honour_the_count_limit(tmp_path: Path):
    with SnapshotSink(tmp_path, max_count=3) as snaps:
        for seq in range(1, 7):
            snaps.write(make_result(seq, Outcome.MISSING if seq != 4 else Outcome.OK))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 6  # three products, clean + annotated
    assert [n.split("_")[1] for n in names[::2]] == ["000003", "000005", "000006"]
    clean = cv2.imread(str(tmp_path / names[0]))
    assert clean.shape == (120, 160, 3)
    assert not any(n.endswith(".tmp") for n in names)


def test_snapshot_byte_limit_also_applies_to_what_was_there(tmp_path: Path):
    with SnapshotSink(tmp_path) as snaps:
        for seq in range(1, 5):
            snaps.write(make_result(seq))
        one = snaps.bytes / snaps.count
    with SnapshotSink(tmp_path, max_bytes=int(2.5 * one)) as snaps:
        assert snaps.count == 2  # pruned on opening
        snaps.write(make_result(5))
        assert snaps.count == 2 and snaps.bytes <= 2.5 * one
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= 2.5 * one


def test_recorder_writes_the_annotated_stream(tmp_path: Path):
    path = tmp_path / "out.mp4"
    with VideoRecorder(path, fps=30) as rec:
        for seq in range(10):
            r = make_result(seq)
            rec.write(FrameResult(r.frame, ROI_PX, None, TriggerState(), None, r.frame.image.copy()))
    cap = cv2.VideoCapture(str(path))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 10
    with pytest.raises(SinkError, match="does not exist"), VideoRecorder(tmp_path / "no" / "x.mp4", 30):
        pass


def test_display_is_refused_with_a_reason_where_there_is_none(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    reason = display_available()
    assert reason is not None and "--display" in reason
