"""Camera controls a station fixes: exposure, gain, the lights' mains frequency.

The hardware boundary is faked: a V4L2 device's ioctl calls (a table of controls that behaves as
a UVC camera's driver does), OpenCV's capture object, and picamera2's camera object.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import types

import cv2
import numpy as np
import pytest

from edge import v4l2
from edge.cli.run import main
from edge.config import Config, ConfigError
from edge.sources import CameraControls, OpenCVCamera, PiCamera, controls_said, exposure_warnings

#: the real function, for the fakes once a test has put one in its place
APPLY = v4l2.apply
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="V4L2 controls are Linux's")


class FakeV4L2:
    """A V4L2 device's controls as its driver answers ioctl calls: ranges, steps, and a manual
    exposure that is refused while automatic exposure is on (EACCES, as uvcvideo does)."""

    def __init__(self, controls: dict[int, dict] | None = None):
        self.controls = controls if controls is not None else self.uvc()
        self.opened: list[str] = []
        self.sets: list[tuple[int, int]] = []

    @staticmethod
    def uvc() -> dict[int, dict]:
        return {
            v4l2.CID_POWER_LINE_FREQUENCY: dict(min=0, max=2, step=1, value=0),
            v4l2.CID_EXPOSURE_AUTO: dict(min=0, max=3, step=1, value=3),
            v4l2.CID_EXPOSURE_ABSOLUTE: dict(min=3, max=2047, step=1, value=156),
            v4l2.CID_GAIN: dict(min=0, max=255, step=1, value=64),
        }

    def open(self, path: str, flags: int) -> int:
        self.opened.append(path)
        return os.open(os.devnull, os.O_RDONLY)

    def ioctl(self, fd: int, request: int, buf: bytearray, mutate: bool) -> int:
        if request == v4l2.VIDIOC_QUERYCTRL:
            cid = int.from_bytes(buf[:4], sys.byteorder)
            if cid not in self.controls:
                raise OSError(errno.EINVAL, "no such control")
            c = self.controls[cid]
            buf[:] = v4l2._QUERY.pack(cid, 1, b"", c["min"], c["max"], c["step"], c["value"], 0, 0, 0)
            return 0
        cid, value = v4l2._CONTROL.unpack(buf)
        if cid not in self.controls:
            raise OSError(errno.EINVAL, "no such control")
        c = self.controls[cid]
        if request == v4l2.VIDIOC_G_CTRL:
            buf[:] = v4l2._CONTROL.pack(cid, c["value"])
            return 0
        assert request == v4l2.VIDIOC_S_CTRL
        if not c["min"] <= value <= c["max"]:
            raise OSError(errno.ERANGE, "out of range")
        if c.get("refuse"):
            raise OSError(errno.EIO, "the camera did not take it")
        auto = self.controls.get(v4l2.CID_EXPOSURE_AUTO, {}).get("value")
        if cid == v4l2.CID_EXPOSURE_ABSOLUTE and auto not in (None, v4l2.EXPOSURE_MANUAL):
            raise OSError(errno.EACCES, "inactive while automatic exposure is on")
        c["value"] = c["min"] + (value - c["min"]) // c["step"] * c["step"]
        self.sets.append((cid, value))
        return 0

    def apply(self, camera, **kwargs):
        return APPLY(camera, ioctl=self.ioctl, opener=self.open, **kwargs)


@pytest.mark.parametrize(
    ("exposure_ms", "mains_hz", "fps", "warned"),
    [
        (10.0, 50, 30, []),
        (20.0, 50, 30, []),
        (8.33, 60, 30, []),
        (16.67, 60, 30, []),
        (5.0, 50, 30, ["flicker"]),  # shorter than one flicker period: bands roll through the frame
        (12.0, 50, 30, ["flicker"]),
        (10.0, 60, 30, ["flicker"]),
        (40.0, 50, 30, ["frame"]),  # 4 periods, but longer than a frame at 30 fps
        (45.0, 50, None, ["flicker"]),
        ("auto", 50, 30, []),
        (None, 50, 30, []),
        (3.0, None, 30, []),  # no mains given: nothing known of the lights
    ],
)
def test_a_fixed_exposure_is_warned_about_unless_whole_flicker_periods_within_a_frame(
    exposure_ms, mains_hz, fps, warned
):
    warnings = exposure_warnings(exposure_ms, mains_hz, fps)
    kinds = ["flicker" if "flicker periods" in w else "frame" for w in warnings]
    assert kinds == warned
    if "flicker" in kinds:
        period = "(10 ms)" if mains_hz == 50 else "(8.33 ms)"
        assert period in warnings[0] and "LEDs on a DC supply" in warnings[0]
    if "frame" in kinds:
        assert "longer than a frame at 30 fps (33.3 ms)" in warnings[-1]


def test_a_fixed_exposure_turns_the_cameras_automatic_exposure_off_first_and_is_read_back():
    dev = FakeV4L2()
    taken, warnings = dev.apply(0, exposure_ms=2.5)
    assert dev.opened == ["/dev/video0"]
    assert dev.sets == [(v4l2.CID_EXPOSURE_AUTO, v4l2.EXPOSURE_MANUAL), (v4l2.CID_EXPOSURE_ABSOLUTE, 25)]
    assert taken == {"exposure_ms": 2.5} and warnings == []
    # the driver rounds to its step: what is said is what it took
    dev = FakeV4L2()
    dev.controls[v4l2.CID_EXPOSURE_ABSOLUTE]["step"] = 10
    taken, _ = dev.apply("/dev/v4l/by-id/usb-cam-video-index0", exposure_ms=2.5)
    assert dev.opened == ["/dev/v4l/by-id/usb-cam-video-index0"] and taken == {"exposure_ms": 2.3}


def test_auto_gives_the_camera_its_automatic_exposure_and_gain_back():
    """A USB camera keeps a fixed exposure after the run (until unplugged); "auto" undoes it."""
    dev = FakeV4L2()
    dev.controls[v4l2.CID_AUTOGAIN] = dict(min=0, max=1, step=1, value=1)
    dev.apply(0, exposure_ms=5.0, gain=10)
    assert dev.controls[v4l2.CID_EXPOSURE_AUTO]["value"] == v4l2.EXPOSURE_MANUAL
    assert (
        dev.apply(0) == ({}, []) and dev.controls[v4l2.CID_EXPOSURE_AUTO]["value"] == 1
    )  # left out: untouched
    taken, warnings = dev.apply(0, exposure_ms="auto", gain="auto")
    assert taken == {"exposure_ms": "auto", "gain": "auto"} and warnings == []
    assert (
        dev.controls[v4l2.CID_EXPOSURE_AUTO]["value"] == 3 and dev.controls[v4l2.CID_AUTOGAIN]["value"] == 1
    )
    assert controls_said(taken) == ["automatic exposure", "automatic gain"]


def test_a_refused_exposure_leaves_the_camera_on_its_own_automatic_exposure():
    dev = FakeV4L2()
    dev.controls[v4l2.CID_EXPOSURE_ABSOLUTE]["refuse"] = True
    taken, warnings = dev.apply(0, exposure_ms=10.0)
    assert taken == {} and warnings[0].startswith("source.exposure_ms: the camera refused it")
    assert dev.controls[v4l2.CID_EXPOSURE_AUTO]["value"] == 3  # back from manual, not left at its old value


def test_an_exposure_outside_the_cameras_range_is_clamped_and_said():
    dev = FakeV4L2()
    taken, warnings = dev.apply(0, exposure_ms=0.1)
    assert taken == {"exposure_ms": 0.3}
    assert (
        len(warnings) == 1
        and "source.exposure_ms: 0.1 ms is outside the camera's range 0.3-204.7 ms" in warnings[0]
    )
    taken, warnings = FakeV4L2().apply(0, exposure_ms=500)
    assert taken == {"exposure_ms": 204.7} and "204.7 ms is used" in warnings[0]


@pytest.mark.parametrize(("hz", "value"), [(50, 1), (60, 2)])
def test_the_mains_frequency_sets_the_cameras_power_line_control(hz, value):
    dev = FakeV4L2()
    taken, warnings = dev.apply(2, mains_hz=hz)
    assert dev.opened == ["/dev/video2"] and dev.sets == [(v4l2.CID_POWER_LINE_FREQUENCY, value)]
    assert taken == {"mains_hz": hz} and warnings == [] and controls_said(taken) == [f"mains {hz} Hz"]


def test_controls_a_camera_lacks_or_refuses_are_warnings_naming_the_key():
    dev = FakeV4L2({v4l2.CID_POWER_LINE_FREQUENCY: dict(min=0, max=1, step=1, value=0)})  # 50 Hz only
    taken, warnings = dev.apply(0, exposure_ms=10.0, gain=4, mains_hz=60)
    assert taken == {} and dev.sets == []
    assert [w.split(":")[0] for w in warnings] == ["source.mains_hz", "source.exposure_ms", "source.gain"]
    assert "no 60 Hz power line frequency setting" in warnings[0]
    # a camera whose exposure stays automatic (no manual mode): refused, said, the rest applied
    dev = FakeV4L2()
    dev.controls[v4l2.CID_EXPOSURE_AUTO]["min"] = 2
    taken, warnings = dev.apply(0, exposure_ms=10.0, mains_hz=50)
    assert taken == {"mains_hz": 50}
    assert len(warnings) == 1 and warnings[0].startswith("source.exposure_ms: the camera refused it")


def test_a_gain_turns_automatic_gain_off_and_is_a_whole_number_in_the_cameras_units():
    dev = FakeV4L2()
    dev.controls[v4l2.CID_AUTOGAIN] = dict(min=0, max=1, step=1, value=1)
    taken, warnings = dev.apply(0, gain=100)
    assert dev.sets == [(v4l2.CID_AUTOGAIN, 0), (v4l2.CID_GAIN, 100)]
    assert taken == {"gain": 100} and warnings == []
    taken, warnings = FakeV4L2().apply(0, gain=2.5)
    assert taken == {"gain": 2} and "whole number in 0..255" in warnings[0]
    assert FakeV4L2().apply(0, gain=0.0) == ({"gain": 0}, [])  # a USB camera's gain starts at 0


def test_a_device_that_cannot_be_opened_for_its_controls_is_one_warning():
    def missing(path, flags):
        raise FileNotFoundError(errno.ENOENT, "no such file", path)

    taken, warnings = v4l2.apply(7, exposure_ms=10.0, ioctl=FakeV4L2().ioctl, opener=missing)
    assert taken == {} and warnings == [
        "cannot set the camera's controls on /dev/video7 (No such file or directory)"
    ]
    assert v4l2.apply(7, ioctl=FakeV4L2().ioctl, opener=missing) == ({}, [])  # nothing asked: nothing opened


class FakeCapture:
    """OpenCV's capture object for a V4L2 camera (the hardware boundary)."""

    def __init__(self, index, backend):
        self.props: dict[int, float] = {cv2.CAP_PROP_FPS: 30.0}

    def isOpened(self) -> bool:
        return True

    def set(self, prop: int, value: float) -> bool:
        self.props[prop] = value
        return True

    def get(self, prop: int) -> float:
        return self.props.get(prop, 0.0)

    def read(self):
        return True, np.full((120, 160, 3), 90, np.uint8)

    def release(self) -> None:
        pass


@linux_only
def test_a_camera_gets_its_controls_at_every_opening_and_warns_once(monkeypatch, caplog):
    devices: list[FakeV4L2] = []

    def fresh_device(camera, **kwargs):  # a replugged camera starts from its defaults
        devices.append(FakeV4L2())
        return devices[-1].apply(camera, **kwargs)

    monkeypatch.setattr(cv2, "VideoCapture", FakeCapture)
    monkeypatch.setattr(v4l2, "apply", fresh_device)
    camera = OpenCVCamera(0, controls=CameraControls(exposure_ms=4.0, mains_hz=50))
    with caplog.at_level(logging.WARNING, logger="edge.sources"):
        for _ in range(2):  # opened, then reopened after a stall
            camera.open()
            camera.close()
    assert [d.controls[v4l2.CID_EXPOSURE_ABSOLUTE]["value"] for d in devices] == [40, 40]
    assert [d.controls[v4l2.CID_POWER_LINE_FREQUENCY]["value"] for d in devices] == [1, 1]
    assert camera.describe() == "mains 50 Hz, exposure 4 ms"
    flicker = [r.getMessage() for r in caplog.records if "flicker periods" in r.getMessage()]
    assert len(flicker) == 1 and flicker[0].startswith("camera 0: source.exposure_ms: exposure 4 ms")
    # replugged, it now refuses the exposure: said then, and no longer claimed on the start line
    refusing = FakeV4L2()
    refusing.controls[v4l2.CID_EXPOSURE_ABSOLUTE]["refuse"] = True
    monkeypatch.setattr(v4l2, "apply", refusing.apply)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edge.sources"):
        camera.open()
    said = [r.getMessage() for r in caplog.records if "source.exposure_ms" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("camera 0: source.exposure_ms: "), said
    assert camera.describe() == "mains 50 Hz"
    assert refusing.controls[v4l2.CID_POWER_LINE_FREQUENCY]["value"] == 1  # the rest still taken


@linux_only
def test_edge_run_says_the_camera_settings_in_force(monkeypatch, capsys):
    dev = FakeV4L2()
    monkeypatch.setattr(cv2, "VideoCapture", FakeCapture)
    monkeypatch.setattr(v4l2, "apply", dev.apply)
    argv = ["--camera", "0", "--exposure-ms", "10", "--gain", "32", "--mains-hz", "50", "--max-frames", "3"]
    assert main(argv) == 0
    start = next(
        line for line in capsys.readouterr().out.splitlines() if line.startswith("edge-run: camera 0")
    )
    assert start.startswith("edge-run: camera 0, mains 50 Hz, exposure 10 ms, gain 32, model ")
    assert dev.controls[v4l2.CID_GAIN]["value"] == 32


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--video", "x.mp4", "--exposure-ms", "10"], "--exposure-ms: only for --camera and --picamera"),
        (["--demo", "--mains-hz", "50"], "--mains-hz: only for --camera and --picamera"),
    ],
)
def test_camera_settings_with_another_source_are_refused(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mains_hz = 55", "source.mains_hz: expected one of 50, 60, got 55"),
        ("exposure_ms = 0", 'source.exposure_ms: expected a number > 0 or "auto", got 0'),
        (
            "exposure_ms = 'automatic'",
            "source.exposure_ms: expected a number > 0 or \"auto\", got 'automatic'",
        ),
        ("gain = -1.0", 'source.gain: expected a number >= 0 or "auto", got -1.0'),
    ],
)
def test_bad_camera_settings_in_a_config_name_the_key(tmp_path, text, message):
    path = tmp_path / "cam.toml"
    path.write_text(f"[source]\nkind = 'camera'\n{text}\n")
    with pytest.raises(ConfigError, match=message):
        Config.load(path)


class FakePicamera2:
    """picamera2's camera object: the controls it offers and the configuration it was given."""

    last: FakePicamera2 | None = None

    def __init__(self, camera_num: int = 0, offered: dict | None = None):
        self.camera_controls = {
            "ExposureTime": (26, 66666, 20000),
            "AnalogueGain": (1.0, 16.0, 1.0),
            "FrameRate": (1.0, 120.0, 30.0),
            "AeFlickerMode": (0, 1, 0),
            "AeFlickerPeriod": (100, 1000000, 10000),
        }
        FakePicamera2.last = self

    def create_video_configuration(self, **kwargs):
        return kwargs

    def configure(self, config) -> None:
        self.config = config

    def start(self) -> None:
        pass

    def capture_metadata(self) -> dict:
        """The first frame's: what the sensor took (its exposure a whole number of lines)."""
        controls = self.config["controls"]
        return {
            "ExposureTime": controls.get("ExposureTime", 20000) // 30 * 30,
            "AnalogueGain": controls.get("AnalogueGain", 1.0),
        }

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_pi_camera_is_given_libcameras_exposure_gain_and_flicker_controls(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=FakePicamera2))
    cam = PiCamera(fps=30, controls=CameraControls(exposure_ms=90.0, gain=2.0, mains_hz=60))
    with caplog.at_level(logging.WARNING, logger="edge.sources"):
        cam.open()
    assert FakePicamera2.last.config["controls"] == {
        "FrameRate": 30.0,
        "ExposureTime": 66666,  # the longest this sensor offers
        "AnalogueGain": 2.0,
        "AeFlickerMode": 1,
        "AeFlickerPeriod": 8333,
    }
    assert cam.describe() == "mains 60 Hz, exposure 66.66 ms, gain 2"  # as the first frame says
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        "source.exposure_ms: 90 ms is outside the camera's range 0.026-66.666 ms" in m for m in messages
    )
    assert not any("flicker periods" in m for m in messages)  # 66.66 ms: 8 periods at 60 Hz
    assert any("exposure 66.66 ms is longer than a frame at 30 fps" in m for m in messages)


def test_a_newer_libcamera_gets_its_manual_modes_and_an_unknown_range_is_not_clamped(monkeypatch):
    class Newer(FakePicamera2):
        def __init__(self, camera_num: int = 0):
            super().__init__(camera_num)
            self.camera_controls["ExposureTime"] = (13, 0, None)  # as some report before the start
            self.camera_controls["ExposureTimeMode"] = (0, 1, 0)
            self.camera_controls["AnalogueGainMode"] = (0, 1, 0)

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=Newer))
    cam = PiCamera(controls=CameraControls(exposure_ms=10.0, gain="auto"))
    cam.open()
    controls = Newer.last.config["controls"]
    assert controls == {"ExposureTime": 10000, "ExposureTimeMode": 1, "AnalogueGainMode": 0}
    assert cam.describe() == "exposure 9.99 ms, automatic gain"


def test_a_pi_camera_whose_libcamera_has_no_flicker_control_says_so(monkeypatch, caplog):
    class OldLibcamera(FakePicamera2):
        def __init__(self, camera_num: int = 0):
            super().__init__(camera_num)
            del self.camera_controls["AeFlickerMode"], self.camera_controls["AeFlickerPeriod"]

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=OldLibcamera))
    cam = PiCamera(controls=CameraControls(mains_hz=50))
    with caplog.at_level(logging.WARNING, logger="edge.sources"):
        cam.open()
    assert "AeFlickerMode" not in OldLibcamera.last.config["controls"] and cam.describe() == ""
    assert any("no flicker control (AeFlickerMode)" in r.getMessage() for r in caplog.records)


def test_settings_are_passed_to_the_bench_cold_start_as_flags():
    from pathlib import Path

    from edge.cli.bench import edge_run_argv

    config = Config.from_mapping(
        {"source": {"kind": "camera", "exposure_ms": 10.0, "gain": 2.0, "mains_hz": 50}}
    )
    argv = edge_run_argv(config, Path("m.tflite"), 1, Path("/tmp/ev.jsonl"))
    at = argv.index("--exposure-ms")
    assert argv[at : at + 6] == ["--exposure-ms", "10.0", "--gain", "2.0", "--mains-hz", "50"]


@linux_only
def test_a_device_that_is_not_a_camera_is_one_warning_through_the_real_ioctl():
    taken, warnings = v4l2.apply(os.devnull, exposure_ms=10.0, mains_hz=50)
    assert taken == {} and warnings == [
        f"cannot set the camera's controls on {os.devnull} (Inappropriate ioctl for device)"
    ]


def test_check_config_warns_of_an_exposure_that_does_not_fit_the_mains(tmp_path, capsys):
    path = tmp_path / "cam.toml"
    path.write_text("[source]\nkind = 'camera'\nfps = 30\nexposure_ms = 12.0\nmains_hz = 50\n")
    assert main(["--check-config", str(path)]) == 0
    err = capsys.readouterr().err
    assert f"WARNING: {path}: source.exposure_ms: exposure 12 ms is not a whole number" in err


def test_auto_on_a_camera_with_a_manual_exposure_only_is_said_not_set():
    dev = FakeV4L2()
    dev.controls[v4l2.CID_EXPOSURE_AUTO].update(min=1, max=1, value=1)
    assert dev.apply(0, exposure_ms="auto") == (
        {},
        ["source.exposure_ms: the camera has no automatic exposure"],
    )
