"""Watchdogs: a model invoke that never returns, a camera that went quiet, a model that fails.

:class:`WatchedDetector` wraps the detector and notes when each invoke starts and ends.
:class:`FaultMonitor` looks four times a second:

- an invoke running longer than ``inference_timeout_s`` ends the process with status
  :data:`~edge.config.EXIT_INFERENCE_STALLED` (3). The stuck call holds the loop's thread inside
  the interpreter, where no exception or signal handler can reach it, so ``os._exit`` is the only
  way out; the verdict log is fsync-ed line by line, and systemd (``Restart=on-failure``) starts
  the service again.
- no frame through the loop for ``stall_s`` (a camera being reopened with back-off by
  ``edge.sources``, or an invoke that is slow but not yet timed out): the FAULT light goes on and
  ``/healthz`` answers 503, until frames flow again.
- an invoke that raised: the FAULT light, and the error ends the run (exit status 2, one line);
  systemd restarts it.

The systemd watchdog itself is fed by the loop (``edge.pipeline.SystemdNotifier``), once per
processed frame: a loop that stops processing frames stops feeding it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable

import numpy as np

from edge.config import EXIT_INFERENCE_STALLED
from edge.runtime import ModelError
from edge.sources import SourceStats
from edge.station.status import StationStatus
from edge.types import Prediction

_log = logging.getLogger(__name__)

POLL_S = 0.25


class InferenceError(ModelError):
    """The model raised during an invoke (reported on one line, exit status 2)."""


class WatchedDetector:
    """A detector whose invokes are timed from outside: ``busy_since`` while one runs."""

    def __init__(self, detector, clock: Callable[[], float] = time.monotonic):
        self.detector = detector
        self._clock = clock
        self.busy_since: float | None = None
        self.invokes = 0
        self.errors = 0
        self.last_error = ""
        #: called (on the loop's thread) when an invoke raised, before the error ends the run
        self.on_error: Callable[[], None] | None = None

    def __getattr__(self, name: str):
        return getattr(self.detector, name)  # metadata, model_id, runtime, ... of the real one

    def predict(self, image_rgb: np.ndarray) -> Prediction:
        self.busy_since = self._clock()
        try:
            prediction = self.detector.predict(image_rgb)
        except Exception as exc:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            self.busy_since = None
            if self.on_error is not None:
                self.on_error()
            raise InferenceError(f"inference failed ({self.last_error})") from exc
        finally:
            self.busy_since = None
        self.invokes += 1
        return prediction


class FaultMonitor:
    """A thread that turns stalls and errors into faults (and a hung invoke into an exit)."""

    def __init__(
        self,
        status: StationStatus,
        detector: WatchedDetector | None = None,
        inference_timeout_s: float = 10.0,
        on_fault: Callable[[bool], None] | None = None,
        on_tick: Callable[[float], None] | None = None,
        exit: Callable[[int], None] = os._exit,
        on_exit: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.status = status
        self.detector = detector
        self.inference_timeout_s = float(inference_timeout_s)
        self.on_fault = on_fault
        self.on_tick = on_tick
        self._exit = exit
        #: called just before a hung invoke ends the process (outputs off: no stop runs after)
        self.on_exit = on_exit
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._faulty = False

    def __enter__(self) -> FaultMonitor:
        self._thread = threading.Thread(target=self._run, name="fault monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            self.check()

    def check(self, now: float | None = None) -> None:
        """One look: set or clear the faults, switch the FAULT light, exit on a hung invoke."""
        now = self._clock() if now is None else now
        status = self.status
        det = self.detector
        busy = det.busy_since if det is not None else None
        if busy is not None and now - busy > self.inference_timeout_s:
            status.set_fault("inference", f"an invoke has run for {now - busy:.1f} s")
            self._switch(True)
            message = (
                f"edge-run: error: inference stalled: one invoke has run for {now - busy:.1f} s "
                f"(watchdog.inference_timeout_s = {self.inference_timeout_s:g}); exiting with status "
                f"{EXIT_INFERENCE_STALLED} so the service is restarted"
            )
            _log.critical("%s", message)
            print(message, file=sys.stderr, flush=True)
            if self.on_exit is not None:
                self.on_exit()
            self._exit(EXIT_INFERENCE_STALLED)
            return
        age = status.frame_age(now)
        if age > status.stall_s:
            if busy is not None:
                status.set_fault("inference", f"one invoke has run for {now - busy:.1f} s")
                status.set_fault("camera", None)
            else:
                stats = status.source_stats
                since = "since start" if status.last_frame_t is None else f"for {age:.1f} s"
                status.set_fault("camera", f"no frame {since}{_reopenings(stats)}")
                status.set_fault("inference", None)
        else:
            status.set_fault("camera", None)
            status.set_fault("inference", None)
        if det is not None and det.errors:
            status.set_fault("model", det.last_error)
        self._switch(bool(status.faults))
        if self.on_tick is not None:
            self.on_tick(now)

    def _switch(self, faulty: bool) -> None:
        if faulty != self._faulty:
            self._faulty = faulty
            if faulty:
                _log.warning("FAULT: %s", "; ".join(f"{k}: {v}" for k, v in self.status.faults.items()))
            else:
                _log.warning("fault cleared: the station inspects again")
            if self.on_fault is not None:
                self.on_fault(faulty)


def _reopenings(stats: SourceStats) -> str:
    """What the source did about it, for the camera fault: nothing said of what has not happened."""
    said = [f"reopened {stats.reopens}x so far"] if stats.reopens else []
    if stats.failed_reopens:
        said.append(f"{stats.failed_reopens} reopen attempt(s) failed")
    if stats.reopening:
        said.append("reopening now")
    return f" ({'; '.join(said)})" if said else ""
