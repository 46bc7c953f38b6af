#!/usr/bin/env bash
# The three-variant model behind `edge-run --demo --demo-variants 3 --expect qc-passed` and the
# test fixture tests/fixtures/variants_int8.tflite: the procedural variants written as stamp
# images (the path an engineer takes with their own), fine-tuned with a class head from the
# single-stamp bundled model (INIT: `bundled`, or a model file such as the Keras model
# scripts/make_default_model.sh trains) at edge-train's default learning rate (LR), converted to
# int8 with the proof of agreement, evaluated on a synthetic set drawn with another seed. Needs
# the training extra. About 55 minutes on a 2-core x86 machine.
set -euo pipefail
cd "$(dirname "$0")/.."
# the README installs into .venv: use it without asking anyone to activate it
if [ -x .venv/bin/python ]; then export PATH="$PWD/.venv/bin:$PATH"; fi
OUT=${OUT:-runs/variants}
SEED=${SEED:-0}
# 2026-12-04: 22,000 steps on 80,000 composites (49 min here) against 11,000 on 40,000 (24 min):
# held-out int8 IoU 0.858 -> 0.868, presence 0.970 -> 0.977, class accuracy 0.990 -> 0.989
MINUTES=${MINUTES:-60}
STEPS=${STEPS:-22000}
SYNTHETIC=${SYNTHETIC:-80000}
INIT=${INIT:-bundled}
# 2026-12-04, 11,000 steps: 0.003 (int8 IoU 0.858, class accuracy 0.990) against 0.001 (0.801, 0.971)
LR=${LR:-0.003}
# the proof's own gate (0.995); before edge-convert equalized activations, fine-tuned models'
# int8 presence agreed on only 98-98.5 % of the images and this was 0.97 (now 0.997)
MIN_AGREEMENT=${MIN_AGREEMENT:-0.995}
# the demo line is a fixed station camera: its recipe (RECIPE=default for the full one)
RECIPE=${RECIPE:-station}
edge-synth --write-stamps "$OUT/stamps" --variants 3 --overwrite
edge-train --stamp "$OUT/stamps" --out "$OUT" --synthetic "$SYNTHETIC" --val-size 1000 --steps "$STEPS" \
    --minutes "$MINUTES" --eval-every 400 --seed "$SEED" --recipe "$RECIPE" \
    --init "$INIT" --lr "$LR"
edge-convert "$OUT/model.keras" --out "$OUT/variants_int8.tflite" --mode int8 --seed "$SEED" \
    --stamp "$OUT/stamps" --recipe "$RECIPE" --calibration-size 1000 --val-size 1000 --report "$OUT/convert_report.json" \
    --min-agreement "$MIN_AGREEMENT"
cp "$OUT/variants_int8.tflite" tests/fixtures/variants_int8.tflite
echo "fixture: tests/fixtures/variants_int8.tflite ($(stat -c %s tests/fixtures/variants_int8.tflite) bytes)"
