"""Localization and presence metrics, shared by edge-eval, training and the conversion check.

All boxes are normalised ``x_min, y_min, x_max, y_max``. Pure numpy: arrays in, numbers out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edge.types import Prediction, box_center

CENTER_RADIUS = 0.05


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of two (N, 4) arrays of xyxy boxes (0 where both are empty)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = ix * iy
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


@dataclass(frozen=True)
class Truth:
    """Ground truth for one image: present or not, and (normalised) box and/or centre, label."""

    present: bool
    box: tuple[float, float, float, float] | None = None
    center: tuple[float, float] | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        if self.present and self.box is None and self.center is None:
            raise ValueError("Truth: a present object needs a box or a centre")
        if self.box is not None and self.center is None:
            object.__setattr__(self, "center", box_center(self.box))


def truth_for(record, width: int, height: int) -> Truth:
    """Ground truth of a labelled image (an ``edge.datasets.Record``): its primary object,
    normalised by the image size."""
    obj = record.primary()
    if obj is None:
        return Truth(False)
    if obj.box is not None:
        b = obj.box
        return Truth(True, box=(b[0] / width, b[1] / height, b[2] / width, b[3] / height), label=obj.label)
    return Truth(True, center=(float(obj.center[0]), float(obj.center[1])), label=obj.label)


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


def summarize(
    preds: Sequence[Prediction],
    truths: Sequence[Truth],
    threshold: float,
    known_labels: Sequence[str] | None = None,
) -> dict[str, float]:
    """The edge-eval metrics for predictions against ground truth (same order).

    IoU and centre figures are taken over the images that carry the object, from the box or
    centre the model gives whether or not it says the object is there (localisation and presence
    measured apart, as the phone-finder benchmark counts a centre); ``center_within_0_05_found``
    also requires the model to say it is there (a missed object has no centre on the device);
    presence figures over all images. Keys: ``iou_mean``, ``iou_median``, ``iou_ge_0_5``, ``iou_ge_0_75``,
    ``presence_accuracy``, ``precision``, ``recall``, ``f1`` (NaN, like precision and recall,
    when there is nothing to find and nothing was found), ``center_error_mean``,
    ``center_within_0_05``, ``center_within_0_05_found``, ``class_accuracy`` (labelled
    positives), ``class_accuracy_detected`` (the labelled positives the model says are there),
    ``n_images``, ``n_positive``, ``true_positives``, ``false_positives``, ``false_negatives``.
    ``known_labels``: the class figures count only truths with one of these labels (the model's;
    default: all).
    """
    if len(preds) != len(truths):
        raise ValueError(f"summarize: {len(preds)} predictions for {len(truths)} truths")
    pos = [i for i, t in enumerate(truths) if t.present]
    said = np.array([p.present(threshold) for p in preds], dtype=bool)
    real = np.array([t.present for t in truths], dtype=bool)
    tp = int(np.sum(said & real))
    fp = int(np.sum(said & ~real))
    fn = int(np.sum(~said & real))
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    out: dict[str, float] = {
        "n_images": len(preds),
        "n_positive": len(pos),
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
        "presence_accuracy": float(np.mean(said == real)) if len(preds) else float("nan"),
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }
    box_pairs = [(preds[i].box, truths[i].box) for i in pos if truths[i].box is not None]
    if box_pairs and all(p is not None for p, _ in box_pairs):
        ious = iou(np.array([p for p, _ in box_pairs]), np.array([t for _, t in box_pairs]))
        out.update(
            iou_mean=float(ious.mean()),
            iou_median=float(np.median(ious)),
            iou_ge_0_5=float(np.mean(ious >= 0.5)),
            iou_ge_0_75=float(np.mean(ious >= 0.75)),
        )
    else:
        out.update(iou_mean=float("nan"), iou_median=float("nan"), iou_ge_0_5=float("nan"))
        out.update(iou_ge_0_75=float("nan"))
    placed = [i for i in pos if preds[i].center is not None]
    if placed:
        d = np.array([np.hypot(*np.subtract(preds[i].center, truths[i].center)) for i in placed])
        out["center_error_mean"] = float(d.mean())
        out["center_within_0_05"] = float(np.mean(d <= CENTER_RADIUS))
        out["center_within_0_05_found"] = float(np.mean((d <= CENTER_RADIUS) & said[placed]))
    else:
        out["center_error_mean"] = float("nan")
        out["center_within_0_05"] = float("nan")
        out["center_within_0_05_found"] = float("nan")
    known = None if known_labels is None else set(known_labels)
    labelled = [
        i
        for i in pos
        if truths[i].label is not None
        and preds[i].class_scores is not None
        and (known is None or truths[i].label in known)
    ]

    def share_right(idx: Sequence[int]) -> float:
        return float(np.mean([preds[i].label == truths[i].label for i in idx])) if idx else float("nan")

    out["class_accuracy"] = share_right(labelled)
    out["class_accuracy_detected"] = share_right([i for i in labelled if said[i]])
    return out


#: ``by_label``'s figures for each label: those of ``summarize`` over the images carrying it
LABEL_KEYS = (
    "n_positive",
    "recall",
    "iou_mean",
    "iou_median",
    "iou_ge_0_5",
    "center_within_0_05",
    "class_accuracy",
    "class_accuracy_detected",
)


def by_label(
    preds: Sequence[Prediction],
    truths: Sequence[Truth],
    threshold: float,
    known_labels: Sequence[str] | None = None,
) -> dict[str, dict[str, float]]:
    """``summarize``'s figures for each label the objects carry (``LABEL_KEYS``, taken over the
    images with an object of that label; ``recall`` is the share of them found), sorted by label.
    Empty unless the objects carry at least two labels: which variant a model finds worst. Images
    without an object belong to no label (false finds are in the overall figures)."""
    if len(preds) != len(truths):
        raise ValueError(f"by_label: {len(preds)} predictions for {len(truths)} truths")
    labels = sorted({t.label for t in truths if t.present and t.label is not None})
    if len(labels) < 2:
        return {}
    out = {}
    for label in labels:
        idx = [i for i, t in enumerate(truths) if t.present and t.label == label]
        m = summarize([preds[i] for i in idx], [truths[i] for i in idx], threshold, known_labels)
        out[label] = {k: m[k] for k in LABEL_KEYS}
    return out


#: Presence accuracy within this of always giving the commoner answer is no skill at all.
NO_SKILL_MARGIN = 0.02
#: the counts ``no_skill_warning`` needs beside the figures (kept with them in a model's provenance)
PRESENCE_COUNTS = ("n_images", "n_positive")


def no_skill_warning(m: Mapping[str, float]) -> str | None:
    """What is wrong when ``summarize``'s presence figures are no better than always giving the
    commoner answer (a model that says "present" on every image), else None. Needs images with
    and without the object to tell."""
    n, pos = (int(m.get(k, 0)) for k in PRESENCE_COUNTS)
    if math.isnan(m.get("presence_accuracy", math.nan)) or not n:
        return None
    if pos in (0, n):  # one kind of image only: a model wrong on most of them has learnt nothing
        if m["presence_accuracy"] >= 0.5:
            return None
        what = "with the object" if pos else "without it"
        return (
            f"presence accuracy {m['presence_accuracy']:.3f} on {n} images all {what}: the model "
            f"says {'absent' if pos else 'present'} on most of them (train longer, or check the data)"
        )
    base = max(pos, n - pos) / n
    if m["presence_accuracy"] > base + NO_SKILL_MARGIN:
        return None
    said = "present" if pos >= n - pos else "absent"
    return (
        f"presence accuracy {m['presence_accuracy']:.3f} on {n} images is no better than always saying "
        f"{said!r} ({base:.3f}): the model does not tell the stamp from its absence yet (train longer, "
        "or check the data)"
    )


#: a presence score this close to the threshold is one an under-trained model is unsure of
UNSURE = 0.1


def agreement(a: Sequence[Prediction], b: Sequence[Prediction], threshold: float) -> dict[str, float]:
    """How closely two models agree on the same images (float vs quantized): ``presence_disagree``
    counts the images on which they decide presence differently, ``presence_disagree_unsure`` those
    of them that ``a`` scores within ``UNSURE`` of the threshold (where any small change decides)."""
    pa = np.array([p.present(threshold) for p in a])
    pb = np.array([p.present(threshold) for p in b])
    unsure = np.array([abs(p.presence - threshold) < UNSURE for p in a])
    out = {
        "presence_agreement": float(np.mean(pa == pb)),
        "presence_abs_diff_mean": float(
            np.mean([abs(x.presence - y.presence) for x, y in zip(a, b, strict=True)])
        ),
        "presence_disagree": int(np.count_nonzero(pa != pb)),
        "presence_disagree_unsure": int(np.count_nonzero((pa != pb) & unsure)),
    }
    boxes = [(x.box, y.box) for x, y in zip(a, b, strict=True) if x.box is not None and y.box is not None]
    if boxes:
        diff = np.abs(np.array([x for x, _ in boxes]) - np.array([y for _, y in boxes]))
        out["box_abs_diff_mean"] = float(diff.mean())
    centers = [
        (x.center, y.center)
        for x, y in zip(a, b, strict=True)
        if x.center is not None and y.center is not None
    ]
    if centers:
        out["center_abs_diff_mean"] = float(
            np.mean(np.abs(np.array([x for x, _ in centers]) - np.array([y for _, y in centers])))
        )
    return out


@dataclass(frozen=True)
class ImageResult:
    """One image's figures (``per_image``): ``outcome`` is ``hit`` (found, and there), ``missed``,
    ``false`` (found, not there) or ``clear`` (neither); ``iou`` and ``center_error`` are None where
    the image or the model has no box or centre; ``label`` is the variant the model found (None if it
    found nothing); ``label_right`` is None unless the object is there, found, and its variant is
    one the model knows."""

    presence: float
    outcome: str
    iou: float | None = None
    center_error: float | None = None
    label: str | None = None
    true_label: str | None = None
    label_right: bool | None = None

    @property
    def wrong(self) -> bool:
        """The model got this image wrong: presence, variant, or where (IoU < 0.5 or a centre
        further than ``CENTER_RADIUS``)."""
        if self.outcome in ("missed", "false") or self.label_right is False:
            return True
        if self.iou is not None:
            return self.iou < 0.5
        return self.center_error is not None and self.center_error > CENTER_RADIUS


def per_image(
    preds: Sequence[Prediction],
    truths: Sequence[Truth],
    threshold: float,
    known_labels: Sequence[str] | None = None,
) -> list[ImageResult]:
    """Each image's result, in order, counted as ``summarize`` counts them."""
    if len(preds) != len(truths):
        raise ValueError(f"per_image: {len(preds)} predictions for {len(truths)} truths")
    known = None if known_labels is None else set(known_labels)
    out = []
    for p, t in zip(preds, truths, strict=True):
        found = p.present(threshold)
        outcome = ("hit" if found else "missed") if t.present else ("false" if found else "clear")
        box_iou = center_error = right = None
        if t.present and t.box is not None and p.box is not None:
            box_iou = float(iou(np.array(p.box), np.array(t.box))[0])
        if t.present and p.center is not None:
            center_error = float(np.hypot(p.center[0] - t.center[0], p.center[1] - t.center[1]))
        if found and t.present and t.label is not None and p.class_scores is not None:
            if known is None or t.label in known:
                right = p.label == t.label
        label = p.label if found and p.class_scores is not None else None
        out.append(ImageResult(p.presence, outcome, box_iou, center_error, label, t.label, right))
    return out


def worst_first(results: Sequence[ImageResult], threshold: float) -> list[int]:
    """Indices of ``results`` from the worst: missed objects and false finds (the surest mistakes
    first), then wrong variants, then the rest by IoU (lowest first) or centre error (largest
    first), then images without the object (highest presence first)."""

    def key(i: int) -> tuple[int, float]:
        r = results[i]
        if r.outcome in ("missed", "false"):
            return 0, -abs(r.presence - threshold)
        if r.label_right is False:
            return 1, -r.presence
        if r.iou is not None:
            return 2, r.iou
        if r.center_error is not None:
            return 2, -r.center_error
        return 3, -r.presence

    return sorted(range(len(results)), key=key)
