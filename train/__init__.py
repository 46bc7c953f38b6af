"""Training of the stamp localizer (edge-train, edge-eval); needs the ``train`` extra (TensorFlow)."""

from __future__ import annotations

from collections.abc import Sequence

from edge.cli import launch


def edge_train(argv: Sequence[str] | None = None) -> int:
    return launch("train.cli", "edge-train", argv)


def edge_eval(argv: Sequence[str] | None = None) -> int:
    return launch("train.evaluate", "edge-eval", argv)
