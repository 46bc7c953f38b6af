"""Drawing a frame's result onto it: the stamp's box and score, the product's state, counters.

Boxes come from the model in coordinates normalised to the region of interest;
:func:`box_to_pixels` maps them to the frame's pixels. Drawing happens only when a sink needs an
annotated image (recording, display, snapshots), never on the bare hot path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from edge.types import Outcome, Prediction, Verdict

# BGR
GREEN = (60, 200, 60)
RED = (40, 40, 230)
AMBER = (0, 190, 255)
GREY = (170, 170, 170)
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
OUTCOME_COLOURS = {Outcome.OK: GREEN, Outcome.MISSING: RED, Outcome.WRONG: AMBER}


def box_to_pixels(box: Sequence[float], roi_px: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """A box ``x_min, y_min, x_max, y_max`` normalised to the region -> frame pixel corners."""
    rx, ry, rw, rh = roi_px
    x0, y0, x1, y1 = (float(v) for v in box)
    return (
        round(rx + x0 * rw),
        round(ry + y0 * rh),
        round(rx + x1 * rw),
        round(ry + y1 * rh),
    )


@dataclass(frozen=True)
class OverlayState:
    """Everything drawn on one frame besides the image itself."""

    prediction: Prediction | None = None
    threshold: float = 0.5
    #: the product in view (None: belt empty) and how many of its frames saw the stamp so far
    product: int | None = None
    hits: int = 0
    #: the latest verdict, shown in its colour for a moment after the product left
    verdict: Verdict | None = None
    inspected: int = 0
    missing: int = 0
    fps: float = 0.0
    latency_ms: float = 0.0
    learning: bool = False
    #: the counters, FPS and latency line (live views; not on snapshots)
    footer: bool = True
    #: the box's colour; None: green (the box is drawn where presence >= threshold)
    box_colour: tuple[int, int, int] | None = None


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, colour, thick: int) -> None:
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, BLACK, thick + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)


def draw_overlay(canvas: np.ndarray, roi_px: tuple[int, int, int, int], state: OverlayState) -> np.ndarray:
    """Draw ``state`` onto ``canvas`` (a BGR image, changed in place) and return it."""
    h, w = canvas.shape[:2]
    scale = max(min(w, h) / 720.0, 0.35)
    thick = max(round(2 * scale), 1)
    line = round(32 * scale)
    rx, ry, rw, rh = roi_px
    cv2.rectangle(canvas, (rx, ry), (rx + rw - 1, ry + rh - 1), GREY, 1)

    pred = state.prediction
    if pred is not None:
        if pred.box is not None and pred.presence >= state.threshold:
            colour = state.box_colour or GREEN
            x0, y0, x1, y1 = box_to_pixels(pred.box, roi_px)
            cv2.rectangle(canvas, (x0, y0), (x1, y1), colour, thick + 1)
            _text(canvas, f"{pred.presence:.2f}", (x0, max(y0 - 6, line // 2)), 0.8 * scale, colour, thick)
        else:  # no stamp seen: the box the model regressed means nothing, its score does
            colour = state.box_colour or GREY
            _text(canvas, f"no stamp {pred.presence:.2f}", (rx + 6, ry + line), 0.8 * scale, colour, thick)

    if state.learning:
        _text(canvas, "learning the empty belt", (10, line), scale, AMBER, thick)
    elif state.product is not None:
        _text(canvas, f"#{state.product} inspecting ({state.hits} hits)", (10, line), scale, AMBER, thick)
    if state.verdict is not None:
        v = state.verdict
        colour = OUTCOME_COLOURS[v.outcome]
        label = f"#{v.product_id} {v.outcome.value}"
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 1.2 * scale, thick + 1)
        x = w - tw - 20
        cv2.rectangle(canvas, (x - 10, 8), (w - 8, 8 + th + 16), colour, -1)
        cv2.putText(
            canvas,
            label,
            (x, 8 + th + 8),
            cv2.FONT_HERSHEY_SIMPLEX,
            1.2 * scale,
            WHITE,
            thick + 1,
            cv2.LINE_AA,
        )
    if state.footer:
        footer = (
            f"inspected {state.inspected}  missing {state.missing}  "
            f"{state.fps:.1f} fps  latency {state.latency_ms:.0f} ms"
        )
        _text(canvas, footer, (10, h - 10), 0.8 * scale, WHITE, thick)
    return canvas


def annotate_verdict(image: np.ndarray, roi_px: tuple[int, int, int, int], verdict: Verdict) -> np.ndarray:
    """A copy of ``image`` with a verdict's evidence drawn on it, in the verdict's colour."""
    ok = verdict.outcome is Outcome.OK
    state = OverlayState(
        prediction=verdict.evidence_prediction,
        threshold=0.0 if ok else 1.0 + 1e-9,  # OK: the stamp's box; otherwise its score only
        verdict=verdict,
        footer=False,
        box_colour=OUTCOME_COLOURS[verdict.outcome],
    )
    canvas = draw_overlay(image.copy(), roi_px, state)
    scale = max(min(canvas.shape[:2]) / 720.0, 0.35)
    frame = verdict.evidence.index if verdict.evidence is not None else "-"
    text = f"best score {verdict.score:.2f}  hits {verdict.hits}/{len(verdict.frames)}  frame {frame}"
    _text(canvas, text, (10, canvas.shape[0] - 10), 0.8 * scale, WHITE, max(round(2 * scale), 1))
    return canvas
