"""The occupancy trigger on line events the demo line does not show: how many products get one
trigger segment each (one verdict), how many are merged, lost or judged twice.

    python scripts/bench_trigger.py [--seed S] [--minutes M]

Each scenario replays the demo line (``edge.demo.DemoLine``) on a timeline of its own: the line
stopping for 60 s with a product filling the region, the station (re)started while products
pass, the lights switched on, a light step on the running line (and one up, one down, while a
product fills the region), a camera's automatic exposure settling after the start, and faint
products (each blended toward the belt's colour, keeping a third of its difference from it), with
``trigger.level`` everywhere and with each cell's threshold following the belt's noise down to
``trigger.level_min`` = 12. A frame's line time is its
number / 30 s, as a live camera's would be; sensor noise differs frame by frame. Only the
trigger runs (no model): a product is "one-to-one" when exactly one segment covers it (it
covers half the region or more in that segment's frames) and that segment covers nothing else.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge import demo
from edge.config import TriggerConfig
from edge.contract import prepare_input
from edge.decision import OccupancyTrigger
from edge.types import Frame

FPS = round(demo.FPS)


def full_at(line: demo.DemoLine, start: int) -> int:
    """The first frame from ``start`` in which a product covers 0.9 of the region."""
    t = start
    while line.cover_at(t)[1] < 0.9:
        t += 1
    return t


#: faint products keep this share of their difference from the belt's colour
FAINT = 1 / 3


def faint_line(seed: int, keep: float) -> demo.DemoLine:
    """The demo line with every product blended toward the belt's colour (``keep`` of it left)."""
    line = demo.DemoLine(seed)
    rx, ry, rw, rh = line.roi_px
    belt = line.render(0)[ry : ry + rh, rx : rx + rw].reshape(-1, 3).mean(axis=0)  # (empty at 0)
    plain = line.product_image

    def product_image(i: int) -> tuple[np.ndarray, tuple[float, float, float, float] | None]:
        image, box = plain(i)
        return np.clip(image * keep + belt * (1.0 - keep), 0, 255).astype(np.uint8), box

    line.product_image = product_image  # type: ignore[method-assign]
    return line


def timelines(line: demo.DemoLine, frames: int) -> dict[str, tuple[list[int], list[float]]]:
    """Scenario -> (the demo line's frame shown at each frame, the light's gain at it)."""
    steady = list(range(frames))
    stop_at = full_at(line, 20 * FPS)
    stop = list(range(stop_at)) + [stop_at] * (60 * FPS) + list(range(stop_at, frames))
    mid = full_at(line, 10 * FPS) - 5  # a product half in view: the station starts now
    restart = list(range(mid, mid + frames))
    off = [0.45] * (5 * FPS) + [1.0] * (frames - 5 * FPS)  # started in the dark, then lights on
    step = [1.0] * (30 * FPS) + [1.4] * (frames - 30 * FPS)
    full = full_at(line, 30 * FPS)  # a product fills the region: the light steps now
    step_in_view = [1.0] * full + [1.4] * (frames - full)
    down_in_view = [1.0] * full + [0.6] * (frames - full)
    return {
        "steady line": (steady, [1.0] * frames),
        "line stops 60 s": (stop, [1.0] * len(stop)),
        "started while products pass": (restart, [1.0] * frames),
        "lights switched on": (steady, off),
        "light x1.4 on the running line": (steady, step),
        "light x1.4, a product in view": (steady, step_in_view),
        "light x0.6, a product in view": (steady, down_in_view),
        "exposure settling at the start": (steady, [min(1.0, 0.45 + 0.55 * i / 25) for i in range(frames)]),
        "faint products": (steady, [1.0] * frames),
        "faint products, level_min 12": (steady, [1.0] * frames),
    }


def run(
    line: demo.DemoLine, shown: list[int], gains: list[float], seed: int, config: TriggerConfig
) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    noise = [rng.normal(0, 2.0, (demo.HEIGHT, demo.WIDTH, 3)).astype(np.float32) for _ in range(16)]
    trigger = OccupancyTrigger(config)
    rx, ry, rw, rh = line.roi_px
    roi = (rx / demo.WIDTH, ry / demo.HEIGHT, rw / demo.WIDTH, rh / demo.HEIGHT)
    segments: list[tuple[int, set[int]]] = []  # (product id, products covering it)
    current: tuple[int, set[int]] | None = None
    voided: set[int] = set()
    covered: set[int] = set()
    for i, (t, gain) in enumerate(zip(shown, gains, strict=True)):
        image = line.render(t).astype(np.float32) * gain + noise[int(rng.integers(len(noise)))]
        image = np.clip(image, 0, 255).astype(np.uint8)
        state = trigger.update(Frame(image, i / FPS, i), prepare_input(image, roi))
        truth, cover = line.cover_at(t)
        if truth is not None and cover >= 0.5:
            covered.add(truth.number)
        if getattr(state, "voided", None) is not None:  # (a trigger before voiding: none)
            voided.add(state.voided)
        if state.product is not None:
            if current is None or current[0] != state.product:
                current = (state.product, set())
                segments.append(current)
            if truth is not None and cover >= 0.5:
                current[1].add(truth.number)
    kept = [s for pid, s in segments if pid not in voided]
    seen = Counter(n for s in kept for n in s)
    return {
        "products": len(covered),
        "one-to-one": sum(1 for s in kept if len(s) == 1 and seen[next(iter(s))] == 1),
        "merged": sum(1 for s in kept if len(s) > 1),
        "lost": len(covered - set(seen)),
        "twice": sum(1 for n in seen.values() if n > 1),
        "phantom": sum(1 for s in kept if not s),
        "relearned": trigger.relearned,
        "moved": trigger.moved_while_learning,
    }


def row(name: str, r: dict[str, int]) -> str:
    return (
        f"{name:32s} {r['products']:8d} {r['one-to-one']:10d} {r['merged']:6d} {r['lost']:4d} "
        f"{r['twice']:5d} {r['phantom']:7d} {r['relearned']:9d} {r['moved']:16d}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0, help="demo line seed")
    p.add_argument("--minutes", type=float, default=2.0, help="line time of each scenario")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    line = demo.DemoLine(args.seed)
    total: Counter[str] = Counter()
    print(f"{'scenario':32s} products one-to-one merged lost twice phantom relearned moved-learning")
    for name, (shown, gains) in timelines(line, round(args.minutes * 60 * FPS)).items():
        faint = name.startswith("faint products")
        config = TriggerConfig(level_min=12) if name.endswith("level_min 12") else TriggerConfig()
        r = run(faint_line(args.seed, FAINT) if faint else line, shown, gains, args.seed, config)
        total.update(r)
        print(row(name, r))
    print(row("all", total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
