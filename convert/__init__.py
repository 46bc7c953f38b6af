"""Conversion of a trained Keras model into an int8 TFLite model with its metadata (edge-convert)."""

from __future__ import annotations

from collections.abc import Sequence

from edge.cli import launch


def edge_convert(argv: Sequence[str] | None = None) -> int:
    return launch("convert.cli", "edge-convert", argv)
