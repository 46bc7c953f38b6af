"""Command-line entry points of the runtime (edge-run, edge-bench, edge-synth).

The console scripts call the launchers here, which import a tool's module and run its ``main``:
Ctrl-C while Python is still importing it (its first fifth of a second) ends the tool with one line
and status 130, as it does once ``main`` runs, instead of a traceback. Nothing heavy is imported
here."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

#: the exit status of a tool stopped by Ctrl-C (128 + SIGINT), as its ``main`` returns it
INTERRUPTED = 130


def launch(module: str, prog: str, argv: Sequence[str] | None = None) -> int:
    """Import ``module`` and return its ``main(argv)``; Ctrl-C before ``main`` handles it itself
    (while the module or ``main``'s own first imports load) ends quietly."""
    try:
        return importlib.import_module(module).main(argv)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED


def edge_run(argv: Sequence[str] | None = None) -> int:
    return launch("edge.cli.run", "edge-run", argv)


def edge_bench(argv: Sequence[str] | None = None) -> int:
    return launch("edge.cli.bench", "edge-bench", argv)


def edge_synth(argv: Sequence[str] | None = None) -> int:
    return launch("edge.cli.synth", "edge-synth", argv)
