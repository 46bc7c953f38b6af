"""Command-line entry points of the runtime (edge-run, edge-bench, edge-synth)."""
