"""GPIO through gpiozero: a photo-eye trigger, a reject output, stack lights and a BUSY output.

gpiozero is imported when a pin is opened, never at module level; its default pin factory is
used (lgpio on Raspberry Pi OS; ``GPIOZERO_PIN_FACTORY`` chooses another), tests pass gpiozero's
``MockFactory``. Pins are BCM numbers or gpiozero names (``GPIO17``, ``BOARD11``).

Trigger (:class:`GpioTrigger`, ``--trigger gpio:PIN``)
    The photo-eye's active edge (``active`` level, ``pull`` resistor) starts a product: the frames
    *captured* from ``window_delay_s`` to ``window_delay_s + window_s`` after the edge are its
    frames, and it is judged on the first frame after its window: one verdict per edge. Edges
    closer than ``debounce_s`` to the last accepted one are contact bounce (counted, ignored).
    The model runs only on the window's frames. Frames from before the edge cannot be judged (the
    loop has already passed them), so mount the photo-eye where the beam breaks as the product
    enters the camera's view, or upstream and set ``window_delay_s`` to the travel time. When
    windows overlap (products closer than a window), a product ends where the next one's window
    begins. A window in which no frame arrived (camera lost) is *unjudged*: counted, logged, and
    rejected when ``reject_unjudged`` is set.

Outputs (:class:`GpioOutputs`, a sink)
    - reject: a pulse of ``reject_pulse_s``, ``reject_delay_s`` after the product's trigger edge
      (with a software trigger, after its verdict), for every MISSING and WRONG verdict; pulses
      that overlap merge. A verdict that comes after its pulse was due pulses at once (counted
      as late, logged).
    - ok / missing lights: the last verdict (MISSING and WRONG both light ``missing``), for
      ``light_hold_s`` (0: until the next verdict).
    - fault light: on while a fault is active (camera silent, inference stalled, model error).
    - busy: on from a product's trigger edge (or first frame) until its verdict.

Pulses are timed by a scheduler thread (:class:`Timer`) from ``time.monotonic``, not by the loop,
so a slow frame does not move them.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge.config import OUTPUT_PINS, GpioConfig, pin_key
from edge.decision import TriggerCounts, TriggerState
from edge.sinks import FrameResult
from edge.station.common import StationError, missing
from edge.types import Frame, Outcome, Verdict

_log = logging.getLogger(__name__)

#: edge times kept for the reject timing of products not yet judged
EDGES_KEPT = 256
#: on stop, pulses due within this long still happen
DRAIN_S = 3.0


def open_device(key: str, pin: int | str, make: Callable):
    """``make(gpiozero)`` -> a gpiozero device on ``pin``, or a one-line StationError naming the key."""
    try:
        import gpiozero
    except ImportError:
        raise missing("gpiozero", f"gpio.{key}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gpiozero's pin-factory fallback notes; we say one line
            return make(gpiozero)
    except gpiozero.BadPinFactory as exc:
        raise StationError(
            f"gpio.{key}: no GPIO on this machine ({exc}); on a Raspberry Pi: sudo apt install python3-lgpio"
        ) from None
    except (gpiozero.GPIOZeroError, OSError, ValueError) as exc:
        raise StationError(f"gpio.{key}: cannot use pin {pin!r} ({exc})") from None


def _pin(value: int | str) -> int | str:
    key = pin_key(value)
    return key if key is not None else value


class Timer:
    """A thread running actions at given ``time.monotonic`` times, in time order."""

    def __init__(self, name: str = "gpio timer", clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def at(self, when: float, action: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._order), action))
            self._cond.notify()

    def drain(self, until: float) -> None:
        """Wait until every action due before ``until`` has run."""
        with self._cond:
            while self._heap and self._heap[0][0] <= until and not self._stop:
                self._cond.wait(max(min(self._heap[0][0] - self._clock(), 0.05), 0.001))

    def close(self) -> None:
        """Stop; actions not yet due are dropped."""
        with self._cond:
            self._stop = True
            self._heap.clear()
            self._cond.notify()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop:
                    if self._heap:
                        wait = self._heap[0][0] - self._clock()
                        if wait <= 0:
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
                if self._stop:
                    return
                _, _, action = heapq.heappop(self._heap)
            try:
                action()
            except Exception:  # a pin that failed must not stop the other outputs
                _log.exception("gpio: a timed output failed")


@dataclass
class _Window:
    pid: int
    edge: float
    start: float
    end: float
    frames: int = 0


class GpioTrigger:
    """The photo-eye trigger: frames in a window after each edge are one product (see module)."""

    def __init__(
        self,
        config: GpioConfig,
        first_product: int = 1,
        pin_factory: object | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if config.trigger_pin is None:
            raise ValueError("GpioTrigger: gpio.trigger_pin is not set")
        self.config = config
        self.pin = _pin(config.trigger_pin)
        self._factory = pin_factory
        self._clock = clock
        self._lock = threading.Lock()
        self._next = first_product
        self._pending: deque[_Window] = deque()
        self._current: _Window | None = None
        self._last_edge: float | None = None
        self._edges: dict[int, float] = {}
        self._device = None
        self.edges = 0
        self.bounces = 0
        self.unjudged = 0
        #: called with (product id, edge time) on every accepted edge (from gpiozero's thread)
        self.on_edge: list[Callable[[int, float], None]] = []
        #: called with (product id, edge time) for a window that saw no frame
        self.on_unjudged: list[Callable[[int, float], None]] = []

    def __enter__(self) -> GpioTrigger:
        cfg = self.config
        pull_up = {"up": True, "down": False, "none": None}[cfg.pull]
        # with a pull resistor gpiozero takes the active level from it (pull up: active low); an
        # "unusual" pairing (pull up, active high) then triggers on gpiozero's deactivation
        active_high = cfg.active == "high"

        def make(gz):
            kwargs = {"pull_up": pull_up, "pin_factory": self._factory}
            if pull_up is None:
                kwargs["active_state"] = active_high
            return gz.DigitalInputDevice(self.pin, **kwargs)

        self._device = open_device("trigger_pin", cfg.trigger_pin, make)
        inverted = pull_up is not None and (pull_up == active_high)
        if inverted:
            self._device.when_deactivated = self._edge
        else:
            self._device.when_activated = self._edge
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._device is not None:
            self._device.close()
            self._device = None

    def start_numbering(self, first_product: int) -> None:
        """Products are numbered from here (the verdict log's next product id); edges before
        this (the loop not yet running) are forgotten."""
        with self._lock:
            self._next = first_product
            self._pending.clear()
            self._edges.clear()

    def _edge(self, *_args: object) -> None:
        t = self._clock()
        cfg = self.config
        with self._lock:
            if self._last_edge is not None and t - self._last_edge < cfg.debounce_s:
                self.bounces += 1
                return
            self._last_edge = t
            pid = self._next
            self._next += 1
            start = t + cfg.window_delay_s
            self._pending.append(_Window(pid, t, start, start + cfg.window_s))
            self._edges[pid] = t
            while len(self._edges) > EDGES_KEPT:
                self._edges.pop(next(iter(self._edges)))
            self.edges += 1
        for callback in self.on_edge:
            callback(pid, t)

    def edge_time(self, product_id: int) -> float | None:
        """When the product's trigger edge came (None: not a product of this trigger)."""
        with self._lock:
            return self._edges.get(product_id)

    @property
    def pending(self) -> int:
        """Products triggered and not yet judged (their windows open or to come)."""
        with self._lock:
            return len(self._pending) + (self._current is not None)

    def update(self, frame: Frame, view: np.ndarray) -> TriggerState:
        t = frame.t_capture
        unjudged: list[_Window] = []
        with self._lock:
            cur = self._current
            if cur is not None:
                nxt = self._pending[0] if self._pending else None
                if t > cur.end or (nxt is not None and t >= nxt.start):
                    self._current = None
                    state = TriggerState(ended=cur.pid)
                else:
                    cur.frames += 1
                    state = TriggerState(product=cur.pid)
            else:
                unjudged = self._expire(t)
                state = TriggerState()
                if self._pending and self._pending[0].start <= t:
                    cur = self._current = self._pending.popleft()
                    cur.frames = 1
                    state = TriggerState(product=cur.pid)
        self._report(unjudged)
        return state

    def idle(self, now: float, stopped: bool) -> TriggerState | None:
        """No frame came: the window being judged ends when it has passed, or when the frames
        stopped in it (judged on the frames it had, marked interrupted), not at the next frame."""
        with self._lock:
            cur = self._current
            if cur is None or not (stopped or now > cur.end):
                return None
            self._current = None
        return TriggerState(ended=cur.pid, interrupted=stopped)

    def counts(self) -> TriggerCounts:
        return TriggerCounts()  # (a photo-eye learns no belt and sees no light)

    def expire(self, now: float | None = None, grace_s: float = 0.5) -> None:
        """Windows that ended more than ``grace_s`` ago without a frame are unjudged (called by
        the station's monitor, so a camera that delivers nothing still gets them rejected)."""
        now = self._clock() if now is None else now
        with self._lock:
            unjudged = self._expire(now - grace_s)
        self._report(unjudged)

    def _expire(self, t: float) -> list[_Window]:
        out = []
        while self._pending and self._pending[0].end < t:
            out.append(self._pending.popleft())
        return out

    def _report(self, unjudged: list[_Window]) -> None:
        for w in unjudged:
            self.unjudged += 1
            _log.warning("product %d: no frame in its trigger window (camera lost?): not judged", w.pid)
            for callback in self.on_unjudged:
                callback(w.pid, w.edge)


class GpioOutputs:
    """Reject pulses, stack lights and BUSY from the verdicts (a sink; see the module docstring)."""

    needs_annotated = False

    def __init__(
        self,
        config: GpioConfig,
        pin_factory: object | None = None,
        edge_time: Callable[[int], float | None] | None = None,
        pending: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config
        self._factory = pin_factory
        self._edge_time = edge_time or (lambda pid: None)
        self._pending = pending or (lambda: 0)
        self._clock = clock
        self._lock = threading.Lock()
        self._devices: dict[str, object] = {}
        self._timer: Timer | None = None
        self._reject_on = 0
        self._light_gen = 0
        self.rejects = 0
        self.late_rejects = 0
        #: flagged products judged after the frames stopped, too late for the pusher
        self.unrejected = 0
        self.pulses: list[tuple[float, float]] = []  # (start, end) as scheduled, the latest few
        #: (product, its verdict, when its pulse starts) of the pulses scheduled, the latest few
        self._scheduled: deque[tuple[int, str, float]] = deque(maxlen=EDGES_KEPT)

    @property
    def enabled(self) -> bool:
        c = self.config
        return any(getattr(c, key) is not None for key in OUTPUT_PINS)

    def __enter__(self) -> GpioOutputs:
        c = self.config
        try:
            for key in OUTPUT_PINS:
                pin = getattr(c, key)
                if pin is None:
                    continue

                def make(gz, pin=pin):
                    return gz.DigitalOutputDevice(
                        _pin(pin),
                        active_high=c.outputs_active_high,
                        initial_value=False,
                        pin_factory=self._factory,
                    )

                self._devices[key] = open_device(key, pin, make)
        except StationError:
            self.close()
            raise
        self._timer = Timer(clock=self._clock)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._timer is not None:
            # rejects already decided still happen (a product judged just before the stop is on
            # its way to the pusher); a pusher is never left out
            self._timer.drain(self._clock() + DRAIN_S)
            now = self._clock()
            for product, outcome, start in self._scheduled:
                if start > now:  # (its pusher delay runs past the drain: dropped with the timer)
                    self.unrejected += 1
                    _log.warning(
                        "product %d: %s but not rejected: edge-run stopped %.1f s before its reject pulse "
                        "was due (gpio.reject_delay_s; take it off the line by hand)",
                        product,
                        outcome,
                        start - now,
                    )
            self._timer.close()
            self._timer = None
        for device in self._devices.values():
            try:
                device.off()
                device.close()
            except Exception as exc:
                _log.warning("gpio: closing an output failed (%s)", exc)
        self._devices.clear()

    def _set(self, key: str, on: bool) -> None:
        device = self._devices.get(key)
        if device is not None:
            device.on() if on else device.off()

    # -- the sink -------------------------------------------------------------------------------

    def write(self, result: FrameResult) -> None:
        verdict = result.verdict
        if verdict is not None:
            seen = None
            if result.trigger.interrupted:  # judged after its frames stopped: when was it last seen?
                seen = result.frame.t_capture - (0.0 if result.stopped else result.frame.gap_s)
            self.verdict(verdict, seen)
            self._set("busy_pin", self._pending() > 0 or result.trigger.product is not None)
        elif result.trigger.product is not None:
            self._set("busy_pin", True)
        elif self._pending() == 0:
            self._set("busy_pin", False)

    def verdict(self, verdict: Verdict, last_seen: float | None = None) -> None:
        """Lights and the reject pulse for a verdict. ``last_seen``: the product was judged after
        the frames stopped while it was in view, and this is when it was last seen; without a
        trigger edge its pulse is timed from then, and left out when that time has passed (it
        would push whatever is at the pusher now; the journal says to take it off by hand)."""
        bad = verdict.outcome is not Outcome.OK
        self._lights(bad)
        if not bad or "reject_pin" not in self._devices:
            return
        anchor = self._edge_time(verdict.product_id)
        if anchor is None and last_seen is not None:
            if last_seen + self.config.reject_delay_s < self._clock():
                self.unrejected += 1
                _log.warning(
                    "product %d: %s but not rejected: the frames stopped while it was in view and its "
                    "verdict came after it passed the pusher (take it off the line by hand)",
                    verdict.product_id,
                    verdict.outcome.value,
                )
                return
            anchor = last_seen
        self.reject(verdict.product_id, anchor, verdict.outcome.value)

    def _lights(self, bad: bool) -> None:
        with self._lock:
            self._light_gen += 1
            gen = self._light_gen
        self._set("ok_pin", not bad)
        self._set("missing_pin", bad)
        hold = self.config.light_hold_s
        if hold > 0 and self._timer is not None:

            def off() -> None:
                if self._light_gen == gen:
                    self._set("ok_pin", False)
                    self._set("missing_pin", False)

            self._timer.at(self._clock() + hold, off)

    # -- triggers and faults --------------------------------------------------------------------

    def edge(self, product_id: int, t: float) -> None:
        """A trigger edge: BUSY on until the product's verdict."""
        self._set("busy_pin", True)

    def unjudged(self, product_id: int, edge_t: float) -> None:
        """A triggered product no frame saw: rejected when ``reject_unjudged``."""
        if self._pending() == 0:
            self._set("busy_pin", False)
        if self.config.reject_unjudged:
            self.reject(product_id, edge_t, "unjudged")

    def fault(self, on: bool) -> None:
        self._set("fault_pin", on)

    def all_off_but_fault(self) -> None:
        """Every output off but the FAULT light, at once, from any thread: the process is about to
        end without its stop (a hung invoke, ``os._exit``), and a pusher mid-pulse must not stay
        energised until the service is back."""
        for key, device in list(self._devices.items()):
            if key != "fault_pin":
                try:
                    device.off()
                except Exception as exc:  # an output already gone: the others still go off
                    _log.warning("gpio %s: cannot switch off (%s)", key, exc)

    def heartbeat(self, healthy: bool) -> None:
        """Toggle the heartbeat output while ``healthy``; else hold it off."""
        device = self._devices.get("heartbeat_pin")
        if device is not None:
            device.toggle() if healthy else device.off()

    def reject(self, product_id: int, anchor: float | None, outcome: str = "rejected") -> None:
        """Pulse the reject output ``reject_delay_s`` after ``anchor`` (None: after now)."""
        if "reject_pin" not in self._devices or self._timer is None:
            return
        now = self._clock()
        cfg = self.config
        start = (anchor if anchor is not None else now) + cfg.reject_delay_s
        if start < now:
            self.late_rejects += 1
            _log.warning(
                "product %d: reject pulse %.0f ms late (the verdict came after the product reached "
                "the pusher: raise gpio.reject_delay_s or shorten the trigger window)",
                product_id,
                (now - start) * 1e3,
            )
            start = now
        end = start + cfg.reject_pulse_s
        self.rejects += 1
        self.pulses = [*self.pulses[-63:], (start, end)]
        self._scheduled.append((product_id, outcome, start))
        self._timer.at(start, self._reject_start)
        self._timer.at(end, self._reject_end)

    def _reject_start(self) -> None:
        with self._lock:
            self._reject_on += 1
        self._set("reject_pin", True)

    def _reject_end(self) -> None:
        with self._lock:
            self._reject_on = max(self._reject_on - 1, 0)
            off = self._reject_on == 0
        if off:
            self._set("reject_pin", False)
