"""Regenerate the golden test fixture: synthetic images + the bundled model's outputs on them.

    python scripts/make_golden.py [--model edge/models/stamp_int8.tflite] [--n 12]

Writes tests/fixtures/golden/NN.png (128x128 RGB model inputs, stored as PNG) and expected.json
(truth and the model's presence/box for each). Run it after the bundled model changes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2

from edge.runtime import BUNDLED_MODEL, TFLiteDetector
from edge.synth import Synthesizer

SEED = 424_242
OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "golden"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=BUNDLED_MODEL)
    p.add_argument("--n", type=int, default=12)
    args = p.parse_args()
    det = TFLiteDetector(args.model)
    synth = Synthesizer()
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(args.n):
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
    (OUT / "expected.json").write_text(
        json.dumps({"model_id": det.model_id, "seed": SEED, "images": rows}, indent=1) + "\n"
    )
    print(f"wrote {len(rows)} golden images for model {det.model_id} to {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
