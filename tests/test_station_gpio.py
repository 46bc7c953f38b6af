"""GPIO, driven through gpiozero's mock pin factory: photo-eye edges in, one verdict per edge,
reject pulses out (delay and length within tolerance, none for OK), stack lights, BUSY."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("gpiozero")
from gpiozero.pins.mock import MockFactory

from edge.config import Config, GpioConfig
from edge.decision import Decider, TriggerState
from edge.runtime import BUNDLED_MODEL
from edge.station.gpio import GpioOutputs, GpioTrigger
from edge.types import Frame, Outcome, Verdict

IMAGE = np.zeros((32, 32, 3), np.uint8)
VIEW = np.zeros((128, 128, 3), np.uint8)
EDGE_RUN = [sys.executable, "-m", "edge.cli.run"]
#: pulse timing tolerance, seconds: generous, for a machine busy with other work
#: a pulse's edges on the pin come when the output thread wakes: on a loaded machine late by up to
#: this (never early). The times planned for them (``GpioOutputs.pulses``) are checked exactly.
LATE = 0.5


def on_time(actual: float, planned: float) -> bool:
    return planned - 0.01 <= actual <= planned + LATE


class Clock:
    """The edge timestamps' clock, set by the test (frames carry their own capture times)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def frame(t: float, index: int = 0) -> Frame:
    return Frame(IMAGE, t_capture=t, index=index)


def absolute_states(pin, base: float) -> list[tuple[float, bool]]:
    """A mock pin's (time, state) changes: its states hold the time since the previous change."""
    out, t = [], base
    for state in pin.states[1:]:
        t += state.timestamp
        out.append((t, bool(state.state)))
    return out


def pulses(pin, base: float) -> list[tuple[float, float]]:
    """(start, end) of each high period of an output pin."""
    out, start = [], None
    for t, on in absolute_states(pin, base):
        if on and start is None:
            start = t
        elif not on and start is not None:
            out.append((start, t))
            start = None
    return out


def show(state: TriggerState) -> str:
    if state.ended is not None:
        return f"end{state.ended}"
    return f"p{state.product}" if state.product is not None else "-"


# (window delay, window length, events: ("edge", t) or ("frame", t), expected states of the frames)
WINDOWS = [
    pytest.param(
        0.0,
        0.2,
        [("frame", 0.9), ("edge", 1.0), ("frame", 1.01), ("frame", 1.1), ("frame", 1.19), ("frame", 1.25)],
        ["-", "p1", "p1", "p1", "end1"],
        id="frames-after-the-edge",
    ),
    pytest.param(
        0.1,
        0.15,
        [("edge", 1.0), ("frame", 1.05), ("frame", 1.12), ("frame", 1.2), ("frame", 1.3), ("frame", 1.4)],
        ["-", "p1", "p1", "end1", "-"],
        id="delayed-window",
    ),
    pytest.param(
        0.0,
        0.2,
        [
            ("edge", 1.0),
            ("frame", 1.02),
            ("edge", 1.1),
            ("frame", 1.08),
            ("frame", 1.12),
            ("frame", 1.15),
            ("frame", 1.35),
        ],
        ["p1", "p1", "end1", "p2", "end2"],
        id="overlapping-windows-split",
    ),
    pytest.param(
        0.0,
        0.1,
        [("edge", 1.0), ("frame", 1.5), ("edge", 2.0), ("frame", 2.05), ("frame", 2.2)],
        ["-", "p2", "end2"],
        id="window-without-frames",
    ),
]


@pytest.mark.parametrize(("delay", "window", "events", "expected"), WINDOWS)
def test_a_product_is_the_frames_in_its_window_after_the_edge(delay, window, events, expected):
    factory, clock = MockFactory(), Clock()
    cfg = GpioConfig(trigger_pin=17, window_delay_s=delay, window_s=window, debounce_s=0.0)
    unjudged = []
    with GpioTrigger(cfg, pin_factory=factory, clock=clock) as trigger:
        trigger.on_unjudged.append(lambda pid, t: unjudged.append(pid))
        pin = factory.pin(17)
        got = []
        for kind, t in events:
            clock.now = t
            if kind == "edge":
                pin.drive_low()  # pull up, active low: the photo-eye pulls the line down
                pin.drive_high()
            else:
                got.append(show(trigger.update(frame(t), VIEW)))
    assert got == expected
    assert unjudged == ([1] if "without-frames" in str(expected) or expected[1] == "p2" else [])


def test_a_window_with_frames_ends_when_it_has_passed_or_the_frames_stop_not_at_the_next_frame():
    factory, clock = MockFactory(), Clock()
    cfg = GpioConfig(trigger_pin=17, window_s=0.2, debounce_s=0.0)
    with GpioTrigger(cfg, pin_factory=factory, clock=clock) as trigger:
        pin = factory.pin(17)

        def product_at(t: float) -> None:
            clock.now = t
            pin.drive_low()
            pin.drive_high()
            assert show(trigger.update(frame(t + 0.05), VIEW)) == f"p{round(t)}"

        product_at(1.0)  # product 1: no frame came after 1.05; its window passed at 1.2
        assert trigger.idle(1.1, stopped=False) is None
        assert trigger.idle(1.25, stopped=False) == TriggerState(ended=1)
        product_at(2.0)  # product 2: the frames stopped inside its window
        assert trigger.idle(2.1, stopped=True) == TriggerState(ended=2, interrupted=True)
        assert trigger.idle(2.5, stopped=True) is None and trigger.pending == 0


@pytest.mark.parametrize(
    ("pull", "active", "drive", "edges_at"),
    [
        ("up", "low", ["low", "high", "low", "high"], [0, 2]),
        ("down", "high", ["high", "low", "high", "low"], [0, 2]),
        ("up", "high", ["low", "high", "low", "high"], [1, 3]),  # unusual: the rising edge
        ("none", "low", ["high", "low", "high", "low"], [1, 3]),
    ],
)
def test_pull_and_active_level_choose_the_edge(pull, active, drive, edges_at):
    factory, clock = MockFactory(), Clock()
    cfg = GpioConfig(trigger_pin="GPIO22", pull=pull, active=active, debounce_s=0.0)
    seen = []
    with GpioTrigger(cfg, pin_factory=factory, clock=clock) as trigger:
        trigger.on_edge.append(lambda pid, t: seen.append(round(t)))
        pin = factory.pin(22)
        for i, level in enumerate(drive):
            clock.now = float(i)
            pin.drive_high() if level == "high" else pin.drive_low()
    assert seen == edges_at


def test_contact_bounce_within_the_debounce_time_is_one_edge():
    factory, clock = MockFactory(), Clock()
    cfg = GpioConfig(trigger_pin=17, debounce_s=0.02)
    with GpioTrigger(cfg, pin_factory=factory, clock=clock) as trigger:
        pin = factory.pin(17)
        for t in (1.0, 1.004, 1.009, 1.015, 1.5, 1.505):
            clock.now = t
            pin.drive_low()
            pin.drive_high()
    assert (trigger.edges, trigger.bounces) == (2, 4)


def verdict(outcome: Outcome, pid: int = 1) -> Verdict:
    return Verdict(
        seq=pid, product_id=pid, outcome=outcome, wall_time=time.time(), score=0.5, box=None, frames=(0,)
    )


def test_reject_pulses_come_after_the_delay_for_their_length_and_never_for_ok():
    factory = MockFactory()
    cfg = GpioConfig(reject_pin=27, ok_pin=5, missing_pin=6, reject_delay_s=0.25, reject_pulse_s=0.1)
    edges = {}
    with GpioOutputs(cfg, pin_factory=factory, edge_time=edges.get) as out:
        reject = factory.pin(27)
        reject.clear_states()
        base = reject._last_change
        t0 = time.monotonic()
        edges.update({1: t0, 2: t0 + 0.5, 3: t0 + 0.55, 4: t0 - 1.0})
        out.verdict(verdict(Outcome.MISSING, 1))
        out.verdict(verdict(Outcome.OK, 2))
        assert factory.pin(5).state and not factory.pin(6).state
        out.verdict(verdict(Outcome.WRONG, 3))
        assert factory.pin(6).state and not factory.pin(5).state
        time.sleep(1.1)
        # product 4's edge was long ago: its verdict came after it passed the pusher
        out.verdict(verdict(Outcome.MISSING, 4))
        time.sleep(0.3)
    plan = out.pulses
    assert len(plan) == 3 and out.rejects == 3 and out.late_rejects == 1
    assert plan[0] == pytest.approx((t0 + 0.25, t0 + 0.35), abs=1e-6)
    assert plan[1] == pytest.approx((t0 + 0.80, t0 + 0.90), abs=1e-6)
    assert plan[2][0] >= t0 + 1.1 and plan[2][1] - plan[2][0] == pytest.approx(0.1, abs=1e-6)  # at once
    got = pulses(reject, base)
    assert len(got) == 3, got
    assert all(
        on_time(a, p) for (sa, ea), (sp, ep) in zip(got, plan, strict=True) for a, p in ((sa, sp), (ea, ep))
    )


def test_a_product_judged_after_the_frames_stopped_is_pushed_on_time_or_not_at_all(caplog):
    """The occupancy trigger (no edges): the pusher's delay runs from when the product was last
    seen; a pulse that would come after it passed the pusher is left out, and the journal says so."""
    from edge.sinks import FrameResult

    factory = MockFactory()
    cfg = GpioConfig(reject_pin=27, reject_delay_s=0.5, reject_pulse_s=0.1)
    with GpioOutputs(cfg, pin_factory=factory) as out:
        reject = factory.pin(27)
        reject.clear_states()
        base = reject._last_change
        t0 = time.monotonic()
        stopped = TriggerState(ended=1, interrupted=True)
        # last seen 0.2 s ago: the pulse is still due, 0.3 s from now
        out.write(
            FrameResult(
                frame(t0 - 0.2), (0, 0, 32, 32), None, stopped, verdict(Outcome.MISSING, 1), stopped=True
            )
        )
        # last seen 3 s ago: it passed the pusher long since
        late = TriggerState(ended=2, interrupted=True)
        out.write(
            FrameResult(
                frame(t0 - 3.0), (0, 0, 32, 32), None, late, verdict(Outcome.MISSING, 2), stopped=True
            )
        )
        time.sleep(0.6)
    assert out.pulses == [pytest.approx((t0 + 0.3, t0 + 0.4), abs=0.01)]  # (frame times: to 10 ms)
    got = pulses(reject, base)
    assert len(got) == 1 and on_time(got[0][0], out.pulses[0][0]), got
    assert (out.rejects, out.unrejected, out.late_rejects) == (1, 1, 0)
    said = [r.getMessage() for r in caplog.records if "not rejected" in r.getMessage()]
    assert said == [
        "product 2: MISSING but not rejected: the frames stopped while it was in view and its verdict "
        "came after it passed the pusher (take it off the line by hand)"
    ]


def test_a_reject_pulse_due_after_the_stop_is_said_not_dropped_silently(caplog, monkeypatch):
    """A pusher delay longer than the stop waits (DRAIN_S): the pulse due within it still happens,
    the one due after it is dropped, and the journal names its product (it was dropped unsaid)."""
    monkeypatch.setattr("edge.station.gpio.DRAIN_S", 0.3)
    factory = MockFactory()
    cfg = GpioConfig(reject_pin=27, reject_delay_s=0.2, reject_pulse_s=0.05)
    edges = {}
    with GpioOutputs(cfg, pin_factory=factory, edge_time=edges.get) as out:
        t0 = time.monotonic()
        edges.update({1: t0, 2: t0 + 5.0})  # product 2's pulse: due 5.2 s from now
        out.verdict(verdict(Outcome.MISSING, 1))
        out.verdict(verdict(Outcome.WRONG, 2))
    assert (out.rejects, out.unrejected) == (2, 1)
    said = [r.getMessage() for r in caplog.records if "not rejected" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("product 2: WRONG but not rejected: edge-run stopped 4.")
    assert said[0].endswith(
        "before its reject pulse was due (gpio.reject_delay_s; take it off the line by hand)"
    )


def test_overlapping_rejects_merge_into_one_long_pulse_and_lights_hold():
    factory = MockFactory()
    cfg = GpioConfig(reject_pin=27, ok_pin=5, missing_pin=6, reject_delay_s=0.1, reject_pulse_s=0.15)
    cfg = GpioConfig(**{**cfg.__dict__, "light_hold_s": 0.2})
    with GpioOutputs(cfg, pin_factory=factory) as out:
        reject = factory.pin(27)
        reject.clear_states()
        base = reject._last_change
        t0 = time.monotonic()
        out.reject(1, t0)
        out.reject(2, t0 + 0.1)
        out.verdict(verdict(Outcome.MISSING, 3))
        assert factory.pin(6).state
        time.sleep(0.45)
        assert not factory.pin(6).state  # held for light_hold_s, then off
    (start, end), *rest = pulses(reject, base)
    assert on_time(start, t0 + 0.1) and on_time(
        end, t0 + 0.35
    )  # one pulse from the first's start to the second's end
    assert len(rest) <= 1  # the third verdict's own pulse (delay from its verdict) may follow


@pytest.mark.skipif(not BUNDLED_MODEL.is_file(), reason="bundled model not built")
def test_photo_eye_station_end_to_end_one_verdict_per_edge_and_pulses_for_missing_only():
    """The demo line's frames through a camera (the hardware boundary), a photo-eye that breaks
    as each product reaches the middle of the view, the bundled model, the decider, the
    outputs: one right verdict per edge, a reject pulse for each MISSING one and no other."""
    from edge.demo import DemoLine
    from edge.pipeline import Pipeline, RunOptions
    from edge.runtime import TFLiteDetector
    from edge.sources import Source

    line = DemoLine(6)
    products = line.products_between(0, 700)[4:10]
    factory = MockFactory()
    eye = factory.pin(17)

    class LineCamera:
        """Each product's frames around the middle of the view, then empty belt; the photo-eye
        breaks as the product's middle frame is captured. Frames are rendered beforehand, so a
        grab takes as long as a camera's readout, not as long as drawing the line."""

        live, fps, name = False, 30.0, "line camera"

        def __init__(self) -> None:
            self.plan = []
            for p in products:
                mid = (p.first_frame + p.last_frame) // 2
                self.plan += [(line.render(t), t == mid - 1) for t in range(mid - 1, mid + 7)]
                self.plan += [(line.render(p.last_frame + 2), False)] * 4  # the gap behind: empty belt

        def open(self) -> None:
            pass

        def grab(self):
            if not self.plan:
                return None
            image, edge = self.plan.pop(0)
            eye.drive_high()
            if edge:
                eye.drive_low()
            return image

        def close(self) -> None:
            pass

    cfg = GpioConfig(
        trigger_pin=17,
        window_s=0.2,
        reject_pin=27,
        ok_pin=5,
        missing_pin=6,
        busy_pin=13,
        reject_delay_s=0.5,
        reject_pulse_s=0.15,
    )
    detector = TFLiteDetector()
    detector.predict(np.zeros((128, 128, 3), np.uint8))  # the interpreter's first invoke is slow
    verdicts = []
    captured: dict[int, float] = {}

    class Collect:
        needs_annotated = False

        def write(self, result) -> None:
            captured[result.frame.index] = result.frame.t_capture
            if result.verdict is not None:
                verdicts.append(result.verdict)

    with (
        GpioTrigger(cfg, pin_factory=factory) as trigger,
        Source(LineCamera(), threaded=False, pace=True) as src,
    ):
        outputs = GpioOutputs(
            cfg, pin_factory=factory, edge_time=trigger.edge_time, pending=lambda: trigger.pending
        )
        with outputs:
            trigger.on_edge.append(outputs.edge)
            reject, busy = factory.pin(27), factory.pin(13)
            reject.clear_states()
            busy.clear_states()
            base_reject, base_busy = reject._last_change, busy._last_change
            decider = Decider(detector.metadata.threshold)
            Pipeline(src, detector, trigger, decider, [Collect(), outputs], RunOptions(roi=line.roi)).run()
            edges = [trigger.edge_time(v.product_id) for v in verdicts]
            time.sleep(0.5)  # the last pulse
            last_light = factory.pin(6).state
    assert trigger.edges == len(products) == len(verdicts)
    assert [v.outcome.value for v in verdicts] == [p.expected for p in products]
    for v, edge in zip(verdicts, edges, strict=True):  # judged: every frame of its window, no other
        assert sorted(v.frames) == [i for i, t in sorted(captured.items()) if edge <= t <= edge + 0.2]
    missing = [e for v, e in zip(verdicts, edges, strict=True) if v.outcome is not Outcome.OK]
    got, plan = pulses(reject, base_reject), outputs.pulses
    assert len(got) == len(plan) == len(missing) >= 2
    for (start, end), (planned, planned_end), edge in zip(got, plan, missing, strict=True):
        # 0.5 s after its edge, unless its verdict came later than that (a loaded machine): at once
        assert planned == pytest.approx(edge + 0.5, abs=1e-6) or (
            outputs.late_rejects and planned > edge + 0.5
        )
        assert planned_end - planned == pytest.approx(0.15, abs=1e-6)
        assert on_time(start, planned) and on_time(end, planned_end)
    assert len(pulses(busy, base_busy)) == len(products)  # on at each edge, off at its verdict
    assert last_light == (verdicts[-1].outcome is not Outcome.OK)


def run_cli(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [*EDGE_RUN, *args], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--trigger", "gpio:99"],
            "argument --trigger: gpio:PIN: expected PIN to be a BCM GPIO number 0..27",
        ),
        (["--trigger", "gpio"], "argument --trigger: expected occupancy, every-frame or gpio:PIN"),
        (["--reject-pin", "P9"], "argument --reject-pin: expected a BCM GPIO number"),
        (["--trigger", "gpio:17", "--reject-pin", "GPIO17"], "gpio.reject_pin: expected a pin of its own"),
        (["--trigger", "gpio:17"], "gpio.trigger_pin: no GPIO on this machine"),
    ],
)
def test_bad_pins_are_one_line_errors(args, message):
    proc = run_cli(["--demo", *args, "--max-frames", "3"], env={"GPIOZERO_PIN_FACTORY": ""})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr


def test_missing_gpiozero_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "gpiozero", None)
    from edge.station.common import StationError

    with pytest.raises(StationError, match=r"gpio.trigger_pin: gpiozero is not installed: pip install"):
        GpioTrigger(GpioConfig(trigger_pin=17)).__enter__()


@pytest.mark.skipif(not BUNDLED_MODEL.is_file(), reason="bundled model not built")
def test_edge_run_opens_the_pins_it_is_given(tmp_path):
    # gpiozero's mock factory through its environment variable: nothing drives the photo-eye, so
    # the demo's products pass unjudged, and the run ends cleanly
    config = tmp_path / "station.toml"
    config.write_text("[gpio]\nfault_pin = 26\nbusy_pin = 19\nwindow_s = 0.25\n")
    proc = run_cli(
        [
            "--config",
            str(config),
            "--demo",
            "--trigger",
            "gpio:17",
            "--reject-pin",
            "27",
            "--max-frames",
            "20",
        ],
        env={"GPIOZERO_PIN_FACTORY": "mock"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "photo-eye on GPIO17" in proc.stdout and "reject 27, fault 26, busy 19" in proc.stdout
    assert Config.load(config, {"trigger.kind": "gpio", "gpio.trigger_pin": 17}).gpio.window_s == 0.25


def test_a_hung_invoke_ends_the_process_with_every_output_off_but_fault():
    """A hung invoke ends the process at once (os._exit: no stop runs), and a pusher mid-pulse
    stayed energised until the service was back. The outputs go off first; FAULT stays on."""
    from edge.station.status import StationStatus
    from edge.station.watchdog import FaultMonitor

    factory = MockFactory()
    cfg = GpioConfig(reject_pin=27, fault_pin=22, reject_pulse_s=60.0)
    with GpioOutputs(cfg, pin_factory=factory) as out:
        reject, fault = factory.pin(27), factory.pin(22)
        reject.state = True  # mid-pulse (the driver's level, as the pusher sees it)

        class Hung:  # the detector's watch: an invoke that began long ago
            busy_since = 0.0

        exits = []
        monitor = FaultMonitor(
            StationStatus(),
            Hung(),
            inference_timeout_s=10.0,
            on_fault=out.fault,
            on_exit=out.all_off_but_fault,
            exit=lambda status: exits.append((status, reject.state, fault.state)),
            clock=lambda: 60.0,
        )
        monitor.check()
        assert exits == [(3, False, True)]  # status 3, the pusher off, the FAULT light on
