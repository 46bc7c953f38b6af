"""What every command line shares: one-line errors with exit status 2, argument types."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

USAGE_ERROR = 2


class CliError(Exception):
    """A usage, config, data or model error: reported on one line, exit status 2."""


def fail(prog: str, exc: BaseException | str, status: int = USAGE_ERROR) -> int:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    print(f"{prog}: error: {message}", file=sys.stderr)
    return status


def os_error_text(exc: OSError) -> str:
    """An OSError as ``file: reason`` (no errno prefix), for a one-line error."""
    return f"{getattr(exc, 'filename', '') or ''}: {exc.strerror or exc}".lstrip(": ")


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (``prog: error: ...``), exit status 2,
    like every other bad input; ``--help`` still shows the usage."""

    def error(self, message: str):  # type: ignore[override]
        fail(self.prog, message)
        raise SystemExit(USAGE_ERROR)


def check_output_file(path: Path, what: str) -> None:
    """Fail now, not after the run, when ``path`` cannot be written: its folder is made if
    missing; a folder in its place or a read-only folder is a CliError naming the path."""
    if path.is_dir():
        raise CliError(f"{path}: is a folder (expected a file for {what})")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"{path}: cannot make its folder {parent} for {what} ({exc.strerror})") from None
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise CliError(f"{path}: not writable (needed for {what})")


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _whole_number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return value


#: more interpreter threads than any board has cores: a typo (99999 crashed the process starting them)
MAX_THREADS = 64


def thread_count(text: str) -> int:
    """An interpreter thread count: a whole number from 1 to ``MAX_THREADS``."""
    value = positive_int(text)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_THREADS} threads, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def number(text: str) -> float:
    """Any number (a flag whose range the config checks)."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def finite_float(text: str) -> float:
    value = number(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value:g}")
    return value


def unit_float(text: str) -> float:
    value = number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value


def _finite(obj: object) -> object:
    """NaN (a metric with nothing to measure) -> null, numpy scalars -> Python: strict JSON."""
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Path, data: object) -> None:
    """Write ``data`` as indented, strict JSON (NaN as null)."""
    path.write_text(json.dumps(_finite(data), indent=2, sort_keys=True, allow_nan=False) + "\n")
