"""``edge-eval``: a model's localization and presence metrics on a labelled data set.

A ``.tflite`` model runs through the device's own code path (``edge.runtime``) and never imports
TensorFlow; a ``.keras`` model is decoded by the same ``edge.contract`` functions.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from edge import contract, metrics
from edge.cli.common import (
    CliError,
    DefaultsHelpFormatter,
    OneLineParser,
    check_output_file,
    fail,
    import_quietly,
    keras_file_problem,
    keras_model_problem,
    keras_sidecar,
    log_to_stderr,
    path_arg,
    pipe_closed_quietly,
    presence_threshold,
    tensorflow_problem,
    thread_count,
    write_json,
)
from edge.config import RUNTIMES
from edge.datasets import Dataset, DatasetError, Record, load_dataset, read_image, write_image
from edge.files import clash, write_whole
from edge.metrics import Truth
from edge.overlay import drawable, score_text
from edge.runtime import REFINE_MODES, ModelError, TFLiteDetector, look_again, refine_for
from edge.sources import GREY_NAMED, GREY_PHOTO, is_grey
from edge.types import Prediction

REPORT_KEYS = (
    "n_images",
    "n_positive",
    "true_positives",
    "false_positives",
    "false_negatives",
    "iou_mean",
    "iou_median",
    "iou_ge_0_5",
    "iou_ge_0_75",
    "presence_accuracy",
    "precision",
    "recall",
    "f1",
    "center_error_mean",
    "center_within_0_05",
    "center_within_0_05_found",
    "class_accuracy",
    "class_accuracy_detected",
)


SHEET_SUFFIXES = (".png", ".jpg", ".jpeg")
SHEET_ORDERS = ("first", "worst")
#: the columns of ``--per-image`` (``edge.metrics.ImageResult``; empty where it does not apply)
PER_IMAGE_COLUMNS = (
    "image",
    "present",
    "presence",
    "outcome",
    "iou",
    "center_error",
    "true_label",
    "label",
    "label_right",
    "wrong",
)


def load_detector(path: Path, threads: int = 1, runtime: str | None = None):
    if path.suffix == ".tflite":
        return TFLiteDetector(path, threads=threads, runtime=runtime)
    if path.suffix == ".keras":
        problem = keras_file_problem(path) or tensorflow_problem(f"{path} (a Keras model)")
        if problem:
            raise ModelError(problem)
        import_quietly("tensorflow")
        from edge.runtime import CallableDetector
        from train.model import load_model

        try:
            info = keras_sidecar(path)
            model = load_model(path)
        except (CliError, ValueError) as exc:
            raise ModelError(str(exc)) from None
        labels = tuple(info.get("labels") or contract.DEFAULT_LABELS)
        problem = keras_model_problem(path, model, labels, info.get("kind"))
        if problem:
            raise ModelError(problem)
        kind = info.get("kind") or contract.kind_of_outputs(model.output_names)
        if kind is None:
            raise ModelError(
                f"{path}: outputs {sorted(model.output_names)} fit no model kind of the contract"
            )
        try:
            meta = contract.ModelMetadata(kind=kind, labels=labels).with_outputs(model.output_names)
        except contract.ContractError as exc:
            raise ModelError(f"{path.with_name('model.json')}: {exc}") from None
        return CallableDetector(lambda x: model(x.astype(np.float32), training=False), meta)
    raise ModelError(f"{path}: expected a .tflite or .keras model")


#: The contact sheet shows at most this many images (8 x 8 tiles) of this many pixels a side.
SHEET_LIMIT = 64
SHEET_CELL = 192
#: photos read, looked at and let go at a time (a set of 12-megapixel photos held whole took
#: 36 MB a photo)
EVAL_CHUNK = 32
#: ... and at most this many bytes of decoded photos (eight 12-megapixel phone photos)
EVAL_CHUNK_BYTES = 300_000_000


def fit(image: np.ndarray, side: int) -> np.ndarray:
    """``image`` scaled (anti-aliased) so that its longer side is ``side``, its aspect kept."""
    h, w = image.shape[:2]
    f = side / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    if size == (w, h):  # a tile-sized copy already
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def shown_names(dataset: Dataset) -> list[str]:
    """Each record's image by its file name, or where two share one (cam1/0001.jpg and
    cam2/0001.jpg), by its path within the data set, so a row or tile says which photo it is."""
    names = [r.name for r in dataset.records]
    if len(set(names)) == len(names):
        return names
    out = []
    for r in dataset.records:
        try:
            out.append(r.image_path.relative_to(dataset.root).as_posix())
        except ValueError:  # an image outside the set's folder (a COCO path going up)
            out.append(str(r.image_path))
    return out


@dataclass
class Looked:
    """What evaluating a data set keeps of each photo: the prediction (second looks included),
    the truth (normalised), and for the contact sheet a tile-sized copy."""

    preds: list[Prediction]
    truths: list[Truth]
    thumbs: list[np.ndarray]
    grey: list[str]  # the names of the photos without colour


def look_at(dataset: Dataset, det, refine: str, thumbs: bool) -> Looked:
    """Predict on every record, a chunk of full-size photos at a time (one chunk in memory: a
    set of 48-megapixel photos is 146 MB a photo), with a progress bar on a terminal."""
    out = Looked([], [], [], [])
    records = dataset.records
    with tqdm(total=len(records), desc="images", unit="img", leave=False, disable=None) as bar:
        for part in _chunks(records):
            _look_at_chunk(part, det, refine, thumbs, out)
            bar.update(len(part))
    return out


def _chunks(records: Sequence[Record]):
    """``records`` in runs of at most ``EVAL_CHUNK`` photos and ``EVAL_CHUNK_BYTES`` of decoded
    pixels (at least one photo a run)."""
    part: list[Record] = []
    size = 0
    for r in records:
        pixels = 3 * (r.width or 0) * (r.height or 0)
        if part and (len(part) == EVAL_CHUNK or size + pixels > EVAL_CHUNK_BYTES):
            yield part
            part, size = [], 0
        part.append(r)
        size += pixels
    if part:
        yield part


def _look_at_chunk(part, det, refine: str, thumbs: bool, out: Looked) -> None:
    """``look_at`` for one chunk; its photos are let go when it returns, before the next is read."""
    originals = [read_image(r.image_path) for r in part]
    first = det.predict_batch([contract.prepare_input(im) for im in originals])
    for r, image, pred in zip(part, originals, first, strict=True):
        h, w = image.shape[:2]
        out.preds.append(look_again(det, image, pred, refine))
        out.truths.append(metrics.truth_for(r, w, h))
        if is_grey(image):
            out.grey.append(r.image_path.name)
        if thumbs:
            out.thumbs.append(fit(image, SHEET_CELL))


def _label(im: np.ndarray, text: str, org: tuple[int, int], colour: tuple[int, int, int]) -> None:
    """``text`` on a white patch, legible on any photo."""
    text = drawable(text)
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
    x, y = org
    cv2.rectangle(im, (x - 1, y - h - 2), (x + w + 1, y + base), (255, 255, 255), -1)
    cv2.putText(im, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)


def contact_sheet(
    images: Sequence[np.ndarray],
    preds: Sequence[Prediction],
    truths: Sequence[Truth],
    threshold: float,
    names: Sequence[str] | None = None,
    cell: int = SHEET_CELL,
    cols: int = 8,
    limit: int = SHEET_LIMIT,
) -> np.ndarray:
    """A PNG-ready grid of the first ``limit`` images, each scaled to fit its tile with its aspect
    kept: true box/centre green, predicted box/centre red, the presence score (and the IoU of a
    found box, or how far off a found centre is) and the file name on white; a missed object or
    a false find is said in words (MISSED, FALSE). A model with a class head also names the
    variant it found (green), and the true one beside a wrong one (red)."""
    n = min(len(images), limit)
    results = metrics.per_image(preds[:n], truths[:n], threshold)
    rows = max(1, math.ceil(n / cols))
    sheet = np.full((rows * cell, cols * cell, 3), 255, np.uint8)
    for i in range(n):
        fitted = fit(images[i], cell)
        th, tw = fitted.shape[:2]
        tile = np.full((cell, cell, 3), 255, np.uint8)
        tile[:th, :tw] = fitted
        t, p = truths[i], preds[i]

        def px(v, tw=tw, th=th):
            return (int(round(v[0] * tw)), int(round(v[1] * th)))

        found = p.present(threshold)
        verdict = "" if found == t.present else (" MISSED" if t.present else " FALSE")
        result = results[i]
        if found and result.iou is not None:
            verdict += f" IoU {result.iou:.2f}"
        elif found and result.center_error is not None:
            verdict += f" off {result.center_error:.3f}"
        _label(tile, f"{score_text(p.presence)}{verdict}", (4, 14), (0, 0, 230))
        if p.label is not None and p.class_scores is not None:  # a class head: which variant
            said = p.label if found else "-"
            wrong = result.label_right is False
            text = f"{said} (true {t.label})" if wrong else said
            _label(tile, text[:30], (4, 30), (0, 0, 230) if wrong or not found else (0, 140, 0))
        if names is not None:
            _label(tile, names[i][-30:], (4, cell - 6), (0, 0, 0))
        # the marks over the words: a centre near a corner is not hidden under its score
        if t.box is not None:
            cv2.rectangle(tile, px(t.box[:2]), px(t.box[2:]), (0, 200, 0), 2)
        elif t.center is not None:
            cv2.drawMarker(tile, px(t.center), (0, 200, 0), cv2.MARKER_CROSS, 14, 2)
        if found:
            if p.box is not None:
                cv2.rectangle(tile, px(p.box[:2]), px(p.box[2:]), (0, 0, 230), 1)
            if p.center is not None:
                cv2.drawMarker(tile, px(p.center), (0, 0, 230), cv2.MARKER_TILTED_CROSS, 12, 1)
        r, c = divmod(i, cols)
        sheet[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = tile
    return sheet


def write_per_image(path: Path, names: Sequence[str], results: Sequence[metrics.ImageResult]) -> None:
    """``--per-image``: one CSV row per image (``PER_IMAGE_COLUMNS``), numbers to 4 places."""

    def cell(v: object) -> object:
        if v is None:
            return ""
        if isinstance(v, bool):
            return int(v)
        return f"{v:.4f}" if isinstance(v, float) else v

    text = io.StringIO()
    out = csv.writer(text, lineterminator="\n")
    out.writerow(PER_IMAGE_COLUMNS)
    for name, r in zip(names, results, strict=True):
        present = r.outcome in ("hit", "missed")
        row = (name, present, r.presence, r.outcome, r.iou, r.center_error, r.true_label, r.label)
        out.writerow([cell(v) for v in (*row, r.label_right, r.wrong)])
    write_whole(path, text.getvalue())  # whole or not at all; an OSError names the file


#: the per-label table's columns: (heading, ``metrics.LABEL_KEYS`` key)
LABEL_COLUMNS = (
    ("images", "n_positive"),
    ("found", "recall"),
    ("iou_mean", "iou_mean"),
    ("iou_median", "iou_median"),
    ("centre<=0.05", "center_within_0_05"),
    ("class_accuracy", "class_accuracy"),
)


def _shown(v: object) -> str:
    """A figure as the report prints it: 4 places, n/a for nothing to count."""
    if isinstance(v, float):
        return "n/a" if np.isnan(v) else f"{v:.4f}"
    return str(v)


def print_by_label(labels: dict[str, dict[str, float]]) -> None:
    """The figures of each label the objects carry, one row each (``metrics.by_label``)."""
    first = max(len("label"), *(len(name) for name in labels)) + 2
    print("by label (the images with an object of that label):")
    print("label".ljust(first) + "".join(h.rjust(len(h) + 2) for h, _ in LABEL_COLUMNS))
    for name, m in labels.items():
        cells = [_shown(m[key]).rjust(len(heading) + 2) for heading, key in LABEL_COLUMNS]
        print(name.ljust(first) + "".join(cells))


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="edge-eval",
        description="Evaluate a .tflite or .keras model on labelled photos.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--model", type=path_arg, required=True, help=".tflite or .keras model")
    p.add_argument(
        "--data", type=path_arg, required=True, help="labelled data (VOC, YOLO, COCO, CSV, labels.txt)"
    )
    p.add_argument(
        "--subset", type=path_arg, default=None, help="evaluate only the images listed in this file"
    )
    p.add_argument(
        "--threshold", type=presence_threshold, default=None, help="presence threshold (default: the model's)"
    )
    p.add_argument("--json", type=path_arg, default=None, help="write the metrics as JSON")
    p.add_argument(
        "--sheet",
        type=path_arg,
        default=None,
        help=f"write a contact sheet of {SHEET_LIMIT} images (.png or .jpg; see --sheet-order)",
    )
    p.add_argument(
        "--sheet-order",
        choices=SHEET_ORDERS,
        default="first",
        help="which images the sheet shows: the first ones, or the worst (missed objects and false "
        "finds, then wrong variants, then the lowest IoU or largest centre error)",
    )
    p.add_argument(
        "--per-image",
        type=path_arg,
        default=None,
        metavar="FILE.csv",
        help="write one CSV row per image: " + ", ".join(PER_IMAGE_COLUMNS),
    )
    p.add_argument("--threads", type=thread_count, default=1, help="interpreter threads (.tflite models)")
    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        help=".tflite models: the interpreter (default: ai_edge_litert where installed, else tflite_runtime)",
    )
    p.add_argument(
        "--refine",
        choices=REFINE_MODES,
        default="auto",
        help="look again, as edge-run --refine does: a box model at a crop around the first box (zoom, "
        "zoom-flip), a centre model with a heatmap at four tiles of the image (tiles); off: one look "
        "(auto: what edge-convert stored in the model)",
    )
    return p


def the_models_objects(dataset: Dataset, model_labels: Sequence[str]) -> Dataset:
    """``dataset`` with only the objects of the model's labels, where it labels several classes
    and some are the model's (a COCO export with a barcode or person category beside the stamp:
    its largest box, another class's, was taken for the stamp); an image left with none is a
    negative. Said on stderr, as is a set of several classes none of which is the model's."""
    data_labels = dataset.labels
    if len(data_labels) < 2:
        return dataset
    kept = tuple(label for label in data_labels if label in model_labels)
    others = [label for label in data_labels if label not in kept]
    if not kept:
        print(
            f"edge-eval: WARNING: the data's labels {list(data_labels)} are none of the model's "
            f"{list(model_labels)}: each image's largest object counts as the stamp",
            file=sys.stderr,
        )
        return dataset
    if not others:
        return dataset
    dataset, turned = dataset.only(kept)
    print(
        f"edge-eval: WARNING: the data's labels {others} are not the model's {list(model_labels)}: "
        f"their objects are left out, and the {turned} image(s) with only those count as negatives (the "
        "model should find no stamp of its own there); a stamp variant the model was not trained on "
        "is measured on a set of that variant alone (its objects then count as stamps)",
        file=sys.stderr,
    )
    return dataset


@pipe_closed_quietly
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_to_stderr("edge-eval")
    try:
        if args.json is not None:
            check_output_file(args.json, "the metrics", json_report=True)
        if args.sheet is not None:
            check_output_file(args.sheet, "the contact sheet")
            if args.sheet.suffix.lower() not in SHEET_SUFFIXES:
                raise CliError(f"--sheet {args.sheet}: expected an image file ({', '.join(SHEET_SUFFIXES)})")
        if args.sheet_order != "first" and args.sheet is None:
            raise CliError(f"--sheet-order {args.sheet_order}: needs --sheet FILE.png")
        if args.per_image is not None:
            check_output_file(args.per_image, "the per-image results")
            if args.per_image.suffix.lower() != ".csv":
                raise CliError(f"--per-image {args.per_image}: expected a .csv file")
        dataset = load_dataset(args.data, subset=args.subset)
        if not dataset.records:
            raise CliError(f"{args.data}: no labelled images")
        outputs = [("--json", args.json), ("--sheet", args.sheet), ("--per-image", args.per_image)]
        inputs = [("--model", args.model), ("--data", args.data), ("--subset", args.subset)]
        record = args.model.with_suffix(".json")
        if args.model.suffix == ".tflite" and record.is_file():  # the record beside a bundled model
            inputs.append(("the model's record", record))
        protected = [(f"the data set {args.data}", dataset.files())]
        folders = [("--data", args.data), *(("the data set's folder", f) for f in dataset.folders())]
        if problem := clash(outputs, inputs, protected, folders):
            raise CliError(problem)
        if args.runtime is not None and args.model.suffix != ".tflite":
            raise CliError(
                f"--runtime {args.runtime}: chooses the interpreter of a .tflite model, not {args.model}"
            )
        det = load_detector(args.model, args.threads, args.runtime)
        refine = refine_for(det.metadata, args.refine, str(args.model))
        dataset = the_models_objects(dataset, det.metadata.labels)
        looked = look_at(dataset, det, refine, thumbs=args.sheet is not None)
        preds, truths, grey = looked.preds, looked.truths, looked.grey
        if grey:
            named = ", ".join(grey[:GREY_NAMED]) + (", ..." if len(grey) > GREY_NAMED else "")
            print(
                f"edge-eval: WARNING: {len(grey)} of {len(preds)} images have no colour ({named}); "
                f"{GREY_PHOTO}",
                file=sys.stderr,
            )
        threshold = args.threshold if args.threshold is not None else det.metadata.threshold
        model_labels = det.metadata.labels
        unknown = sorted({t.label for t in truths if t.present and t.label not in model_labels})
        if unknown and any(p.class_scores is not None for p in preds):
            print(
                f"edge-eval: WARNING: the data's labels {unknown} are not among the model's "
                f"{list(model_labels)}; class accuracy counts only the objects with the model's labels",
                file=sys.stderr,
            )
        result = metrics.summarize(preds, truths, threshold, known_labels=model_labels)
        per_image = metrics.per_image(preds, truths, threshold, known_labels=model_labels)
        labels = metrics.by_label(preds, truths, threshold, known_labels=model_labels)
    except (CliError, DatasetError, ModelError, contract.ContractError) as exc:
        return fail("edge-eval", exc)
    if warning := metrics.no_skill_warning(result):
        print(f"edge-eval: WARNING: {warning}", file=sys.stderr)
    result = {k: result[k] for k in REPORT_KEYS}
    keras = not isinstance(det, TFLiteDetector)
    ran_on = "TensorFlow (Keras)" if keras else f"{det.runtime.name} {det.runtime.version}"
    result.update(model=str(args.model), data=str(args.data), threshold=threshold, refine=refine)
    result["runtime"] = ran_on
    print(f"edge-eval: {args.model.name} on {ran_on}, {len(preds)} images", file=sys.stderr)
    width = max(len(k) for k in REPORT_KEYS) + 2
    for k in REPORT_KEYS:
        print(f"{k:<{width}}{_shown(result[k])}")
    if labels:
        print_by_label(labels)
        result["by_label"] = labels
    try:
        if args.json:
            write_json(args.json, result)  # NaN (nothing to count) as null
        names = shown_names(dataset)
        if args.per_image:
            write_per_image(args.per_image, names, per_image)
            wrong = sum(r.wrong for r in per_image)
            print(f"edge-eval: {wrong} of {len(names)} images wrong; one row per image in {args.per_image}")
        if args.sheet:
            order = list(range(len(names)))
            if args.sheet_order == "worst":
                order = metrics.worst_first(per_image, threshold)
            sheet = contact_sheet(
                [looked.thumbs[i] for i in order],
                [preds[i] for i in order],
                [truths[i] for i in order],
                threshold,
                [names[i] for i in order],
            )
            if not write_image(args.sheet, sheet):
                raise CliError(f"--sheet {args.sheet}: cannot write the contact sheet")
            if len(preds) > SHEET_LIMIT:
                shown = f"the {args.sheet_order} {SHEET_LIMIT} of {len(preds)} images"
                print(f"edge-eval: the sheet shows {shown}")
    except (CliError, OSError) as exc:
        return fail("edge-eval", exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
