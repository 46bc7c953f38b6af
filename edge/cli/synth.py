"""edge-synth: write a labelled synthetic data set, a stamp composited onto product surfaces.

    edge-synth --out data/synth --n 5000 --stamp stamps/qc.png --format yolo
    edge-synth --write-stamps stamps/ --variants 3      # procedural variants for edge-train --stamp
    edge-synth --out data/variants --n 3000 --variants 3 --format coco

Images ``i`` of a run are ``Synthesizer.sample_at(seed, i)``, so a run is reproducible and the
same whatever ``--workers``. Ctrl-C (or SIGTERM) stops early and still writes a loadable set.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shutil
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from tqdm import tqdm

from edge.cli.common import (
    CliError,
    DefaultsHelpFormatter,
    OneLineParser,
    fail,
    int_up_to,
    log_to_stderr,
    non_negative_int,
    os_error_text,
    path_arg,
    pipe_closed_quietly,
    positive_int,
    stops_deferred,
    unit_float,
    worker_count,
)
from edge.datasets import FORMATS, DatasetWriter, ObjectLabel
from edge.files import clash
from edge.synth import (
    DEFAULT_VARIANTS,
    RECIPES,
    VARIANTS,
    Backgrounds,
    Stamp,
    SynthConfig,
    Synthesizer,
    SynthSample,
    load_stamps,
    synth_pool,
    variant_stamps,
    worker_synthesizer,
    write_stamps,
)

PROG = "edge-synth"
#: images a set at most (10**20 ran until killed, and would have filled the disk)
MAX_IMAGES = 10_000_000
#: what DatasetWriter lays out for edge-synth; --overwrite deletes these and refuses to delete
#: anything else: index files, and in the folders (or beside the index, for centre points) only
#: files named as edge-synth names its images and their labels
_WRITTEN_FILES = {"classes.txt", "annotations.json", "labels.csv", "labels.txt"}
_WRITTEN_DIRS = {"images": ".jpg", "annotations": ".xml", "labels": ".txt"}
_SYNTH_NAME = re.compile(r"synth_\d+")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=PROG,
        description="Write a labelled synthetic data set: a stamp composited onto product surfaces.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument(
        "--out",
        type=path_arg,
        metavar="DIR",
        help="folder to write; must be absent or empty (see --overwrite); required unless --write-stamps",
    )
    p.add_argument(
        "--n",
        type=int_up_to(MAX_IMAGES, "images a set"),
        metavar="N",
        help="number of images (required with --out)",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--stamp",
        action="append",
        type=path_arg,
        metavar="PNG",
        help="stamp image (PNG with transparency, or on a plain background) or a folder of them; "
        "repeatable; labels are the file stems (default: a procedural 'QC PASSED' seal, 'stamp')",
    )
    which.add_argument(
        "--variants",
        type=positive_int,
        metavar="N",
        help=f"use the first N of {len(VARIANTS)} procedural stamp variants "
        f"({', '.join(v[0] for v in VARIANTS)}; labels as named) instead of --stamp",
    )
    p.add_argument(
        "--write-stamps",
        type=path_arg,
        metavar="DIR",
        help=f"write the procedural variants (--variants, default {DEFAULT_VARIANTS}) as PNGs with "
        "transparency named <label>.png, for edge-train --stamp DIR; with --out, also the data set",
    )
    p.add_argument(
        "--backgrounds",
        type=path_arg,
        metavar="DIR",
        help="folder of product photos without stamps (default: procedural)",
    )
    p.add_argument(
        "--procedural-share",
        type=unit_float,
        default=0.0,
        metavar="SHARE",
        help="with --backgrounds, the share of procedural surfaces anyway",
    )
    p.add_argument("--seed", type=non_negative_int, default=0, metavar="S", help="the run's seed")
    p.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default="default",
        help="what varies, as edge-train --recipe: everything a line may vary (default), or narrowed "
        "to a fixed station camera (station); a held-out set for a model trained with --recipe X "
        "uses the same X",
    )
    p.add_argument("--format", choices=FORMATS, default="voc", help="label format to write")
    p.add_argument(
        "--negatives",
        type=unit_float,
        default=SynthConfig().negative_share,
        metavar="SHARE",
        help="share of images without the stamp (the centers format cannot hold them: 0 there)",
    )
    p.add_argument("--workers", type=worker_count, default=1, metavar="N", help="processes generating images")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier edge-synth output in --out (and stamps written before in --write-stamps)",
    )
    return p


def _check_out(out: Path, overwrite: bool) -> None:
    """Make ``out`` absent or empty; only ever deletes what a DatasetWriter lays out."""
    if not out.exists():
        return
    if not out.is_dir():
        raise CliError(f"--out {out} exists and is not a folder")
    entries = sorted(out.iterdir())
    if not entries:
        return
    if not overwrite:
        raise CliError(f"--out {out} is not empty; pass --overwrite to replace an earlier edge-synth output")

    def ours(entry: Path, suffix: str) -> bool:
        return entry.is_file() and entry.suffix == suffix and bool(_SYNTH_NAME.fullmatch(entry.stem))

    foreign = []
    for e in entries:
        if e.is_dir() and not e.is_symlink() and e.name in _WRITTEN_DIRS:
            foreign += [
                f"{e.name}/{f.name}" for f in sorted(e.iterdir()) if not ours(f, _WRITTEN_DIRS[e.name])
            ]
        elif not (e.name in _WRITTEN_FILES and e.is_file()) and not ours(e, ".jpg"):
            foreign.append(e.name)
    if foreign:
        raise CliError(
            f"--out {out} holds files edge-synth does not write (e.g. {foreign[0]!r}); "
            "refusing to delete them"
        )
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _worker_sample(job: tuple[int, int]) -> tuple[int, SynthSample]:
    seed, index = job
    return index, worker_synthesizer().sample_at(seed, index)


def _samples(synth: Synthesizer, seed: int, n: int, workers: int) -> Iterator[tuple[int, SynthSample]]:
    if workers == 1:
        for index in range(n):
            yield index, synth.sample_at(seed, index)
        return
    with synth_pool(synth, workers) as pool:
        yield from pool.imap(_worker_sample, ((seed, i) for i in range(n)), chunksize=8)


class _Terminated(Exception):
    pass


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated


def _stamps(args: argparse.Namespace) -> list[Stamp] | None:
    """The stamps in use: --stamp files, --variants, the variants --write-stamps writes, or the
    default stamp (None)."""
    if args.stamp:
        if args.write_stamps is not None:
            raise CliError("--write-stamps writes the procedural variants; it does not go with --stamp")
        return load_stamps(args.stamp)
    if args.variants is not None:
        if args.variants > len(VARIANTS):
            raise CliError(f"--variants: expected 1 to {len(VARIANTS)}, got {args.variants}")
        return variant_stamps(args.variants)
    if args.write_stamps is not None:
        return variant_stamps(DEFAULT_VARIANTS)
    return None


def _run(args: argparse.Namespace) -> int:
    if args.out is None and args.write_stamps is None:
        raise CliError("--out DIR is required (or --write-stamps DIR to write only the stamps)")
    if args.out is not None and args.n is None:
        raise CliError("--n is required with --out")
    if args.procedural_share and args.backgrounds is None:
        raise CliError(
            "--procedural-share goes with --backgrounds: without photos every surface is procedural"
        )
    read = [("--backgrounds", args.backgrounds), *(("--stamp", p) for p in args.stamp or [] if p.is_dir())]
    for key, out in (("--out", args.out), ("--write-stamps", args.write_stamps)):
        if (problem := clash([(key, out)], [], folders=read)) is not None:
            raise CliError(problem)  # what it writes would be read as photos (or stamps) next time
    stamps = _stamps(args)
    if args.write_stamps is not None:
        assert stamps is not None
        if args.out is not None:
            _check_out(args.out, args.overwrite)  # before anything is written
        try:
            paths = write_stamps(stamps, args.write_stamps, overwrite=args.overwrite)
        except ValueError as exc:
            raise CliError(f"--write-stamps: {exc}") from None
        print(
            f"{PROG}: wrote {len(paths)} stamps ({', '.join(s.label for s in stamps)}) to "
            f"{args.write_stamps}; train on them with edge-train --stamp {args.write_stamps}"
        )
        if args.out is None:
            return 0
    backgrounds = Backgrounds(args.backgrounds, procedural_share=args.procedural_share)
    negatives = args.negatives
    if args.format == "centers":
        if stamps is not None and len(stamps) > 1:
            raise CliError(f"the centers format holds one class, got {len(stamps)} stamps")
        if negatives > 0 and negatives != SynthConfig().negative_share:  # asked for: not dropped unsaid
            raise CliError(
                f"--negatives {negatives:g}: the centers format cannot hold images without the stamp "
                "(give --negatives 0, or another --format)"
            )
        if negatives > 0:
            print(
                f"{PROG}: note: the centers format cannot hold negatives; writing stamps only",
                file=sys.stderr,
            )
            negatives = 0.0
    recipe = dataclasses.replace(RECIPES[args.recipe], negative_share=negatives)
    synth = Synthesizer(stamps, backgrounds, recipe)
    _check_out(args.out, args.overwrite)
    digits = max(6, len(str(args.n - 1)))
    written = positives = 0
    stopped = None
    failed: OSError | None = None  # a full disk: the set closed (its index written) on what was written
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    try:
        with (
            DatasetWriter(args.out, args.format, synth.labels) as writer,
            tqdm(total=args.n, desc=PROG, unit="img", file=sys.stderr) as bar,
        ):
            try:
                for index, sample in _samples(synth, args.seed, args.n, args.workers):
                    objects = [] if sample.box is None else [ObjectLabel(sample.label, box=sample.box)]
                    with stops_deferred():  # an image, its annotation and the count together
                        writer.add(f"synth_{index:0{digits}d}", sample.image, objects)
                        written += 1
                        positives += bool(objects)
                    bar.update()
            except (KeyboardInterrupt, _Terminated) as exc:  # stop, and close the set cleanly
                stopped = "interrupted" if isinstance(exc, KeyboardInterrupt) else "terminated"
            except OSError as exc:  # a full disk: which file, and how far it got
                failed = exc
    except OSError as exc:  # the set's index did not fit either
        if failed is None:
            raise
        raise CliError(
            f"{os_error_text(failed)} (after {written} of {args.n} images; the set's index could not be "
            f"written either: {os_error_text(exc)})"
        ) from None
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    if failed is not None:
        raise CliError(f"{os_error_text(failed)} (after {written} of {args.n} images, a set that loads)")
    labels = (
        f", stamp{'s' * (len(stamps) > 1)} {', '.join(s.label for s in stamps)}" if stamps is not None else ""
    )
    print(
        f"{PROG}: wrote {written} images ({positives} with a stamp, {written - positives} without) "
        f"to {args.out} as {args.format}{labels}"
    )
    if stopped:
        print(f"{PROG}: {stopped} after {written} of {args.n} images", file=sys.stderr)
        return 130
    return 0


@pipe_closed_quietly
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    log_to_stderr(PROG)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0), or a usage error already said in one line (2)
        return int(exc.code or 0)
    try:
        return _run(args)
    except (CliError, ValueError, OSError) as exc:
        return fail(PROG, exc)


if __name__ == "__main__":
    raise SystemExit(main())
