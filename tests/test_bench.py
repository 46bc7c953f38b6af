"""edge-bench: its maths on known inputs, its report's schema, short real runs on the demo line
with the bundled model (every stage, the textbook loop, invoke-only), bad input. No timing
assertions: what the runs measure depends on the machine."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge import bench
from edge.cli.bench import main
from edge.runtime import BUNDLED_MODEL
from edge.sources import EndOfStream, FrameQueue, Source, VideoFile

VIDEO = Path(__file__).resolve().parent / "fixtures" / "demo_line.mp4"
needs_model = pytest.mark.skipif(not BUNDLED_MODEL.is_file(), reason=f"{BUNDLED_MODEL} not built yet")

# -- maths ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], dict.fromkeys(bench.STAT_KEYS)),
        ([5.0], {"min": 5.0, "p50": 5.0, "p90": 5.0, "p99": 5.0, "max": 5.0}),
        ([4, 1, 3, 2], {"min": 1.0, "p50": 2.5, "p90": 3.7, "p99": 3.97, "max": 4.0}),
        (range(1, 102), {"min": 1.0, "p50": 51.0, "p90": 91.0, "p99": 100.0, "max": 101.0}),
        (np.arange(1000) / 10, {"min": 0.0, "p50": 49.95, "p90": 89.91, "p99": 98.901, "max": 99.9}),
    ],
)
def test_stage_stats_are_linear_interpolation_percentiles(values, expected):
    got = bench.stage_stats(list(values))
    assert got == (pytest.approx(expected) if expected["min"] is not None else expected)


@pytest.mark.parametrize(
    ("fn", "args", "expected"),
    [
        (bench.ratio, (3.0, 2.0), 1.5),
        (bench.ratio, (3.0, 0.0), None),
        (bench.ratio, (None, 2.0), None),
        (bench.ratio, (1.0, None), None),
        (bench.per_second, (500, 2.0), 250.0),
        (bench.per_second, (5, 0.0), None),
        # wall 2.6 ms per frame, decode 1.0 + invoke 1.0 -> the loop costs 30 % on top
        (bench.overhead_ratio, (2.6, 1.0, 1.0), 1.3),
        (bench.overhead_ratio, (1.2, 1.0, 1.4), 0.5),  # decoding overlaps the model
        (bench.overhead_ratio, (2.0, None, 1.0), None),
    ],
)
def test_ratios(fn, args, expected):
    got = fn(*args)
    assert (got is None) if expected is None else (got == pytest.approx(expected))


def test_decode_times_are_looked_up_by_frame_index():
    got = bench.decode_times([1.0, 2.0, 3.0], np.array([2, 0, 5]))
    assert got[:2].tolist() == [3.0, 1.0] and np.isnan(got[2])
    assert np.isnan(bench.decode_times([], np.array([0]))).all()


def test_camera_clock_queues_four_frames_and_drops_the_rest():
    clock = bench.CameraClock(fps=10.0, buffers=4)  # a frame every 0.1 s from t = 100
    assert clock.next(100.0) == 100.0  # on time: the frame captured now
    assert clock.next(100.05) == pytest.approx(100.1)  # early: wait for the next capture
    # late by 1 s: frames 2..5 were queued, 6..10 dropped (the queue was full); reads get the oldest first
    assert clock.next(101.05) == pytest.approx(100.2)
    assert clock.dropped == 5
    assert [clock.next(101.06) for _ in range(3)] == pytest.approx([100.3, 100.4, 100.5])
    assert clock.next(101.07) == pytest.approx(101.1)


def test_totals_pool_blocks_and_skip_model_stages_of_frames_the_model_did_not_see():
    names = ("decode", "invoke")
    b1 = bench.Block(
        stages=np.array([[1.0, 2.0], [1.0, 0.0]]),
        names=names,
        modelled=np.array([True, False]),
        age_ms=np.array([3.0, 1.0]),
        wall_s=0.004,
        cpu_s=0.006,
    )
    b2 = bench.Block(
        stages=np.array([[3.0, 4.0]]),
        names=names,
        modelled=np.array([True]),
        age_ms=np.array([7.0]),
        wall_s=0.002,
        cpu_s=0.001,
    )
    t = bench.Totals()
    t.add(b1)
    t.add(b2)
    s = t.summary(measure_overhead=True)
    assert (
        s["frames"] == 3 and s["fps"] == pytest.approx(500.0) and s["wall_ms_per_frame"] == pytest.approx(2.0)
    )
    assert s["stages"]["decode"] == {"min": 1.0, "p50": 1.0, "p90": 2.6, "p99": 2.96, "max": 3.0}
    assert s["stages"]["invoke"]["min"] == 2.0 and s["invoke_ms_p50"] == 3.0  # the 0 is not an invoke
    assert s["overhead_ratio"] == pytest.approx(2.0 / (1.0 + 3.0))
    assert s["frame_age_ms_p50"] == 3.0 and s["cpu_cores"] == pytest.approx(7 / 6, abs=1e-3)


# -- the report -----------------------------------------------------------------------------------


def _run(**extra) -> dict:
    st = {"min": 0.1, "p50": 0.2, "p90": 0.3, "p99": 0.4, "max": 0.5}
    run = {
        "model": "/m/stamp_int8.tflite",
        "model_id": "abc",
        "threads": 1,
        "amx_denied": True,
        "frames": 100,
        "fps": 500.0,
        "invoke_ms_p50": 0.2,
        "invoke_ms_p99": 0.4,
        "overhead_ratio": 0.9,
        "frame_age_ms_p50": 1.0,
        "frame_age_ms_p99": 2.0,
        "stages": {"decode": dict(st), "invoke": dict(st)},
    }
    return {**run, **extra}


@pytest.mark.parametrize(
    ("change", "baseline", "error"),
    [
        ({}, False, None),
        ({"baseline_fps": 250.0, "baseline_frame_age_ms_p99": 4.0}, True, None),
        ({}, True, "runs[0].baseline_fps: missing"),
        ({"fps": "fast"}, False, "runs[0].fps: expected float/int"),
        ({"threads": True}, False, "runs[0].threads: expected a number"),
        ({"overhead_ratio": None}, False, None),
        ({"stages": {"invoke": {"min": 1, "p50": 2}}}, False, "runs[0].stages.invoke: expected keys"),
        (
            {"stages": {"invoke": dict(zip(bench.STAT_KEYS, [1, 3, 2, 4, 5], strict=True))}},
            False,
            "min <= p50",
        ),
    ],
)
def test_validate_report(change, baseline, error):
    report = {"schema": bench.SCHEMA, "baseline": baseline, "runs": [_run(**change)]}
    errors = bench.validate_report(report)
    assert (errors == []) if error is None else any(error in e for e in errors), errors
    missing = {k: v for k, v in _run().items() if k != "invoke_ms_p99"}
    assert bench.validate_report({"schema": bench.SCHEMA, "runs": [missing]}) == [
        "runs[0].invoke_ms_p99: missing"
    ]
    assert bench.validate_report({"schema": "other", "runs": []})[0].startswith("schema: expected")
    # stopped before a model's textbook block ended: no baseline figures, as documented
    stopped = {"schema": bench.SCHEMA, "baseline": True, "interrupted": True, "runs": [_run()]}
    assert bench.validate_report(stopped) == []


def test_tables_show_each_stage_and_the_runs_side_by_side():
    run = _run(baseline_fps=250.0, baseline_frame_age_ms_p99=4.0, fps_ratio=2.0, frame_age_p99_ratio=0.5)
    run["baseline_stages"] = {"decode": {"min": 1, "p50": 1.5, "p90": 2, "p99": 2.5, "max": 3}}
    lines = bench.stage_table(run["stages"], run["baseline_stages"]).splitlines()
    assert lines[0].split() == ["stage", "ms", "min", "p50", "p90", "p99", "max", "tb", "p50", "tb", "p99"]
    assert lines[1].split() == ["decode", "0.100", "0.200", "0.300", "0.400", "0.500", "1.500", "2.500"]
    assert lines[2].split() == ["invoke", "0.100", "0.200", "0.300", "0.400", "0.500"]
    table = bench.summary_table([run, _run(threads=2, fps=812.34, overhead_ratio=None)]).splitlines()
    assert table[0].split()[:3] == ["model", "threads", "fps"]
    ours = ["stamp_int8.tflite", "1", "500.0", "0.200", "0.400", "0.90", "2.00"]
    assert table[1].split() == [*ours, "250.0", "4.00", "2.00", "0.50"]
    assert table[2].split()[:6] == ["stamp_int8.tflite", "2", "812.3", "0.200", "0.400", "-"]
    assert len({len(line) for line in table}) == 1  # columns line up
    text = bench.format_run(run)
    assert "500.0 fps over 100 frames, overhead 0.90" in text and "fps 2.00x, frame age p99 0.50x" in text


# -- the lossless capture thread ------------------------------------------------------------------


class _Counter:
    """A finite device: frame i is filled with i (mod 256)."""

    name, live, fps = "counter", False, None

    def __init__(self, n: int):
        self.n, self.i, self.opened = n, 0, False

    def open(self):
        self.opened = True

    def grab(self):
        if self.i >= self.n:
            return None
        self.i += 1
        return np.full((32, 32, 3), (self.i - 1) % 256, np.uint8)

    def close(self):
        self.opened = False


def test_prefetch_reads_ahead_on_a_thread_and_drops_nothing():
    with Source(_Counter(50), threaded=False, prefetch=3) as src:
        got = []
        with pytest.raises(EndOfStream):
            while True:
                frame = src.read(1.0)
                got.append(int(frame.image[0, 0, 0]))
                time.sleep(0.001 if len(got) < 10 else 0)  # a slow consumer at first
    assert got == list(range(50))
    assert src.stats.dropped == 0 and src.stats.delivered == 50


def test_prefetch_thread_stops_when_the_consumer_leaves_early():
    device = _Counter(10_000)
    with Source(device, threaded=False, prefetch=2) as src:
        assert src.read(1.0).index == 0
        time.sleep(0.05)  # the thread fills the queue and waits for room
        assert device.i <= 4
    assert not device.opened and not any(t.name.startswith("capture counter") for t in threading.enumerate())


def test_frame_queue_keeps_order_and_reports_the_capture_error():
    q = FrameQueue(2)
    assert q.take(0.01) is None
    q.close(RuntimeError("camera on fire"))
    with pytest.raises(Exception, match="camera on fire"):
        q.take(0.01)
    with pytest.raises(ValueError, match="expected >= 1"):
        FrameQueue(0)
    with pytest.raises(ValueError, match="prefetch is for unthreaded"):
        Source(_Counter(1), threaded=True, prefetch=2)


# -- real runs ------------------------------------------------------------------------------------

FAST = ["--demo", "--as-fast-as-possible", "--warmup", "3"]


@needs_model
def test_a_short_run_on_the_demo_line_measures_every_stage_and_the_textbook_loop(tmp_path: Path, capsys):
    out = tmp_path / "bench.json"
    argv = [*FAST, "--frames", "24", "--block", "12", "--threads", "1,2", "--baseline", "--overlay", "--log"]
    assert main([*argv, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert bench.validate_report(report) == []
    assert report["mode"] == "pipeline" and report["baseline"] and report["rounds"] == 2
    assert [(Path(r["model"]).name, r["threads"]) for r in report["runs"]] == [
        (BUNDLED_MODEL.name, 1),
        (BUNDLED_MODEL.name, 2),
    ]
    for run in report["runs"]:
        assert run["frames"] == 24
        assert set(run["stages"]) == set(bench.STAGES)  # (JSON keys are sorted)
        for name, st in run["stages"].items():
            assert st["p50"] is not None and st["min"] >= 0, name
        # drawn on every frame, a verdict logged (fsync) on every frame with the every-frame trigger
        assert run["stages"]["overlay"]["min"] > 0 and run["stages"]["sinks"]["min"] > 0
        assert run["fps"] > 0 and run["overhead_ratio"] > 0 and run["frame_age_ms_p99"] > 0
        assert run["cpu_cores"] > 0 and run["rss_mb"] > 0 and run["dropped"] == 0
        assert set(run["baseline_stages"]) == set(bench.TEXTBOOK_STAGES)
        assert run["baseline_fps"] > 0 and run["fps_ratio"] == pytest.approx(
            run["fps"] / run["baseline_fps"], 1e-2
        )
    printed = capsys.readouterr().out
    assert "textbook loop:" in printed and "ours/textbook" in printed
    assert ("AMX denied" in printed) == report["amx_denied"]


@needs_model
def test_a_video_read_as_fast_as_possible_decodes_ahead_on_one_thread(tmp_path: Path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--video", str(VIDEO), "--as-fast-as-possible", "--frames", "20", "--warmup", "2", "--baseline"]
    assert main([*argv, "--decode-threads", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert bench.validate_report(report) == []
    assert report["prefetch"] == 2 and report["decode_threads"] == 1 and report["source_kind"] == "video"
    (run,) = report["runs"]
    assert run["frames"] == 20 and run["overhead_ratio"] > 0 and run["fps_ratio"] > 0
    assert "decoder threads: ours 1, textbook 1" in capsys.readouterr().out
    assert report["wall_s"] > 0 and (report["background_cores"] is None or report["background_cores"] >= 0)


@needs_model
def test_a_source_too_short_for_the_frames_asked_for_is_reported(tmp_path: Path, capsys):
    """The 330-frame video cannot give 1,400 measured frames in the rounds allowed: the report
    says so on stderr and in its JSON, and each run gives the frames it did measure."""
    out = tmp_path / "bench.json"
    argv = ["--video", str(VIDEO), "--as-fast-as-possible", "--frames", "1400", "--block", "1400"]
    assert main([*argv, "--warmup", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    (run,) = report["runs"]
    assert run["frames"] == report["rounds"] * 328 < 1400
    (warning,) = report["warnings"]
    assert f"gave {run['frames']} of the 1400 frames asked for per run" in warning
    assert f"edge-bench: WARNING: video {VIDEO} gave {run['frames']} of the 1400" in capsys.readouterr().err
    assert main(["--video", str(VIDEO), "--as-fast-as-possible", "--frames", "20", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["warnings"] == []


def test_its_warnings_carry_its_name_and_are_kept_in_the_json(tmp_path: Path):
    """What the source said while measuring (a photo it could not read) is on stderr once, with the
    bench's name, and in the report's ``warnings``: a JSON read alone would not know of it."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in "acd":
        cv2.imwrite(str(folder / f"{name}.jpg"), np.full((120, 160, 3), (40, 90, 160), np.uint8))
    (folder / "b.jpg").write_text("not an image")
    out = tmp_path / "bench.json"
    argv = ["--images", str(folder), "--frames", "2", "--warmup", "1", "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli.bench", *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    said = [line for line in proc.stderr.splitlines() if "not a readable image" in line]
    assert len(said) == 1 and said[0].startswith("edge-bench: WARNING: "), proc.stderr
    report = json.loads(out.read_text())
    assert [w for w in report["warnings"] if "not a readable image" in w] == [
        said[0].removeprefix("edge-bench: WARNING: ")
    ]
    assert bench.validate_report(report) == []


def test_decode_threads_apply_to_video_files_only():
    video = VideoFile(VIDEO)
    assert bench.with_decode_threads(video, None) is video
    one = bench.with_decode_threads(video, 1)
    assert isinstance(one, VideoFile) and one.path == VIDEO and one.decode_threads == 1
    camera = _Counter(1)
    assert bench.with_decode_threads(camera, 1) is camera
    with Source(one, threaded=False) as src:  # FFmpeg takes the thread count and still decodes
        assert src.read(1.0).image.shape[:2] == (240, 320)


@needs_model
def test_paced_run_with_the_textbook_loop(tmp_path: Path):
    out = tmp_path / "bench.json"
    assert main(["--demo", "--frames", "6", "--warmup", "2", "--baseline", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert bench.validate_report(report) == []
    (run,) = report["runs"]
    assert not report["as_fast_as_possible"] and run["overhead_ratio"] is None
    assert run["frame_age_ms_p99"] > 0 and run["baseline_frame_age_ms_p99"] > 0


@needs_model
def test_invoke_only_times_the_interpreter_alone(tmp_path: Path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--invoke-only", "--model", str(BUNDLED_MODEL), str(BUNDLED_MODEL), "--threads", "1"]
    assert main([*argv, "--frames", "50", "--block", "25", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert bench.validate_report(report) == []
    assert report["mode"] == "invoke-only" and len(report["runs"]) == 2
    for run in report["runs"]:
        assert list(run["stages"]) == ["invoke"] and run["frames"] == 50
        assert run["overhead_ratio"] is None and run["frame_age_ms_p99"] is None
        assert run["fps"] > 0 and 0 < run["invoke_ms_p50"] <= run["invoke_ms_p99"]
    assert "invokes/s" in capsys.readouterr().out
    assert "invoke only" in report["title"] and "trigger" not in report["title"]  # none ran


@needs_model
def test_pinned_to_one_core_with_a_cold_start_and_no_tensorflow(tmp_path: Path):
    argv = ["--invoke-only", "--cpus", "1", "--frames", "20", "--cold-start", "1"]
    argv += ["--json", str(tmp_path / "b.json")]
    probe = (
        "import json, os, sys\n"
        "from edge.cli.bench import main\n"
        f"rc = main({argv!r})\n"
        "mods = sorted(sys.modules)\n"
        "print(json.dumps({'rc': rc, 'cpus': sorted(os.sched_getaffinity(0)), 'mods': mods}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["rc"] == 0 and len(result["cpus"]) == 1
    assert not {"tensorflow", "keras", "train", "convert"} & {m.split(".")[0] for m in result["mods"]}
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["cpus"] == result["cpus"]
    cold = report["runs"][0]["cold_start_s"]
    assert cold["n"] == 1 and cold["min"] > 0


@needs_model
def test_a_cold_start_during_which_the_clock_was_set_is_measured_again(tmp_path: Path, monkeypatch):
    """Cold starts are timed by the wall clock (the first verdict's time in edge-run's log); NTP
    setting the clock of a Pi just after boot would make one read an hour long, or negative."""
    from edge.cli import bench as bench_cli
    from edge.config import Config

    real_run, real_time, shift = subprocess.run, time.time, [-3600.0]  # an hour behind at boot

    def run_during_which_ntp_steps_the_clock(*args, **kwargs):
        proc = real_run(*args, **kwargs)  # its verdict: by the clock NTP has just set
        shift[0] = 0.0
        return proc

    monkeypatch.setattr(bench_cli.subprocess, "run", run_during_which_ntp_steps_the_clock)
    monkeypatch.setattr(bench_cli.time, "time", lambda: real_time() + shift[0])
    from edge.runtime import BUNDLED_MODEL

    stats = bench_cli.cold_start(
        Config.from_mapping({"source": {"kind": "demo"}}), BUNDLED_MODEL, 1, 1, tmp_path
    )
    assert stats["n"] == 1 and 0 < stats["max"] < 30  # the second start, timed by an unmoved clock


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "/nonexistent.tflite"], "model file not found"),
        (["--video", "/nonexistent.mp4"], "video file not found"),
        (["--invoke-only", "--baseline"], "--baseline needs the whole loop"),
        # accepted, the report claimed them although only the interpreter ran
        (["--invoke-only", "--log", "--overlay"], "--overlay, --log need the whole loop"),
        (["--invoke-only", "--decode-threads", "3", "--prefetch", "7"], "--decode-threads, --prefetch need"),
        (
            ["--invoke-only", "--trigger", "occupancy", "--refine", "zoom"],
            "--trigger, --refine need the whole loop",
        ),
        (["--cpus", "999"], "--cpus: expected at most"),
        (["--threads", "0"], "expected a number > 0, got 0 (in '0')"),
        (["--threads", "two"], "(in 'two')"),
        (["--threads", "1,,2"], "expected thread counts like 1,2,4, got '1,,2'"),
        (["--threads", "2,"], "expected thread counts like 1,2,4, got '2,'"),
        # 99999 used to crash the process starting them (exit 139)
        (["--threads", "1,99999"], "expected at most 64 threads, got 99999"),
        (["--frames", "-5"], "expected a number > 0"),
        # each frame's timings are kept: a trillion asked numpy for 65 TiB (a traceback, exit 1)
        (["--frames", "1000000000000"], "expected at most 1,000,000"),
        (["--warmup", "100000000000"], "--warmup: expected at most 1,000,000"),
        (["--cold-start", "5000"], "--cold-start: expected at most 1,000"),
        (["--decode-threads", "0"], "expected a number > 0"),
        (["--config", "/nonexistent.toml"], "config file not found"),
        (["--roi", "0.5,0.5,0.8,0.8"], "inspection.roi"),
        (["--json", "/proc/no-such-folder/b.json"], "cannot make its folder /proc/no-such-folder"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, message, capsys, tmp_path: Path):
    with pytest.raises(SystemExit) as exc_info:
        raise SystemExit(main([*argv, "--frames", "5"] if "--frames" not in argv else argv))
    assert exc_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


@needs_model
def test_a_file_that_is_not_a_video_exits_2(tmp_path: Path, capsys):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    assert main(["--video", str(bad), "--frames", "5"]) == 2
    assert "not a readable video" in capsys.readouterr().err


@needs_model
def test_image_folders_with_unreadable_files_skip_them_in_both_loops(tmp_path: Path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        cv2.imwrite(str(folder / f"f{i:02d}.png"), rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    (folder / "f05.png").write_bytes(b"not a png")  # unreadable in the middle
    out = tmp_path / "b.json"
    argv = ["--images", str(folder), "--frames", "8", "--block", "8", "--warmup", "1", "--baseline"]
    assert main([*argv, "--json", str(out)]) == 0
    run = json.loads(out.read_text())["runs"][0]
    assert run["fps"] > 0 and run["baseline_fps"] > 0
    (folder / "f00.png").write_bytes(b"")
    for i in range(1, 12):
        (folder / f"f{i:02d}.png").write_bytes(b"")
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no usable frame" in err[0], err


@needs_model
def test_a_run_where_the_model_never_ran_says_so_and_keeps_to_the_schema(tmp_path: Path, capsys):
    """An occupancy trigger on a video with no product: nothing to invoke, and nothing drawn."""
    out = tmp_path / "bench.json"
    argv = ["--video", str(VIDEO), "--as-fast-as-possible", "--frames", "20", "--warmup", "2"]
    assert main([*argv, "--trigger", "occupancy", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert bench.validate_report(report) == []
    (run,) = report["runs"]
    assert run["invoke_ms_p50"] is None and run["stages"]["invoke"]["p50"] is None
    assert run["stages"]["overlay"]["p50"] is None  # no --overlay: nothing drawn, no time shown
    assert run["stages"]["prepare"]["p50"] > 0
    (warning,) = report["warnings"]
    assert "the model never ran on the 20 frames" in warning and "WARNING" in capsys.readouterr().err


@needs_model
def test_its_report_never_replaces_a_file_it_reads(tmp_path: Path, capsys):
    """--json named like the model, the config or an image read: refused before measuring (the
    model file became a JSON report)."""
    import shutil

    model = tmp_path / "a.tflite"
    shutil.copy(BUNDLED_MODEL, model)
    config = tmp_path / "station.toml"
    config.write_text('[source]\nkind = "demo"\n')
    pics = tmp_path / "pics"
    pics.mkdir()
    cv2.imwrite(str(pics / "00.png"), np.full((64, 64, 3), 90, np.uint8))
    before = model.read_bytes(), config.read_text()
    for argv, said in (
        (["--model", str(model), "--json", str(model)], f"--json {model}: the same as model.path"),
        (["--config", str(config), "--json", str(config)], f"--json {config}: the same as the config file"),
        (
            ["--images", str(pics), "--json", str(pics / "00.png")],
            f"--json {pics / '00.png'}: one of the files",
        ),
    ):
        assert main([*argv, "--invoke-only", "--frames", "5"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and said in err[0], err
    assert (model.read_bytes(), config.read_text()) == before
    assert cv2.imread(str(pics / "00.png")) is not None


def test_a_warning_about_the_source_is_given_once_though_each_run_opens_it_again(tmp_path: Path, caplog):
    folder = tmp_path / "images"
    (folder / "older").mkdir(parents=True)
    cv2.imwrite(str(folder / "older" / "x.png"), np.zeros((64, 64, 3), np.uint8))
    rng = np.random.default_rng(0)
    for i in range(6):
        cv2.imwrite(str(folder / f"f{i}.png"), rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    argv = ["--images", str(folder), "--frames", "12", "--block", "4", "--warmup", "1"]
    with caplog.at_level("WARNING"):
        assert main([*argv, "--threads", "1,2", "--baseline"]) == 0
    err = caplog.text
    assert err.count("the images in its subfolders (older/) are not read") == 1, err


def test_an_interrupted_run_reports_what_it_measured_and_a_closed_stdout_keeps_the_json(tmp_path: Path):
    """Ctrl-C (or SIGTERM) near the end of a long run threw away everything measured, without a
    word; the JSON was written after the table, so a reader that went away (`| true`, an SSH
    session lost) lost it too."""
    import signal

    report = tmp_path / "stopped.json"
    cmd = [sys.executable, "-m", "edge.cli.bench", "--trigger", "every-frame", "--refine", "off"]
    cmd += ["--frames", "100000", "--block", "40", "--json", str(report)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(6)  # start-up, then some blocks of the demo line
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    data = json.loads(report.read_text())
    assert data["interrupted"] is True and bench.validate_report(data) == []
    measured = data["runs"][0]["frames"]
    assert 0 < measured < 100000 and measured % 40 == 0  # whole blocks only
    assert data["warnings"][0].startswith("interrupted in round") and f"{measured} of the 100000" in err
    assert "fps" in out  # the table too

    kept = tmp_path / "kept.json"
    cmd = [sys.executable, "-m", "edge.cli.bench", "--invoke-only", "--frames", "60", "--json", str(kept)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # nobody reads the table
    proc.wait(timeout=120)
    assert bench.validate_report(json.loads(kept.read_text())) == []


def test_sigterm_outside_our_loop_and_ctrl_c_in_the_cold_start_keep_what_was_measured(tmp_path: Path):
    """SIGTERM (timeout, systemctl stop) killed the bench outright (status 143, no report, its
    temporary folder left) when it came outside our loop's blocks: in invoke-only blocks, the
    textbook loop's or the cold starts. Ctrl-C in the cold starts threw away the blocks measured."""
    import signal

    report = tmp_path / "term.json"
    cmd = [sys.executable, "-m", "edge.cli.bench", "--invoke-only", "--frames", "1000000", "--block", "2000"]
    proc = subprocess.Popen([*cmd, "--json", str(report)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(6)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    data = json.loads(report.read_text())
    assert data["interrupted"] is True and bench.validate_report(data) == []
    assert 0 < data["runs"][0]["frames"] < 1000000 and data["runs"][0]["frames"] % 2000 == 0

    report = tmp_path / "cold.json"
    cmd = [sys.executable, "-m", "edge.cli.bench", "--refine", "off", "--as-fast-as-possible"]
    cmd += ["--frames", "20", "--block", "20", "--threads", "1", "--cold-start", "1000"]
    proc = subprocess.Popen([*cmd, "--json", str(report)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(10)  # the block is measured in the first seconds; then edge-run starts again and again
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    data = json.loads(report.read_text())
    assert data["interrupted"] is True and data["runs"][0]["frames"] == 20
    assert "cold_start_s" not in data["runs"][0] and bench.validate_report(data) == []
    assert data["warnings"][0].startswith("interrupted during the cold starts: every block measured")


def test_a_report_path_no_one_can_write_is_refused_before_measuring_even_for_root(capsys):
    # os.access says yes to root for /proc; the run measured, then lost its report
    assert main(["--invoke-only", "--frames", "10", "--json", "/proc/stampline-report.json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "/proc/stampline-report.json: not writable" in err


def test_a_trigger_still_learning_is_said_once_after_all_blocks_with_the_final_count(tmp_path: Path, caplog):
    """The end-of-run hint (here: the occupancy trigger never finished learning the belt) was said
    at the end of every block, each with that block's count: once now, after the last block."""
    folder = tmp_path / "belt"
    folder.mkdir()
    for i in range(6):
        cv2.imwrite(str(folder / f"f{i}.png"), np.full((96, 128, 3), 120, np.uint8))
    config = tmp_path / "station.toml"
    config.write_text('[trigger]\nkind = "occupancy"\nlearn_frames = 500\n')
    argv = ["--config", str(config), "--images", str(folder), "--trigger", "occupancy", "--frames", "15"]
    with caplog.at_level("WARNING"):
        main([*argv, "--block", "5", "--warmup", "1", "--threads", "1"])
    said = [r.getMessage() for r in caplog.records if "still learning the empty belt" in r.getMessage()]
    assert len(said) == 1, caplog.text
    # the belt's frames of every block counted: more than one block's worth
    seen = int(said[0].split("(")[1].split(" of ")[0])
    assert seen > 6, said[0]
