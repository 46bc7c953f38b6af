"""How fast the synthetic-data generator feeds training: images/s of ``Synthesizer.model_sample``.

    python scripts/bench_synth.py --n 1000          # one core: cv2.setNumThreads(1)

Prints the rate by wall clock and by this process's CPU time; on a busy machine the CPU-time
rate is the one that says what a free core would do.
"""

from __future__ import annotations

import argparse
import time

import cv2

from edge.synth import Backgrounds, Synthesizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="images/s of Synthesizer.model_sample",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--n", type=int, default=1000, help="samples to time")
    parser.add_argument("--seed", type=int, default=0, help="stream seed")
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads")
    parser.add_argument(
        "--backgrounds", default=None, help="folder of background photos (default: procedural)"
    )
    parser.add_argument("--warmup", type=int, default=100, help="untimed samples first (caches, noise banks)")
    args = parser.parse_args(argv)
    if args.n <= 0:
        parser.error("--n must be > 0")
    cv2.setNumThreads(args.threads)
    synth = Synthesizer(backgrounds=Backgrounds(args.backgrounds))
    for i in range(args.warmup):
        synth.model_sample(args.seed + 1, i)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(args.n):
        synth.model_sample(args.seed, i)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        f"{args.n / wall:.0f} images/s wall clock, {args.n / cpu:.0f} images/s CPU time "
        f"({cpu / args.n * 1e3:.2f} ms CPU/image; n={args.n}, {args.threads} OpenCV thread(s))"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
