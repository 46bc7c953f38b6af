"""Record a few seconds of the demo line as a small video with its known verdicts beside it.

    python scripts/make_demo_video.py --seed 10 --frames 330 --out tests/fixtures/demo_line.mp4

Writes the video (``mp4v``, scaled by ``--scale``) and its truth under the same name with
``.json`` (``line.mp4``: ``line.json``): the seed, the region of interest to inspect, and every
product that crossed the region within the video, in order, with its expected verdict.
``tests/test_run_cli.py`` runs ``edge-run --video`` on it and compares.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2

from edge.cli.common import non_negative_int, positive_float, positive_int
from edge.demo import DemoLine


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=non_negative_int, default=10, help="the demo line's seed (default 10)")
    p.add_argument(
        "--frames", type=positive_int, default=330, help="frames to record, at 30 fps (default 330)"
    )
    p.add_argument(
        "--scale",
        type=positive_float,
        default=0.5,
        help="frame size relative to the demo's 640x480 (default 0.5)",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="the video to write (.mp4), with its truth beside it under the same name with .json "
        "(line.mp4: line.json; the test fixture: tests/fixtures/demo_line.mp4)",
    )
    args = p.parse_args(argv)

    line = DemoLine(args.seed)
    size = (max(16, round(line.width * args.scale)), max(16, round(line.height * args.scale)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(args.out), cv2.VideoWriter_fourcc(*"mp4v"), line.fps, size)
    if not writer.isOpened():
        print(f"cannot write {args.out}", file=sys.stderr)
        return 2
    for t in range(args.frames):
        frame = line.render(t)
        if size != (line.width, line.height):
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        writer.write(frame)
    writer.release()
    products = line.products_between(0, args.frames - 1)
    meta = {
        "made_by": "scripts/make_demo_video.py",
        "seed": args.seed,
        "frames": args.frames,
        "fps": line.fps,
        "size": list(size),
        "roi": list(line.roi),
        "products": [
            {**p.as_dict(), "first_frame": p.first_frame, "last_frame": p.last_frame} for p in products
        ],
        "verdicts": [p.expected for p in products],
    }
    json_path = args.out.with_suffix(".json")
    json_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(f"{args.out}: {args.frames} frames {size[0]}x{size[1]}, {args.out.stat().st_size / 1e6:.2f} MB")
    print(f"{json_path}: {len(products)} products, verdicts {meta['verdicts']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
