"""Stampline's runtime: frames -> predictions -> verdicts, on the device (no TensorFlow here)."""

__version__ = "0.1.0"
