"""edge-run end to end with the bundled model: the demo line and a recorded video against their
ground truth, a SIGKILL mid-run, clean stops, bad input, odd frames, systemd notifications."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.cli.run import main
from edge.runtime import BUNDLED_MODEL, RUNTIME_BANNERS, runtime_banners_dropped

FIXTURES = Path(__file__).resolve().parent / "fixtures"
VIDEO = FIXTURES / "demo_line.mp4"
EDGE_RUN = [sys.executable, "-m", "edge.cli.run"]

needs_model = pytest.mark.skipif(not BUNDLED_MODEL.is_file(), reason=f"{BUNDLED_MODEL} not built yet")


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@needs_model
@pytest.mark.parametrize("seed", [1, 6])
def test_demo_line_gives_one_right_verdict_per_product(tmp_path: Path, seed: int, capsys, caplog):
    summary, events = tmp_path / "summary.json", tmp_path / "verdicts.jsonl"
    argv = ["--demo", "--seed", str(seed), "--as-fast-as-possible", "--max-frames", "1800"]
    with caplog.at_level(logging.WARNING, logger="edge.pipeline"):
        assert main([*argv, "--summary", str(summary), "--events", str(events)]) == 0
    s = json.loads(summary.read_text())
    out = capsys.readouterr().out
    assert s["frames"] == 1800 and s["dropped"] == 0  # 60 s of the line at 30 fps
    assert s["truth_products"] >= 25
    assert s["products"] == s["truth_products"], out
    assert s["correct"] == s["truth_products"], out
    assert s["missing"] == s["truth_missing"]
    for key in ("fps", "latency_ms_p50", "latency_ms_p99"):
        assert s[key] > 0
    log = read_log(events)
    assert [r["seq"] for r in log] == list(range(1, s["products"] + 1))
    assert all(r["verdict"] == r["truth"]["expected"] for r in log)
    assert all(r["truth"]["product"] == r["product_id"] for r in log)  # one numbering
    assert f"correct     {s['correct']}/{s['truth_products']}" in out
    # each flagged product has its line in the journal, the same as its verdict log line
    flagged = [m.getMessage() for m in caplog.records if " MISSING (" in m.getMessage()]
    missing = [r for r in log if r["verdict"] == "MISSING"]
    assert [m.split()[1] for m in flagged] == [str(r["product_id"]) for r in missing]
    assert all(
        f"{r['hits']} of {r['frames']} frames saw a stamp" in m for m, r in zip(flagged, missing, strict=True)
    )


@needs_model
def test_recorded_video_gives_its_known_verdicts(tmp_path: Path, capsys):
    meta = json.loads(VIDEO.with_suffix(".json").read_text())
    assert VIDEO.stat().st_size < 1_000_000
    events = tmp_path / "verdicts.jsonl"
    roi = ",".join(str(v) for v in meta["roi"])
    argv = ["--video", str(VIDEO), "--as-fast-as-possible", "--roi", roi, "--events", str(events)]
    assert main(argv) == 0
    width, height = meta["size"]
    assert (
        f"{VIDEO}, {width}x{height}, {meta['fps']:g} fps, as fast as possible, model"
        in capsys.readouterr().out
    )
    log = read_log(events)
    assert [r["verdict"] for r in log] == meta["verdicts"]
    for record, product in zip(log, meta["products"], strict=True):
        assert (
            product["first_frame"] <= record["frame_first"] <= record["frame_last"] <= product["last_frame"]
        )


@needs_model
def test_a_video_begun_with_a_product_passing_says_it_was_not_judged(tmp_path: Path, capsys):
    """The recorded line from frame 80, while its first product crosses: the belt is learned once
    it has passed, the other products get their verdicts, and the run says one went unjudged."""
    meta = json.loads(VIDEO.with_suffix(".json").read_text())
    first = meta["products"][0]
    assert first["first_frame"] < 80 < first["last_frame"]
    late = tmp_path / "late.mp4"
    cap = cv2.VideoCapture(str(VIDEO))
    width, height = meta["size"]
    out = cv2.VideoWriter(str(late), cv2.VideoWriter_fourcc(*"mp4v"), meta["fps"], (width, height))
    index = 0
    while True:
        ok, image = cap.read()
        if not ok:
            break
        if index >= 80:
            out.write(image)
        index += 1
    cap.release()
    out.release()
    summary, events = tmp_path / "summary.json", tmp_path / "verdicts.jsonl"
    roi = ",".join(str(v) for v in meta["roi"])
    argv = ["--video", str(late), "--as-fast-as-possible", "--roi", roi, "--summary", str(summary)]
    assert main([*argv, "--events", str(events)]) == 0
    assert [r["verdict"] for r in read_log(events)] == meta["verdicts"][1:]
    assert json.loads(summary.read_text())["moved_while_learning"] >= 10
    assert "things moved through the region while the empty belt was learned" in capsys.readouterr().out


@needs_model
def test_a_sigkill_leaves_a_log_that_parses_and_the_next_run_continues_it(tmp_path: Path):
    events = tmp_path / "verdicts.jsonl"
    cmd = [*EDGE_RUN, "--demo", "--as-fast-as-possible", "--events", str(events)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            if events.is_file() and events.read_bytes().count(b"\n") >= 3:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    raw = events.read_bytes()
    assert raw.endswith(b"\n")
    before = read_log(events)
    assert len(before) >= 3 and [r["seq"] for r in before] == list(range(1, len(before) + 1))
    assert (
        main(
            ["--demo", "--seed", "4", "--as-fast-as-possible", "--max-frames", "200", "--events", str(events)]
        )
        == 0
    )
    after = read_log(events)
    assert len(after) > len(before)
    assert [r["seq"] for r in after] == list(range(1, len(after) + 1))
    assert after[len(before)]["product_id"] > before[-1]["product_id"]


@needs_model
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])  # SIGHUP: the SSH session it ran in closed
def test_a_stop_signal_ends_cleanly_with_a_summary_and_a_finished_recording(tmp_path: Path, sig: str):
    summary = tmp_path / "summary.json"
    record = tmp_path / "run.mp4"
    proc = subprocess.Popen(
        [*EDGE_RUN, "--demo", "--summary", str(summary), "--record", str(record)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as from a terminal, also when the tests run under nohup (edge-run keeps an ignored SIGHUP)
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),
    )
    try:
        first = proc.stdout.readline()  # the start line, printed once the model is loaded
        assert first.startswith("edge-run: demo line")
        time.sleep(1.0)
        proc.send_signal(getattr(signal, sig))
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "XNNPACK" not in err  # the runtime's start-up banner is not news in a service's journal
    assert "frames" in out and "latency" in out
    s = json.loads(summary.read_text())
    assert s["end"] == sig and s["frames"] > 10
    cap = cv2.VideoCapture(str(record))  # an .mp4 not closed has no index and no frame to read
    try:
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) > 10 and cap.read()[0]
    finally:
        cap.release()


@needs_model
def test_a_folder_where_no_image_can_be_read_ends_with_exit_2_after_its_summary(tmp_path: Path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.jpg").write_text("not an image")
    (folder / "b.png").write_bytes(b"\x89PNG cut short")
    summary = tmp_path / "summary.json"
    assert main(["--images", str(folder), "--summary", str(summary)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("edge-run: error:") and str(folder) in err[-1] and "no usable frame" in err[-1]
    s = json.loads(summary.read_text())  # what happened is still said
    assert s["frames"] == 0 and s["skipped"] == 2


def test_the_runtimes_banner_is_dropped_and_its_other_lines_kept(capfd):
    with runtime_banners_dropped():
        os.write(2, (RUNTIME_BANNERS[0] + "\nERROR: the op is not supported\n").encode())
        os.write(1, b"stdout is left alone\n")
    out, err = capfd.readouterr()
    assert err == "ERROR: the op is not supported\n"
    assert out == "stdout is left alone\n"
    with pytest.raises(ValueError), runtime_banners_dropped():  # an error inside keeps what was said
        os.write(2, b"ERROR: cannot load\n")
        raise ValueError("model")
    assert capfd.readouterr().err == "ERROR: cannot load\n"


def test_a_native_crash_while_stderr_is_held_still_says_where(tmp_path: Path):
    """LiteRT aborts on some corrupt model files while it loads them (a byte changed in the
    bundled model); with stderr held for its banner, the process died with status 134 and not a
    word. Its Python stack now reaches the real stderr."""
    script = (
        "import faulthandler, os\n"
        "from edge.runtime import runtime_banners_dropped\n"
        "def load_the_model():\n"
        "    with runtime_banners_dropped():\n"
        "        os.abort()\n"
        "with runtime_banners_dropped():\n"
        "    pass\n"
        "assert not faulthandler.is_enabled()  # as it was before\n"
        "load_the_model()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == -6
    assert "Fatal Python error: Aborted" in done.stderr and "in load_the_model" in done.stderr


@needs_model
def test_systemd_hears_ready_and_watchdog_pings(tmp_path: Path):
    sock_path = tmp_path / "notify.sock"
    messages: list[str] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        sock.settimeout(0.05)
        env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "100000"}
        cmd = [*EDGE_RUN, "--demo", "--as-fast-as-possible", "--max-frames", "150"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            while proc.poll() is None or not messages or messages[-1] != "STOPPING=1":
                try:
                    messages.append(sock.recv(4096).decode())
                except TimeoutError:
                    if proc.poll() is not None:
                        break
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, proc.stderr.read()
    assert messages[0] == "READY=1"
    assert sum(m.startswith("WATCHDOG=1") for m in messages) >= 2, messages
    assert any("STATUS=" in m for m in messages)
    assert messages[-1] == "STOPPING=1"


def model_variant(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.tflite"
    data = BUNDLED_MODEL.read_bytes()
    if kind == "corrupt":
        data = data[: len(data) // 3]
    elif kind == "garbage":
        data = b"\x00" * 4096
    elif kind == "unknown-contract":
        assert b'"contract_version": 1' in data
        data = data.replace(b'"contract_version": 1', b'"contract_version": 7')
    path.write_bytes(data)
    return path


@needs_model
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (lambda tmp: ["--demo", "--model", str(tmp / "none.tflite")], "model file not found"),
        (lambda tmp: ["--demo", "--model", str(model_variant(tmp, "garbage"))], "not a TFLite flatbuffer"),
        (lambda tmp: ["--demo", "--model", str(tmp / "m.keras")], "a Keras model.*edge-convert"),
        (lambda tmp: ["--demo", "--model", str(model_variant(tmp, "corrupt"))], "corrupt|cannot load"),
        (
            lambda tmp: ["--demo", "--model", str(model_variant(tmp, "unknown-contract"))],
            "contract version 7",
        ),
        (lambda tmp: ["--camera", "97"], "camera 97: cannot open"),
        (lambda tmp: ["--video", str(tmp / "none.mp4")], "video file not found"),
        (lambda tmp: ["--video", str(tmp / "bad.mp4")], "not a readable video"),
        (lambda tmp: ["--images", str(tmp)], "no image files"),
        (
            lambda tmp: ["--video", str(tmp / "pics" / "photo.JPG")],
            "photo.JPG: is an image, expected a video",
        ),
        (lambda tmp: ["--video", str(tmp)], "expected a video file, found a folder"),
        (
            lambda tmp: ["--images", str(tmp / "bad.mp4")],
            "bad.mp4: expected a folder of images, found a file",
        ),
        (lambda tmp: ["--config", str(tmp / "bad.toml")], "trigger.onn"),
        (lambda tmp: ["--demo", "--display"], "--display needs"),
        (lambda tmp: ["--demo", "--roi", "-0.1,0,0.5,0.5"], r"inspection.roi: expected x, y in \[0, 1\)"),
        (
            lambda tmp: ["--demo", "--roi", "80,24,160,192"],
            r"\(shares of the frame's width and height, not pixels\)",
        ),
        (lambda tmp: ["--demo", "--record", "/proc/no-such/x.mp4"], "cannot make its folder /proc/no-such"),
        (lambda tmp: ["--demo", "--record", str(tmp / "x.txt")], "cannot record to this file type"),
        (lambda tmp: ["--demo", "--record", str(tmp)], "is a folder"),
        (lambda tmp: ["--demo", "--summary", "/proc/no-such/s.json"], "cannot make its folder"),
        (lambda tmp: ["--demo", "--events", "/dev/null"], "not a regular file"),
        (
            lambda tmp: ["--demo", "--events", str(tmp / "bad.toml" / "v.jsonl")],
            "bad.toml is a file, not a folder",
        ),
        (
            lambda tmp: ["--demo", "--snapshots", str(tmp / "bad.toml" / "s")],
            "bad.toml is a file, not a folder",
        ),
        (
            lambda tmp: ["--demo", "--summary", str(tmp / "bad.toml" / "s.json")],
            "bad.toml is a file, not a folder",
        ),
        (
            lambda tmp: ["--video", str(tmp / "bad.mp4"), "--record", str(tmp / "." / "bad.mp4")],
            r"output.record .*bad.mp4: the same as source.video \(it would be overwritten\)",
        ),
        (
            lambda tmp: ["--demo", "--events", str(tmp / "o.json"), "--summary", str(tmp / "o.json")],
            "output.summary .*o.json: the same as output.events",
        ),
        (
            lambda tmp: ["--images", str(tmp / "pics"), "--snapshots", str(tmp / "pics")],
            "output.snapshots .*pics: the same as source.images",
        ),
        (  # the bundled model's record beside it is not a summary's place
            lambda tmp: ["--demo", "--summary", str(BUNDLED_MODEL.with_suffix(".json"))],
            r"output.summary .*stamp_int8.json: the same as the model's record \(it would be overwritten\)",
        ),
        (lambda tmp: ["--demo", "--events", str(tmp / "bad.toml")], "bad.toml: not a verdict log"),
        (
            lambda tmp: ["--video", "rtsp://127.0.0.1:8554/line"],
            "rtsp://127.0.0.1:8554/line: a stream's address, not a file: give it with --url",
        ),
        (lambda tmp: ["--video", "/dev/null"], r"/dev/null: not a regular file \(expected a video file\)"),
        (
            lambda tmp: ["--video", str(tmp / "bad.mp4"), "--width", "320"],
            "--width: only for --camera and --picamera, not for the video source",
        ),
        (lambda tmp: ["--demo", "--fps", "5"], "--fps: only for --camera, --picamera and --video"),
        (lambda tmp: ["--images", str(tmp / "pics"), "--seed", "3"], "--seed: only for --demo"),
        (  # OpenCV would crash the process on this name (a Latin-1 name from an old archive)
            lambda tmp: ["--demo", "--record", str(tmp / os.fsdecode(b"line\xe9.mp4"))],
            r"line\\xe9.mp4: the file name is not valid UTF-8, which OpenCV cannot open",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, monkeypatch, capsys, args, message):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    (tmp_path / "bad.mp4").write_bytes(os.urandom(5000))
    (tmp_path / "bad.toml").write_text("[trigger]\nonn = 1\n")
    with zipfile.ZipFile(tmp_path / "m.keras", "w") as z:  # what edge-train writes, unconverted
        z.writestr("config.json", "{}")
    (tmp_path / "pics").mkdir()
    cv2.imwrite(str(tmp_path / "pics" / "photo.JPG"), np.full((48, 64, 3), 128, np.uint8))
    assert main([*args(tmp_path), "--max-frames", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edge-run: error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err


@needs_model
def test_an_output_named_like_the_video_read_leaves_the_video_as_it_was(tmp_path: Path, capsys):
    video = tmp_path / "line.mp4"
    shutil.copy(FIXTURES / "demo_line.mp4", video)
    before = video.read_bytes()
    for flag in ("--record", "--events", "--summary"):
        assert main(["--video", str(video), flag, str(video), "--max-frames", "5"]) == 2
        assert "the same as source.video" in capsys.readouterr().err
    assert video.read_bytes() == before


@needs_model
def test_a_model_refused_at_start_leaves_no_empty_outputs_and_keeps_what_was_there(tmp_path: Path, capsys):
    bad = model_variant(tmp_path, "corrupt")  # metadata readable, the interpreter refuses it
    out = tmp_path / "new" / "deeper"
    argv = ["--demo", "--max-frames", "5", "--model", str(bad)]
    assert main([*argv, "--events", str(out / "verdicts.jsonl"), "--snapshots", str(out / "snaps")]) == 2
    assert re.search("corrupt|cannot load", capsys.readouterr().err)
    assert not (tmp_path / "new").exists()  # no empty log, numbering file or folders left
    # an existing log and snapshot folder are left exactly as they were
    old = tmp_path / "old"
    (old / "snaps").mkdir(parents=True)
    line = json.dumps({"seq": 4, "product_id": 9, "verdict": "OK"}) + "\n"
    (old / "verdicts.jsonl").write_text(line)
    assert main([*argv, "--events", str(old / "verdicts.jsonl"), "--snapshots", str(old / "snaps")]) == 2
    assert (old / "verdicts.jsonl").read_text() == line
    assert (old / "snaps").is_dir()


def test_a_model_given_through_a_pipe_is_refused_in_one_line_naming_it(tmp_path: Path, capsys):
    """``--model <(cat m.tflite)`` said "empty file (0 bytes)" (the model is read more than once
    at start, the pipe's second reading is empty), and a pipe nobody wrote to hung the run."""
    pipe = tmp_path / "model.pipe"
    os.mkfifo(pipe)
    assert main(["--demo", "--max-frames", "5", "--model", str(pipe)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{pipe}: a pipe, not a model file" in err, err
    config = tmp_path / "station.toml"
    config.write_text(f'[source]\nkind = "demo"\n[model]\npath = "{pipe}"\n')
    assert main(["--check-config", str(config)]) == 2
    assert f"{pipe}: a pipe" in capsys.readouterr().err


@needs_model
def test_odd_frames_are_converted_or_skipped_and_counted(tmp_path: Path, caplog):
    rng = np.random.default_rng(1)
    colour = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "01_colour.png"), colour)
    cv2.imwrite(str(tmp_path / "02_grey.png"), colour[:, :, 0])
    cv2.imwrite(str(tmp_path / "03_bgra.png"), np.dstack([colour, colour[:, :, :1]]))
    cv2.imwrite(str(tmp_path / "04_16bit.png"), colour.astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "05_tiny.png"), colour[:6, :6])
    cv2.imwrite(str(tmp_path / "06_huge.jpg"), np.zeros((3000, 5000, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "07_thin.png"), colour[:, :20])
    (tmp_path / "08_broken.jpg").write_bytes(b"\xff\xd8 not really")
    summary, events = tmp_path / "out" / "summary.json", tmp_path / "out" / "verdicts.jsonl"
    argv = ["--images", str(tmp_path), "--summary", str(summary)]  # each photo a product by default
    assert main([*argv, "--events", str(events)]) == 0
    s = json.loads(summary.read_text())
    assert s["frames"] == 6 and s["products"] == 6
    assert s["skipped"] == 2 and s["converted"] == 1  # tiny and broken skipped; the huge one shrunk
    said = [r.getMessage() for r in caplog.records]
    assert sum("05_tiny.png skipped: 6x6 px, smaller than 16 px on a side" in m for m in said) == 1
    assert sum("08_broken.jpg" in m for m in said) == 1  # each skipped one named, once
    log = read_log(events)
    assert [rec["image"] for rec in log] == [
        "01_colour.png",
        "02_grey.png",
        "03_bgra.png",
        "04_16bit.png",
        "06_huge.jpg",
        "07_thin.png",
    ]


class OddCamera:
    """The hardware boundary: a finite device handing over frames of every odd form."""

    live = False
    fps = None
    name = "odd camera"

    def __init__(self):
        rng = np.random.default_rng(2)
        bgr = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
        self.frames = [
            bgr,
            bgr[:, :, 0],  # grey
            np.dstack([bgr, bgr[:, :, :1]]),  # BGRA
            bgr.astype(np.uint16) * 257,  # 16-bit
            bgr[::-1, ::2],  # odd strides
            np.zeros((4, 4, 3), np.uint8),  # tiny
            np.zeros((5000, 6000, 3), np.uint8),  # huge
            bgr.astype(np.float32),  # another dtype
            bgr,
        ]

    def open(self) -> None:
        pass

    def grab(self):
        return self.frames.pop(0) if self.frames else None

    def close(self) -> None:
        pass


@needs_model
def test_the_loop_survives_odd_frames_and_counts_them():
    from edge.decision import Decider, EveryFrameTrigger
    from edge.pipeline import Pipeline, RunOptions
    from edge.runtime import TFLiteDetector
    from edge.sources import Source

    detector = TFLiteDetector()
    with Source(OddCamera(), threaded=False) as source:
        options = RunOptions(roi=(0.1, 0.1, 0.8, 0.8))
        pipeline = Pipeline(source, detector, EveryFrameTrigger(), Decider(0.5), options=options)
        summary = pipeline.run()
    assert (summary.frames, summary.products) == (7, 7)
    assert (summary.converted, summary.skipped) == (5, 2)
    assert summary.end == "end of stream"


@needs_model
def test_a_log_that_cannot_be_written_ends_the_run_with_its_summary_and_exit_2(
    tmp_path: Path, monkeypatch, capsys, caplog
):
    import errno

    events, summary = tmp_path / "v.jsonl", tmp_path / "s.json"
    real_write, lines = os.write, []

    def disk_fills_after_two(fd, data):  # the disk is what is faked: the log's file takes two lines
        if os.path.realpath(f"/proc/self/fd/{fd}") == str(events.resolve()):
            if len(lines) == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            lines.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", disk_fills_after_two)
    argv = ["--demo", "--seed", "0", "--as-fast-as-possible", "--max-frames", "900"]
    assert main([*argv, "--events", str(events), "--summary", str(summary)]) == 2
    out, err = capsys.readouterr()
    assert "inspected" in out or "verdicts" in out  # the summary was printed first
    assert err.count("\n") == 1 and "No space left on device" in err, err
    # the verdict the log did not take is in the journal
    assert any(
        r.getMessage().startswith("product 3 ") and "not in the verdict log" in r.getMessage()
        for r in caplog.records
    )
    report = json.loads(summary.read_text())
    assert report["end"].startswith("error: ") and report["products"] == 3
    assert report["unlogged"] == 1 and "1 not in the verdict log" in out
    assert [json.loads(line)["seq"] for line in events.read_text().splitlines()] == [1, 2]  # whole lines
    # the product judged on the last frame counts against the truth: its verdict is right, not extra
    assert (report["truth_products"], report["correct"], report["extra"]) == (3, 3, 0)


@needs_model
def test_a_stop_asked_for_while_starting_up_ends_with_a_summary(tmp_path: Path, monkeypatch, capsys):
    """Ctrl-C (or systemctl stop, SIGTERM, handled alike) while the model loads: the run ends as
    its loop starts, with a summary. SIGINT here, so a failure cannot kill the test run."""
    from edge import runtime

    real_init = runtime.TFLiteDetector.__init__

    def stop_requested_during_load(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # arrives while the model is loading
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(runtime.TFLiteDetector, "__init__", stop_requested_during_load)
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN where the tests run in the background
    summary = tmp_path / "s.json"
    assert main(["--demo", "--max-frames", "300", "--summary", str(summary)]) == 0
    assert "frames" in capsys.readouterr().out
    s = json.loads(summary.read_text())
    assert s["end"] == "SIGINT" and s["frames"] == 0
    assert signal.getsignal(signal.SIGINT) is before  # the handlers are given back


@needs_model
def test_a_region_of_a_few_pixels_is_warned_about(caplog):
    with caplog.at_level(logging.WARNING, logger="edge.pipeline"):
        assert main(["--video", str(VIDEO), "--roi", "0.5,0.5,0.02,0.02", "--max-frames", "3"]) == 0
        assert main(["--video", str(VIDEO), "--roi", "0.25,0.1,0.5,0.8", "--max-frames", "3"]) == 0
    said = [r.getMessage() for r in caplog.records if "region of interest is only" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(
        "the region of interest is only 6x5 pixels of the 320x240 frame"
    )


@needs_model
def test_box_px_is_in_the_source_pixels_when_a_huge_frame_was_shrunk(tmp_path: Path):
    """Frames above edge.sources.MAX_SIDE are shrunk before the model; the verdict log's pixel box
    must still be in the photo's own pixels (it was in the shrunk copy's)."""
    stamped = cv2.imread(str(Path(__file__).parent / "fixtures" / "golden" / "02.png"))
    cv2.imwrite(str(tmp_path / "a_normal.png"), cv2.resize(stamped, (640, 480)))
    huge = cv2.resize(stamped, (5120, 3840))
    cv2.imwrite(str(tmp_path / "b_huge.jpg"), huge, [cv2.IMWRITE_JPEG_QUALITY, 80])
    events = tmp_path / "out" / "verdicts.jsonl"
    assert main(["--images", str(tmp_path), "--refine", "off", "--events", str(events)]) == 0
    log = read_log(events)
    assert [rec["verdict"] for rec in log] == ["OK", "OK"]
    for rec, (w, h) in zip(log, [(640, 480), (5120, 3840)], strict=True):
        x0, y0, x1, y1 = rec["box"]
        assert rec["box_px"] == pytest.approx([x0 * w, y0 * h, x1 * w, y1 * h], abs=3), rec


class DarkStream:
    """The hardware boundary: OpenCV's capture of a stream that opens, says its picture size and
    never gives a frame (a camera whose sensor died; one without a picture size is refused when
    opened)."""

    def __init__(self, *args, **kwargs):
        pass

    def isOpened(self) -> bool:
        return True

    def read(self):
        time.sleep(0.05)
        return False, None

    def get(self, prop) -> float:
        return {cv2.CAP_PROP_FRAME_WIDTH: 640.0, cv2.CAP_PROP_FRAME_HEIGHT: 480.0}.get(prop, 0.0)

    def set(self, prop, value) -> bool:
        return True

    def release(self) -> None:
        pass


@needs_model
def test_a_bounded_run_in_which_no_frame_came_fails_after_its_summary(tmp_path: Path, monkeypatch, capsys):
    import edge.sources

    monkeypatch.setattr(edge.sources.cv2, "VideoCapture", DarkStream)
    summary = tmp_path / "s.json"
    argv = ["--url", "rtsp://127.0.0.1:8554/line", "--duration", "2", "--summary", str(summary)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("edge-run: error: stream rtsp://127.0.0.1:8554/line: no frame came in 2 s")
    assert json.loads(summary.read_text())["frames"] == 0  # the summary is written first


@needs_model
def test_outputs_never_replace_the_config_an_image_read_or_a_token(tmp_path: Path, capsys):
    """The summary written over the station's own config file, over a photo just read, or over
    the web view's token file: refused, by the run and by --check-config alike."""
    config = tmp_path / "station.toml"
    config.write_text('[source]\nkind = "demo"\n[run]\nmax_frames = 5\n')
    pics = tmp_path / "pics"
    pics.mkdir()
    cv2.imwrite(str(pics / "03.png"), np.full((64, 64, 3), 90, np.uint8))
    token = tmp_path / "token.txt"
    token.write_text("s3cret-token-for-the-view\n")
    web = tmp_path / "web.toml"
    web.write_text(f'[source]\nkind = "demo"\n[http]\nlisten = ":18097"\ntoken_file = "{token}"\n')
    self_summary = tmp_path / "self.toml"
    self_summary.write_text('[source]\nkind = "demo"\n[output]\nsummary = "self.toml"\n')
    kept = {p: p.read_bytes() for p in (config, pics / "03.png", token, self_summary, web)}
    for argv, said in (
        (
            ["--config", str(config), "--summary", str(config)],
            f"output.summary {config}: the same as the config file",
        ),
        (
            ["--images", str(pics), "--summary", str(pics / "03.png")],
            f"{pics / '03.png'}: one of the files of source.images",
        ),
        (["--config", str(web), "--summary", str(token)], "the same as http.token_file"),
        (["--config", str(self_summary)], "the same as the config file"),
        (["--check-config", str(self_summary)], "the same as the config file"),
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and said in err[0], err
    assert {p: p.read_bytes() for p in kept} == kept


@needs_model
def test_check_config_refuses_a_verdict_log_the_run_would_refuse(tmp_path: Path, capsys):
    video = tmp_path / "line3.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
    config = tmp_path / "station.toml"
    config.write_text(f'[source]\nkind = "demo"\n[output]\nevents = "{video}"\n')
    assert main(["--check-config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"edge-run: error: {config}: output.events {video}: not a verdict log (expected an edge-run verdict "
        "log or a new file)"
    ]


def test_under_systemd_each_stderr_line_carries_its_priority_for_the_journal(tmp_path: Path):
    """journald took every line as "info": `journalctl -p warning -u edge-run` showed none of the
    warnings, faults or errors. Where stderr is the journal (JOURNAL_STREAM names it), each line
    begins with its <N> priority; on a terminal or a pipe of one's own, nothing changes."""
    base = [sys.executable, "-m", "edge.cli.run", "--demo", "--max-frames", "3", "--trigger", "every-frame"]
    runs = {
        "warning": [*base, "--http-token", "abcdefghijklmnopqrstuvwx"],  # no web view: an idle flag
        "error": [*base, "--model", str(tmp_path / "none.tflite")],
    }
    for kind, argv in runs.items():
        for journal in (True, False):
            read, write = os.pipe()
            st = os.fstat(write)
            env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}" if journal else "1:2")
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=write, env=env)
            os.close(write)
            with os.fdopen(read) as f:
                err = f.read()
            proc.wait(timeout=120)
            lines = [x for x in err.splitlines() if ("WARNING" if kind == "warning" else "error:") in x]
            prefix = {"warning": "<4>", "error": "<3>"}[kind] if journal else ""
            # (the warnings: the idle flag's, printed, and the flagged products', logged)
            assert lines and (kind == "error" or any("--http-token" in x for x in lines)), err
            assert all(x.startswith(prefix + "edge-run: ") for x in lines), (kind, journal, err)


@pytest.mark.parametrize(
    "argv",
    [
        ["--demo", "--model", ""],
        ["--images", ""],
        ["--demo", "--snapshots", " "],
        ["--config", ""],
        ["--camera", str(10**20)],
    ],
)
def test_an_empty_path_or_an_impossible_number_is_a_usage_error(argv, capsys):
    """``--model ''`` was the current folder (a ValueError traceback), ``--images ''`` inspected
    it, ``--snapshots ''`` wrote into it; camera 10**20 was OpenCV's traceback."""
    try:
        status = main([*argv, "--max-frames", "1"])
    except SystemExit as exit_:  # (argparse's usage error)
        status = exit_.code
    assert status == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert any(
        said in line
        for said in ("expected a path, got an empty one", "expected at most", "expected a whole number")
    ), line


@needs_model
def test_a_summary_or_report_never_replaces_a_file_that_is_not_a_report(tmp_path: Path, capsys):
    """--summary onto an earlier run's verdict log, edge-bench's --json onto a model: each was
    replaced without a word (a report replaces an earlier report only)."""
    from edge.cli.bench import main as bench_main
    from edge.runtime import BUNDLED_MODEL

    log, summary = tmp_path / "verdicts.jsonl", tmp_path / "s.json"
    argv = ["--demo", "--as-fast-as-possible", "--max-frames", "300"]
    assert main([*argv, "--events", str(log), "--summary", str(summary)]) == 0
    kept = log.read_bytes()
    assert main([*argv, "--summary", str(log)]) == 2
    assert "verdicts.jsonl: holds something other than a JSON report" in capsys.readouterr().err
    assert log.read_bytes() == kept
    assert main([*argv, "--summary", str(summary)]) == 0  # an earlier summary: replaced, as asked
    model = tmp_path / "m.tflite"
    model.write_bytes(BUNDLED_MODEL.read_bytes())
    assert bench_main(["--frames", "20", "--json", str(model)]) == 2
    assert "m.tflite: holds something other than a JSON report" in capsys.readouterr().err
    assert model.read_bytes() == BUNDLED_MODEL.read_bytes()
