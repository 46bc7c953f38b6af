"""edge-run's config: typed TOML, flags override, errors name the key; the service files."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli.run import main
from edge.config import Config, ConfigError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "systemd" / "stampline.toml"
UNIT = ROOT / "systemd" / "edge-run.service"
TEMPLATE = ROOT / "systemd" / "edge-run@.service"  # one instance per line


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[trigger]\nonn = 0.5\n", "unknown key 'trigger.onn'"),
        ("[triggers]\non = 0.5\n", r"unknown section \[triggers\]"),
        ("trigger = 3\n", "trigger: expected a .trigger. table"),
        ("[trigger]\non = 1.5\n", r"trigger.on: expected a number in \(0, 1\), got 1.5"),
        ("[trigger]\non = 'high'\n", "trigger.on: expected a number, got 'high'"),
        ("[trigger]\non = 0.3\noff = 0.4\n", "trigger.off: expected a number below trigger.on"),
        ("[trigger]\nkind = 'eye'\n", "trigger.kind: expected one of 'occupancy', 'every-frame', 'gpio'"),
        ("[trigger]\nexit_frames = 1.5\n", "trigger.exit_frames: expected a whole number, got 1.5"),
        ("[trigger]\nlevel = 300\n", "trigger.level: expected a grey level"),
        ("[trigger]\nlevel_min = 40\n", r"trigger.level_min: expected at most trigger.level \(30\), got 40"),
        ("[model]\nthreads = 0\n", "model.threads: expected a whole number from 1 to 64, got 0"),
        ("[model]\nthreads = 99999\n", "model.threads: expected a whole number from 1 to 64, got 99999"),
        ("[model]\nthreads = true\n", "model.threads: expected a whole number, got True"),
        ("[model]\nruntime = 'tensorflow'\n", "model.runtime: expected one of 'ai_edge_litert'"),
        ("[model]\npath = ''\n", "model.path: expected a path"),
        ("[inspection]\nroi = [0.5, 0.5, 0.6, 0.2]\n", "inspection.roi: expected a region inside the frame"),
        ("[inspection]\nroi = [0.1, 0.1, 0.5]\n", "inspection.roi: expected 4 numbers"),
        ("[inspection]\nroi = 'all'\n", "inspection.roi: expected a list of numbers"),
        ("[source]\nkind = 'video'\n", "source.video: expected a value for source.kind = 'video'"),
        ("[source]\ncamera = 1.5\n", "source.camera: expected a whole number or a non-empty string"),
        ("[output]\ndisplay = 'yes'\n", "output.display: expected true or false, got 'yes'"),
        ("[run]\nduration = -1\n", "run.duration: expected a number > 0, got -1"),
        ("[trigger\n", "not valid TOML"),
    ],
)
def test_bad_configs_name_the_key(tmp_path: Path, toml: str, message: str):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        Config.load(path)


def test_flags_override_the_file(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text("[trigger]\non = 0.6\n[source]\nkind = 'camera'\ncamera = 2\n")
    config = Config.load(
        path, {"source.kind": "demo", "trigger.kind": "every-frame", "inspection.roi": (0, 0, 1, 1)}
    )
    assert config.source.kind == "demo" and config.source.camera == 2
    assert config.trigger.on == 0.6 and config.trigger.kind == "every-frame"
    assert config.inspection.roi == (0.0, 0.0, 1.0, 1.0)
    assert Config.load(None).source.kind == "camera"


def test_relative_paths_in_a_file_are_taken_from_its_folder_and_flags_from_the_working_dir(
    tmp_path: Path, monkeypatch
):
    station = tmp_path / "station"
    station.mkdir()
    path = station / "line.toml"
    path.write_text(
        "[source]\nkind = 'video'\nvideo = 'clips/line.mp4'\n"
        "[model]\npath = 'models/stamp.tflite'\n"
        "[output]\nevents = '/var/log/v.jsonl'\nsnapshots = '~/snaps'\nsummary = '../s.json'\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a service's working directory is not the config's folder
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = Config.load(Path("..") / "station" / "line.toml")
    base = Path("..") / "station"
    assert config.source.video == base / "clips" / "line.mp4"
    assert config.model.path == base / "models" / "stamp.tflite"
    assert config.output.events == Path("/var/log/v.jsonl")  # absolute: as written
    assert config.output.snapshots == tmp_path / "home" / "snaps"
    assert config.output.summary == base / ".." / "s.json"
    # a flag's path is the engineer's, relative to where the command runs
    flagged = Config.load(path, {"model.path": Path("mine.tflite")})
    assert flagged.model.path == Path("mine.tflite")
    # a bad value is still named by its key, unchanged
    path.write_text("[model]\npath = 3\n")
    with pytest.raises(ConfigError, match=r"model\.path: expected a path, got 3"):
        Config.load(path)


def test_an_images_source_in_a_file_judges_each_image_unless_the_trigger_is_given(tmp_path: Path):
    path = tmp_path / "photos.toml"
    path.write_text("[source]\nkind = 'images'\nimages = 'photos'\n")
    assert Config.load(path).trigger.kind == "every-frame"  # as with the --images flag
    path.write_text("[source]\nkind = 'images'\nimages = 'photos'\n[trigger]\nkind = 'occupancy'\n")
    assert Config.load(path).trigger.kind == "occupancy"  # said in so many words: kept
    assert Config.load(None, {"source.kind": "video", "source.video": "v.mp4"}).trigger.kind == "occupancy"


def test_the_example_config_is_valid_and_documents_every_key():
    config = Config.load(EXAMPLE)
    assert config.output.events == Path("/var/lib/stampline/verdicts.jsonl")
    text = EXAMPLE.read_text()
    for section in ("source", "model", "inspection", "trigger", "decision", "output", "run", "demo"):
        for key in Config.__dataclass_fields__[section].default_factory.__dataclass_fields__:
            assert f"{key} =" in text, f"{section}.{key} is not documented in {EXAMPLE.name}"


def test_check_config_exits_0_or_2_with_one_line(tmp_path: Path, capsys):
    assert main(["--check-config", str(EXAMPLE)]) == 0
    assert "ok" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("[decision]\nmin_hitz = 2\n")
    assert main(["--check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("edge-run: error: ") and "decision.min_hitz" in err


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[source]\nkind = 'video'\nvideo = 'clips/no.mp4'\n", r"source\.video: .*no\.mp4 does not exist"),
        ("[source]\nkind = 'video'\nvideo = 'clips'\n", r"source\.video: .*clips is a folder"),
        ("[source]\nkind = 'images'\nimages = 'clips/a.mp4'\n", r"source\.images: .*a\.mp4 is a file"),
        ("[source]\nkind = 'demo'\n[demo]\nstamps = 'mine'\n", r"demo\.stamps: .*mine does not exist"),
        # there, but not what the run can read: checked as the run opens it
        ("[source]\nkind = 'video'\nvideo = 'p.png'\n", r"source\.video: .*p\.png: is an image"),
        ("[source]\nkind = 'video'\nvideo = 'clips/z.mp4'\n", r"source\.video: .*z\.mp4: "),
        ("[source]\nkind = 'images'\nimages = 'clips'\n", r"source\.images: .*clips: no image files"),
    ],
)
def test_check_config_finds_the_source_files_missing(tmp_path: Path, capsys, toml: str, message: str):
    import cv2
    import numpy as np

    (tmp_path / "clips").mkdir()
    writer = cv2.VideoWriter(str(tmp_path / "clips" / "a.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for i in range(3):
        writer.write(np.full((48, 64, 3), 60 * i, np.uint8))
    writer.release()
    (tmp_path / "clips" / "z.mp4").write_bytes(b"\0" * 10)
    (tmp_path / "p.png").write_bytes(cv2.imencode(".png", np.zeros((48, 64, 3), np.uint8))[1].tobytes())
    cfg = tmp_path / "line.toml"
    cfg.write_text(toml)
    assert main(["--check-config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(f"{re.escape(str(cfg))}: {message}", err), err
    cfg.write_text("[source]\nkind = 'video'\nvideo = 'clips/a.mp4'\n")  # there: the check passes
    assert main(["--check-config", str(cfg)]) == 0


def test_bad_flag_values_are_errors_too(capsys):
    assert main(["--demo", "--roi", "0.5,0.5,0.6,0.2", "--max-frames", "1"]) == 2
    assert "inspection.roi" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--demo", "--roi", "0.5,0.5"])
    assert exc.value.code == 2


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize(
    ("source", "name"), [(UNIT, "edge-run.service"), (TEMPLATE, "edge-run@line2.service")]
)
def test_the_unit_file_verifies(tmp_path: Path, source: Path, name: str):
    # verify checks that ExecStart exists: point it at this venv's edge-run for the check
    edge_run = Path(sys.executable).with_name("edge-run")
    unit = tmp_path / name  # the template as one of its instances
    unit.write_text(source.read_text().replace("/opt/stampline/venv/bin/edge-run", str(edge_run)))
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


def test_the_template_unit_is_the_unit_with_a_config_and_a_state_folder_per_line():
    """edge-run@.service differs from edge-run.service in what is the line's own, nothing else
    (a fix to one's sandboxing must reach the other)."""

    def settings(path: Path) -> list[str]:
        return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]

    per_line = {
        "Description=Stampline stamp inspection (edge-run)": (
            "Description=Stampline stamp inspection (edge-run), line %i"
        ),
        "ExecStart=/opt/stampline/venv/bin/edge-run --config /etc/stampline/stampline.toml": (
            "ExecStart=/opt/stampline/venv/bin/edge-run --config /etc/stampline/%i.toml"
        ),
        "StateDirectory=stampline": "StateDirectory=stampline/%i",
        "WorkingDirectory=/var/lib/stampline": "WorkingDirectory=/var/lib/stampline/%i",
        "ReadWritePaths=/var/lib/stampline": "ReadWritePaths=/var/lib/stampline/%i",
    }
    assert settings(TEMPLATE) == [per_line.get(line, line) for line in settings(UNIT)]


def test_the_unit_has_what_the_service_needs():
    lines = {
        line.split("=", 1)[0]: line.split("=", 1)[1]
        for line in UNIT.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert lines["Type"] == "notify" and int(lines["WatchdogSec"]) > 0
    assert lines["Restart"] == "on-failure" and lines["SupplementaryGroups"] == "gpio video"
    assert lines["User"] == "stampline" and lines["ProtectSystem"] == "strict"
    assert "/etc/stampline/stampline.toml" in lines["ExecStart"]
    assert lines["ReadWritePaths"] == "/var/lib/stampline"


def test_a_bad_value_from_a_flag_is_not_blamed_on_the_file(tmp_path: Path, capsys):
    path = tmp_path / "c.toml"
    path.write_text("[decision]\nmin_hits = 2\n")
    with pytest.raises(ConfigError) as exc:
        Config.load(path, {"http.token": "short"})
    assert str(exc.value).startswith("http.token: expected at least 8")
    assert str(exc.value).endswith("(from the command line)")
    path.write_text("[http]\ntoken = 'short'\n")
    with pytest.raises(ConfigError, match=r"c\.toml: http\.token: expected at least 8"):
        Config.load(path)


@pytest.mark.parametrize(
    ("toml", "flag", "key"),
    [
        (
            '[source]\nkind = "demo"\nas_fast_as_possible = "yes"\n',
            ["--as-fast-as-possible"],
            "source.as_fast_as_possible",
        ),
        ('[model]\nthreads = "two"\n[source]\nkind = "demo"\n', ["--threads", "1"], "model.threads"),
        ('[run]\nduration = "x"\n[source]\nkind = "demo"\n', ["--duration", "1"], "run.duration"),
    ],
)
def test_a_bad_value_in_the_file_is_found_though_a_flag_overrides_it(tmp_path: Path, capsys, toml, flag, key):
    path = tmp_path / "c.toml"
    path.write_text(toml)
    # the service started without the flag would stop at it: so does the run with the flag
    assert main(["--config", str(path), "--max-frames", "5", *flag]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"edge-run: error: {path}: {key}: expected") and "command line" not in err
    assert "\n" not in err
    assert main(["--check-config", str(path), *flag]) == 2
    assert f"{key}: expected" in capsys.readouterr().err
    # a good value in the file, overridden by a flag, is fine
    assert (
        Config.load(path.write_text("[model]\nthreads = 2\n") and path, {"model.threads": 1}).model.threads
        == 1
    )


def test_check_config_reads_the_mqtt_password_file(tmp_path: Path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f"[output]\nevents = '{tmp_path / 'v.jsonl'}'\n"
        f"[mqtt]\nbroker = 'localhost:1883'\npassword_file = '{tmp_path / 'none'}'\n"
    )
    assert main(["--check-config", str(cfg)]) == 2
    assert f"{cfg}: mqtt.password_file: cannot read" in capsys.readouterr().err  # (the file first)
    (tmp_path / "none").write_text("secret\n")
    assert main(["--check-config", str(cfg)]) == 0


def test_check_config_refuses_a_file_where_an_output_folder_must_be(tmp_path: Path, capsys):
    """The run refused it ("is a file, not a folder"); the check said ok."""
    (tmp_path / "gen.py").write_text("print()\n")
    cfg = tmp_path / "c.toml"
    for key, where in (("snapshots", "gen.py"), ("events", "gen.py/v.jsonl"), ("summary", "gen.py/s.json")):
        cfg.write_text(f"[output]\n{key} = '{tmp_path / where}'\n")
        assert main(["--check-config", str(cfg)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"output.{key} " in err and "gen.py is a file, not a folder" in err


def test_a_camera_configs_frame_rate_does_not_pace_a_video_only_fps_given_with_it_does(tmp_path: Path):
    from edge.cli import bench
    from edge.cli.run import build_parser, overrides_from, with_video_pace

    cam = tmp_path / "cam.toml"  # a station's file, as systemd/stampline.toml: a camera at 30 fps
    cam.write_text('[source]\nkind = "camera"\nwidth = 640\nheight = 480\nfps = 30\n')

    def config(*flags: str) -> Config:
        args = build_parser().parse_args(["--config", str(cam), *flags])
        return with_video_pace(Config.load(cam, overrides_from(args)), args)

    assert config("--video", "line.mp4").source.pace_fps is None  # the file's own rate
    assert config("--video", "line.mp4", "--fps", "10").source.pace_fps == 10
    assert config("--camera", "0", "--fps", "10").source.pace_fps is None  # a camera is asked for 10
    # edge-bench's cold start hands edge-run only the flags its source takes
    args = bench.build_parser().parse_args(["--config", str(cam), "--video", "line.mp4", "--cold-start", "1"])
    argv = bench.edge_run_argv(bench.load_config(args), tmp_path / "m.tflite", 1, tmp_path / "v.jsonl")
    assert "--video" in argv and not {"--width", "--height", "--fps"} & set(argv)
    # ... and the demo line it measured: with its variants (was: the single-stamp line)
    args = bench.build_parser().parse_args(
        ["--demo", "--demo-variants", "3", "--seed", "4", "--cold-start", "1"]
    )
    argv = bench.edge_run_argv(bench.load_config(args), tmp_path / "m.tflite", 1, tmp_path / "v.jsonl")
    run_args = build_parser().parse_args(argv[3:])
    demo = Config.load(None, overrides_from(run_args)).demo
    assert (demo.variants, demo.seed) == (3, 4)


def test_bench_cold_start_hands_a_stream_address_over_in_a_private_file_not_on_the_command_line(
    tmp_path: Path,
):
    from edge.cli import bench
    from edge.cli.run import build_parser, overrides_from

    url = 'rtsp://admin:p@ss"w\\rd#1@10.0.0.5:554/stream1'
    args = bench.build_parser().parse_args(["--url", url, "--cold-start", "1"])
    argv = bench.edge_run_argv(bench.load_config(args), tmp_path / "m.tflite", 1, tmp_path / "v.jsonl")
    assert not any("p@ss" in a for a in argv), argv
    path = Path(argv[argv.index("--config") + 1])
    assert path.parent == tmp_path and path.stat().st_mode & 0o777 == 0o600
    # what edge-run makes of those flags: the same stream, the address to the letter
    run_args = build_parser().parse_args(argv[3:])
    config = Config.load(run_args.config, overrides_from(run_args))
    assert config.source.kind == "url" and config.source.url == url


def test_an_output_over_the_bundled_model_is_refused(tmp_path: Path):
    from edge.cli.run import check_paths_apart
    from edge.runtime import BUNDLED_MODEL

    config = Config.load(None, {"source.kind": "demo", "output.summary": BUNDLED_MODEL})
    with pytest.raises(ConfigError, match=r"output\.summary .*stamp_int8\.tflite: the same as model\.path"):
        check_paths_apart(config)


def _line(tmp_path: Path, name: str, camera: object, state: str, port: int, station: str, pin: int) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f"[source]\nkind = 'camera'\ncamera = {camera!r}\n"
        f"[output]\nevents = '{tmp_path / state / 'verdicts.jsonl'}'\n"
        f"snapshots = '{tmp_path / state / 'snaps'}'\n"
        f"[http]\nlisten = {port!r}\n"
        f"[mqtt]\nbroker = 'mqtt.plant.local'\nstation = {station!r}\n"
        f"[gpio]\nreject_pin = {pin!r}\n"
    )
    return path


@pytest.mark.parametrize(
    ("line2", "message"),
    [
        (dict(camera=0), r"both read /dev/video0 \(source\.camera\)"),
        (dict(camera="0"), r"both read /dev/video0 \(source\.camera\)"),  # the index as text
        (dict(camera="/dev/video0"), r"both read /dev/video0 \(source\.camera\)"),
        (dict(state="line1"), r"both write .*line1/verdicts\.jsonl \(output\.events\)"),
        (dict(port="0.0.0.0:8080"), r"both listen on 127\.0\.0\.1:8080 / 0\.0\.0\.0:8080 \(http\.listen\)"),
        (dict(station="line1"), r"both publish to stampline/line1/ \(mqtt\.station\)"),
        (dict(pin="BOARD13"), r"both use GPIO27 \(gpio\.reject_pin\)"),  # pin 13 of the header is GPIO27
    ],
)
def test_check_config_of_the_lines_of_one_machine_refuses_what_two_would_share(
    tmp_path: Path, capsys, line2: dict, message: str
):
    """Two cameras on one Raspberry Pi (edge-run@line1, edge-run@line2): `--check-config` with
    both files finds what they would fight over before either starts."""
    one = _line(tmp_path, "line1", 0, "line1", "127.0.0.1:8080", "line1", 27)
    apart = dict(camera=2, state="line2", port="127.0.0.1:8081", station="line2", pin=22)
    assert main(["--check-config", str(one), str(_line(tmp_path, "line2", **apart))]) == 0
    said = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[0] for line in said] == [str(one), str(tmp_path / "line2.toml")]
    two = _line(tmp_path, "line2", **{**apart, **line2})
    assert main(["--check-config", str(one), str(two)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert re.search(
        f"{re.escape(str(one))} and {re.escape(str(two))}: (.*; )?{message}(; .*)?; each line needs its own",
        err,
    ), err
    assert main(["--check-config", str(two)]) == 0  # alone, each is fine


def test_two_lines_without_a_station_name_would_publish_as_one(tmp_path: Path, capsys):
    one = _line(tmp_path, "line1", 0, "line1", "127.0.0.1:8080", "x", 27)
    two = _line(tmp_path, "line2", 1, "line2", "127.0.0.1:8081", "x", 22)
    for path in (one, two):
        path.write_text(path.read_text().replace("station = 'x'\n", ""))
    assert main(["--check-config", str(one), str(two)]) == 2
    assert "(mqtt.station, left out: the host name)" in capsys.readouterr().err


def test_check_config_of_several_lines_knows_what_is_not_shared(tmp_path: Path, capsys):
    """Same broker, another port (a TLS listener): one broker, whose client ids are one namespace;
    a photo-eye pin of a line whose trigger is not the photo-eye is not in use."""
    one = _line(tmp_path, "line1", 0, "line1", "127.0.0.1:8080", "line1", 27)
    two = _line(tmp_path, "line2", 1, "line2", "[::1]:8080", "line2", 22)  # IPv6: a socket of its own
    text = two.read_text().replace("broker = 'mqtt.plant.local'", "broker = 'mqtt.plant.local:8883'")
    two.write_text(text.replace("reject_pin = 22", "trigger_pin = 27"))
    assert main(["--check-config", str(one), str(two)]) == 0, capsys.readouterr().err
    two.write_text(
        two.read_text().replace("station = 'line2'\n", "station = 'line2'\nclient_id = 'stampline-line1'\n")
    )
    assert main(["--check-config", str(one), str(two)]) == 2
    assert "both connect to the broker as stampline-line1 (mqtt.client_id)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["A", "A"], "--check-config: .*A.toml is given twice"),
        (["A", "B", "--threads", "1"], "--check-config with several files takes no other flags"),
    ],
)
def test_check_config_of_several_files_refuses_what_would_mislead(tmp_path: Path, capsys, argv, message):
    for name in "AB":
        (tmp_path / f"{name}.toml").write_text("[source]\nkind = 'demo'\n")
    files = [str(tmp_path / f"{a}.toml") if a in "AB" else a for a in argv]
    assert main(["--check-config", *files]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_a_bare_picamera_flag_keeps_the_config_camera_number(tmp_path: Path):
    from edge.cli.run import build_parser, overrides_from

    path = tmp_path / "line2.toml"
    path.write_text("[source]\nkind = 'picamera'\ncamera = 1\n")
    args = build_parser().parse_args(["--config", str(path), "--picamera"])
    assert Config.load(path, overrides_from(args)).source.camera == 1
    args = build_parser().parse_args(["--config", str(path), "--picamera", "0"])
    assert Config.load(path, overrides_from(args)).source.camera == 0
    path.write_text("[source]\nkind = 'picamera'\ncamera = -1\n")
    with pytest.raises(ConfigError, match=r"source\.camera: expected the Pi camera's number"):
        Config.load(path)


def test_check_config_of_several_lines_sees_through_names_and_reads_too(tmp_path: Path, capsys):
    one = _line(tmp_path, "line1", 0, "line1", "0.0.0.0:8080", "line1", 27)
    two = _line(tmp_path, "line2", 1, "line2", "[::1]:8080", "line2", 22)  # IPv6: not 0.0.0.0's
    assert main(["--check-config", str(one), str(two)]) == 0, capsys.readouterr().err
    capsys.readouterr()

    def clash(old: str, new: str) -> str:
        two.write_text(two.read_text().replace(old, new))
        assert main(["--check-config", str(one), str(two)]) == 2
        err = capsys.readouterr().err
        two.write_text(two.read_text().replace(new, old))
        assert err.count("\n") == 1, err
        return err

    # one broker by another name: one client id namespace
    err = clash(
        "broker = 'mqtt.plant.local'\nstation = 'line2'",
        "broker = 'MQTT.plant.local:8883'\nstation = 'line1'",
    )
    assert "both publish to stampline/line1/ (mqtt.station); both connect to the broker as" in err
    # the other line's rotated verdict log, and the model the other line reads
    err = clash("line2/verdicts.jsonl'", "line1/verdicts.jsonl.1'")
    assert "both write" in err and "line1/verdicts.jsonl / " in err and "(output.events)" in err
    from edge.runtime import BUNDLED_MODEL

    model = tmp_path / "stamp.tflite"
    model.write_bytes(BUNDLED_MODEL.read_bytes())
    two.write_text(two.read_text() + f"[model]\npath = '{model}'\n")
    one.write_text(one.read_text().replace("[http]", f"summary = '{model}'\n[http]"))  # a slip
    assert main(["--check-config", str(one), str(two)]) == 2
    err = capsys.readouterr().err
    assert f"{one} writes {model} (output.summary), which {two} reads (model.path)" in err


@pytest.mark.parametrize(
    ("a", "b", "clash"),
    [
        (("write", "v.jsonl", True), ("write", "v.jsonl.1", False), True),  # its rotated file
        (("write", "v.jsonl", True), ("write", "v.jsonl.next", False), True),  # its numbering
        (("write", "v.jsonl", True), ("read", "v.jsonl.mqtt", False), True),
        (("write", "v.jsonl", True), ("write", "v.jsonl.torn", False), True),  # its torn lines
        (("write", "v.jsonl", True), ("write", "v.jsonl.bak", False), False),  # an archive's name
        (("write", "v.jsonl", True), ("write", "v.jsonl.20261130", False), False),
        (("write", "verdicts", True), ("write", "verdicts.jsonl", True), False),  # two logs
        (("port", "127.0.0.1", 8080), ("port", "127.0.0.2", 8080), False),  # two addresses
        (("port", "localhost", 8080), ("port", "127.0.0.1", 8080), True),
        (("port", "0:0::0", 8080), ("port", "127.0.0.1", 8080), True),  # "::" spelled out
        (("port", "fe80::1", 8080), ("port", "FE80:0::1", 8080), True),
        (("port", "0.0.0.0", 8080), ("port", "::1", 8080), False),
    ],
)
def test_two_lines_claims_clash_by_meaning_not_by_spelling(tmp_path: Path, a, b, clash):
    from edge.cli.run import _same_claim

    def claim(c):
        return (
            (c[0], tmp_path / c[1], c[2])
            if c[0] == "write"
            else (c[0], tmp_path / c[1])
            if c[0] == "read"
            else c
        )

    assert _same_claim(claim(a), claim(b)) is clash
    assert _same_claim(claim(b), claim(a)) is clash


def test_a_config_and_a_token_file_saved_by_windows_notepad_read(tmp_path: Path, capsys):
    """Notepad may write UTF-8 with a byte-order mark and CRLF line ends."""
    token = tmp_path / "http-token"
    token.write_bytes(b"\xef\xbb\xbfs3cret-token-1\r\n")
    cfg = tmp_path / "line1.toml"
    cfg.write_bytes(
        f"\ufeff[source]\r\nkind = 'demo'\r\n[http]\r\nlisten = ':8080'\r\n"
        f"token_file = '{token}'\r\n".encode()
    )
    assert main(["--check-config", str(cfg)]) == 0, capsys.readouterr().err
    from edge.station.common import http_token

    assert http_token(Config.load(cfg).http) == "s3cret-token-1"


def test_check_config_loads_the_model_as_the_run_does_and_warns_of_an_unproven_one(tmp_path: Path, capsys):
    """A model file cut short past its metadata reads as a model until the interpreter loads it;
    a model converted with --no-verify (no proof of agreement), or validated no better than
    always saying "present", is named in a warning by --check-config and at the run's start."""
    import dataclasses

    from convert.tflite import embed_metadata
    from edge.contract import read_embedded_metadata
    from edge.runtime import BUNDLED_MODEL, model_warnings

    data = BUNDLED_MODEL.read_bytes()
    config = tmp_path / "station.toml"
    config.write_text('[model]\npath = "m.tflite"\n')
    (tmp_path / "m.tflite").write_bytes(data[: len(data) * 19 // 20])
    assert main(["--check-config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert re.search(r"station\.toml: model\.path: .*m\.tflite: .* cannot load it", err), err

    meta = read_embedded_metadata(data)
    assert model_warnings(meta) == []  # the bundled model: proven, and skilled
    prov = {k: v for k, v in meta.provenance.items() if k != "agreement"}
    prov["validation_tflite"] = {"presence_accuracy": 0.74, "n_images": 100, "n_positive": 74}
    unproven = dataclasses.replace(meta, provenance=prov)
    said = model_warnings(unproven)
    assert len(said) == 2 and "--no-verify" in said[0] and "no better than always saying 'present'" in said[1]
    assert "its int8 answers were never compared" in said[0]  # the bundled model's mode
    float_said = model_warnings(dataclasses.replace(unproven, provenance={**prov, "mode": "float32"}))
    assert "its float32 answers were never compared" in float_said[0]  # said int8 for every model
    # trained on images that all held the stamp (a centre-point list): it never says MISSING
    never_absent = model_warnings(
        dataclasses.replace(meta, provenance={**meta.provenance, "training_negatives": 0})
    )
    assert len(never_absent) == 1 and "never saw an image without the stamp in training" in never_absent[0]
    (tmp_path / "m.tflite").write_bytes(embed_metadata(data, unproven))
    assert main(["--check-config", str(config)]) == 0
    out, err = capsys.readouterr()
    assert "ok" in out and err.count("WARNING") == 2 and "station.toml: model " in err
    summary = tmp_path / "summary.json"
    argv = ["--demo", "--model", str(tmp_path / "m.tflite"), "--max-frames", "2", "--threshold", "0.7"]
    assert main([*argv, "--summary", str(summary)]) == 0
    out, err = capsys.readouterr()
    assert err.count("without the proof of agreement") == 1
    assert "threshold 0.7 (the model's own: 0.5)" in out  # the start line: which threshold judges
    assert json.loads(summary.read_text())["threshold"] == 0.7


def test_a_relative_log_path_left_in_the_working_directory_by_an_older_version_is_said(
    tmp_path: Path, monkeypatch, capsys
):
    """Before 2026-12-01 a relative path in the config was taken from the working directory (a
    service's /var/lib/stampline); now from the config file's folder. A station upgraded with its
    log there would start numbering again at 1 in a new log: --check-config (and a run) say so,
    and the "ok" line names where verdicts go."""
    from edge.cli.run import main, relative_path_warnings

    etc, var = tmp_path / "etc", tmp_path / "var"
    etc.mkdir()
    var.mkdir()
    (var / "verdicts.jsonl").write_text('{"seq": 1}\n')
    config = etc / "station.toml"
    config.write_text("[source]\nkind = 'demo'\n[output]\nevents = 'verdicts.jsonl'\n")
    monkeypatch.chdir(var)
    assert main(["--check-config", str(config)]) == 0
    out, err = capsys.readouterr()
    assert (
        f"output.events = 'verdicts.jsonl' is taken from the config file's folder, {etc / 'verdicts.jsonl'}"
        in err
    )
    assert f"the working directory holds {var / 'verdicts.jsonl'}" in err
    assert f"writes verdicts {etc / 'verdicts.jsonl'})" in out
    # the same file saved by Notepad (a BOM): the same warning (its second reading dropped it)
    bom = etc / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + config.read_bytes())
    (said,) = relative_path_warnings(bom, Config.load(bom))
    assert "output.events = 'verdicts.jsonl' is taken from the config file's folder" in said
    # once the log is where the config says (or the path absolute), nothing to say
    (etc / "verdicts.jsonl").write_text('{"seq": 1}\n')
    assert relative_path_warnings(config, Config.load(config)) == []


@pytest.mark.parametrize(
    ("toml", "said"),
    [
        ("[source]\nkind = 'video'\nvideo = 'a.mp4'\nexposure_ms = 10\n", "source.exposure_ms"),
        ("[source]\nkind = 'video'\nvideo = 'a.mp4'\nfps = 10\n", "source.fps"),  # pace_fps paces a file
        ("[source]\nkind = 'camera'\npace_fps = 10\n", "source.pace_fps"),
        ("[source]\nkind = 'camera'\n[demo]\nseed = 3\n", "demo.seed"),
        ("[trigger]\nkind = 'every-frame'\non = 0.6\n", "trigger.on"),
        ("[gpio]\nwindow_s = 0.5\n", "gpio.window_s"),
        ("[gpio]\nreject_delay_s = 1.0\n", "gpio.reject_delay_s"),
        ("[http]\ntoken = 'abcdefghijklmnopqrstuvwx'\n", "http.token"),
        ("[mqtt]\nstation = 'line-1'\n", "mqtt.station"),
        ("[output]\nevents_keep = 3\n", "output.events_keep"),
        ("[output]\nsnapshot_max_count = 3\n", "output.snapshot_max_count"),
        ("[output]\nheatmap = true\n", "output.heatmap"),
    ],
)
def test_a_key_that_does_nothing_here_is_said_by_name(tmp_path: Path, toml: str, said: str):
    from edge.cli.run import idle_warnings

    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    (warning,) = idle_warnings(Config.load(cfg))
    assert warning.startswith(said) and "ignored" in warning


@pytest.mark.parametrize(
    "toml",
    [
        "[source]\nkind = 'camera'\nexposure_ms = 10\nfps = 30\nstall_s = 5\n",
        "[source]\nkind = 'video'\nvideo = 'a.mp4'\npace_fps = 10\n",
        "[source]\nkind = 'demo'\n[demo]\nseed = 3\n",
        "[trigger]\nkind = 'gpio'\n[gpio]\ntrigger_pin = 17\nwindow_s = 0.5\n",
        "[gpio]\nreject_pin = 18\nreject_delay_s = 1.0\n",
        "[http]\nlisten = ':8080'\ntoken = 'abcdefghijklmnopqrstuvwx'\n",
        "[output]\nevents = 'v.jsonl'\nevents_keep = 3\n",
        "[output]\nheatmap = true\nrecord = 'a.mp4'\n",
        "[output]\nheatmap = true\n[http]\nlisten = '127.0.0.1:8080'\n",  # (snapshots: drawn without it)
    ],
)
def test_keys_in_use_are_not_warned_about(tmp_path: Path, toml: str):
    from edge.cli.run import idle_warnings

    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    assert idle_warnings(Config.load(cfg)) == []


def test_the_example_config_and_a_station_file_run_on_a_video_warn_of_nothing(tmp_path: Path):
    from edge.cli.run import build_parser, idle_warnings, overrides_from, with_video_pace

    assert idle_warnings(Config.load(EXAMPLE)) == []
    # a station's camera file run once on a recording: its camera keys are left by the flag's choice
    cam = tmp_path / "cam.toml"
    cam.write_text('[source]\nkind = "camera"\nwidth = 640\nfps = 30\nexposure_ms = 10\n')
    args = build_parser().parse_args(["--config", str(cam), "--video", "line.mp4", "--fps", "10"])
    overrides = overrides_from(args)
    config = with_video_pace(Config.load(cam, overrides), args)
    assert config.source.pace_fps == 10 and idle_warnings(config, list(overrides)) == []
    # a rate with a video read as fast as possible is still its time base (a wrong header's
    # products "in view for 30 s" otherwise): used, not warned of as ignored (it was, wrongly)
    args = build_parser().parse_args(["--video", "line.mp4", "--fps", "10", "--as-fast-as-possible"])
    overrides = overrides_from(args)
    config = with_video_pace(Config.load(None, overrides), args)
    assert idle_warnings(config, list(overrides)) == [] and config.source.pace_fps == 10
    # a camera's rate key in a video's config: named, with the key a video's rate is
    video = tmp_path / "video.toml"
    video.write_text('[source]\nkind = "video"\nvideo = "line.mp4"\nfps = 30\n')
    (warning,) = idle_warnings(Config.load(video))
    assert "source.fps (--fps): not used by the video source" in warning and "is source.pace_fps" in warning


def test_flags_that_do_nothing_are_named_as_flags_and_the_run_goes_on(tmp_path: Path, capsys):
    argv = ["--demo", "--max-frames", "5", "--as-fast-as-possible", "--trigger", "every-frame"]
    token = ["--http-token", "abcdefghijklmnopqrstuvwx"]
    assert main([*argv, *token, "--heatmap", "--snapshot-max-count", "5"]) == 0
    err = capsys.readouterr().err
    assert "--http-token (http.token): does nothing without the web view" in err
    assert "abcdefghijklmnopqrstuvwx" not in err  # a secret is never printed
    assert "--snapshot-max-count (output.snapshot_max_count): does nothing" in err
    assert "--heatmap (output.heatmap): does nothing without annotated frames" in err
    # snapshots are drawn without it (was: taken as somewhere to draw it, and silently not drawn)
    assert main([*argv, "--heatmap", "--snapshots", str(tmp_path / "s")]) == 0
    assert "--heatmap (output.heatmap): does nothing without annotated frames" in capsys.readouterr().err
    # with somewhere to draw it, the bundled dense-head model is what is said to lack a heatmap
    assert main([*argv, "--heatmap", "--record", str(tmp_path / "r.mp4")]) == 0
    err = capsys.readouterr().err
    assert "does nothing" not in err and "gives no heatmap" in err
    # the station's name titles the web view's page: not idle without a broker (was: said so)
    http = ["--http", "127.0.0.1:0", "--station", "Prüfstraße-Nord"]
    if importlib.util.find_spec("prometheus_client") is not None:
        assert main([*argv, *http]) == 0
        assert "--station" not in capsys.readouterr().err
    assert main([*argv, "--station", "Prüfstraße-Nord"]) == 0
    assert "--station (mqtt.station): does nothing without a broker" in capsys.readouterr().err


def test_check_config_names_the_file_and_the_idle_key(tmp_path: Path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[source]\nkind = 'demo'\nexposure_ms = 10\n")
    assert main(["--check-config", str(cfg)]) == 0
    err = capsys.readouterr().err
    assert f"WARNING: {cfg}: source.exposure_ms (--exposure-ms): not used by the demo source" in err


def test_a_missing_file_the_config_names_is_named_with_the_config_and_its_key(tmp_path: Path, capsys):
    """At a service's start the journal said "nofile.mp4: video file not found" and left the
    operator to find which of the station's files named it; --check-config already said both."""
    config = tmp_path / "station.toml"
    config.write_text('[source]\nkind = "video"\nvideo = "gone.mp4"\n[model]\npath = "gone.tflite"\n')
    assert main(["--config", str(config), "--max-frames", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"edge-run: error: {config}: source.video: ") and "gone.mp4" in err
    (tmp_path / "other.toml").write_text('[model]\npath = "gone.tflite"\n')
    assert main(["--config", str(tmp_path / "other.toml"), "--demo", "--max-frames", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith(f"edge-run: error: {tmp_path / 'other.toml'}: model.path: ") and "gone.tflite" in err
    )
    # given by a flag, it is the flag's: no config named
    assert main(["--config", str(config), "--video", str(tmp_path / "flag.mp4"), "--max-frames", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"edge-run: error: {tmp_path / 'flag.mp4'}: video file not found"


def test_check_config_warns_of_a_pi_camera_that_cannot_load_and_names_the_runtime_key(
    tmp_path: Path, monkeypatch, capsys
):
    """On a Pi set up as documented, apt's picamera2 failed to import under the venv's numpy 2
    (ValueError, not ImportError): --check-config said ok, and the run gave a traceback, exit 1,
    restarted every 10 s. A runtime forced in the config and not installed was blamed on
    model.path, with the advice to install the runtime already there."""
    import sys as _sys

    fake = tmp_path / "site" / "picamera2"
    fake.mkdir(parents=True)  # the hardware library as a broken install makes it: raising as it loads
    (fake / "__init__.py").write_text(
        'raise ValueError("numpy.dtype size changed, may indicate binary incompatibility. '
        'Expected 96 from C header, got 88 from PyObject")\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(_sys.modules, "picamera2", raising=False)
    cfg = tmp_path / "pic.toml"
    cfg.write_text('[source]\nkind = "picamera"\n')
    assert main(["--check-config", str(cfg)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{cfg}: ok") and "source.kind picamera: picamera2 is installed but fails" in err
    assert "pip install --force-reinstall simplejpeg" in err
    assert main(["--picamera", "--max-frames", "3"]) == 2  # the run: one line, not a traceback
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("edge-run: error: picamera2 is installed but fails to load (ValueError: ")

    rt = tmp_path / "rt.toml"
    rt.write_text('[model]\nruntime = "tflite_runtime"\n')
    monkeypatch.setitem(_sys.modules, "tflite_runtime", None)  # not installed (whatever this machine has)
    monkeypatch.setitem(_sys.modules, "tflite_runtime.interpreter", None)
    assert main(["--check-config", str(rt)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"{rt}: model.runtime: no usable TFLite runtime" in line
    assert line.endswith(
        "install it with `pip install tflite-runtime 'numpy<2'`, or leave the runtime to choose"
    )


def test_secrets_sent_in_clear_or_readable_by_everyone_are_warned_of(tmp_path: Path, capsys):
    """A security review: an MQTT password without TLS went over the network in clear text, and a
    token file of mode 644 passed --check-config, both without a word."""
    token, password = tmp_path / "tok", tmp_path / "pw"
    token.write_text("abcdefghijklmnopqrstuvwxyz\n")
    token.chmod(0o644)
    password.write_text("s3cr3t")
    password.chmod(0o600)
    cfg = tmp_path / "s.toml"
    cfg.write_text(
        f'[http]\nlisten = "127.0.0.1:0"\ntoken_file = "{token}"\n'
        f'[mqtt]\nbroker = "127.0.0.1:1883"\nusername = "u"\npassword_file = "{password}"\n'
        f'[output]\nevents = "{tmp_path / "v.jsonl"}"\n'
    )
    assert main(["--check-config", str(cfg)]) == 0
    err = capsys.readouterr().err
    assert "mqtt.password_file: without mqtt.tls the password goes over the network in clear text" in err
    assert f"http.token_file {token}: every user of this machine can read it (mode 644)" in err
    assert "mqtt.password_file " + str(password) not in err  # 600: fine
    assert "abcdefghijklmnopqrstuvwxyz" not in err and "s3cr3t" not in err  # never printed
    token.chmod(0o640)
    cfg.write_text(cfg.read_text().replace('username = "u"', 'username = "u"\ntls = true'))
    assert main(["--check-config", str(cfg)]) == 0
    assert "WARNING" not in capsys.readouterr().err


def test_a_token_of_another_type_is_not_shown_and_a_deeply_nested_file_is_one_line(tmp_path: Path, capsys):
    """A security review: `token = 98765432101234` (or a table) was printed whole in its error,
    and a file of 5,000 nested lists ended in a RecursionError traceback."""
    for value, kind in (("98765432101234", "number"), ('{ a = "Sup3rSecretTokenValueX" }', "table")):
        cfg = tmp_path / "t.toml"
        cfg.write_text(f'[http]\nlisten = "127.0.0.1:0"\ntoken = {value}\n')
        assert main(["--check-config", str(cfg)]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.endswith(f"http.token: expected a string, got a {kind}"), line
        assert "98765432101234" not in line and "Sup3r" not in line
    cfg.write_text('[http]\nlisten = "127.0.0.1:0"\ntoken = ""\n')  # a string: not "of another type"
    assert main(["--check-config", str(cfg)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.endswith("http.token: expected a non-empty string, got ''"), line
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    for argv in (["--check-config", str(deep)], ["--config", str(deep), "--max-frames", "1"]):
        assert main(argv) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line == f"edge-run: error: {deep}: not a config: its values are nested too deeply"


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ('record = "line.txt"', "output.record .*line.txt: cannot record to this file type"),
        ('record = "folder"', "output.record .*folder: is a folder"),
        ('summary = "folder"', "output.summary .*folder: is a folder"),
        ('summary = "notes.txt"', "notes.txt: holds something other than a JSON report"),
    ],
)
def test_check_config_refuses_the_outputs_a_run_refuses(tmp_path: Path, capsys, output, message):
    """--check-config said ok, and the service failed at its start (a helper's comparison, run
    by run); the check and the run now share these checks."""
    from edge.cli.run import main

    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.txt").write_text("our notes\n")
    config = tmp_path / "station.toml"
    config.write_text(f'[source]\nkind = "demo"\n[output]\n{output}\n')
    for argv in (["--check-config", str(config)], ["--config", str(config), "--max-frames", "5"]):
        assert main(argv) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert re.search(message, line), line
    assert (tmp_path / "notes.txt").read_text() == "our notes\n"
