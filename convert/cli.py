"""``edge-convert``: a trained Keras model -> one ``.tflite`` the device can trust, or nothing.

Calibrates int8 on a representative set, embeds the contract metadata, then proves on a
validation set (through the device's own ``edge`` code path) that the converted model still does
the job; on failure no output file is left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from convert.equalize import equalize
from convert.rounding import round_weights
from convert.tflite import (
    INTEGER_MODES,
    MODES,
    ConversionError,
    convert,
    embed_metadata,
    load_keras,
    op_names,
)
from edge import contract, metrics
from edge.cli.common import (
    CliError,
    DefaultsHelpFormatter,
    OneLineParser,
    check_output_file,
    fail,
    interrupt,
    keras_file_problem,
    keras_model_problem,
    keras_sidecar,
    log_to_stderr,
    native_stderr_muted,
    non_negative_float,
    path_arg,
    pipe_closed_quietly,
    positive_int,
    presence_threshold,
    refuse_non_report,
    tensorflow_problem,
    thread_count,
    unit_float,
    write_json,
)
from edge.datasets import (
    Dataset,
    DatasetError,
    detect_format,
    image_files,
    load_dataset,
    read_image,
    unread_photos,
    unread_photos_line,
)
from edge.files import clash, listed
from edge.metrics import Truth
from edge.runtime import REFINE_MODES, CallableDetector, ModelError, TFLiteDetector, look_again, refine_for
from edge.synth import RECIPES

MAX_IOU_DROP = 0.01
MIN_AGREEMENT = 0.995
#: what only the proof of agreement uses; given with --no-verify, it is a mistake
PROOF_FLAGS = {
    "val": "--val",
    "val_subset": "--val-subset",
    "max_iou_drop": "--max-iou-drop",
    "min_agreement": "--min-agreement",
}
KEYS = ("iou_mean", "iou_median", "presence_accuracy", "precision", "recall", "f1", "center_error_mean")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="edge-convert",
        description="Convert a trained Keras model to TFLite (int8 by default) and prove it still agrees.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("model", type=path_arg, help="trained model (.keras)")
    p.add_argument("--out", type=path_arg, required=True, help="output .tflite")
    p.add_argument(
        "--mode",
        choices=MODES,
        default="int8",
        help="int8: full integer, for the device; int8-float-stem: the first convolution left in float "
        "(faster on x86 with AMX); float16, dynamic, float32: for comparison",
    )
    cal = p.add_argument_group("calibration and validation data (default: the synthetic recipe)")
    cal.add_argument(
        "--calibration", type=path_arg, default=None, help="labelled or plain image folder for calibration"
    )
    cal.add_argument(
        "--subset", type=path_arg, default=None, help="restrict --calibration to the images listed"
    )
    cal.add_argument(
        "--calibration-size",
        type=positive_int,
        default=300,
        help="representative images (>= 200 for the int8 modes)",
    )
    cal.add_argument(
        "--val", type=path_arg, default=None, help="labelled validation set (default: synthetic)"
    )
    cal.add_argument("--val-subset", type=path_arg, default=None, help="restrict --val to the images listed")
    cal.add_argument(
        "--val-size",
        type=positive_int,
        default=MIN_VALIDATION,
        help=f"synthetic validation images (>= {MIN_VALIDATION})",
    )
    cal.add_argument(
        "--stamp",
        action="append",
        type=path_arg,
        default=[],
        help="stamp image(s) for the synthetic recipe (default: the ones the model was trained with, "
        "from config.json beside it, where they still are)",
    )
    cal.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default=None,
        help="synthetic recipe for calibration and validation (as edge-train --recipe; default: the "
        "one the model was trained with, from config.json beside it, else default)",
    )
    cal.add_argument(
        "--backgrounds",
        type=path_arg,
        default=None,
        help="product photos for the synthetic recipe (default: as --stamp, from config.json)",
    )
    cal.add_argument(
        "--seed",
        type=int,
        default=0,
        help="synthetic recipe seed (calibration uses seed+2e6, validation seed+3e6)",
    )
    p.add_argument(
        "--no-equalize",
        action="store_true",
        help="int8: quantize the weights as trained, without first rescaling activation channels to "
        "their whole 8-bit range (for comparison)",
    )
    p.add_argument(
        "--no-round",
        action="store_true",
        help="int8: round each weight to its nearest int8 step, not up or down for the least output "
        "error on the calibration images (for comparison)",
    )
    chk = p.add_argument_group("proof of agreement")
    chk.add_argument(
        "--max-iou-drop",
        type=non_negative_float,
        default=None,
        help=f"largest allowed fall of mean IoU (or centre hit rate) (default: {MAX_IOU_DROP})",
    )
    chk.add_argument(
        "--min-agreement",
        type=unit_float,
        default=None,
        help=f"smallest allowed presence agreement (default: {MIN_AGREEMENT})",
    )
    chk.add_argument(
        "--threshold",
        type=presence_threshold,
        default=None,
        help="presence threshold stored in the model (default: the training metadata's, else 0.5)",
    )
    chk.add_argument(
        "--no-verify", action="store_true", help="skip the proof of agreement (not for deployment)"
    )
    chk.add_argument(
        "--refine",
        choices=REFINE_MODES,
        default="auto",
        help="the second looks stored in the model for edge-run/edge-eval --refine auto: auto, the one "
        "measured best on the validation images (one look when not measured); or a mode that fits the "
        "model (off, zoom, zoom-flip for a box model; off, tiles for a centre or cam model with a "
        "heatmap), still measured and reported (default: auto)",
    )
    p.add_argument("--report", type=path_arg, default=None, help="write the agreement report as JSON")
    p.add_argument("--threads", type=thread_count, default=1, help="interpreter threads for the check")
    p.add_argument("--quiet", action="store_true", help="no progress bars or report on stderr")
    return p


def _synth(args: argparse.Namespace):
    from edge.synth import Backgrounds, Synthesizer, load_stamps

    try:
        stamps = load_stamps(args.stamp) if args.stamp else None
        return Synthesizer(stamps, Backgrounds(args.backgrounds), RECIPES[args.recipe])
    except ValueError as exc:  # a stamp or backgrounds folder that cannot be used, named
        raise CliError(str(exc)) from None


def calibration_paths(args: argparse.Namespace) -> list[Path] | None:
    """The calibration images --calibration names (None: the synthetic recipe): a labelled set
    (--subset applies; a label file that is broken is an error, not a folder of plain images) or
    a folder of plain images."""
    if args.calibration is None:
        return None
    folder = args.calibration
    try:
        detect_format(folder)
        labelled = True
    except DatasetError as exc:
        if not folder.is_dir():
            raise CliError(f"--calibration {exc}") from None
        labelled = False
    if labelled:
        try:
            paths = [r.image_path for r in load_dataset(folder, subset=args.subset).records]
        except DatasetError as exc:
            raise CliError(f"--calibration {exc}") from None
    elif args.subset is not None:
        raise CliError(f"--subset {args.subset}: --calibration {folder} holds no labels to pick images by")
    else:
        paths = image_files(folder, recursive=True)
        if unread := unread_photos(folder, recursive=True):
            print(f"edge-convert: WARNING: {folder}: {unread_photos_line(unread)}", file=sys.stderr)
    if not paths:
        raise CliError(f"--calibration {folder}: no calibration images found")
    return paths


def calibration_images(args: argparse.Namespace, paths: list[Path] | None) -> tuple[list[np.ndarray], str]:
    """At least --calibration-size model inputs (a small set is cycled), and where they came from."""
    n = args.calibration_size
    if paths is None:
        synth = _synth(args)
        images = [
            synth.model_sample(args.seed + 2_000_000, i)[0]
            for i in tqdm(range(n), desc="calibration", leave=False, disable=args.quiet)
        ]
        stamps = f"stamps {', '.join(synth.labels)}" if args.stamp else "the procedural stamp"
        return images, (
            f"{n} images from the synthetic recipe {args.recipe!r} ({stamps}; seed {args.seed + 2_000_000})"
        )
    images, skipped = [], []
    for path in tqdm(paths, desc="calibration", leave=False, disable=args.quiet):
        try:
            images.append(contract.prepare_input(read_image(path)))
        except DatasetError as exc:  # as the backgrounds and edge-run --images do: skipped, named
            skipped.append(str(exc))
    if not images:
        raise CliError(f"{args.calibration}: no readable calibration images ({skipped[0]})")
    if skipped:
        print(
            f"edge-convert: WARNING: {args.calibration}: {len(skipped)} of {len(paths)} images skipped "
            f"({listed(skipped)})",
            file=sys.stderr,
        )
    if len({im.tobytes() for im in images}) < 2 or max(float(im.std()) for im in images) < 1.0:
        raise CliError(f"{args.calibration}: calibration images are blank or all alike")
    if len(images) >= n:
        return images, f"{len(images)} images from {args.calibration}"
    if len(images) < FEW_CALIBRATION:
        print(
            f"edge-convert: WARNING: {args.calibration}: only {len(images)} calibration images; the int8 "
            f"ranges they set may not cover what the camera sees (give {FEW_CALIBRATION} or more, as "
            "varied as the line)",
            file=sys.stderr,
        )
    reps = [images[i % len(images)] for i in range(n)]
    return reps, f"{n} images ({len(images)} distinct, cycled) from {args.calibration}"


#: calibration images whose activations set the equalization's channel scales
EQUALIZE_IMAGES = 200
#: calibration images whose activations the weights are rounded for (convert/rounding.py)
ROUND_IMAGES = 100
#: fewer distinct calibration images than this are warned about (they are cycled to the size asked)
FEW_CALIBRATION = 50
#: the fewest synthetic validation images a proof of agreement takes; a proof on fewer labelled
#: ones gets the hint that one image moves a share a lot
MIN_VALIDATION = 500
#: a labelled validation set with fewer images with a stamp than this is warned about (none: refused)
FEW_STAMPED = 20

#: the files and folders edge-convert reads, by flag (its outputs must be none of them)
CONVERT_INPUTS = (
    ("--calibration", "calibration"),
    ("--subset", "subset"),
    ("--val", "val"),
    ("--val-subset", "val_subset"),
    ("--backgrounds", "backgrounds"),
)


def check_flags(args: argparse.Namespace) -> tuple[Dataset | None, list[Path] | None]:
    """Everything the flags and label files decide, before TensorFlow loads (seconds): the
    labelled validation set when --val names one, the calibration images when --calibration does."""
    if problem := keras_file_problem(args.model):  # before any check that reads beside it
        raise CliError(problem)
    if args.out.suffix != ".tflite":
        raise CliError(f"--out {args.out}: expected a .tflite path")
    check_output_file(args.out, "the converted model")
    if args.report is not None:
        check_output_file(args.report, "the report")
    if args.mode in INTEGER_MODES and args.calibration_size < 200:
        n = args.calibration_size
        raise CliError(f"--calibration-size {n}: at least 200 representative images are needed")
    if args.subset is not None and args.calibration is None:
        raise CliError("--subset needs --calibration")
    if args.val_subset is not None and args.val is None:
        raise CliError("--val-subset needs --val")
    if args.no_verify:
        given = [flag for key, flag in PROOF_FLAGS.items() if getattr(args, key) is not None]
        if given:
            raise CliError(f"{', '.join(given)} with --no-verify: there is no proof of agreement to use it")
    elif args.val is None and args.val_size < MIN_VALIDATION:
        raise CliError(f"--val-size {args.val_size}: the proof needs at least {MIN_VALIDATION} images")
    cal_paths = calibration_paths(args) if args.mode in INTEGER_MODES else None
    synthetic = [
        use
        for use, used in (
            ("calibration", args.mode in INTEGER_MODES and cal_paths is None),
            ("validation", not args.no_verify and args.val is None),
        )
        if used
    ]
    labels = tuple(keras_sidecar(args.model).get("labels") or contract.DEFAULT_LABELS)
    trained = training_config(args.model)
    if args.recipe is None:
        recipe = trained.get("recipe")
        args.recipe = recipe if recipe in RECIPES else "default"
    recorded = trained.get("stamp")
    if synthetic and not args.stamp and isinstance(recorded, list) and recorded:
        # the stamp images it was trained with, where they still are: not asked for a second time
        found = [Path(p) for p in recorded if isinstance(p, str) and Path(p).exists()]
        if len(found) == len(recorded):
            args.stamp = found
            if not args.quiet:
                print(f"edge-convert: --stamp {' '.join(recorded)} (config.json)", file=sys.stderr)
    photos = trained.get("backgrounds")
    if synthetic and isinstance(photos, str) and args.backgrounds is None and Path(photos).is_dir():
        args.backgrounds = Path(photos)
        if not args.quiet:
            print(f"edge-convert: --backgrounds {photos} (config.json)", file=sys.stderr)
    stamp_labels: tuple[str, ...] = ()
    if args.stamp:
        from edge.synth import load_stamps

        try:
            stamp_labels = tuple(s.label for s in load_stamps(args.stamp))
        except ValueError as exc:
            raise CliError(str(exc)) from None
    if synthetic and args.stamp and set(stamp_labels) != set(labels):
        # calibrated and proved on other stamps than the model learned: its figures would mislead
        raise CliError(
            f"--stamp gives {', '.join(repr(x) for x in stamp_labels)}, but {args.model} was "
            f"trained on {', '.join(repr(x) for x in labels)} (model.json): give the same stamp "
            "image(s) it was trained with"
        )
    if synthetic and not args.stamp and (labels != contract.DEFAULT_LABELS or recorded):
        # the procedural seal is not what the model learned: its figures would say nothing (a
        # stamp image named stamp.png has the procedural seal's label, so the labels cannot tell)
        if isinstance(recorded, list) and recorded:  # recorded, but not all of them still there
            named = ", ".join(str(x) for x in recorded)
            gone = ", ".join(str(x) for x in recorded if not Path(str(x)).exists())
            learned = f"the stamp image(s) {named} (config.json; not found now: {gone})"
        else:
            learned = f"{', '.join(repr(x) for x in labels)} (model.json)"
        raise CliError(
            f"{args.model}: was trained on {learned}, not the procedural stamp the synthetic "
            f"{' and '.join(synthetic)} would draw; give its stamp image(s) with --stamp, or labelled "
            "photos with --val and --calibration"
        )
    data, pool = trained.get("data"), trained.get("synthetic")
    # edge-train's pool: --synthetic N, or by default none beside photos unless stamps or backgrounds
    photos_only = data and (
        pool == 0 or (pool is None and not trained.get("stamp") and not trained.get("backgrounds"))
    )
    if synthetic and photos_only:
        # a model of labelled photos only: synthetic stamps would calibrate it on the wrong images
        subset = trained.get("subset")
        raise CliError(
            f"{args.model}: was trained on labelled photos only ({data}, config.json), not on the "
            f"synthetic stamp images the {' and '.join(synthetic)} would draw; give labelled photos "
            f"with --calibration and --val (e.g. --calibration {data}"
            + (f" --subset {subset}" if subset else "")
            + f" --val {data}"
            + (f" --val-subset {subset}" if subset else "")
            + ")"
        )
    if synthetic and photos and args.backgrounds is None:
        raise CliError(
            f"{args.model}: was trained on product photos from {photos} (config.json), not the "
            f"procedural surfaces the synthetic {' and '.join(synthetic)} would use; give them with "
            "--backgrounds, or labelled photos with --val and --calibration"
        )
    ds = None
    if not (args.no_verify or args.val is None):
        try:
            ds = load_dataset(args.val, subset=args.val_subset)
        except DatasetError as exc:
            raise CliError(f"--val {exc}") from None
        if not ds.records:
            raise CliError(f"--val {args.val}: no labelled images")
        unknown = [name for name in ds.labels if name not in labels]
        if len(labels) > 1 and unknown and len(unknown) == len(ds.labels):  # no class head checked
            raise CliError(
                f"--val {args.val}: its labels {unknown} are none of the variants the model was trained "
                f"on {list(labels)} (model.json); expected a validation set labelled with the same names"
            )
        if len(labels) > 1 and unknown:
            print(
                f"edge-convert: WARNING: --val {args.val}: its labels {unknown} are not among the model's "
                f"variants {list(labels)}; class accuracy counts the others only",
                file=sys.stderr,
            )
        stamped = sum(not r.is_negative for r in ds.records)
        if not stamped:  # presence alone would pass a model whose boxes (or centres) went wrong
            raise CliError(
                f"--val {args.val}: none of its {len(ds.records)} images has a stamp; the proof of "
                "agreement compares where the stamp is found, so it needs images with one"
            )
        if stamped < FEW_STAMPED:
            print(
                f"edge-convert: WARNING: --val {args.val}: only {stamped} of its images have a stamp; "
                f"one image moves the mean IoU by up to {1 / stamped:.2f}, so the proof says little",
                file=sys.stderr,
            )
        if seen := learnt_photos(ds, data, trained.get("subset")):
            print(
                f"edge-convert: note: --val {args.val}: {seen} of its {len(ds.records)} images are photos "
                f"the model was trained on (config.json: {data}); the proof of agreement holds on them, "
                "but the figures and the second looks chosen on them flatter the model (a model does "
                "better on photos it has learnt): to measure and choose on photos it has not seen, keep "
                "some out of training and give them as --val, or choose with --refine",
                file=sys.stderr,
            )
    inputs = [("the model", args.model), ("its model.json", args.model.with_name("model.json"))]
    inputs += [("its config.json", args.model.with_name("config.json"))]
    inputs += [(flag, getattr(args, key)) for flag, key in CONVERT_INPUTS]
    read = [("the calibration images", cal_paths or []), ("the validation set", ds.files() if ds else [])]
    folders = [("--calibration", args.calibration), ("--val", args.val), ("--backgrounds", args.backgrounds)]
    folders += [("--stamp", stamp) for stamp in args.stamp or () if stamp.is_dir()]
    if problem := clash([("--out", args.out), ("--report", args.report)], inputs, read, folders):
        raise CliError(problem)
    if args.report is not None:  # (after the clash, which says more)
        refuse_non_report(args.report, "the report")
    return ds, cal_paths


def learnt_photos(val: Dataset, data, subset) -> int:
    """How many of ``val``'s images are among the labelled photos the model was trained on
    (``data`` and ``subset`` from its config.json; some of them may have been edge-train's own
    validation split): 0 when it was not trained on photos or they cannot be read now."""
    if not data:
        return 0
    try:
        trained = load_dataset(data, subset=subset)
    except (DatasetError, OSError):
        return 0
    learnt = {r.image_path.resolve() for r in trained.records}
    return sum(r.image_path.resolve() in learnt for r in val.records)


def validation_set(
    args: argparse.Namespace, labels, ds: Dataset | None
) -> tuple[list[np.ndarray], list[Truth], str]:
    """The model inputs, their truth and a description of where they come from."""
    if ds is None:
        synth = _synth(args)
        unknown = [name for name in synth.labels if name not in labels]
        if len(labels) > 1 and unknown:
            raise CliError(
                f"--stamp: the model knows the labels {list(labels)}, not {unknown}; give its stamps "
                "(their file names are their labels)"
            )
        images, truths = [], []
        for i in tqdm(range(args.val_size), desc="validation set", leave=False, disable=args.quiet):
            image, box, presence, cls = synth.model_sample(args.seed + 3_000_000, i)
            images.append(image)
            if presence > 0.5:
                # the synthesizer's class index is its --stamp order; the truth is the label's name
                label = synth.labels[cls] if len(labels) > 1 and 0 <= cls < len(synth.labels) else None
                truths.append(Truth(True, box=tuple(float(v) for v in box), label=label))
            else:
                truths.append(Truth(False))
        return images, truths, f"{args.val_size} synthetic images (seed {args.seed + 3_000_000})"
    images, truths = [], []
    for r in tqdm(ds.records, desc="validation set", leave=False, disable=args.quiet):
        image = read_image(r.image_path)
        h, w = image.shape[:2]
        images.append(contract.prepare_input(image))
        truths.append(metrics.truth_for(r, w, h))
    return images, truths, f"{len(images)} labelled images from {args.val}"


def validation_originals(args: argparse.Namespace, ds: Dataset | None):
    """``i`` -> the full-resolution image the ``i``-th validation input was prepared from (drawn
    or read again: a set of large photos is not kept in memory)."""
    if ds is None:
        synth = _synth(args)
        return lambda i: synth.sample_at(args.seed + 3_000_000, i).image
    return lambda i: read_image(ds.records[i].image_path)


#: what more looks at a frame must gain (mean IoU, or for a centre model the share of centres
#: within 0.05, + presence accuracy on the validation images) to be worth their invokes: on 160
#: raccoon photos, whose boxes fill most of the photo, zoom-flip gained 0.0001 (the mirror image
#: only); on synthetic stamps the bundled model gains 0.08
REFINE_MARGIN = 0.01


def refine_keys(kind: str, boxed: bool = True) -> tuple[str, str]:
    """The two figures the second looks of a ``kind`` model are chosen by: a box model's IoU, or
    where the validation truth has no boxes (centre points, ``boxed`` False: its IoU was NaN and
    counted 0, so one look was kept whatever the looks did) its centres within 0.05."""
    box = kind == "box" and boxed
    return ("iou_mean" if box else "center_within_0_05", "presence_accuracy")


def choose_refine(
    detector, images: list[np.ndarray], truths: list[Truth], original, threshold: float, progress: bool
) -> tuple[str, dict[str, dict[str, float]]]:
    """Second looks (``edge.runtime.look_again``) measured on the validation images: for each of
    the model's ``refine_choices`` (fewest looks first) its two ``refine_keys`` figures, and the
    one to run: a mode with more looks only when its sum of the two beats the chosen one's by at
    least ``REFINE_MARGIN``. ``original(i)`` is the full-resolution image of ``images[i]``."""
    meta = detector.metadata
    choices = meta.refine_choices
    keys = refine_keys(meta.kind, any(t.box is not None for t in truths if t.present))
    firsts = [detector.predict(im) for im in images]
    preds: dict[str, list] = {mode: [] for mode in choices}
    for i, first in enumerate(tqdm(firsts, desc="second looks", leave=False, disable=not progress)):
        full = original(i)
        for mode in choices:
            preds[mode].append(look_again(detector, full, first, mode))
    figures = {}
    for mode in choices:
        m = metrics.summarize(preds[mode], truths, threshold)
        figures[mode] = {k: m[k] for k in keys}

    def score(mode: str) -> float:
        f = figures[mode]
        return sum(0.0 if np.isnan(v) else v for v in f.values())

    best = choices[0]
    for mode in choices[1:]:
        if score(mode) >= score(best) + REFINE_MARGIN:
            best = mode
    return best, figures


def training_config(model_path: Path) -> dict:
    """The flags edge-train ran with (``config.json`` beside the model), if it is there."""
    side = model_path.with_name("config.json")
    try:
        data = json.loads(side.read_text()) if side.is_file() else {}
    except (OSError, ValueError):
        return {}  # only a hint for the checks; model.json is what conversion needs
    return data if isinstance(data, dict) else {}


def infer_kind(model) -> str:
    names = set(model.output_names)
    kind = contract.kind_of_outputs(sorted(names))
    if kind is not None:
        return kind
    raise ConversionError(f"model outputs {sorted(names)} fit no model kind of the contract")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if problem := tensorflow_problem("edge-convert"):
        raise CliError(problem)
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    val_ds, cal_paths = check_flags(args)
    t0 = time.perf_counter()
    model = load_keras(args.model)
    side = keras_sidecar(args.model)
    kind = infer_kind(model)
    labels = tuple(side.get("labels") or contract.DEFAULT_LABELS)
    problem = keras_model_problem(args.model, model, labels, side.get("kind"))
    if problem:
        raise ConversionError(problem)
    threshold = (
        args.threshold
        if args.threshold is not None
        else float(side.get("threshold", contract.DEFAULT_THRESHOLD))
    )
    if args.refine != "auto":  # before the minutes of conversion: does it fit this model?
        try:
            meta = contract.ModelMetadata(kind=kind, labels=labels).with_outputs(model.output_names)
            refine_for(meta, args.refine, f"--refine {args.refine}")
        except ModelError as e:
            raise CliError(str(e).replace(": refine " + args.refine, "", 1)) from None
    provenance = dict(side.get("provenance", {}))
    provenance.update(
        converted=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), mode=args.mode, source=args.model.name
    )
    reps = None
    if args.mode in INTEGER_MODES:
        reps, provenance["calibration"] = calibration_images(args, cal_paths)
    log(f"edge-convert: converting {args.model} ({kind}, labels {list(labels)}) to {args.mode}")
    source = model
    if reps and not (args.no_equalize and args.no_round):
        # a second copy is changed; the proof below compares against the model as trained
        source = load_keras(args.model)
    if reps and not args.no_equalize:
        eq = equalize(source, reps[:EQUALIZE_IMAGES])
        provenance["equalized"] = {k: v for k, v in eq.items() if k != "layers"}
        if eq["chains"]:
            log(
                f"edge-convert: equalized {eq['chains']} activations on {min(len(reps), EQUALIZE_IMAGES)} "
                f"calibration images (channel scales: median {eq['scale_median']:.2f}, "
                f"max {eq['scale_max']:.1f})"
            )
    if reps and not args.no_round:
        rounded = round_weights(source, reps[:ROUND_IMAGES], skip_pixel_stem=args.mode == "int8-float-stem")
        provenance["rounded"] = rounded
        if rounded["layers"]:
            ratio = rounded["error_variance_rounded"] / max(rounded["error_variance_nearest"], 1e-30)
            log(
                f"edge-convert: rounded the weights of {rounded['layers']} layers for their outputs on "
                f"{min(len(reps), ROUND_IMAGES)} calibration images (output error variance "
                f"{ratio:.2f}x nearest rounding's)"
            )
    # --quiet: also the converter's native "fully_quantize: ..." line (its failures still show)
    quiet = native_stderr_muted if args.quiet else contextlib.nullcontext
    with quiet():
        raw = convert(
            source,
            args.mode,
            (lambda: tqdm(reps, desc="calibrating", leave=False, disable=args.quiet)) if reps else None,
        )
    ops = op_names(raw)
    bad_ops = [o for o in ops if o.startswith("CUSTOM") or "FLEX" in o.upper()]
    if bad_ops:
        raise ConversionError(f"converted model needs non-builtin ops {bad_ops}; the device cannot run it")
    report: dict = {"mode": args.mode, "ops": ops}
    meta_args = dict(kind=kind, labels=labels, threshold=threshold)
    # hidden, and removed on any error or stop (a stale .tflite to edge-train's --overwrite check)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{args.out.stem}.", suffix=".partial.tflite", dir=args.out.parent
    )
    tmp = Path(tmp_name)
    try:
        if not args.no_verify:
            images, truths, vdesc = validation_set(args, labels, val_ds)
            meta0 = contract.ModelMetadata(**meta_args, provenance=provenance).with_outputs(
                model.output_names
            )
            os.write(fd, embed_metadata(raw, meta0))
            os.close(fd)
            fd = -1
            keras_det = CallableDetector(lambda x: model(x.astype(np.float32), training=False), meta0)
            with quiet():  # LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate"
                lite = TFLiteDetector(tmp, threads=args.threads)
            check = proof_of_agreement(
                keras_det,
                lite,
                images,
                truths,
                threshold,
                MAX_IOU_DROP if args.max_iou_drop is None else args.max_iou_drop,
                MIN_AGREEMENT if args.min_agreement is None else args.min_agreement,
                not args.quiet,
            )
            report.update(check, validation=vdesc, runtime=f"{lite.runtime.name} {lite.runtime.version}")
            ml = check["tflite"]
            provenance["validation_tflite"] = {
                k: ml[k] for k in (*KEYS, "center_within_0_05") if not np.isnan(ml[k])
            } | {k: int(ml[k]) for k in metrics.PRESENCE_COUNTS if k in ml}
            provenance["agreement"] = check["agreement"]
            print_report(report, check["metric"], log)
            if len(lite.metadata.refine_choices) > 1 and check["passed"]:
                meta_args["refine"], report["refine"] = choose_refine(
                    lite,
                    images,
                    truths,
                    validation_originals(args, val_ds),
                    threshold,
                    not args.quiet,
                )
                if args.refine != "auto":  # the engineer's choice, the measurement kept beside it
                    meta_args["refine"] = args.refine
                provenance["refine"] = report["refine"]
                report["refine_chosen"] = meta_args["refine"]
                first_key = next(iter(next(iter(report["refine"].values()))))
                name = "IoU" if first_key == "iou_mean" else "centre within 0.05"
                log(
                    "edge-convert: second looks on the validation images: "
                    + "; ".join(
                        f"{mode} {name} {f[first_key]:.4f}, presence {f['presence_accuracy']:.4f}"
                        for mode, f in report["refine"].items()
                    )
                    + f" -> refine {meta_args['refine']} (edge-run --refine auto)"
                    + (" as --refine says" if args.refine != "auto" else "")
                )
            if warning := metrics.no_skill_warning(check["keras"]):  # agreement is not usefulness
                print(f"edge-convert: WARNING: the Keras model's {warning}", file=sys.stderr)
            if not check["passed"]:
                refusal = (
                    f"converted model does not agree with the Keras model: {check['why']}; nothing written "
                    f"({refusal_hint(check, len(images))})"
                )
                if args.report:  # what refused it, to study (the model itself is not written)
                    report["refused"] = check["why"]
                    write_json(args.report, report)
                    refusal += f"; the proof's figures are in {args.report}"
                raise CliError(refusal)
        else:
            os.close(fd)
            fd = -1
            if args.refine != "auto":
                meta_args["refine"] = args.refine
            elif kind == "box":
                log(
                    "edge-convert: second looks not measured (--no-verify): edge-run --refine auto looks once"
                )
        final = embed_metadata(
            raw, contract.ModelMetadata(**meta_args, provenance=provenance).with_outputs(model.output_names)
        )
        tmp.write_bytes(final)
        tmp.chmod(0o644)
        os.replace(tmp, args.out)
    finally:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
    report["size_bytes"] = args.out.stat().st_size
    if args.report:
        write_json(args.report, report)
    log(
        f"edge-convert: wrote {args.out} ({report['size_bytes'] / 1024:.0f} KiB, {args.mode}) "
        f"in {time.perf_counter() - t0:.0f} s"
    )
    return 0


def proof_of_agreement(
    reference,
    candidate,
    images: list[np.ndarray],
    truths: list[Truth],
    threshold: float,
    max_drop: float,
    min_agreement: float,
    progress: bool = False,
) -> dict:
    """Both detectors on the same images: edge-eval metrics for each, their agreement, and
    whether the candidate (the converted model) still does the job."""
    kp = reference.predict_batch(images, 100)
    lp = [candidate.predict(im) for im in tqdm(images, desc="checking", leave=False, disable=not progress)]
    # class accuracy over the variants the model knows, as edge-eval counts it
    labels = getattr(getattr(candidate, "metadata", None), "labels", None)
    mk = metrics.summarize(kp, truths, threshold, known_labels=labels)
    ml = metrics.summarize(lp, truths, threshold, known_labels=labels)
    agree = metrics.agreement(kp, lp, threshold)
    loc = "iou_mean" if not np.isnan(mk["iou_mean"]) else "center_within_0_05"
    drop = mk[loc] - ml[loc]
    why = []
    if np.isnan(mk[loc]):  # a validation set without the object: presence is all there is to check
        loc, drop = "presence_agreement", float("nan")
    elif not drop <= max_drop:
        why.append(f"{loc} fell {drop:.4f} (> {max_drop})")
    if not agree["presence_agreement"] >= min_agreement:
        n, unsure = agree["presence_disagree"], agree["presence_disagree_unsure"]
        why.append(
            f"presence agreement {agree['presence_agreement']:.4f} (< {min_agreement}): {n} of "
            f"{len(images)} images decided otherwise, {unsure} of them scored by the Keras model within "
            f"{metrics.UNSURE} of the threshold {threshold:g}"
        )
    report = {
        "keras": mk,
        "tflite": ml,
        "agreement": agree,
        "metric": loc,
        "drop": drop,
        "passed": not why,
        "why": "; ".join(why),
    }
    if kb := metrics.by_label(kp, truths, threshold, known_labels=labels):  # several variants
        lb = metrics.by_label(lp, truths, threshold, known_labels=labels)
        report["by_label"] = {"keras": kb, "tflite": lb}
    return report


def refusal_hint(check: dict, n_images: int) -> str:
    """What to try when the proof refuses a model: where int8 flipped presence mostly on images the
    Keras model is sure of, the float stem first; else more training first (an under-trained
    model's scores sit near the threshold, where any small change decides)."""
    agree = check["agreement"]
    sure_flips = agree["presence_disagree"] - agree["presence_disagree_unsure"]
    flipped_sure = sure_flips * 2 > agree["presence_disagree"]  # (none flipped: False)
    hint = (
        "try: --mode int8-float-stem, as int8 moves scores the Keras model is sure of; more training; "
        if flipped_sure
        else "try: more training, as an under-trained model's scores sit near the threshold; "
        "--mode int8-float-stem; "
    )
    if n_images < MIN_VALIDATION:
        hint += (
            f"on {n_images} validation images one image moves a share by {1 / n_images:.3f}, so a larger "
            "--max-iou-drop may fit; "
        )
    return hint + "or --no-verify for a trial model"


#: the figures print_report gives for each label (``metrics.LABEL_KEYS``)
LABEL_FIGURES = ("recall", "iou_mean", "class_accuracy")


def print_report(report: dict, loc: str, log) -> None:
    k, t, a = report["keras"], report["tflite"], report["agreement"]
    log(f"validation: {report['validation']} ({report['runtime']})")
    log(f"{'metric':<22}{'keras':>10}{'tflite':>10}")
    for key in (*KEYS, "center_within_0_05", "class_accuracy"):
        kv, tv = (np.nan if d.get(key) is None else float(d[key]) for d in (k, t))
        if not (np.isnan(kv) and np.isnan(tv)):
            log(f"{key:<22}{kv:>10.4f}{tv:>10.4f}")
    if by := report.get("by_label"):
        log("by label, keras / tflite: " + ", ".join(LABEL_FIGURES))
        for name, kf in by["keras"].items():
            tf = by["tflite"][name]
            shown = ", ".join(f"{kf[key]:.4f} / {tf[key]:.4f}" for key in LABEL_FIGURES)
            log(f"  {name} ({kf['n_positive']} images): {shown}")
    log("agreement: " + ", ".join(f"{key} {v:.4f}" for key, v in a.items()))
    verdict = "PASSED" if report["passed"] else f"FAILED: {report['why']}"
    log(f"check on {loc} and presence agreement: {verdict}")


@pipe_closed_quietly
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_to_stderr("edge-convert")
    from edge.pipeline import stop_signals

    try:
        with stop_signals(interrupt):  # SIGTERM (timeout, kill) as Ctrl-C: its temporary file removed
            return run(args)
    except (CliError, ConversionError, DatasetError, ModelError, contract.ContractError, OSError) as exc:
        return fail("edge-convert", exc)
    except KeyboardInterrupt:
        print("\nedge-convert: interrupted; nothing written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
