#!/usr/bin/env bash
# Reproduce the bundled default model from the default procedural recipe:
#   train (synthetic, seed 0) -> convert to int8 with the proof of agreement -> evaluate -> bundle.
# Needs the training extra: pip install -e '.[train]'. About 80 minutes on a 2-core x86 machine
# (4 of synthesis, 70 of training, 3 of conversion). OUT must not hold an earlier run.
set -euo pipefail
cd "$(dirname "$0")/.."
# the README installs into .venv: use it without asking anyone to activate it
if [ -x .venv/bin/python ]; then export PATH="$PWD/.venv/bin:$PATH"; fi
OUT=${OUT:-runs/default}
SEED=${SEED:-0}
MINUTES=${MINUTES:-70}  # the training budget (shorter for a try-out); the learning rate follows it
# the step count is a ceiling (about 27,000 fit in 70 minutes here); checkpoints every 1,000 steps
edge-train --out "$OUT" --synthetic 100000 --val-size 1000 --steps 40000 --minutes "$MINUTES" \
    --eval-every 1000 --patience 40 --seed "$SEED"
edge-convert "$OUT/model.keras" --out "$OUT/stamp_int8.tflite" --mode int8 --seed "$SEED" \
    --calibration-size 1000 --val-size 1000 --report "$OUT/convert_report.json"
edge-convert "$OUT/model.keras" --out "$OUT/stamp_float32.tflite" --mode float32 --seed "$SEED" \
    --val-size 1000 --report "$OUT/convert_report_float32.json"
cp "$OUT/stamp_int8.tflite" edge/models/stamp_int8.tflite
python - <<'PY'  # the bundled model's metadata, readable beside it
import dataclasses, json, pathlib
from edge import contract
from edge.runtime import model_id
raw = pathlib.Path("edge/models/stamp_int8.tflite").read_bytes()
meta = dataclasses.asdict(contract.read_embedded_metadata(raw))
card = {k: meta[k] for k in ("kind", "labels", "threshold", "refine", "provenance")}
card["model_id"] = model_id(raw)
pathlib.Path("edge/models/stamp_int8.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
PY
python scripts/make_golden.py   # the golden test's expected outputs follow the bundled model
echo "bundled: edge/models/stamp_int8.tflite ($(stat -c %s edge/models/stamp_int8.tflite) bytes)"
