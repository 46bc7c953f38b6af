"""Regenerate the golden test fixture: synthetic images + the bundled model's outputs on them.

    python scripts/make_golden.py [--model edge/models/stamp_int8.tflite] [--n 12] [--frames-only]

Writes tests/fixtures/golden/NN.png (128x128 RGB model inputs, stored as PNG), frame_NNNN.jpg (whole
640x480 frames of the demo line, as a camera gives them, for the device's path: the region cut and
scaled by the contract, the first look and the model's second looks) and expected.json (truth and
the model's presence/box for each). Run it after the bundled model changes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2

from edge import contract
from edge.demo import DemoLine
from edge.runtime import BUNDLED_MODEL, TFLiteDetector, look_again, refine_for
from edge.synth import Synthesizer

SEED = 424_242
#: the demo line the frames come from, and how many of each kind are kept: a stamped product in
#: full view, an unstamped one, the empty belt, and frames the model is unsure of (presence
#: between 0.2 and 0.8: where a change of a few grey levels or of rounding shows first)
DEMO_SEED = 7
FRAME_KINDS = {"stamped": 2, "unstamped": 1, "belt": 1, "unsure": 2}


def device_path(det: TFLiteDetector, frame, roi, refine: str) -> tuple:
    """What edge-run computes for a frame: the first look on the region, then the second looks."""
    first = det.predict(contract.prepare_input(frame, roi))
    x, y, w, h = contract.roi_pixels(frame.shape, roi)
    return first, look_again(det, frame[y : y + h, x : x + w], first, refine)


def pick_frames(det: TFLiteDetector, refine: str) -> list[tuple[str, int]]:
    """Frames of the demo line of each kind in ``FRAME_KINDS`` (the first found, in order)."""
    line = DemoLine(DEMO_SEED)
    picked: list[tuple[str, int]] = []
    wanted = dict(FRAME_KINDS)
    for t in range(3000):
        if not any(wanted.values()):
            break
        product, cover = line.cover_at(t)
        first, _ = device_path(det, line.render(t), line.roi, refine)
        if 0.2 < first.presence < 0.8:
            kind = "unsure"
        elif product is None and cover == 0:
            kind = "belt"
        elif cover > 0.9 and product.stamp and first.presence > 0.9:
            kind = "stamped"
        elif cover > 0.9 and not product.stamp and first.presence < 0.1:
            kind = "unstamped"
        else:
            continue
        if wanted.get(kind) and all(abs(t - u) > 10 for _, u in picked):
            wanted[kind] -= 1
            picked.append((kind, t))
    return picked


def _rounded(values) -> list[float] | None:
    return None if values is None else [round(float(v), 4) for v in values]


OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "golden"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=BUNDLED_MODEL)
    p.add_argument("--n", type=int, default=12)
    p.add_argument(
        "--frames-only",
        action="store_true",
        help="keep the committed model inputs and their outputs; write the demo frames again",
    )
    args = p.parse_args()
    det = TFLiteDetector(args.model)
    OUT.mkdir(parents=True, exist_ok=True)
    if args.frames_only:
        rows = json.loads((OUT / "expected.json").read_text())["images"]
    else:
        rows = model_inputs(det, args.n)
    for old in OUT.glob("frame_*.jpg"):
        old.unlink()
    refine = refine_for(det.metadata, "auto", str(args.model))
    line = DemoLine(DEMO_SEED)
    frames = []
    for kind, t in pick_frames(det, refine):
        name = f"frame_{t:04d}.jpg"  # (a camera's JPEG; its outputs are recorded from the file as read)
        cv2.imwrite(str(OUT / name), line.render(t), [cv2.IMWRITE_JPEG_QUALITY, 90])
        first, again = device_path(det, cv2.imread(str(OUT / name)), line.roi, refine)
        frames.append(
            {
                "image": name,
                "kind": kind,
                "presence": round(first.presence, 4),
                "box": _rounded(first.box),
                "refined_presence": round(again.presence, 4),
                "refined_box": _rounded(again.box),
            }
        )
    expected = {
        "model_id": det.model_id,
        "seed": SEED,
        "images": rows,
        "frames": {"demo_seed": DEMO_SEED, "roi": list(line.roi), "refine": refine, "rows": frames},
    }
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {len(rows)} golden images and {len(frames)} frames for model {det.model_id} to {OUT}")
    return 0


def model_inputs(det: TFLiteDetector, n: int) -> list[dict]:
    """``n`` synthetic model inputs written as NN.png, with their truth and the model's outputs."""
    synth = Synthesizer()
    rows = []
    for i in range(n):
        image, box, presence, _ = synth.model_sample(SEED, i)
        pred = det.predict(image)
        name = f"{i:02d}.png"
        cv2.imwrite(str(OUT / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        rows.append(
            {
                "image": name,
                "truth_present": bool(presence > 0.5),
                "truth_box": [round(float(v), 4) for v in box] if presence > 0.5 else None,
                "presence": round(pred.presence, 4),
                "box": [round(v, 4) for v in pred.box],
            }
        )
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
