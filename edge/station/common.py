"""What the station's parts share: their error type and the install hints of their libraries."""

from __future__ import annotations

from pathlib import Path

from edge.config import HttpConfig, token_problem
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


def read_secret(path: Path, key: str) -> str:
    """A password or token kept in a file (``key`` names the setting), stripped of its line end."""
    try:
        return path.read_text(encoding="utf-8-sig").strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "expected UTF-8 text"
        raise StationError(f"{key}: cannot read {path} ({why})") from None


def http_token(config: HttpConfig) -> str | None:
    """The web view's token: ``http.token``, or what ``http.token_file`` holds."""
    if config.token_file is None:
        return config.token
    token = read_secret(config.token_file, "http.token_file")
    problem = token_problem(token)
    if problem is not None:
        raise StationError(f"http.token_file: {config.token_file}: expected {problem}")
    return token


def host_name(host: str) -> str:
    """The name or address of a ``Host`` header or listen host: port, IPv6 brackets, case and a
    trailing dot taken off."""
    host = host.strip()
    if host.startswith("["):  # [::1]:8080
        return host[1 : host.find("]")].lower() if "]" in host else host[1:].lower()
    if host.count(":") == 1:  # name:port (a bare IPv6 address has several)
        host = host.split(":", 1)[0]
    return host.lower().rstrip(".")
