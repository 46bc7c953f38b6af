"""Watchdogs: a hung model invoke ends the process with status 3; a camera that goes silent
turns the FAULT light on, /healthz unhealthy and the systemd watchdog pings off until frames flow
again; a model that raises lights FAULT and ends the run with one line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from edge.config import EXIT_INFERENCE_STALLED, Config
from edge.decision import Decider, EveryFrameTrigger
from edge.pipeline import Pipeline, SystemdNotifier
from edge.runtime import BUNDLED_MODEL, model_id
from edge.sources import Source
from edge.station.station import Station
from edge.station.watchdog import InferenceError

needs_model = pytest.mark.skipif(not BUNDLED_MODEL.is_file(), reason="bundled model not built")

HUNG = """
import threading
import numpy as np
from edge.config import Config
from edge.decision import Decider, EveryFrameTrigger
from edge.pipeline import Pipeline
from edge.runtime import TFLiteDetector
from edge.sources import Source
from edge.station.station import Station


class Camera:
    live, fps, name = False, None, "camera"

    def open(self): pass
    def close(self): pass
    def grab(self): return np.full((120, 160, 3), 90, np.uint8)


class StuckInterpreter(TFLiteDetector):
    # the real interpreter, until an invoke never returns (a wedged delegate or driver)
    calls = 0

    def predict(self, image):
        self.calls += 1
        if self.calls > 5:
            threading.Event().wait()
        return super().predict(image)


config = Config.from_mapping({"watchdog": {"inference_timeout_s": 1.0}})
with Source(Camera(), threaded=False) as src, Station(config, src.stats) as station:
    detector = station.watch(StuckInterpreter())
    Pipeline(src, detector, EveryFrameTrigger(), Decider(0.5), station.sinks).run()
print("not reached")
"""


@needs_model
def test_an_invoke_that_never_returns_ends_the_process_with_status_3():
    proc = subprocess.run([sys.executable, "-c", HUNG], capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_INFERENCE_STALLED == 3, proc.stderr
    assert "not reached" not in proc.stdout
    assert "edge-run: error: inference stalled: one invoke has run for 1." in proc.stderr


class SilentSpell:
    """A live camera (the hardware boundary) that delivers 50 frames a second, goes silent from
    ``quiet[0]`` to ``quiet[1]`` seconds after the first grab, then delivers again."""

    live, fps, name = True, None, "flaky camera"

    def __init__(self, quiet: tuple[float, float]):
        self.quiet = quiet
        self.t0: float | None = None
        self.opens = 0
        self.image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)

    def open(self) -> None:
        self.opens += 1

    def close(self) -> None:
        pass

    def grab(self):
        now = time.monotonic()
        self.t0 = self.t0 or now
        time.sleep(0.02)
        if self.quiet[0] <= now - self.t0 < self.quiet[1]:
            return None
        return self.image


@needs_model
def test_a_silent_camera_lights_fault_and_stops_the_pings_and_heartbeat_until_frames_flow(tmp_path):
    MockFactory = pytest.importorskip("gpiozero.pins.mock").MockFactory

    from edge.runtime import TFLiteDetector

    factory = MockFactory()
    config = Config.from_mapping(
        {
            "gpio": {"fault_pin": 26, "heartbeat_pin": 16},
            "watchdog": {"stall_s": 0.6},
            "source": {"stall_s": 0.4},
        }
    )
    camera = SilentSpell((1.0, 3.0))
    pings: list[float] = []
    health: list[tuple[float, bool, str]] = []
    sock_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        sock.settimeout(0.05)
        done = threading.Event()

        def listen() -> None:
            while not done.is_set():
                try:
                    if sock.recv(4096).startswith(b"WATCHDOG=1"):
                        pings.append(time.monotonic())
                except TimeoutError:
                    pass

        listener = threading.Thread(target=listen)
        listener.start()
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "100000"})
        with (
            Source(camera, threaded=True, stall_s=0.4) as src,
            Station(config, src.stats, factory) as station,
        ):
            fault, beat = factory.pin(26), factory.pin(16)
            fault.clear_states()
            beat.clear_states()
            base, beat_base = fault._last_change, beat._last_change

            def watch_health() -> None:
                while not done.is_set():
                    ok, why = station.status.health()
                    health.append((time.monotonic(), ok, why))
                    time.sleep(0.05)

            watcher = threading.Thread(target=watch_health)
            watcher.start()
            detector = station.watch(TFLiteDetector())
            pipeline = Pipeline(
                src, detector, EveryFrameTrigger(), Decider(0.5), station.sinks, notifier=notifier
            )
            summary = pipeline.run(duration=4.5)
            done.set()
            watcher.join()
            states = [s.state for s in fault.states[1:]]
            times = np.cumsum([s.timestamp for s in fault.states[1:]]) + base
            beats = np.cumsum([s.timestamp for s in beat.states[1:]]) + beat_base
            beat_states = [s.state for s in beat.states[1:]]
        listener.join()
    t0 = camera.t0
    quiet_from, quiet_to = t0 + 1.0, t0 + 3.0
    assert summary.reopens >= 1 and camera.opens >= 2  # the source reopened the silent camera
    assert states == [True, False], states  # FAULT on once, off once
    assert times[0] - quiet_from == pytest.approx(0.6, abs=0.35)  # after watchdog.stall_s of silence
    assert times[1] - quiet_to == pytest.approx(0.0, abs=0.4)  # off when frames flow again
    assert any(t < quiet_from for t in pings) and any(t > quiet_to + 0.3 for t in pings)
    assert not [t for t in pings if quiet_from + 0.15 < t < quiet_to], "pinged while no frame came"
    # the heartbeat toggles four times a second while frames flow, and stands still at fault
    before = [t for t in beats if t < quiet_from]
    assert len(before) >= 3 and max(np.diff(before)) < 0.4, np.diff(before)
    # ... and stops within half a second of the last frame (and a look), before the FAULT light
    assert not [t for t in beats if quiet_from + 0.9 < t < quiet_to], "a heartbeat without frames"
    assert len([t for t in beats if t > times[1]]) >= 3  # beating again
    stopped = max(i for i, t in enumerate(beats) if t <= quiet_from + 0.9)
    assert beat_states[stopped] is False  # held off
    silent = [(ok, why) for t, ok, why in health if quiet_from + 1.0 < t < quiet_to - 0.1]
    assert silent and all(not ok and why.startswith("camera: no frame") for ok, why in silent)
    assert health[-1][1], health[-1]


class FailingDetector:
    """The model runtime failing mid-run (a corrupt delegate state, out of memory)."""

    model_id = "failing"

    def __init__(self, real) -> None:
        self.real, self.calls = real, 0

    def predict(self, image):
        self.calls += 1
        if self.calls == 4:
            raise RuntimeError("Node number 12 (CONV_2D) failed to invoke")
        return self.real.predict(image)


@needs_model
def test_a_model_error_lights_fault_and_ends_the_run_with_one_line():
    MockFactory = pytest.importorskip("gpiozero.pins.mock").MockFactory

    from edge.cli.common import fail
    from edge.runtime import TFLiteDetector

    class Camera:
        live, fps, name = False, None, "camera"

        def open(self) -> None:
            pass

        def close(self) -> None:
            pass

        def grab(self):
            return np.full((120, 160, 3), 90, np.uint8)

    factory = MockFactory()
    config = Config.from_mapping({"gpio": {"fault_pin": 26}})
    with Source(Camera(), threaded=False) as src, Station(config, src.stats, factory) as station:
        detector = station.watch(FailingDetector(TFLiteDetector()))
        with pytest.raises(InferenceError) as exc:
            Pipeline(src, detector, EveryFrameTrigger(), Decider(0.5), station.sinks).run()
        assert factory.pin(26).state  # FAULT on
        assert station.status.faults["model"].startswith("RuntimeError: Node number 12")
    assert str(exc.value) == "inference failed (RuntimeError: Node number 12 (CONV_2D) failed to invoke)"
    assert fail("edge-run", exc.value) == 2


@pytest.mark.parametrize("interval", [0.04, 1.0, 2.5])
def test_the_heartbeat_follows_the_frames_of_a_camera_of_any_rate_and_not_the_belts_learning(interval):
    """Beating while the frames come at their own pace (a slow camera's too), not once three of
    its frame intervals (at least 0.5 s) pass without one, nor while the belt is being learned."""
    from edge.decision import TriggerState
    from edge.sinks import FrameResult
    from edge.types import Frame

    now = [100.0]
    station = Station(Config.from_mapping({}), clock=lambda: now[0])
    image = np.zeros((8, 8, 3), np.uint8)

    def frame(learning: bool = False) -> None:
        station.status.write(
            FrameResult(Frame(image, now[0], 0), (0, 0, 8, 8), None, TriggerState(learning=learning))
        )

    assert not station._inspecting(now[0])  # no frame yet
    frame(learning=True)
    now[0] += interval
    frame(learning=True)
    assert not station._inspecting(now[0])  # learning the empty belt: nothing is judged
    for _ in range(5):
        now[0] += interval
        frame()
        for look in np.arange(0.0, interval, 0.25):  # the fault monitor's looks between frames
            assert station._inspecting(now[0] + look), (interval, look)
    now[0] += max(0.5, 3 * interval) + 0.01
    assert not station._inspecting(now[0])  # the frames stopped


def test_a_model_file_replaced_or_removed_under_a_running_station_is_said_once_each_time(tmp_path, caplog):
    """The loop goes on with the model it loaded; the status (web view, /api/status, MQTT stats)
    and the journal say that the file on disk is no longer it, which the next start would run
    (or fail on), until the file is the one loaded again."""
    from edge.runtime import TFLiteDetector

    model = tmp_path / "stamp.tflite"
    original = BUNDLED_MODEL.read_bytes()
    model.write_bytes(original)
    now = [100.0]
    station = Station(Config.from_mapping({}), clock=lambda: now[0])
    detector = TFLiteDetector(model)
    station.watch(detector)
    try:

        def look(after: float = 6.0) -> object:
            now[0] += after
            station._tick(now[0])
            return station.status.snapshot(now[0])["model_file"]

        assert look() is None
        model.write_bytes(original)  # the same model copied over it again: nothing to say
        os.utime(model, ns=(1, 1))
        assert look() is None
        other = original + b"\0"  # another file (the same network with other bytes)
        model.write_bytes(other)
        assert look(1.0) is None  # looked at every few seconds only
        said = look()
        assert f"changed since the start (now {model_id(other)}; running model {detector.model_id}" in said
        assert "restart edge-run" in said
        assert look() == said and caplog.text.count("changed since the start") == 1  # said once
        model.unlink()
        assert "the model file is gone" in look() and "will not start again" in look()
        model.write_bytes(original)
        assert look() is None and "is the one running again" in caplog.text
    finally:
        station.monitor.__exit__(None, None, None)


def test_a_trigger_holding_while_things_move_is_a_fault_and_a_stopped_line_is_not():
    """Products may pass unjudged while the region differs from the empty belt and things move
    in it: a station fault (web view, /healthz, the FAULT light) until the trigger judges again.
    A stopped line (the region holds still) is said in the status, not a fault."""
    from edge.decision import TriggerState
    from edge.sinks import FrameResult
    from edge.types import Frame

    now = [100.0]
    station = Station(Config.from_mapping({}), clock=lambda: now[0])
    image = np.zeros((8, 8, 3), np.uint8)

    def frame(state: TriggerState) -> dict:
        now[0] += 0.04
        station.status.write(FrameResult(Frame(image, now[0], 0), (0, 0, 8, 8), None, state))
        return station.status.snapshot(now[0])

    assert frame(TriggerState(occupancy=0.0))["healthy"]
    moving = "the region has differed from the empty belt for 31 s while things move in it"
    s = frame(TriggerState(occupancy=0.9, held=moving, held_moving=True))
    assert not s["healthy"] and s["faults"] == {"trigger": moving} and s["trigger_held"] == moving
    stopped = "the region has differed from the empty belt for 31 s and holds still: a stopped line?"
    s = frame(TriggerState(occupancy=0.9, held=stopped))
    assert s["healthy"] and s["faults"] == {} and s["trigger_held"] == stopped
    s = frame(TriggerState(occupancy=0.0))
    assert s["healthy"] and s["trigger_held"] is None


def test_the_camera_fault_says_what_the_source_did_and_nothing_it_did_not():
    """The FAULT line and /healthz name the reopenings, the failed attempts and one under way,
    and no "reopened 0x" before any (an RTSP open can take seconds)."""
    from edge.sources import SourceStats
    from edge.station.status import StationStatus
    from edge.station.watchdog import FaultMonitor

    stats = SourceStats()
    status = StationStatus(stats, stall_s=1.0, clock=lambda: 0.0)
    monitor = FaultMonitor(status, exit=lambda code: None, clock=lambda: 0.0)

    def fault_at(now: float) -> str:
        monitor.check(now)
        return status.faults.get("camera", "")

    assert fault_at(0.5) == ""  # under stall_s
    assert fault_at(2.0) == "no frame since start"
    stats.reopening = True
    assert fault_at(3.0) == "no frame since start (reopening now)"
    stats.failed_reopens = 2
    assert fault_at(4.0) == "no frame since start (2 reopen attempt(s) failed; reopening now)"
    stats.reopening, stats.reopens = False, 1
    status.last_frame_t = 5.0
    assert fault_at(7.5) == "no frame for 2.5 s (reopened 1x so far; 2 reopen attempt(s) failed)"
    assert status.health(7.5) == (
        False,
        "camera: no frame for 2.5 s (reopened 1x so far; 2 reopen attempt(s) failed)",
    )
    assert fault_at(5.5) == ""  # frames flow again: the fault clears
