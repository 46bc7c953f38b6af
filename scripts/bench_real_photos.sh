#!/usr/bin/env bash
# The real-photo benchmarks of issue 7, each trained on train.txt only and measured on test.txt
# with the int8 model (needs ../shared/datasets and the training extra):
#   find_phone: centre points, direct regression (--kind center) and weak labels (--weak, CAM);
#   raccoon: boxes, from scratch and fine-tuned from a synthetic model ($INIT; the README's figure
#   comes from the grid model, INIT=runs/grid1/model.keras).
# Checkpoints are chosen on a validation split of train.txt, never on test.txt.
# Usage: scripts/bench_real_photos.sh [find_phone|find_phone_weak|raccoon|raccoon_init ...]
set -euo pipefail
cd "$(dirname "$0")/.."
# the README installs into .venv: use it without asking anyone to activate it
if [ -x .venv/bin/python ]; then export PATH="$PWD/.venv/bin:$PATH"; fi
DATA=${DATA:-../shared/datasets}
OUT=${OUT:-runs/real}
MINUTES=${MINUTES:-10}
INIT=${INIT:-runs/default/model.keras}
SEED=${SEED:-0}
# EMA=0.998: validate and keep the weights' moving average (edge-train --ema)
EMA=${EMA:-}
# more edge-train flags for every run, e.g. EXTRA="--head grid"
EXTRA=${EXTRA:-}
# the proof of agreement runs on the ~100-160 training photos, where one image moves the centre
# share by ~0.01: allow a drop of 0.03 there (the test-set figures of the int8 model are reported)
MAX_DROP=${MAX_DROP:-0.03}

run() {  # name, data path, folder of train.txt/test.txt, then edge-train flags
    local name=$1 data=$2 dir=$3; shift 3
    edge-train --out "$OUT/$name" --data "$data" --subset "$dir/train.txt" --seed "$SEED" \
        --minutes "$MINUTES" --eval-every 200 --patience 20 --quiet ${EMA:+--ema "$EMA"} "$@" $EXTRA
    edge-convert "$OUT/$name/model.keras" --out "$OUT/$name/int8.tflite" --mode int8 --seed "$SEED" \
        --calibration "$data" --subset "$dir/train.txt" \
        --val "$data" --val-subset "$dir/train.txt" --report "$OUT/$name/convert_report.json" \
        --max-iou-drop "$MAX_DROP" --refine "${REFINE:-auto}"
    edge-eval --model "$OUT/$name/int8.tflite" --data "$data" --subset "$dir/test.txt" \
        --json "$OUT/$name/test_int8.json" --sheet "$OUT/$name/test_int8.png"
}

for what in "${@:-find_phone find_phone_weak raccoon raccoon_init}"; do
    for w in $what; do
        case $w in
            # a phone on a floor mirrored is still a phone on a floor: --flip doubles the views
            # a phone is small in its photo: the runtime looks at four tiles of it too (--refine
            # tiles). Chosen by hand: on the training photos, which the model has learnt, one look
            # is often as good, so edge-convert's measurement there may not tell (README, "Real photos")
            find_phone) REFINE=${REFINE:-tiles} run find_phone "$DATA/find_phone/labels.txt" "$DATA/find_phone" --kind center --copies 60 --flip --steps 3000 ;;
            find_phone_weak) run find_phone_weak "$DATA/find_phone/labels.txt" "$DATA/find_phone" --weak --copies 60 --flip --steps 3000 ;;
            # from scratch: the grid head, and edge-train's default crops (200 of each of the 144 photos)
            raccoon) run raccoon "$DATA/raccoon" "$DATA/raccoon" --head grid --flip --steps 4000 ;;
            raccoon_init) run raccoon_init "$DATA/raccoon" "$DATA/raccoon" --copies 40 --flip --steps 4000 --init "$INIT" --lr 1e-3 ;;
            *) echo "unknown benchmark $w" >&2; exit 2 ;;
        esac || echo "benchmark $w failed" >&2
    done
done
