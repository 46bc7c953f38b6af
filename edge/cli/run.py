"""``edge-run``: watch a line, draw the stamp's box, one verdict per product, flag and log MISSING.

Examples::

    edge-run --demo --duration 20                    # a synthetic line, the bundled model, headless
    edge-run --camera 0 --roi 0.2,0,0.6,1 --events verdicts.jsonl --snapshots missing/
    edge-run --config /etc/stampline/stampline.toml  # the service
    edge-run --check-config /etc/stampline/stampline.toml
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge.cli.common import CliError, fail, positive_int, write_json
from edge.config import (
    RUNTIMES,
    TRIGGER_KINDS,
    Config,
    ConfigError,
    DecisionConfig,
    OutputConfig,
    SourceConfig,
    TriggerConfig,
)

PROG = "edge-run"


def _roi(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected x,y,w,h (four numbers), got {text!r}") from None
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"expected x,y,w,h (four numbers), got {text!r}")
    return values


def _camera(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


#: flag (argparse dest) -> config key; a flag given on the command line overrides the file
OVERRIDES = {
    "camera": "source.camera",
    "video": "source.video",
    "url": "source.url",
    "images": "source.images",
    "width": "source.width",
    "height": "source.height",
    "fps": "source.fps",
    "as_fast_as_possible": "source.as_fast_as_possible",
    "seed": "demo.seed",
    "model": "model.path",
    "threads": "model.threads",
    "runtime": "model.runtime",
    "threshold": "model.threshold",
    "roi": "inspection.roi",
    "trigger": "trigger.kind",
    "min_hits": "decision.min_hits",
    "events": "output.events",
    "snapshots": "output.snapshots",
    "snapshot_max_count": "output.snapshot_max_count",
    "snapshot_max_mb": "output.snapshot_max_mb",
    "summary": "output.summary",
    "record": "output.record",
    "display": "output.display",
    "duration": "run.duration",
    "max_frames": "run.max_frames",
}


def add_source_arguments(p: argparse.ArgumentParser, default: str) -> argparse._ArgumentGroup:
    """The source flags, shared by edge-run and edge-bench (left-out flags do not override the
    config file)."""
    S = argparse.SUPPRESS
    src = p.add_argument_group(f"source (one of; default: {default})")
    one = src.add_mutually_exclusive_group()
    one.add_argument(
        "--camera", type=_camera, default=S, metavar="N", help="V4L2 camera index or device path"
    )
    one.add_argument("--picamera", action="store_true", default=S, help="Raspberry Pi camera (picamera2)")
    one.add_argument("--video", type=Path, default=S, metavar="FILE", help="a video file")
    one.add_argument("--url", default=S, help="an RTSP/HTTP stream")
    one.add_argument(
        "--images", type=Path, default=S, metavar="DIR", help="a folder of images, in sorted order"
    )
    one.add_argument("--demo", action="store_true", default=S, help="a synthetic production line (no camera)")
    src.add_argument(
        "--width", type=positive_int, default=S, help="requested frame width (default: the device's)"
    )
    src.add_argument("--height", type=positive_int, default=S, help="requested frame height")
    src.add_argument("--fps", type=_number, default=S, help="requested frame rate")
    src.add_argument(
        "--as-fast-as-possible",
        action="store_true",
        default=S,
        help="video/demo: every frame, unpaced, none dropped (default: paced at the frame rate)",
    )
    src.add_argument("--seed", type=int, default=S, help="demo line seed (default 0)")
    return src


def build_parser() -> argparse.ArgumentParser:
    S = argparse.SUPPRESS  # flags left out do not override the config file
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect products for their stamp: live frames -> boxes -> one verdict per product.",
        epilog="Flags override the config file. Exit status 2: bad input (one line on stderr).",
    )
    p.add_argument("--config", type=Path, help="TOML config file (flags override it)")
    p.add_argument("--check-config", type=Path, metavar="FILE", help="validate a config file and exit")
    add_source_arguments(p, "camera 0")
    mod = p.add_argument_group("model")
    mod.add_argument("--model", type=Path, default=S, help="a .tflite model (default: the bundled one)")
    mod.add_argument("--threads", type=positive_int, default=S, help="interpreter threads (default 2)")
    mod.add_argument(
        "--runtime", choices=RUNTIMES, default=S, help="default: ai_edge_litert, else tflite_runtime"
    )
    mod.add_argument("--threshold", type=_number, default=S, help="presence threshold (default: the model's)")
    dec = p.add_argument_group("inspection")
    dec.add_argument(
        "--roi",
        type=_roi,
        default=S,
        metavar="X,Y,W,H",
        help="region inspected, normalised (default: whole frame)",
    )
    dec.add_argument(
        "--trigger",
        choices=TRIGGER_KINDS,
        default=S,
        help=f"where products begin and end (default {TriggerConfig.kind})",
    )
    dec.add_argument(
        "--min-hits",
        type=positive_int,
        default=S,
        help=f"frames that must see the stamp for OK (default {DecisionConfig.min_hits})",
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--events", type=Path, default=S, metavar="FILE", help="verdict log (JSON lines, appended)"
    )
    out.add_argument("--snapshots", type=Path, default=S, metavar="DIR", help="snapshots of MISSING products")
    out.add_argument(
        "--snapshot-max-count",
        type=positive_int,
        default=S,
        help=f"products kept in --snapshots (default {OutputConfig.snapshot_max_count})",
    )
    out.add_argument(
        "--snapshot-max-mb",
        type=_number,
        default=S,
        help=f"megabytes kept in --snapshots (default {OutputConfig.snapshot_max_mb:g})",
    )
    out.add_argument("--summary", type=Path, default=S, metavar="FILE", help="the run's summary as JSON")
    out.add_argument("--record", type=Path, default=S, metavar="FILE.mp4", help="record the annotated stream")
    out.add_argument("--display", action="store_true", default=S, help="show a window (needs a display)")
    run = p.add_argument_group("run")
    run.add_argument("--duration", type=_number, default=S, metavar="S", help="stop after S seconds")
    run.add_argument("--max-frames", type=positive_int, default=S, metavar="N", help="stop after N frames")
    run.add_argument("-v", "--verbose", action="store_true", help="log what the loop does (to stderr)")
    return p


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    given = vars(args)
    out = {key: given[dest] for dest, key in OVERRIDES.items() if dest in given}
    kinds = [k for k in ("camera", "video", "url", "images") if k in given]
    if given.get("picamera"):
        kinds.append("picamera")
    if given.get("demo"):
        kinds.append("demo")
    if kinds:
        out["source.kind"] = kinds[0]
    return out


def build_source(config: Config):
    """The configured source (not yet opened) and, for the demo, its ground truth."""
    from edge import sources

    s: SourceConfig = config.source
    if s.kind == "demo":
        from edge.demo import DemoCamera, DemoLine

        line = DemoLine(config.demo.seed)
        paced = not s.as_fast_as_possible
        src = sources.Source(
            DemoCamera(line), threaded=paced, pace=paced, truth=line.truth_at, prefetch=0 if paced else 2
        )
        return src, line
    if s.kind == "camera":
        device = sources.OpenCVCamera(s.camera, s.width, s.height, s.fps)
        return sources.Source(device, threaded=True, stall_s=s.stall_s), None
    if s.kind == "picamera":
        device = sources.PiCamera(s.width, s.height, s.fps)
        return sources.Source(device, threaded=True, stall_s=s.stall_s), None
    if s.kind == "url":
        return sources.Source(sources.StreamURL(s.url), threaded=True, stall_s=s.stall_s), None
    if s.kind == "video":
        paced = not s.as_fast_as_possible
        # as fast as possible: decode ahead on one capture thread (FFmpeg's own threads would
        # compete with the model), nothing dropped
        device = sources.VideoFile(s.video, decode_threads=None if paced else 1)
        return sources.Source(device, threaded=paced, pace=paced, prefetch=0 if paced else 2), None
    return sources.Source(sources.ImageFolder(s.images), threaded=False), None


def build_sinks(config: Config, fps: float | None) -> list:
    from edge import sinks

    o = config.output
    out: list = []
    if o.events is not None:
        out.append(sinks.VerdictLog(o.events))
    if o.snapshots is not None:
        out.append(sinks.SnapshotSink(o.snapshots, o.snapshot_max_count, int(o.snapshot_max_mb * 2**20)))
    if o.record is not None:
        out.append(sinks.VideoRecorder(o.record, fps or 30.0))
    if o.display:
        out.append(sinks.Display())
    return out


def run(config: Config) -> int:
    from edge.decision import Decider, EveryFrameTrigger, OccupancyTrigger
    from edge.pipeline import Pipeline, SystemdNotifier
    from edge.runtime import TFLiteDetector
    from edge.sinks import VerdictLog

    source, truth = build_source(config)
    roi = config.inspection.roi
    if roi is None and truth is not None:
        roi = truth.roi  # the demo line's camera looks at its belt through this region
    with contextlib.ExitStack() as stack:
        # the cheap checks first (camera, files, folders), so a bad one is the only line printed
        stack.enter_context(source)
        built_sinks = build_sinks(config, source.fps)
        for sink in built_sinks:
            stack.enter_context(sink)
        detector = TFLiteDetector(config.model.path, config.model.threads, config.model.runtime)
        threshold = config.model.threshold or detector.metadata.threshold
        runtime = f"{detector.runtime.name} {detector.runtime.version}, {detector.threads} thread(s)"
        print(
            f"{PROG}: {source.name}, model {detector.model_id} ({detector.path.name}) on {runtime}, "
            f"region {','.join(f'{v:g}' for v in roi) if roi else 'whole frame'}, "
            f"trigger {config.trigger.kind}; Ctrl-C to stop",
            flush=True,
        )
        log = next((s for s in built_sinks if isinstance(s, VerdictLog)), None)
        first_product = log.next_product if log else 1
        if config.trigger.kind == "every-frame":
            trigger = EveryFrameTrigger(first_product)
        else:
            trigger = OccupancyTrigger(config.trigger, first_product)
        decider = Decider(threshold, config.decision, log.next_seq if log else 1, detector.model_id)
        pipeline = Pipeline(
            source,
            detector,
            trigger,
            decider,
            built_sinks,
            roi=roi,
            truth=truth,
            notifier=SystemdNotifier(),
            model_id=detector.model_id,
            runtime=runtime,
        )
        summary = pipeline.run(config.run.duration, config.run.max_frames)
    print(summary.format(), flush=True)
    if config.output.summary is not None:
        config.output.summary.parent.mkdir(parents=True, exist_ok=True)
        write_json(config.output.summary, summary.to_dict())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format=f"{PROG}: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    from edge.runtime import ModelError
    from edge.sinks import SinkError
    from edge.sources import SourceError

    try:
        if args.check_config is not None:
            config = Config.load(args.check_config, overrides_from(args))
            print(f"{args.check_config}: ok (source {config.source.kind}, trigger {config.trigger.kind})")
            return 0
        config = Config.load(args.config, overrides_from(args))
        return run(config)
    except (CliError, ConfigError, ModelError, SourceError, SinkError) as exc:
        return fail(PROG, exc)
    except OSError as exc:
        return fail(PROG, f"{getattr(exc, 'filename', '') or ''}: {exc.strerror or exc}".lstrip(": "))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
