"""Drawing a frame's result onto it: the stamp's box and score, the product's state, counters.

Boxes come from the model in coordinates normalised to the region of interest;
:func:`box_to_pixels` maps them to the frame's pixels. Drawing happens only when a sink needs an
annotated image (recording, display, snapshots), never on the bare hot path.
"""

from __future__ import annotations

import math
import re
import unicodedata
import zlib
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


def score_text(score: float) -> str:
    """A score to two places, rounded down: 0.4961 reads 0.49, never as the 0.50 threshold it
    did not reach."""
    return f"{math.floor(score * 100 + 1e-6) / 100:.2f}"  # 0.29 * 100 is 28.999...


def _score_label(pred: Prediction) -> str:
    """The score beside a found stamp, after its variant for a class head (a single-stamp
    model's label says nothing)."""
    score = score_text(pred.presence)
    return f"{pred.label} {score}" if pred.class_scores is not None else score


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
    #: WRONG verdicts, counted (and shown) when a variant is expected (``expect``)
    wrong: int = 0
    expect: str | None = None
    fps: float = 0.0
    latency_ms: float = 0.0
    learning: bool = False
    #: the trigger judges nothing though the region is not empty (``TriggerState.held``)
    held: bool = False
    #: the counters, FPS and latency line (live views; not on snapshots)
    footer: bool = True
    #: the box's colour; None: green (the box is drawn where presence >= threshold)
    box_colour: tuple[int, int, int] | None = None
    #: blend the model's heatmap (grid or class activation map) over the region
    heatmap: bool = False


#: typographic punctuation -> its ASCII look
_PUNCTUATION = str.maketrans(
    {"\u2013": "-", "\u2014": "-", "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'}
)


def drawable(text: str) -> str:
    """``text`` as OpenCV's fonts can draw it (ASCII only: others came out as '??'): accents
    dropped ("Prüfung" -> "Prufung"); a run of letters with no ASCII form (Chinese, Arabic, ...)
    as a short code of them, ``#`` and four hex digits, the same wherever it is drawn, so two such
    labels are told apart on the overlay ("合格" -> "#1b7c"; the log and the web view keep the
    name)."""
    plain = unicodedata.normalize("NFKD", text.translate(_PUNCTUATION))
    plain = "".join(c for c in plain if not unicodedata.combining(c))
    return _NOT_ASCII.sub(lambda m: f"#{zlib.crc32(m.group().encode()) & 0xFFFF:04x}", plain)


_NOT_ASCII = re.compile(r"[^\x00-\x7f]+")


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, colour, thick: int) -> None:
    text = drawable(text)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, BLACK, thick + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)


#: a frame smaller than this (shorter side, px) is drawn on blown up by a whole factor (each pixel
#: a block): at its own size the text would be a few unreadable pixels (a folder of small photos);
#: a small camera's frames (320x180) are not, so they cost no more to record and stream
MIN_OVERLAY_SIDE = 160


def legible(canvas: np.ndarray, roi_px: tuple[int, int, int, int]) -> tuple[np.ndarray, tuple[int, ...]]:
    """``canvas`` and ``roi_px`` as drawn on: unchanged, or blown up (see ``MIN_OVERLAY_SIDE``)."""
    side = min(canvas.shape[:2])
    if side >= MIN_OVERLAY_SIDE or side == 0:
        return canvas, roi_px
    f = math.ceil(MIN_OVERLAY_SIDE / side)
    big = cv2.resize(canvas, None, fx=f, fy=f, interpolation=cv2.INTER_NEAREST)
    return big, tuple(v * f for v in roi_px)


def draw_overlay(canvas: np.ndarray, roi_px: tuple[int, int, int, int], state: OverlayState) -> np.ndarray:
    """Draw ``state`` onto ``canvas`` (a BGR image, changed in place) and return it; a small one
    (see ``MIN_OVERLAY_SIDE``) is drawn on and returned blown up instead."""
    canvas, roi_px = legible(canvas, roi_px)
    h, w = canvas.shape[:2]
    scale = max(min(w, h) / 720.0, 0.35)
    thick = max(round(2 * scale), 1)
    line = round(32 * scale)
    rx, ry, rw, rh = roi_px
    cv2.rectangle(canvas, (rx, ry), (rx + rw - 1, ry + rh - 1), GREY, 1)

    pred = state.prediction
    if pred is not None and state.heatmap and pred.heatmap is not None:
        draw_heatmap(canvas, roi_px, pred.heatmap)
    if pred is not None:
        if pred.box is None and pred.center is not None and pred.presence >= state.threshold:
            colour = state.box_colour or GREEN  # a centre model: a crosshair where the stamp is
            cx, cy = (round(rx + pred.center[0] * rw), round(ry + pred.center[1] * rh))
            size = max(round(28 * scale), 8)
            cv2.drawMarker(canvas, (cx, cy), BLACK, cv2.MARKER_CROSS, size + 4, thick + 2, cv2.LINE_AA)
            cv2.drawMarker(canvas, (cx, cy), colour, cv2.MARKER_CROSS, size, thick, cv2.LINE_AA)
            text = _score_label(pred)
            _text(
                canvas, text, (cx + size // 2 + 4, max(cy - size // 2, line // 2)), 0.8 * scale, colour, thick
            )
        elif pred.box is not None and pred.presence >= state.threshold:
            # another variant than the one expected: amber as its verdict will be, not green
            other = state.expect is not None and pred.class_scores is not None and pred.label != state.expect
            colour = state.box_colour or (OUTCOME_COLOURS[Outcome.WRONG] if other else GREEN)
            x0, y0, x1, y1 = box_to_pixels(pred.box, roi_px)
            cv2.rectangle(canvas, (x0, y0), (x1, y1), colour, thick + 1)
            _text(canvas, _score_label(pred), (x0, max(y0 - 6, line // 2)), 0.8 * scale, colour, thick)
        else:  # no stamp seen: the box the model regressed means nothing, its score does
            colour = state.box_colour or GREY
            _text(
                canvas,
                f"no stamp {score_text(pred.presence)}",
                (rx + 6, ry + line),
                0.8 * scale,
                colour,
                thick,
            )

    if state.learning:
        _text(canvas, "learning the empty belt", (10, line), scale, AMBER, thick)
    elif state.held:
        _text(canvas, "not judging: the region differs from the empty belt", (10, line), scale, AMBER, thick)
    elif state.product is not None:
        _text(canvas, f"#{state.product} inspecting ({state.hits} hits)", (10, line), scale, AMBER, thick)
    if state.verdict is not None:
        v = state.verdict
        colour = OUTCOME_COLOURS[v.outcome]
        label = drawable(
            f"#{v.product_id} {v.outcome.value}" + (f" {v.label}" if v.label is not None else "")
        )
        size = 1.2 * scale
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, size, thick + 1)
        if tw > w - 40:  # a narrow frame: the badge smaller rather than cut at the left edge
            size *= (w - 40) / tw
            (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, size, thick + 1)
        x = w - tw - 20
        cv2.rectangle(canvas, (x - 10, 8), (w - 8, 8 + th + 16), colour, -1)
        cv2.putText(
            canvas, label, (x, 8 + th + 8), cv2.FONT_HERSHEY_SIMPLEX, size, WHITE, thick + 1, cv2.LINE_AA
        )
    if state.footer:
        wrong = f"  wrong {state.wrong}" if state.expect is not None else ""
        counts = f"inspected {state.inspected}  missing {state.missing}{wrong}"
        rate = f"{state.fps:.1f} fps  latency {state.latency_ms:.0f} ms"
        lines = [f"{counts}  {rate}"]
        (tw, _), _ = cv2.getTextSize(lines[0], cv2.FONT_HERSHEY_SIMPLEX, 0.8 * scale, thick)
        if tw > w - 20:  # a portrait or small frame: on two lines rather than cut at the right edge
            lines = [rate, counts]
        if state.expect is not None:
            lines.insert(0, f"expect {state.expect}")
        for i, text in enumerate(reversed(lines)):
            _text(canvas, text, (10, h - 10 - i * line), 0.8 * scale, WHITE, thick)
    return canvas


def draw_heatmap(canvas: np.ndarray, roi_px: tuple[int, int, int, int], heatmap: np.ndarray) -> None:
    """Blend a per-cell probability map (0..1) over the region of interest, in place."""
    rx, ry, rw, rh = roi_px
    hm = np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, 1.0)
    hm = cv2.resize((hm * 255).astype(np.uint8), (rw, rh), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(hm, cv2.COLORMAP_JET)
    region = canvas[ry : ry + rh, rx : rx + rw]
    alpha = (hm.astype(np.float32) / 255.0 * 0.6)[..., None]
    region[:] = (region * (1 - alpha) + colour * alpha).astype(np.uint8)


def annotate_verdict(image: np.ndarray, roi_px: tuple[int, int, int, int], verdict: Verdict) -> np.ndarray:
    """A copy of ``image`` with a verdict's evidence drawn on it, in the verdict's colour."""
    stamped = verdict.outcome is not Outcome.MISSING  # OK or WRONG: a stamp is there
    state = OverlayState(
        prediction=verdict.evidence_prediction,
        threshold=0.0 if stamped else 1.0 + 1e-9,  # the stamp's box; MISSING: its score only
        verdict=verdict,
        footer=False,
        box_colour=OUTCOME_COLOURS[verdict.outcome],
    )
    canvas = draw_overlay(image.copy(), roi_px, state)
    scale = max(min(canvas.shape[:2]) / 720.0, 0.35)
    frame = verdict.evidence.index if verdict.evidence is not None else "-"
    text = f"best score {score_text(verdict.score)}  hits {verdict.hits}/{len(verdict.frames)}  frame {frame}"
    if verdict.label_votes:
        text += "  votes " + ", ".join(f"{label} {n}" for label, n in verdict.label_votes)
    _text(canvas, text, (10, canvas.shape[0] - 10), 0.8 * scale, WHITE, max(round(2 * scale), 1))
    return canvas
