"""edge/ is the device runtime: importing it (and its CLIs) must not load TensorFlow and friends."""

import json
import subprocess
import sys

FORBIDDEN = (
    "tensorflow",
    "keras",
    "train",
    "convert",
    "picamera2",
    "gpiozero",
    "paho",
    "prometheus_client",
    "selenium",
    "tflite_runtime",
)

PROBE = """
import importlib, json, pkgutil, sys
import edge
names = sorted(m.name for m in pkgutil.walk_packages(edge.__path__, "edge."))
for name in names:
    importlib.import_module(name)
import train.evaluate  # edge-eval: its .tflite path must stay TensorFlow-free too
print(json.dumps({"modules": names, "loaded": sorted(m.split(".")[0] for m in sys.modules)}))
"""


def test_importing_edge_and_its_clis_loads_no_heavy_or_hardware_modules():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "edge.contract" in result["modules"] and "edge.runtime" in result["modules"]
    loaded = set(result["loaded"])
    bad = [m for m in FORBIDDEN if m in loaded and m != "train"]
    assert not bad, f"importing edge loaded {bad}"


def test_edge_sources_never_import_tensorflow_by_text():
    """A belt-and-braces check on the source: no module-level import of the forbidden packages."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1] / "edge"
    banned = "tensorflow|keras|train|convert|picamera2|gpiozero|paho|prometheus_client"
    pattern = re.compile(rf"^(import|from)\s+({banned})\b", re.M)
    offenders = [str(p) for p in root.rglob("*.py") if pattern.search(p.read_text())]
    assert not offenders
