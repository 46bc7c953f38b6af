"""Inspection FPS with and without a web viewer attached, side by side in one run.

One ``edge-run`` pipeline (the demo line read as fast as possible, the bundled model on every
frame by default, the station's status, /metrics and web view on a loopback port) runs for
``--rounds`` x 2 phases of ``--phase`` seconds; every other phase a viewer (a separate process
reading ``/stream.mjpg``, as a browser would) is attached. The phases alternate, so a background
load drifting over the run hits both alike; the first ``--settle`` seconds of each phase are not
counted. Printed per phase: loop frames per second, stream frames the viewer received per second,
and this process's CPU use; then the medians and their ratio.

    python scripts/bench_web_view.py                       # 4 rounds of 2 x 5 s
    python scripts/bench_web_view.py --rounds 6 --phase 8 --stream-fps 15
    python scripts/bench_web_view.py --trigger occupancy   # the model only on products in view
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time

import numpy as np

from edge.config import Config
from edge.decision import Decider, EveryFrameTrigger, OccupancyTrigger
from edge.demo import DemoCamera, DemoLine
from edge.pipeline import Pipeline, RunOptions
from edge.runtime import TFLiteDetector
from edge.sources import Source
from edge.station.station import Station

VIEWER = """
import sys, urllib.request
n = 0
with urllib.request.urlopen(sys.argv[1]) as r:
    while True:
        line = r.readline()
        if not line:
            break
        n += line == b"--frame\\r\\n"
        if line.startswith(b"Content-Length:"):
            r.readline()
            r.read(int(line.split(b":")[1]))
            print(n, flush=True)
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=4, help="rounds of (no viewer, viewer)")
    p.add_argument("--phase", type=float, default=5.0, help="seconds per phase")
    p.add_argument("--settle", type=float, default=1.0, help="seconds not counted at a phase's start")
    p.add_argument("--stream-fps", type=float, default=10.0, help="http.stream_fps")
    p.add_argument("--threads", type=int, default=2, help="interpreter threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--trigger",
        choices=("every-frame", "occupancy"),
        default="every-frame",
        help="every-frame: the model on every frame (the same work per frame, the steadiest figure)",
    )
    args = p.parse_args()

    config = Config.from_mapping({"http": {"listen": "127.0.0.1:0", "stream_fps": args.stream_fps}})
    line = DemoLine(args.seed)
    detector = TFLiteDetector(threads=args.threads)
    done: list[float] = []
    received: list[float] = []
    phases: list[tuple[bool, float, float, float, float]] = []  # viewer, start, end, cpu start, cpu end

    def hook(result, stage_ms) -> None:
        done.append(time.monotonic())

    src = Source(DemoCamera(line), threaded=False, prefetch=2)
    with src, Station(config, src.stats) as station:
        url = station.web.url + "stream.mjpg"
        total = 2 * args.rounds * args.phase

        def control() -> None:
            for i in range(2 * args.rounds):
                watching = i % 2 == 1
                viewer = None
                if watching:
                    viewer = subprocess.Popen(
                        [sys.executable, "-c", VIEWER, url], stdout=subprocess.PIPE, text=True
                    )

                    def count(v=viewer) -> None:
                        for _ in v.stdout:
                            received.append(time.monotonic())

                    threading.Thread(target=count, daemon=True).start()
                time.sleep(args.settle)
                t0, c0 = time.monotonic(), time.process_time()
                time.sleep(args.phase - args.settle)
                phases.append((watching, t0, time.monotonic(), c0, time.process_time()))
                if viewer is not None:
                    viewer.terminate()
                    viewer.wait()
            pipeline.stop("done")

        pipeline = Pipeline(
            src,
            station.watch(detector),
            EveryFrameTrigger() if args.trigger == "every-frame" else OccupancyTrigger(config.trigger),
            Decider(detector.metadata.threshold, config.decision),
            station.sinks,
            # every frame is a product here: no journal lines for the missing ones
            RunOptions(roi=line.roi, flag_lines=False),
            hooks=[hook],
        )
        threading.Thread(target=control, daemon=True).start()
        pipeline.run(duration=total + 30)
        encoded = station.web.encoded
        encode_ms = station.web.encode_ms_total / max(encoded, 1)

    times = np.asarray(done)
    got = np.asarray(received)
    rows = []
    print(f"{'phase':>5} {'viewer':>6} {'loop fps':>9} {'stream fps':>10} {'CPU %':>6}")
    for i, (watching, t0, t1, c0, c1) in enumerate(phases):
        n = np.count_nonzero((times >= t0) & (times < t1))
        s = np.count_nonzero((got >= t0) & (got < t1))
        fps, sfps, cpu = n / (t1 - t0), s / (t1 - t0), 100 * (c1 - c0) / (t1 - t0)
        rows.append((watching, fps, sfps, cpu))
        print(f"{i + 1:>5} {'yes' if watching else 'no':>6} {fps:9.1f} {sfps:10.1f} {cpu:6.0f}")
    without = [r[1] for r in rows if not r[0]]
    with_ = [r[1] for r in rows if r[0]]
    cpu_without = [r[3] for r in rows if not r[0]]
    cpu_with = [r[3] for r in rows if r[0]]
    print(
        f"inspection fps, median of {len(without)} phases each: without a viewer {np.median(without):.1f}, "
        f"with one {np.median(with_):.1f} (ratio {np.median(with_) / np.median(without):.3f}); "
        f"stream {np.median([r[2] for r in rows if r[0]]):.1f} fps (cap {args.stream_fps:g}); "
        f"process CPU {np.median(cpu_without):.0f}% vs {np.median(cpu_with):.0f}%; "
        f"{encoded} stream frames encoded, {encode_ms:.1f} ms each (encoder thread); {os.cpu_count()} cores"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
