"""A V4L2 camera's own controls: fixed exposure, fixed gain, the mains frequency of the lights.

OpenCV has no property for a camera's power line frequency, and its exposure properties take
different units across its versions; the driver's controls are set directly instead (ioctl), on a
second descriptor of the same device: controls belong to the device, so they hold for OpenCV's
capture as well. Each setting is read back, so what is said is what the camera took.

Why a station wants them: see ``edge.sources.CameraControls``.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

# ioctl requests: _IOWR('V', nr, size)
VIDIOC_G_CTRL = 0xC008561B  # struct v4l2_control (8 bytes)
VIDIOC_S_CTRL = 0xC008561C
VIDIOC_QUERYCTRL = 0xC0445624  # struct v4l2_queryctrl (68 bytes)

# control ids (linux/v4l2-controls.h)
CID_AUTOGAIN = 0x00980912
CID_GAIN = 0x00980913
CID_POWER_LINE_FREQUENCY = 0x00980918  # menu: 0 disabled, 1 50 Hz, 2 60 Hz, 3 auto
CID_EXPOSURE_AUTO = 0x009A0901  # menu: 0 auto, 1 manual, 2 shutter priority, 3 aperture priority
CID_EXPOSURE_ABSOLUTE = 0x009A0902  # in units of 100 us

EXPOSURE_MANUAL = 1
POWER_LINE = {50: 1, 60: 2}
_CTRL_FLAG_DISABLED = 0x0001
_CONTROL = struct.Struct("=Ii")
_QUERY = struct.Struct("=II32siiiiI2I")


@dataclass(frozen=True)
class Range:
    """A control's range as the driver gives it."""

    minimum: int
    maximum: int
    default: int

    def clamp(self, value: int) -> int:
        return min(max(value, self.minimum), self.maximum)


Ioctl = Callable[[int, int, bytearray, bool], int]


class Controls:
    """The controls of one V4L2 device, on a descriptor of its own (a context manager).

    ``ioctl`` and ``opener`` are the hardware boundary (``fcntl.ioctl`` and ``os.open``).
    """

    def __init__(self, path: str, ioctl: Ioctl | None = None, opener: Callable[..., int] | None = None):
        if ioctl is None:
            import fcntl

            ioctl = fcntl.ioctl
        self.path = path
        self._ioctl = ioctl
        self._open = opener or os.open
        self._fd = -1

    def __enter__(self) -> Controls:
        self._fd = self._open(self.path, os.O_RDWR | os.O_NONBLOCK)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def query(self, cid: int) -> Range | None:
        """The control's range; None if the device has no such control or it is disabled."""
        buf = bytearray(_QUERY.pack(cid, 0, b"", 0, 0, 0, 0, 0, 0, 0))
        try:
            self._ioctl(self._fd, VIDIOC_QUERYCTRL, buf, True)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                return None
            raise
        _id, _type, _name, low, high, _step, default, flags, _r0, _r1 = _QUERY.unpack(buf)
        return None if flags & _CTRL_FLAG_DISABLED else Range(low, high, default)

    def get(self, cid: int) -> int:
        buf = bytearray(_CONTROL.pack(cid, 0))
        self._ioctl(self._fd, VIDIOC_G_CTRL, buf, True)
        return _CONTROL.unpack(buf)[1]

    def set(self, cid: int, value: int) -> int:
        """Set the control; the value the driver took (read back: it may round to its step)."""
        self._ioctl(self._fd, VIDIOC_S_CTRL, bytearray(_CONTROL.pack(cid, int(value))), True)
        return self.get(cid)


def device_path(camera: int | str) -> str:
    """The device node OpenCV opens for a V4L2 camera: ``/dev/videoN`` for index N, else the path."""
    return f"/dev/video{camera}" if isinstance(camera, int) else str(camera)


AUTO = "auto"


def apply(
    camera: int | str,
    exposure_ms: float | str | None = None,
    gain: float | str | None = None,
    mains_hz: int | None = None,
    ioctl: Ioctl | None = None,
    opener: Callable[..., int] | None = None,
) -> tuple[dict[str, float | str], list[str]]:
    """Set what is given on the camera's device (None: not touched; ``"auto"``: the camera's
    automatic exposure or gain): (what it took, read back, by key: ``exposure_ms``, ``gain``,
    ``mains_hz``; warnings, each naming the config key it concerns). A control the camera lacks,
    or refuses, is a warning, not an error: the line runs on the camera's own setting."""
    taken: dict[str, float | str] = {}
    warnings: list[str] = []
    if exposure_ms is None and gain is None and mains_hz is None:
        return taken, warnings
    path = device_path(camera)
    try:
        with Controls(path, ioctl, opener) as dev:
            if mains_hz is not None:
                _mains(dev, mains_hz, taken, warnings)
            if exposure_ms is not None:
                _exposure(dev, exposure_ms, taken, warnings)
            if gain is not None:
                _gain(dev, gain, taken, warnings)
    except OSError as exc:
        warnings.append(f"cannot set the camera's controls on {path} ({os.strerror(exc.errno or 0)})")
    return taken, warnings


def _refused(key: str, exc: OSError) -> str:
    return f"source.{key}: the camera refused it ({os.strerror(exc.errno or 0)})"


def _back_to_auto(
    dev: Controls, key: str, what: str, cid: int, value: int | None, taken: dict, warnings: list[str]
) -> None:
    """The camera's automatic ``what`` again: control ``cid`` set to ``value`` (None: it has none)."""
    if value is None:
        warnings.append(f"source.{key}: the camera has no automatic {what}")
        return
    try:
        dev.set(cid, value)
    except OSError as exc:
        warnings.append(_refused(key, exc))
        return
    taken[key] = AUTO


def _mains(dev: Controls, mains_hz: int, taken: dict, warnings: list[str]) -> None:
    r = dev.query(CID_POWER_LINE_FREQUENCY)
    value = POWER_LINE[mains_hz]
    if r is None or not r.minimum <= value <= r.maximum:
        warnings.append(
            f"source.mains_hz: the camera has no {mains_hz} Hz power line frequency setting; not applied"
        )
        return
    try:
        got = dev.set(CID_POWER_LINE_FREQUENCY, value)
    except OSError as exc:
        warnings.append(_refused("mains_hz", exc))
        return
    if got == value:
        taken["mains_hz"] = mains_hz


def _exposure(dev: Controls, exposure_ms: float | str, taken: dict, warnings: list[str]) -> None:
    auto = dev.query(CID_EXPOSURE_AUTO)
    if exposure_ms == AUTO:
        # its default mode, unless that is manual: aperture priority (a UVC camera's automatic)
        mode = None
        if auto is not None:
            mode = auto.default if auto.default != EXPOSURE_MANUAL else min(3, auto.maximum)
            mode = None if mode == EXPOSURE_MANUAL else mode  # (a camera with a manual mode only)
        _back_to_auto(dev, "exposure_ms", "exposure", CID_EXPOSURE_AUTO, mode, taken, warnings)
        return
    r = dev.query(CID_EXPOSURE_ABSOLUTE)
    if r is None:
        warnings.append(
            "source.exposure_ms: the camera has no exposure time control; its own exposure is used"
        )
        return
    before = None
    try:
        if auto is not None:
            before = dev.get(CID_EXPOSURE_AUTO)
            dev.set(CID_EXPOSURE_AUTO, EXPOSURE_MANUAL)
        units = max(1, round(float(exposure_ms) * 10))
        wanted = r.clamp(units)
        if wanted != units:
            warnings.append(
                f"source.exposure_ms: {exposure_ms:g} ms is outside the camera's range "
                f"{r.minimum / 10:g}-{r.maximum / 10:g} ms; {wanted / 10:g} ms is used"
            )
        got = dev.set(CID_EXPOSURE_ABSOLUTE, wanted)
    except OSError as exc:
        warnings.append(_refused("exposure_ms", exc) + "; its own exposure is used")
        if before is not None and before != EXPOSURE_MANUAL:
            with contextlib.suppress(OSError):  # not left on manual at whatever it had
                dev.set(CID_EXPOSURE_AUTO, before)
        return
    taken["exposure_ms"] = got / 10


def _gain(dev: Controls, gain: float | str, taken: dict, warnings: list[str]) -> None:
    autogain = dev.query(CID_AUTOGAIN)
    if gain == AUTO:
        _back_to_auto(dev, "gain", "gain", CID_AUTOGAIN, None if autogain is None else 1, taken, warnings)
        return
    r = dev.query(CID_GAIN)
    if r is None:
        warnings.append("source.gain: the camera has no gain control; its own gain is used")
        return
    try:
        if autogain is not None:
            dev.set(CID_AUTOGAIN, 0)
        units = round(float(gain))
        wanted = r.clamp(units)
        if wanted != units or not math.isclose(units, float(gain)):
            warnings.append(
                f"source.gain: a V4L2 camera's gain is a whole number in {r.minimum}..{r.maximum} "
                f"(its own units); {wanted} is used for {gain:g}"
            )
        got = dev.set(CID_GAIN, wanted)
    except OSError as exc:
        warnings.append(_refused("gain", exc))
        return
    taken["gain"] = got
