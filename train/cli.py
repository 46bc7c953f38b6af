"""``edge-train``: train the stamp localizer on synthetic composites and/or labelled photos."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge import contract
from edge.cli.common import (
    CliError,
    DefaultsHelpFormatter,
    OneLineParser,
    fail,
    import_quietly,
    int_up_to,
    interrupt,
    keras_file_problem,
    log_to_stderr,
    make_folder,
    path_arg,
    pipe_closed_quietly,
    positive_float,
    positive_int,
    tensorflow_problem,
    unit_float,
    warn,
    worker_count,
)
from edge.datasets import DatasetError, image_files, load_dataset
from edge.files import clash, same_path
from edge.synth import RECIPES

EPILOG = """examples:
  edge-train --out runs/default --minutes 25             # default procedural stamp and surfaces
  edge-train --stamp my_stamp.png --backgrounds photos/ --out runs/mine
  edge-train --data labelled/ --subset train.txt --out runs/real"""


def build_parser() -> argparse.ArgumentParser:
    from train import data as D

    p = OneLineParser(
        prog="edge-train",
        description="Train the MobileNet v1 (alpha 0.25, 128x128) stamp localizer.",
        formatter_class=lambda prog: DefaultsHelpFormatter(prog, max_help_position=32),
        epilog=EPILOG,
    )
    src = p.add_argument_group("data")
    src.add_argument(
        "--stamp",
        action="append",
        type=path_arg,
        default=[],
        help="stamp image or folder (repeat for variants); default: the procedural seal",
    )
    src.add_argument(
        "--backgrounds",
        type=path_arg,
        default=None,
        help="folder of product photos; default: procedural surfaces",
    )
    src.add_argument(
        "--data", type=path_arg, default=None, help="labelled photos (VOC, YOLO, COCO, CSV, labels.txt)"
    )
    src.add_argument(
        "--subset", type=path_arg, default=None, help="train only on the images listed in this file"
    )
    src.add_argument(
        "--labels",
        type=lambda text: [x.strip() for x in text.split(",") if x.strip()],
        default=None,
        metavar="A,B",
        help="the classes of --data that are stamps (default: all): the objects of the others (a "
        "barcode, the product) are left out, and an image with only those is a negative",
    )
    src.add_argument(
        "--val", type=path_arg, default=None, help="labelled validation set (default: split from --data)"
    )
    src.add_argument(
        "--val-subset",
        type=path_arg,
        default=None,
        help="restrict --val (or --data when --val is absent) to these images",
    )
    src.add_argument(
        "--val-split", type=unit_float, default=0.1, help="share of --data held out for validation"
    )
    src.add_argument(
        "--synthetic",
        type=positive_int,
        default=None,
        help="synthetic pool size (default 40000 without --data, 0 with it unless --stamp/--backgrounds)",
    )
    src.add_argument(
        "--val-size", type=positive_int, default=1000, help="synthetic validation images (different seed)"
    )
    src.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default="default",
        help="synthetic recipe: everything a line may vary, or narrowed to a fixed station camera "
        "(stamps fully on the product, moderate size and tilt, light camera effects)",
    )
    src.add_argument(
        "--negatives", type=unit_float, default=0.3, help="share of synthetic images without the stamp"
    )
    src.add_argument(
        "--copies",
        type=positive_int,
        default=None,
        help="augmented crops per labelled training image (default: about "
        f"{D.LABELLED_POOL_TARGET:,} in all, {D.MIN_COPIES}-{D.MAX_COPIES} per image)",
    )
    src.add_argument(
        "--flip",
        action="store_true",
        help="mirror labelled photos at random (never for stamps: a mirrored stamp is not the stamp)",
    )
    m = p.add_argument_group("model and schedule")
    m.add_argument(
        "--kind",
        choices=sorted(contract.KIND_OUTPUTS),
        default=None,
        help="model kind (default: box, or center for centre-point labels)",
    )
    m.add_argument(
        "--weak",
        action="store_true",
        help="weak labels: train a presence classifier on patches with and without the object and "
        "take the centre from its class activation map (model kind cam)",
    )
    m.add_argument(
        "--head",
        choices=("dense", "grid"),
        default=None,
        help="localization head: dense regression or a 16x16 grid of cells "
        "(default: dense for box models, grid for centre and cam models; with --init, the init "
        "model's head: --init bundled is dense, so give --head grid for a centre model's heatmap)",
    )
    m.add_argument(
        "--weights",
        type=path_arg,
        default=None,
        help="local MobileNet weights (.h5) to start from (default: none, random)",
    )
    m.add_argument(
        "--init",
        type=init_model,
        default=None,
        help="start from this trained model (fine-tuning): a .keras model edge-train wrote, a .tflite "
        "edge-convert wrote, 'bundled' (the bundled default model), or 'none' (random weights); "
        "default: 'bundled' for a box model of your --stamp images without --weights (they learn "
        "faster from it), else none",
    )
    m.add_argument("--steps", type=positive_int, default=None, help="training steps (default: from --epochs)")
    m.add_argument(
        "--epochs", type=positive_int, default=None, help="passes over the training pool (default 12)"
    )
    m.add_argument(
        "--batch-size", type=int_up_to(4096, "images a step"), default=64, help="images a training step"
    )
    m.add_argument(
        "--lr",
        type=positive_float,
        default=DEFAULT_LR,
        help="peak learning rate (cosine decay after warm-up), from random weights and fine-tuning "
        "(--init) alike",
    )
    m.add_argument("--eval-every", type=positive_int, default=500, help="steps between validations")
    m.add_argument(
        "--patience",
        type=positive_int,
        default=8,
        help="validations without improvement before stopping (it stops a run only past half its schedule)",
    )
    m.add_argument(
        "--minutes",
        type=positive_float,
        default=None,
        help="wall-time budget of the training loop (preparing the data comes first and is not "
        "counted; the log says how long it took); the best checkpoint so far is kept (default: no limit)",
    )
    m.add_argument(
        "--ema",
        type=ema_decay,
        default=None,
        metavar="DECAY",
        help="validate and save an exponential moving average of the weights (e.g. 0.998: about the "
        "last 500 steps), which overfits a small photo set later than the weights themselves",
    )
    p.add_argument("--out", type=path_arg, required=True, help="output folder")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier run's model and reports in --out (refused without it); converted "
        "models (.tflite) there are left and warned of: they are the earlier model's",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the synthetic data, the validation split, the augmentation and the initial weights",
    )
    p.add_argument(
        "--workers",
        type=worker_count,
        default=os.cpu_count() or 1,
        help="processes generating synthetic data (default: one per core, here %(default)s)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


#: ``--lr`` by default, from random weights and fine-tuning alike: a custom stamp started from
#: the bundled model gained more at 3e-3 than at 1e-3 (8 minutes: text int8 IoU 0.717 -> 0.793,
#: signature 0.621 -> 0.726; the three-variant model: 0.801 -> 0.858; README, "Your own stamp")
DEFAULT_LR = 3e-3
#: ``--init none``: random weights even where the bundled model would be the start
NO_INIT = "none"


def init_model(text: str) -> Path | str:
    """``--init``: a model file, ``bundled`` for the bundled default model, or ``none``."""
    if text == "bundled":
        from edge.runtime import BUNDLED_MODEL

        return BUNDLED_MODEL
    return NO_INIT if text == NO_INIT else Path(text)


def default_init(args: argparse.Namespace, kind: str) -> Path | None:
    """The model a run starts from (None: random weights): ``--init``'s; else, for a box model of
    the customer's ``--stamp`` images, the bundled model (8 minutes from it: int8 IoU 0.793 against
    0.569 from random weights on a 3:1 text stamp, 0.726 against 0.519 on a signature; README,
    "Your own stamp"). ``--weights`` (ImageNet) and ``--init none`` start from those instead."""
    if args.init == NO_INIT:
        return None
    if args.init is not None:
        return args.init
    if args.stamp and kind == "box" and args.weights is None:
        from edge.runtime import BUNDLED_MODEL

        return BUNDLED_MODEL
    return None


def init_problem(path: Path) -> str | None:
    """Why ``path`` cannot be ``--init``'s model, told before TensorFlow loads; None if it may."""
    if path.suffix not in (".tflite", ".keras"):  # (.h5 weights are --weights', not a model)
        return f"{path}: expected a model edge-train (.keras) or edge-convert (.tflite) wrote"
    if path.suffix != ".tflite":
        return keras_file_problem(path)
    try:
        raw = contract.read_model(path)
    except FileNotFoundError:
        return f"{path}: model file not found"
    except OSError as exc:
        return f"{path}: cannot read the model ({exc.strerror})"
    except contract.ContractError as exc:
        return str(exc)
    try:
        meta = contract.read_embedded_metadata(raw, str(path))
    except contract.ContractError as exc:
        return str(exc)
    if meta.kind == "cam":
        return f"{path}: a cam model cannot be rebuilt for training (its heatmap head has no box or centre)"
    return None


def init_head(path: Path) -> str | None:
    """The localization head of ``--init``'s model, told before TensorFlow loads ("grid" or
    "dense"; None where it cannot be read: the model's own check says why later)."""
    import zipfile

    try:
        if path.suffix == ".tflite":
            meta = contract.read_embedded_metadata(contract.read_model(path), str(path))
            return "grid" if contract.CELLS in meta.outputs else "dense"
        with zipfile.ZipFile(path) as archive:
            return "grid" if b'"cell_logits"' in archive.read("config.json") else "dense"
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def ema_decay(text: str) -> float:
    """``--ema``: a decay in (0, 1)."""
    value = unit_float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a decay between 0 and 1 (e.g. 0.998), got {value}")
    return value


@dataclass
class Prepared:
    train: object
    val: object
    labels: tuple[str, ...]
    kind: str
    description: str
    synth_rate: float | None


def only_labels(dataset, labels: Sequence[str], data: Path | None, quiet: bool):
    """``dataset`` with the objects of ``labels`` alone (``--labels``); CliError for a name the
    data does not hold."""
    if dataset is None:
        raise CliError("--labels needs --data")
    unknown = [label for label in labels if label not in dataset.labels]
    if unknown or not labels:
        raise CliError(
            f"--labels: {', '.join(map(repr, unknown)) or 'none given'}: expected names of the "
            f"classes of {data} ({', '.join(dataset.labels)})"
        )
    dataset, turned = dataset.only(labels)
    if not quiet:
        print(
            f"edge-train: --labels {','.join(dataset.labels)}: the other classes' objects are left out; "
            f"{turned} image(s) with only those are negatives",
            file=sys.stderr,
        )
    return dataset


def prepare_data(args: argparse.Namespace) -> Prepared:
    from edge.synth import Backgrounds, Synthesizer, load_stamps
    from train import data as D

    if args.weak or args.kind == "cam":  # told before the data is read
        init = args.init if args.init not in (None, NO_INIT) else None
        if args.head == "dense":
            raise CliError("a weak (cam) model needs the grid head, not 'dense': give --head grid")
        if args.head is None and init is not None and init_head(init) == "dense":
            raise CliError(
                f"a weak (cam) model needs the grid head; --init {init} has the dense one: give --head grid"
            )
    dataset = None
    if args.data is not None:
        dataset = load_dataset(args.data, subset=args.subset)
        if not dataset.records:
            raise CliError(f"{args.data}: no labelled images found")
    elif args.subset is not None:
        raise CliError("--subset needs --data")
    use_synth = (
        args.synthetic
        if args.synthetic is not None
        else (0 if dataset and not (args.stamp or args.backgrounds) else 40000)
    )
    stamps = load_stamps(args.stamp) if args.stamp else None
    if stamps and not args.quiet:  # what a stamp folder held, what a file was taken as
        print(
            f"edge-train: {len(stamps)} stamp{'s' * (len(stamps) > 1)}: {', '.join(s.label for s in stamps)}",
            file=sys.stderr,
        )
    if args.labels is not None:
        dataset = only_labels(dataset, args.labels, args.data, args.quiet)
    data_labels = list(dataset.labels) if dataset else []
    if stamps and len(stamps) == 1 and len(data_labels) == 1 and stamps[0].label != data_labels[0]:
        # one stamp and photos of one labelled class are the same thing to find, whatever the
        # stamp file is called: one class, not a class head that tells synthetic from real
        if not args.quiet:
            print(
                f"edge-train: the stamp {stamps[0].label!r} is trained as the data's label "
                f"{data_labels[0]!r}",
                file=sys.stderr,
            )
        stamps = [dataclasses.replace(stamps[0], label=data_labels[0])]
    stamp_labels = [s.label for s in stamps] if stamps else list(contract.DEFAULT_LABELS)
    has_centers = dataset is not None and any(
        r.primary() is not None and r.primary().box is None for r in dataset.records
    )
    if args.weak and args.kind not in (None, "cam"):
        raise CliError(f"--weak trains a cam model, not --kind {args.kind}")
    if args.weak and dataset is None:
        raise CliError("--weak needs labelled photos (--data)")
    kind = "cam" if args.weak else args.kind or ("center" if has_centers else "box")
    if kind == "box" and has_centers:
        raise CliError(
            f"{args.data}: centre-point labels cannot train a box model (use --kind center or cam)"
        )
    if dataset is not None and not use_synth and all(r.is_negative for r in dataset.records):
        raise CliError(
            f"{args.data}: none of its {len(dataset.records)} images has a labelled object; a model "
            "learns where the stamp is from images that show it (negatives alone go with --stamp or "
            "--synthetic)"
        )
    if dataset is not None and not use_synth:
        labels = D.label_list(data_labels, [])
    else:
        labels = D.label_list(stamp_labels, data_labels)
    pools, vals, desc = [], [], []
    rate = None
    if use_synth:
        config = dataclasses.replace(RECIPES[args.recipe], negative_share=args.negatives)
        synth = Synthesizer(stamps, Backgrounds(args.backgrounds), config)
        pool, rate = D.synthetic_pool(synth, args.seed, use_synth, args.workers, progress=not args.quiet)
        val, _ = D.synthetic_pool(
            synth, args.seed + 1_000_003, args.val_size, args.workers, "validation set", not args.quiet
        )
        pools.append(pool)
        vals.append(val)
        desc.append(
            f"{use_synth} synthetic composites of {', '.join(stamp_labels)} on "
            f"{args.backgrounds or 'procedural surfaces'} (negatives {args.negatives})"
        )
    if dataset is not None:
        if args.val is not None:
            train_ds, val_ds = dataset, load_dataset(args.val, subset=args.val_subset)
            if args.labels is not None:  # (measured on the stamps alone too)
                val_ds = val_ds.only(args.labels)[0]
            unknown = [name for name in val_ds.labels if name not in labels]
            if len(labels) > 1 and unknown:  # its class accuracy could not be measured
                raise CliError(
                    f"--val {args.val}: its labels {unknown} are not among the variants trained on "
                    f"{list(labels)}; expected a validation set labelled with the same names"
                )
        elif args.val_subset is not None:  # validation: these images of --data, never trained on
            val_ds = load_dataset(args.data, subset=args.val_subset)
            if args.labels is not None:
                val_ds = val_ds.only(args.labels)[0]
            held = {r.image_path.resolve() for r in val_ds.records}
            train_ds = dataclasses.replace(
                dataset, records=[r for r in dataset.records if r.image_path.resolve() not in held]
            )
            if not train_ds.records:
                raise CliError(
                    f"--val-subset {args.val_subset}: holds every training image; none left to train on"
                )
        else:
            train_ds, val_ds = D.split_records(dataset, args.val_split, args.seed)
            if not train_ds.records:
                raise CliError(
                    f"--val-split {args.val_split:g}: holds out all {len(dataset.records)} images of "
                    f"{args.data}; none left to train on (expected a share below 1)"
                )
        copies = args.copies or D.default_copies(len(train_ds.records))
        if kind == "cam":  # presence labels only: patches with and without the object
            pools.append(D.weak_pool(train_ds, args.seed, copies, args.flip, progress=not args.quiet))
        else:
            pools.append(
                D.labelled_pool(
                    train_ds, labels, args.seed, copies=copies, flip=args.flip, progress=not args.quiet
                )
            )
        vals.append(
            D.labelled_pool(
                val_ds, labels, args.seed, copies=0, desc="validation set", progress=not args.quiet
            )
        )
        desc.append(
            f"{len(train_ds.records)} labelled images from {args.data} ({dataset.format}), "
            f"{copies} {'weak patches' if kind == 'cam' else 'crops'} each"
        )
    val_pool = D.Pool.concat(vals)
    if len(val_pool) == 0:
        print(
            f"edge-train: WARNING: no validation images ({len(dataset.records) if dataset else 0} labelled, "
            f"--val-split {args.val_split}); the checkpoint kept is the one with the lowest training loss, "
            "never measured on images it did not train on",
            file=sys.stderr,
        )
    if dataset is not None and args.labels is None and len(dataset.labels) > 1 and not args.quiet:
        print(  # (once the data is found fit: not before an error)
            f"edge-train: the data's classes {list(dataset.labels)} are trained as stamp variants (a "
            "class head tells them apart); if some are not stamps (a barcode, the product), give "
            "--labels with the stamps' names",
            file=sys.stderr,
        )
    return Prepared(D.Pool.concat(pools), val_pool, labels, kind, "; ".join(desc), rate)


#: the images edge-train writes into --out (train.loop): a previous run's are not a data set's
IMAGES_WRITTEN = ("curves.png", "train_preview.png")
#: files that mark a folder as an earlier run's (its sheets and conversions beside them are fine)
RUN_FILES = ("model.keras", "model.json", "config.json")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if problem := tensorflow_problem("edge-train"):
        raise CliError(problem)
    if args.out.exists() and not args.out.is_dir():
        raise CliError(f"--out {args.out}: is a file (expected a folder for the model and its reports)")
    read = [("--data", args.data), ("--val", args.val), ("--backgrounds", args.backgrounds)]
    if problem := clash([("--out", args.out)], [], folders=read):  # its model and reports among the data
        raise CliError(problem)
    earlier = [name for name in RUN_FILES if (args.out / name).exists()]
    if args.init not in (None, NO_INIT) and any(same_path(args.init, args.out / name) for name in RUN_FILES):
        raise CliError(
            f"--init {args.init}: the model this run writes over in --out {args.out}; give another --out"
        )
    if earlier and not args.overwrite:  # a long run lost to a command repeated from the history
        raise CliError(
            f"--out {args.out}: holds an earlier run ({', '.join(earlier)}); give another folder, or "
            "--overwrite to replace it"
        )
    if args.out.is_dir() and not earlier:  # a data set's folder not given here
        photos = [p for p in image_files(args.out) if p.name not in IMAGES_WRITTEN]
        photos += image_files(args.out / "images") if (args.out / "images").is_dir() else []
        if photos:
            first = photos[0].relative_to(args.out).as_posix()
            raise CliError(
                f"--out {args.out}: holds images ({first}, ...): a data set's folder, not one for a "
                "model; give another folder"
            )
    if args.init not in (None, NO_INIT) and (problem := init_problem(args.init)):
        raise CliError(f"--init {problem}")
    if args.weights is not None and (problem := keras_file_problem(args.weights)):
        raise CliError(f"--weights {problem}")
    try:
        make_folder(args.out)
    except OSError as exc:
        raise CliError(f"--out {args.out}: cannot make the folder ({exc.strerror})") from None
    t_start = time.perf_counter()
    prep = prepare_data(args)
    if len(prep.train) == 0:
        raise CliError("no training images")
    chosen = default_init(args, prep.kind)
    if chosen is not None and args.init is None and not args.quiet:
        print(
            f"edge-train: starting from the bundled model ({chosen.name}; --init none: random weights)",
            file=sys.stderr,
        )
    args.init = chosen
    stale = stale_conversions(args.out) if earlier else []
    if stale:
        warn("edge-train", stale_line(args.out, stale))
    import_quietly("tensorflow")
    from train.loop import train_model

    status = train_model(args, prep, t_start)
    if stale and status == 0:  # said again where the run's last lines are read
        warn("edge-train", stale_line(args.out, stale))
    return status


def stale_conversions(out: Path) -> list[str]:
    """The converted models in an earlier run's folder (edge-convert's ``--out`` beside it): they
    are the earlier model's, and --overwrite trains a new one beside them."""
    return sorted(p.name for p in out.glob("*.tflite") if p.is_file() and not p.name.startswith("."))


def stale_line(out: Path, stale: Sequence[str]) -> str:
    names = ", ".join(stale[:3]) + (f" and {len(stale) - 3} more" if len(stale) > 3 else "")
    return (
        f"--out {out}: {names} {'was' if len(stale) == 1 else 'were'} converted from the earlier model "
        "and no longer match the new one: convert it again (edge-convert) before deploying it"
    )


@pipe_closed_quietly
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log_to_stderr("edge-train")
    if args.steps is not None and args.epochs is not None:
        parser.error("give --steps or --epochs, not both")
    from edge.pipeline import stop_signals

    try:
        with stop_signals(interrupt):  # SIGTERM (timeout, kill) as Ctrl-C: the best checkpoint kept
            return run(args)
    except (CliError, DatasetError, ValueError, OSError) as exc:  # (OSError: a full disk, named)
        return fail("edge-train", exc)
    except KeyboardInterrupt:
        print("edge-train: interrupted", file=sys.stderr)
        return 130


def environment() -> dict[str, str]:
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "python": platform.python_version(), "machine": platform.machine()}


def learning_rate(peak: float, progress: float, warmup: float) -> float:
    """Warm-up from peak/10 to ``peak`` over the first ``warmup`` of training, then cosine decay to
    peak/100; ``progress`` in [0, 1] is the share of training done."""
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup:
        return peak / 10 + (peak - peak / 10) * progress / warmup
    t = (progress - warmup) / max(1.0 - warmup, 1e-9)
    return peak * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * t)))


def steps_for(args: argparse.Namespace, n_train: int) -> int:
    if args.steps is not None:
        return args.steps
    epochs = args.epochs if args.epochs is not None else 12
    return max(1, math.ceil(epochs * n_train / args.batch_size))


if __name__ == "__main__":
    sys.exit(main())
