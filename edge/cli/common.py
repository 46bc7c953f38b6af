"""What every command line shares: one-line errors with exit status 2, argument types."""

from __future__ import annotations

import argparse
import sys

USAGE_ERROR = 2


class CliError(Exception):
    """A usage, config, data or model error: reported on one line, exit status 2."""


def fail(prog: str, exc: BaseException | str, status: int = USAGE_ERROR) -> int:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    print(f"{prog}: error: {message}", file=sys.stderr)
    return status


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return value


def unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value
