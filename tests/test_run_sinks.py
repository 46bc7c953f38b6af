"""Sinks and the overlay: the verdict log, snapshot retention, recording, the display check."""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import os
import re
import time
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import pytest

from edge.decision import TriggerState
from edge.overlay import OverlayState, box_to_pixels, draw_overlay
from edge.sinks import (
    FrameResult,
    SinkError,
    SnapshotSink,
    VerdictLog,
    VideoRecorder,
    display_available,
    verdict_record,
)
from edge.types import Frame, Outcome, Prediction, Verdict

ROI_PX = (160, 48, 320, 384)


def make_result(seq: int, outcome: Outcome = Outcome.MISSING, t: float = 1.7e9) -> FrameResult:
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


def test_a_small_frame_is_drawn_on_blown_up_so_its_text_can_be_read():
    image = np.full((16, 24, 3), 77, np.uint8)  # a folder's thumbnail-sized photo
    state = OverlayState(prediction=Prediction(0.9, box=(0.25, 0.5, 0.75, 1.0)), inspected=3, missing=1)
    out = draw_overlay(image, (0, 0, 24, 16), state)
    assert out.shape == (160, 240, 3)  # 10 times: the shorter side at least MIN_OVERLAY_SIDE
    assert tuple(out[5, 5]) == (77, 77, 77)  # each pixel a block
    assert tuple(out[8 * 10 + 30, 6 * 10]) == (60, 200, 60)  # the box's left edge, mapped
    assert (out[130:, :200] > 200).all(axis=-1).any()  # the counters' text, legible at that size
    image = np.full((180, 320, 3), 77, np.uint8)  # a small camera's frames: drawn on in place
    assert draw_overlay(image, (0, 0, 320, 180), state) is image


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
    assert first["frames"] == 2 and first["epoch"] == pytest.approx(1.7e9 + 1)
    assert dt.datetime.fromisoformat(first["time"]).timestamp() == pytest.approx(first["epoch"], abs=1e-3)
    assert records[2]["verdict"] == "OK"


def test_a_clock_that_is_wrong_or_steps_is_said_in_the_journal(tmp_path: Path, caplog):
    """The verdict times follow the wall clock, which on a Pi without a clock of its own may start
    in the past and jump when NTP answers; the operator is told, and seq keeps the order."""
    path = tmp_path / "verdicts.jsonl"
    now, real_time, shift = time.time(), time.time, [0.0]
    with caplog.at_level(logging.WARNING, logger="edge.sinks"):
        with mock.patch("time.time", lambda: real_time() + shift[0]), VerdictLog(path) as log:
            log.write(make_result(1, t=now - 1))
            time.sleep(0.3)  # time passing between verdicts is no step
            log.write(make_result(2, t=now - 2))
            assert "clock" not in caplog.text
            shift[0] = -7200.0  # set back two hours
            log.write(make_result(3, t=now - 7200))
            assert "the wall clock stepped back 2.0 h since the last verdict" in caplog.text
        caplog.clear()
        with VerdictLog(path):  # the log's last verdict two hours behind the clock: fine
            assert "clock" not in caplog.text
        with open(path, "a") as f:  # a verdict from when the clock was right, decades ahead
            f.write(
                json.dumps({**json.loads(path.read_text().splitlines()[-1]), "seq": 4, "epoch": now}) + "\n"
            )
        with mock.patch("time.time", return_value=2 * 86400.0), VerdictLog(path):  # started in 1970
            pass
    assert "the clock reads 1970-01-03" in caplog.text
    assert re.search(r"\b5\d years before the last verdict in the log", caplog.text)
    assert "seq keeps their order" in caplog.text


def test_snapshots_of_missing_products_honour_the_count_limit(tmp_path: Path):
    with SnapshotSink(tmp_path, max_count=3) as snaps:
        for seq in range(1, 7):
            snaps.write(make_result(seq, Outcome.MISSING if seq != 4 else Outcome.OK))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 6  # three products, clean + annotated
    assert [n.split("_")[1] for n in names[::2]] == ["000003", "000005", "000006"]
    clean = cv2.imread(str(tmp_path / names[1]))
    assert names[1].endswith("_clean.jpg") and clean.shape == (120, 160, 3)
    annotated = cv2.imread(str(tmp_path / names[0]))  # small: drawn on blown up, to be read
    assert names[0].endswith("_annotated.jpg") and annotated.shape == (240, 320, 3)
    assert not any(n.endswith(".tmp") for n in names)


def test_snapshots_pause_while_their_disk_is_nearly_full_and_resume_after(
    tmp_path: Path, monkeypatch, caplog
):
    """Snapshots, limited by count and bytes only, filled a small disk until the verdict log could
    not be written and the run stopped (a helper's tmpfs of 1 MB): they pause below a floor now."""
    import shutil

    from edge import sinks

    free = shutil.disk_usage(tmp_path).free
    with SnapshotSink(tmp_path / "snaps", max_count=10) as snaps:
        snaps.write(make_result(1, Outcome.MISSING))
        monkeypatch.setattr(sinks, "SNAPSHOT_MIN_FREE", free + 10**12)  # this disk: "nearly full"
        with caplog.at_level("WARNING"):
            for seq in (2, 3):
                snaps.write(make_result(seq, Outcome.MISSING))
            monkeypatch.setattr(sinks, "SNAPSHOT_MIN_FREE", 0)  # space freed
            snaps.write(make_result(4, Outcome.MISSING))
    seqs = sorted({p.name.split("_")[1] for p in (tmp_path / "snaps").iterdir()})
    assert seqs == ["000001", "000004"] and snaps.low_disk == 2
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and "snapshots paused" in said[0] and "kept for the verdict log" in said[0]
    assert "snapshots resumed (2 flagged products had none)" in said[1]


def test_after_a_restart_with_the_clock_behind_the_oldest_snapshots_go_first(tmp_path: Path):
    """A Raspberry Pi has no clock of its own: after a power cut it may start an hour behind (or in
    1970) until NTP answers. Snapshots named by that clock are not the oldest: with a verdict log
    the sequence numbers, which go on across restarts, say which are."""
    log = VerdictLog(tmp_path / "verdicts.jsonl")

    def run(seqs, t: float = 1.7e9, max_count: int = 1000) -> int:
        with log, SnapshotSink(tmp_path / "snaps", max_count, numbering=log) as snaps:
            for seq in seqs:
                result = make_result(seq, t=t)
                log.write(result)
                snaps.write(result)
            return snaps.count

    def kept() -> list[int]:
        return sorted({int(p.name.split("_")[1]) for p in (tmp_path / "snaps").iterdir()})

    run((1, 2, 3))
    run((4, 5, 6), t=1.7e9 - 3600)  # the clock an hour behind
    assert run((), max_count=4) == 4  # the next start
    assert kept() == [3, 4, 5, 6]
    # snapshots from before a numbering that started again (the log deleted): older than its own
    for p in (tmp_path / "snaps").iterdir():  # 13..16: from a numbering gone since
        stamp, seq, rest = p.name.split("_", 2)
        p.rename(p.with_name(f"{stamp}_{int(seq) + 10:06d}_{rest}"))
    (tmp_path / "verdicts.jsonl").unlink()
    (tmp_path / "verdicts.jsonl.next").unlink()
    assert run((1, 2), t=1.7e9 - 7200, max_count=4) == 4  # numbered from 1 again, the clock behind
    # the new numbering's are the newest; among the others the time in their names decides
    assert kept() == [1, 2, 13, 16]
    # without a verdict log the numbers start again at each run: the time in the names orders them
    with SnapshotSink(tmp_path / "snaps", max_count=3) as snaps:
        assert snaps.count == 3
    assert kept() == [2, 13, 16]  # 1 was named earliest


def test_a_snapshot_folder_has_one_keeper(tmp_path: Path):
    """Two lines given one snapshot folder: the second's retention would remove the first's."""
    folder = tmp_path / "snaps"
    with SnapshotSink(folder, max_count=3) as snaps:
        snaps.write(make_result(1))
        with pytest.raises(SinkError, match=r"output.snapshots .*snaps: another process keeps snapshots"):
            SnapshotSink(folder, max_count=1).__enter__()
        snaps.write(make_result(2))
    assert {int(p.name.split("_")[1]) for p in folder.iterdir()} == {1, 2}  # none removed
    with SnapshotSink(folder, max_count=1) as snaps:  # free once the first has closed
        assert snaps.count == 1


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


def test_a_recording_that_replaces_a_file_says_so(tmp_path: Path, caplog):
    path = tmp_path / "out.mp4"
    with caplog.at_level("WARNING"), VideoRecorder(path, fps=30):
        pass  # a new file: nothing said
    assert "replaced" not in caplog.text
    path.write_bytes(b"\0" * 300_000)  # an earlier run's recording
    with caplog.at_level("WARNING"), VideoRecorder(path, fps=30):
        pass
    assert f"{path}: replaced by this run's recording (the file there held 0.3 MB)" in caplog.text


def test_recorder_stops_before_its_disk_is_full_and_leaves_a_file_that_plays(
    tmp_path: Path, caplog, monkeypatch
):
    """OpenCV's writer says nothing when a write fails, and an .mp4 cut off by a full disk does
    not play at all: the recorder looks at the free space and finishes the file in time, once said."""
    import shutil

    from edge import sinks

    real = shutil.disk_usage
    calls = []

    def disk_usage(path):  # the OS boundary: the disk fills up after the third look
        calls.append(path)
        usage = real(path)
        return usage._replace(free=sinks.RECORD_MIN_FREE - 1) if len(calls) > 3 else usage

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    path = tmp_path / "out.mp4"
    with caplog.at_level(logging.WARNING, logger="edge.sinks"), VideoRecorder(path, fps=30) as rec:
        for seq in range(100):
            r = make_result(seq)
            rec.write(FrameResult(r.frame, ROI_PX, None, TriggerState(), None, r.frame.image.copy()))
    assert rec.frames == 2 * sinks.RECORD_FREE_EVERY and rec.stopped is not None
    cap = cv2.VideoCapture(str(path))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == rec.frames and cap.read()[0]
    said = [m for m in caplog.messages if "recording stopped" in m]
    assert len(said) == 1 and f"{path}: recording stopped after {rec.frames} frames" in said[0]
    with pytest.raises(SinkError, match=r"out2\.mp4: cannot record: .* MB free on its disk"):
        with VideoRecorder(tmp_path / "out2.mp4", fps=30):
            pass


@pytest.mark.parametrize(
    ("step_s", "live", "said"), [(0.1, True, "plays 3.0x faster"), (1 / 30, True, None), (0.1, False, None)]
)
def test_a_recording_that_plays_faster_than_the_line_ran_says_so(tmp_path: Path, caplog, step_s, live, said):
    """A loop that drops frames writes fewer of them than the camera gave, at the camera's rate."""
    with VideoRecorder(tmp_path / "out.mp4", fps=30, live=live) as rec, caplog.at_level(logging.WARNING):
        for i in range(31):
            frame = Frame(np.zeros((48, 64, 3), np.uint8), t_capture=100 + i * step_s, index=i)
            rec.write(FrameResult(frame, (0, 0, 64, 48), None, TriggerState(), None, None))
    lines = [r.getMessage() for r in caplog.records if "faster than the line ran" in r.getMessage()]
    if said is None:
        assert not lines
    else:
        assert len(lines) == 1 and said in lines[0] and "kept up with 10.0 frames/s" in lines[0], lines


def test_display_is_refused_with_a_reason_where_there_is_none(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    reason = display_available()
    assert reason is not None and "--display" in reason


def test_verdict_log_leaves_no_part_of_a_line_a_full_disk_refused(tmp_path: Path, monkeypatch):
    path = tmp_path / "verdicts.jsonl"
    real_write = os.write
    with VerdictLog(path) as log:
        log.write(make_result(1))
        calls = []

        def full_disk(fd, data):  # the disk takes 10 bytes of the line, then refuses
            calls.append(len(data))
            if len(calls) == 1:
                return real_write(fd, bytes(data[:10]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "write", full_disk)
        with pytest.raises(SinkError, match="No space left on device"):
            log.write(make_result(2))
        monkeypatch.setattr(os, "write", real_write)
    assert len(calls) == 2  # the short write was followed up, not taken as done
    assert [json.loads(line)["seq"] for line in path.read_text().splitlines()] == [1]
    with VerdictLog(path) as log:
        assert log.next_seq == 2


def test_verdict_log_continues_from_the_last_well_formed_line(tmp_path: Path):
    path = tmp_path / "verdicts.jsonl"
    path.write_text('{"seq":4,"product_id":7}\n{"seq":"x","product_id":8}\n{"seq":5,"product_id":null}\n')
    with VerdictLog(path) as log:
        assert (log.next_seq, log.next_product) == (5, 8)


def test_verdict_log_has_one_writer_and_must_be_a_file(tmp_path: Path):
    path = tmp_path / "verdicts.jsonl"
    with VerdictLog(path):
        with pytest.raises(
            SinkError, match=r"output\.events .*: another process is writing this verdict log"
        ):
            VerdictLog(path).__enter__()
    with VerdictLog(path) as log:  # free again once the first has closed
        log.write(make_result(1))
    with pytest.raises(SinkError, match="not a regular file"):
        VerdictLog("/dev/null").__enter__()
    with pytest.raises(SinkError, match="not a regular file"):
        VerdictLog(tmp_path).__enter__()


def test_snapshots_leave_no_temporary_files_when_the_disk_is_full(tmp_path: Path, monkeypatch):
    stale = tmp_path / "20260101T000000.000_000001_p1_clean.tmp"  # left by a power cut
    stale.write_bytes(b"half a jpeg")
    with SnapshotSink(tmp_path) as snaps:
        assert not stale.exists()

        def full_disk(src, dst):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "replace", full_disk)
        snaps.write(make_result(1))  # logged as a warning: the inspection goes on
        assert snaps.failed == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["out.txt", "out"])
def test_recorder_refuses_a_file_type_it_cannot_write_before_the_first_frame(tmp_path: Path, name):
    with pytest.raises(SinkError, match="cannot record to this file type"):
        VideoRecorder(tmp_path / name, 30).__enter__()


def test_numbering_continues_when_the_log_is_moved_away(tmp_path: Path):
    path = tmp_path / "verdicts.jsonl"
    with VerdictLog(path) as log:
        for seq in (1, 2, 3):
            log.write(make_result(seq))
    path.rename(tmp_path / "verdicts.jsonl.1")  # archived by the operator
    with VerdictLog(path) as log:  # a consumer has seen 1-3: they must not come again
        assert (log.next_seq, log.next_product) == (4, 104)
    path.write_text('{"seq":9,"product_id":200}\n')  # a log ahead of the numbering file wins
    with VerdictLog(path) as log:
        assert (log.next_seq, log.next_product) == (10, 201)


def test_verdict_log_rotates_keeps_the_newest_files_and_the_numbering_goes_on(tmp_path: Path):
    path = tmp_path / "verdicts.jsonl"
    line = len(json.dumps(verdict_record(make_result(1).verdict, ROI_PX), separators=(",", ":"))) + 1
    with VerdictLog(path, max_bytes=3 * line, keep=2) as log:
        for seq in range(1, 21):
            log.write(make_result(seq))
        assert log.rotations == 6  # after every third verdict
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "verdicts.jsonl",
        "verdicts.jsonl.1",
        "verdicts.jsonl.2",
        "verdicts.jsonl.next",
    ]
    files = [path.with_name("verdicts.jsonl.2"), path.with_name("verdicts.jsonl.1"), path]  # oldest first
    seqs = [[json.loads(x)["seq"] for x in p.read_text().splitlines()] for p in files]
    assert seqs == [[13, 14, 15], [16, 17, 18], [19, 20]]  # 1-12 went with the oldest files
    with VerdictLog(path, max_bytes=3 * line, keep=2) as log:
        log.write(make_result(log.next_seq))
        log.write(make_result(log.next_seq + 1))
    assert [json.loads(x)["seq"] for x in path.with_name("verdicts.jsonl.1").read_text().splitlines()] == [
        19,
        20,
        21,
    ]
    assert [json.loads(x)["seq"] for x in path.read_text().splitlines()] == [22]


def test_a_verdict_log_that_cannot_rotate_goes_on_growing_and_loses_nothing(tmp_path: Path, caplog):
    path = tmp_path / "verdicts.jsonl"
    (tmp_path / "verdicts.jsonl.1").mkdir()  # in the way of the rotation
    line = len(json.dumps(verdict_record(make_result(1).verdict, ROI_PX), separators=(",", ":"))) + 1
    with VerdictLog(path, max_bytes=2 * line, keep=1) as log:
        for seq in range(1, 8):
            log.write(make_result(seq))
        assert log.rotations == 0
    assert [json.loads(x)["seq"] for x in path.read_text().splitlines()] == list(range(1, 8))
    warnings = [r.message for r in caplog.records if "cannot rotate" in r.message]
    assert len(warnings) == 3  # at 2, 4 and 6 lines: not on every verdict


def _seqs(path: Path) -> list[int]:
    return [json.loads(x)["seq"] for x in path.read_text().splitlines()]


def test_a_verdict_log_removed_or_moved_away_while_written_begins_anew_and_says_so(tmp_path: Path, caplog):
    """Removed (rm) or moved away (mv) while edge-run writes it: every later verdict went into the
    file no longer at the path, unsaid; now a new log begins there, numbered on, and it is said."""
    path = tmp_path / "verdicts.jsonl"
    with VerdictLog(path) as log:
        log.write(make_result(1))
        path.unlink()
        log.write(make_result(2))
        path.rename(tmp_path / "archived.jsonl")
        log.write(make_result(3))
        log.write(make_result(4))
    assert _seqs(tmp_path / "archived.jsonl") == [2] and _seqs(path) == [3, 4]
    said = [r.getMessage() for r in caplog.records if "while edge-run wrote it" in r.getMessage()]
    assert len(said) == 2 and all("the verdict log was removed while edge-run wrote it" in s for s in said)


def test_rotation_keeps_the_newest_files_by_count_whatever_their_numbers(tmp_path: Path, caplog):
    caplog.set_level(logging.INFO, "edge.sinks")
    path = tmp_path / "verdicts.jsonl"
    line = len(json.dumps(verdict_record(make_result(1).verdict, ROI_PX), separators=(",", ":"))) + 1
    with VerdictLog(path, max_bytes=2 * line, keep=6) as log:
        for seq in range(1, 15):
            log.write(make_result(seq))
    (tmp_path / "verdicts.jsonl.3").rename(tmp_path / "archived.jsonl")  # a gap, by hand
    (tmp_path / "verdicts.jsonl.20260101").write_text("an archive copy: not a rotated log\n")
    (tmp_path / "verdicts.jsonl.2026").write_text("so is a year's (it was renamed, then removed)\n")
    (tmp_path / "verdicts.jsonl.next").write_text("3 3\n")  # numbering lost in a power cut
    with VerdictLog(path, max_bytes=2 * line, keep=2) as log:  # fewer kept from now on
        assert log.next_seq == 15  # from the newest rotated file: the log itself is empty
        for seq in range(15, 17):
            log.write(make_result(seq))
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("verdicts.jsonl."))
    assert names == [
        "verdicts.jsonl.1",
        "verdicts.jsonl.2",
        "verdicts.jsonl.2026",
        "verdicts.jsonl.20260101",
        "verdicts.jsonl.next",
    ]
    assert (tmp_path / "verdicts.jsonl.2026").read_text().startswith("so is a year's")
    assert _seqs(tmp_path / "verdicts.jsonl.2") == [13, 14] and _seqs(tmp_path / "verdicts.jsonl.1") == [
        15,
        16,
    ]
    assert "removed 4 older verdict logs beyond events_keep = 2" in caplog.text


def test_a_directory_in_the_way_stops_rotation_and_is_left_alone(tmp_path: Path, caplog):
    path = tmp_path / "verdicts.jsonl"
    (tmp_path / "verdicts.jsonl.1").mkdir()
    (tmp_path / "verdicts.jsonl.1" / "precious.txt").write_text("mine")
    with VerdictLog(path, max_bytes=1, keep=3) as log:
        for seq in (1, 2):
            log.write(make_result(seq))
    assert _seqs(path) == [1, 2] and (tmp_path / "verdicts.jsonl.1" / "precious.txt").read_text() == "mine"
    assert f"{tmp_path / 'verdicts.jsonl.1'} is in the way (not a regular file)" in caplog.text


@pytest.mark.parametrize(
    "content",
    [
        b"important notes, no newline at the end",
        b'{"made_by": "scripts/make_demo_video.py"}\n{"seq": 1}\n',
        b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4,
        b"not a log\n" + b'{"seq":1,"product_id":1}\n',
    ],
)
def test_verdict_log_refuses_a_file_that_is_not_one_and_leaves_it_as_it_was(tmp_path: Path, content: bytes):
    path = tmp_path / "named-by-mistake"
    path.write_bytes(content)
    with pytest.raises(SinkError, match="not a verdict log"):
        VerdictLog(path).__enter__()
    assert path.read_bytes() == content
    assert not (tmp_path / "named-by-mistake.next").exists()


@pytest.mark.parametrize("torn", [b'{"seq":1,"product_id":1,"ti', b'{"se', b"{", b"\0" * 300])
def test_verdict_log_whose_only_line_was_torn_is_cut_and_written_on(tmp_path: Path, torn: bytes):
    path = tmp_path / "verdicts.jsonl"
    path.write_bytes(torn)  # a power cut while the first line was written (its blocks maybe zeroed)
    with VerdictLog(path) as log:
        assert (log.next_seq, log.next_product) == (1, 1)
        log.write(make_result(1))
    assert [json.loads(line)["seq"] for line in path.read_text().splitlines()] == [1]


def test_recorder_keeps_every_pixel_of_an_odd_sized_frame(tmp_path: Path):
    path = tmp_path / "odd.mp4"
    image = np.zeros((45, 63, 3), np.uint8)
    image[:, -1] = 255  # the last column, which an even-sized encoder would drop
    frame = Frame(image, t_capture=0.0, index=0)
    with VideoRecorder(path, fps=10) as rec:
        for _ in range(3):
            rec.write(FrameResult(frame, (0, 0, 63, 45), None, TriggerState(), None, image.copy()))
    cap = cv2.VideoCapture(str(path))
    ok, back = cap.read()
    cap.release()
    assert ok and back.shape == (46, 64, 3)
    assert back[:45, 62].mean() > 200 and back[:45, :60].mean() < 30  # the white column is there


def test_recorder_that_cannot_create_its_file_says_why_before_the_first_frame(tmp_path: Path):
    with pytest.raises(SinkError, match=r"/proc/stampline-test\.mp4: cannot record \("):
        VideoRecorder("/proc/stampline-test.mp4", 30).__enter__()
    with VideoRecorder(tmp_path / "new.mp4", 30):
        assert not (tmp_path / "new.mp4").exists()  # tried, not left behind before the first frame


def test_a_centre_models_verdict_says_where_it_saw_the_stamp():
    from edge.config import DecisionConfig
    from edge.decision import Decider

    decider = Decider(0.5, DecisionConfig(), 1, "abc", ("stamp",))
    frames = [Frame(np.zeros((120, 160, 3), np.uint8), t_capture=i, index=i) for i in range(3)]
    centres = [(0.2, 0.3), (0.5, 0.25), (0.4, 0.6)]
    verdict = None
    for f, c, score in zip(frames, centres, (0.7, 0.95, 0.8), strict=True):
        state = TriggerState(product=1, ended=1 if f.index == 2 else None, occupancy=1.0)
        verdict = decider.update(f, state, Prediction(presence=score, center=c)) or verdict
    assert verdict is not None and verdict.box is None and verdict.center == (0.5, 0.25)  # the best frame's
    rec = verdict_record(verdict, ROI_PX)
    assert rec["center"] == [0.5, 0.25] and rec["center_px"] == [160 + 160, 48 + 96]
    assert rec["box"] is None
    assert "center" not in verdict_record(make_result(1).verdict, ROI_PX)  # a box model's: its box


def test_scores_are_shown_rounded_down_so_none_reads_as_the_threshold_it_missed():
    from edge.overlay import score_text

    assert [score_text(s) for s in (0.4961, 0.5, 0.9961, 0.0)] == ["0.49", "0.50", "0.99", "0.00"]
    assert [score_text(s) for s in (0.29, 0.57, 0.58, 1.0)] == ["0.29", "0.57", "0.58", "1.00"]


def test_a_flagged_product_gets_one_line_saying_why():
    import dataclasses

    from edge.pipeline import flag_line

    missing = make_result(3).verdict  # product 103, frames (3, 4), no hits, score 0.2
    assert flag_line(missing) == "product 103 MISSING (0 of 2 frames saw a stamp, best score 0.20)"
    wrong = dataclasses.replace(missing, outcome=Outcome.WRONG, label="inspected", hits=2, score=0.995)
    said = flag_line(wrong, "qc-passed")
    assert said.startswith("product 103 WRONG: carries 'inspected', expected 'qc-passed' (")
    assert said.endswith("(2 of 2 frames saw a stamp, best score 0.99)")
    photo = dataclasses.replace(missing, evidence=dataclasses.replace(missing.evidence, name="box 17.jpg"))
    assert (
        flag_line(photo)
        == "product 103 MISSING (photo box 17.jpg: 0 of 2 frames saw a stamp, best score 0.20)"
    )


def test_flagged_lines_are_at_most_five_a_second_and_say_how_many_were_left_out(monkeypatch, caplog):
    import edge.pipeline as P

    clock = [100.2]
    monkeypatch.setattr(P.time, "monotonic", lambda: clock[0])
    lines = P.FlagLines()
    with caplog.at_level(logging.WARNING, logger="edge.pipeline"):
        for _ in range(12):  # a fixture station judging every frame, all flagged
            lines.add(make_result(1).verdict, None)
        clock[0] = 101.1
        lines.add(make_result(2).verdict, None)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 6 and all(m.startswith("product 10") for m in said)
    assert said[-1].endswith("; 7 more flagged before it not shown (--events logs every one)")


def test_recorder_fits_a_frame_of_another_size_whole_with_its_aspect(tmp_path: Path):
    path = tmp_path / "mixed.mp4"
    first = np.zeros((120, 160, 3), np.uint8)
    tall = np.full((200, 100, 3), 255, np.uint8)  # a portrait photo after a landscape one
    with VideoRecorder(path, fps=10) as rec:
        for image in (first, tall, tall):
            frame = Frame(image, t_capture=0.0, index=0)
            rec.write(
                FrameResult(frame, (0, 0, *image.shape[1::-1]), None, TriggerState(), None, image.copy())
            )
    cap = cv2.VideoCapture(str(path))
    cap.read()
    ok, back = cap.read()
    cap.release()
    assert ok and back.shape == (120, 160, 3)
    white = back.mean(axis=2) > 128
    cols = np.nonzero(white.any(axis=0))[0]
    assert 55 <= cols.size <= 65 and abs(cols.mean() - 80) < 3  # 100x200 -> 60x120, centred
    assert white.any(axis=1).sum() >= 115  # its full height


def test_a_json_output_is_written_whole_or_not_at_all(tmp_path: Path, monkeypatch):
    """The summary and report files: a disk that fills while writing leaves the previous file as it
    was (not an empty or cut one), no temporary file, and an error that names the file."""
    from edge.cli.common import os_error_text, write_json

    out = tmp_path / "summary.json"
    write_json(out, {"frames": 1, "fps": float("nan")})
    assert json.loads(out.read_text()) == {"frames": 1, "fps": None}

    def disk_full(fd):  # the OS boundary: the data does not reach the disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError) as caught:
        write_json(out, {"frames": 2})
    assert os_error_text(caught.value) == f"{out}: {os.strerror(errno.ENOSPC)}"
    assert json.loads(out.read_text()) == {"frames": 1, "fps": None}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_summary_on_a_full_device_is_a_one_line_error_naming_it(capsys):
    from edge.cli.run import main

    assert main(["--demo", "--max-frames", "5", "--as-fast-as-possible", "--summary", "/dev/full"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"edge-run: error: /dev/full: {os.strerror(28)}"


def test_log_lines_keep_the_tools_format_after_a_library_logs_at_the_root(monkeypatch, capsys):
    """TensorFlow's converter calls logging.warning, which set the bare WARNING:edge.synth:...
    format for edge-convert's own lines after it; the tools set theirs first, and write to the
    stderr of the moment."""
    from edge.cli.common import log_to_stderr

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", logging.WARNING)
    log_to_stderr("edge-convert")
    logging.warning("from a library")
    logging.getLogger("edge.synth").warning("backgrounds folder bgs: 2 files skipped")
    logging.getLogger("edge.synth").info("not shown")
    assert capsys.readouterr().err.splitlines() == [
        "edge-convert: WARNING: from a library",
        "edge-convert: WARNING: backgrounds folder bgs: 2 files skipped",
    ]


def test_a_torn_last_line_is_kept_beside_the_log_and_a_whole_one_without_newline_is_kept_in_it(
    tmp_path: Path, caplog
):
    path = tmp_path / "verdicts.jsonl"
    with VerdictLog(path) as log:
        for seq in (1, 2):
            log.write(make_result(seq))
    whole = path.read_bytes()
    torn = b'{"seq":3,"product_id":103,"verdict":"MISS'
    path.write_bytes(whole + torn)
    with caplog.at_level("WARNING"), VerdictLog(path) as log:
        assert log.next_seq == 3
    assert path.read_bytes() == whole
    assert (tmp_path / "verdicts.jsonl.torn").read_bytes() == torn + b"\n"
    assert "kept in verdicts.jsonl.torn" in caplog.text
    # a log whose last, whole record lost only its newline (saved by an editor) keeps the record
    path.write_bytes(whole.rstrip(b"\n"))
    with VerdictLog(path) as log:
        assert log.next_seq == 3
        log.write(make_result(3))
    assert [json.loads(line)["seq"] for line in path.read_text().splitlines()] == [1, 2, 3]
    assert (tmp_path / "verdicts.jsonl.torn").read_bytes() == torn + b"\n"  # nothing more cut


def test_a_whole_write_goes_through_links_keeps_permissions_and_writes_streams_in_place(tmp_path: Path):
    """A review's findings in the one writer of reports, images and annotations: it replaced a link
    with a file (the file the link named kept its old content), gave an existing 0640 file 0644,
    and renamed a file over a link to ``/proc/self/fd/1`` (``--json /dev/stdout`` redirected to a
    file: the output was lost, and as root the system's /dev/stdout link was replaced)."""
    import stat

    from edge.files import write_whole

    real = tmp_path / "store" / "per_image.csv"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "per_image.csv"
    link.symlink_to(real)
    write_whole(link, "new\n")
    assert link.is_symlink() and real.read_text() == "new\n"

    kept = tmp_path / "sheet.png"
    kept.write_bytes(b"x")
    kept.chmod(0o640)
    write_whole(kept, b"y")
    assert kept.read_bytes() == b"y" and stat.S_IMODE(kept.stat().st_mode) == 0o640

    redirected = tmp_path / "redirected.json"
    with redirected.open("w") as out:
        stdout = tmp_path / "dev_stdout"  # what /dev/stdout is: a link to the process's fd
        stdout.symlink_to(f"/proc/self/fd/{out.fileno()}")
        write_whole(stdout, '{"a": 1}\n')
    assert stdout.is_symlink() and redirected.read_text() == '{"a": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dev_stdout",
        "per_image.csv",
        "redirected.json",
        "sheet.png",
        "store",
    ]
