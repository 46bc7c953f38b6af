"""Typed values that flow through the runtime: frame -> prediction -> verdict.

Each is validated where it is built, so a malformed value fails at its source with the expected
and the actual value, not three hops later.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class Frame:
    """One captured image: HxWx3 uint8 BGR (OpenCV order), when it was captured, its index."""

    image: np.ndarray
    t_capture: float
    index: int
    #: ground truth carried by synthetic sources (demo line): product id or None, has stamp
    truth: Mapping[str, object] | None = None
    #: the file the frame was read from (image folders), for the verdict log
    name: str | None = None
    #: seconds without frames before this one, when a live source lost them for its ``stall_s`` or
    #: more (a stream dropped or stalled, a camera reopened); 0 otherwise
    gap_s: float = 0.0
    #: when the frame was taken on the line's own clock, where that is not ``t_capture``: a
    #: recording (or the demo line) read as fast as possible, at its timestamp from ``t_capture``
    #: of the first frame, so timings of the line (a product in view too long) are those of the
    #: line it recorded; None: ``t_capture``
    t_line: float | None = None
    #: source pixels per pixel of ``image``: above 1 when the source's frames were larger than
    #: ``edge.sources.MAX_SIDE`` and shrunk, so positions logged are in the source's pixels
    source_scale: float = 1.0

    @property
    def t_on_line(self) -> float:
        return self.t_capture if self.t_line is None else self.t_line

    def __post_init__(self) -> None:
        img = self.image
        if not isinstance(img, np.ndarray):
            raise TypeError(f"Frame.image: expected numpy array, got {type(img).__name__}")
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"Frame.image: expected HxWx3 uint8, got {img.shape} {img.dtype}")
        if self.index < 0:
            raise ValueError(f"Frame.index: expected >= 0, got {self.index}")


def box_center(box: tuple[float, ...] | list[float]) -> tuple[float, float]:
    """The centre of a box ``(x_min, y_min, x_max, y_max)`` (the contract's convention)."""
    return (float(box[0] + box[2]) / 2.0, float(box[1] + box[3]) / 2.0)


def _check_unit(name: str, values: tuple[float, ...], n: int) -> None:
    if len(values) != n:
        raise ValueError(f"Prediction.{name}: expected {n} values, got {len(values)}")
    if not all(np.isfinite(v) for v in values):
        raise ValueError(f"Prediction.{name}: expected finite values, got {values}")


@dataclass(frozen=True, eq=False)
class Prediction:
    """What the model says about one image (its region of interest).

    ``box`` is ``(x_min, y_min, x_max, y_max)`` and ``center`` ``(x, y)``, normalised to the model's
    view (see ``edge.contract``). ``label`` is set for multi-variant models.
    """

    presence: float
    box: tuple[float, float, float, float] | None = None
    center: tuple[float, float] | None = None
    label: str | None = None
    class_scores: tuple[float, ...] | None = None
    heatmap: np.ndarray | None = None
    timings: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        p = float(self.presence)
        if not (0.0 <= p <= 1.0):
            raise ValueError(f"Prediction.presence: expected a probability in [0, 1], got {p}")
        object.__setattr__(self, "presence", p)
        if self.box is not None:
            box = tuple(float(v) for v in self.box)
            _check_unit("box", box, 4)
            # keep x_min <= x_max, y_min <= y_max whatever the regressor said
            box = (min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3]))
            object.__setattr__(self, "box", box)
            if self.center is None:
                object.__setattr__(self, "center", box_center(box))
        if self.center is not None:
            center = tuple(float(v) for v in self.center)
            _check_unit("center", center, 2)
            object.__setattr__(self, "center", center)

    def present(self, threshold: float) -> bool:
        return self.presence >= threshold


class Outcome(enum.StrEnum):
    OK = "OK"
    MISSING = "MISSING"
    WRONG = "WRONG"


@dataclass(frozen=True, eq=False)
class Verdict:
    """One judgement per product: OK, MISSING (no stamp) or WRONG (another variant)."""

    seq: int
    product_id: int
    outcome: Outcome
    wall_time: float
    score: float
    box: tuple[float, float, float, float] | None
    frames: tuple[int, ...]
    #: the variant of the product's stamp (models with a class head; None: MISSING or no head)
    label: str | None = None
    #: how the frames that saw the stamp voted for its variant, most first: ((label, frames), ...)
    label_votes: tuple[tuple[str, int], ...] = ()
    evidence: Frame | None = None
    evidence_prediction: Prediction | None = None
    truth: Mapping[str, object] | None = None
    #: how many of ``frames`` saw the stamp
    hits: int = 0
    #: the model that judged it (``edge.runtime.model_id``)
    model_id: str = ""
    #: the centre where the best frame saw the stamp, normalised to the region (centre models;
    #: a box model's is its box's)
    center: tuple[float, float] | None = None
    #: the frames stopped for this many seconds while the product was in view: it was judged on
    #: the frames before (None: seen through)
    interrupted_s: float | None = None
    #: the frames the product was seen in (``frames`` are those of them it was judged on; 0: not
    #: counted)
    in_view: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.outcome, Outcome):
            object.__setattr__(self, "outcome", Outcome(self.outcome))
        if not self.frames:
            raise ValueError("Verdict.frames: expected at least one frame index, got none")
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"Verdict.score: expected [0, 1], got {self.score}")
