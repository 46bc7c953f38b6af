"""What the station's parts share: their error type and the install hints of their libraries."""

from __future__ import annotations

from edge.sinks import SinkError

INSTALL = "pip install 'stampline[station]'"

HINTS = {
    "gpiozero": (
        f"gpiozero is not installed: {INSTALL} (on Raspberry Pi OS: sudo apt install python3-gpiozero "
        "python3-lgpio, with the venv made by python3 -m venv --system-site-packages)"
    ),
    "paho": f"paho-mqtt is not installed: {INSTALL} (on Raspberry Pi OS: sudo apt install python3-paho-mqtt)",
    "prometheus_client": (
        f"prometheus-client is not installed: {INSTALL} "
        "(on Raspberry Pi OS: sudo apt install python3-prometheus-client)"
    ),
}


class StationError(SinkError):
    """A station part that cannot be opened (a pin, a port, a library): one line, exit status 2."""


def missing(module: str, what: str) -> StationError:
    """The error for an optional library that is not installed, with how to install it."""
    return StationError(f"{what}: {HINTS[module]}")
