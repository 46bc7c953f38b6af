"""``edge-bench``: latency on this CPU, stage by stage, every comparison measured side by side.

Examples::

    edge-bench                                            # the demo line, the bundled model
    edge-bench --model a_int8.tflite a_float32.tflite --threads 1,2,4 --as-fast-as-possible
    edge-bench --video line.mp4 --as-fast-as-possible --baseline --json bench.json
    edge-bench --invoke-only --model a_int8.tflite a_float32.tflite --threads 1
    edge-bench --cold-start 5 --frames 300               # also: process start to first verdict

Every model and thread count (and, with ``--baseline``, the textbook loop beside each) runs in
rounds of ``--block`` frames, the order reversed every other round, so machine noise hits them
alike. See docs/bench.md for what each figure means and the JSON schema.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import logging
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge.cli.common import (
    CliError,
    OneLineParser,
    check_output_file,
    fail,
    int_up_to,
    interrupt,
    log_to_stderr,
    non_negative_int,
    number,
    path_arg,
    pipe_closed_quietly,
    positive_int,
    refuse_non_report,
    remove_made_folders,
    thread_count,
    warn,
    warnings_kept,
    write_json,
)
from edge.cli.run import (
    SOURCE_FLAG_KINDS,
    _roi,
    add_source_arguments,
    check_source_flags,
    idle_warnings,
    overrides_from,
    with_video_pace,
)
from edge.config import (
    RUNTIMES,
    TRIGGER_KINDS,
    Config,
    ConfigError,
    GpioConfig,
    HttpConfig,
    MqttConfig,
    OutputConfig,
)
from edge.files import clash
from edge.runtime import REFINE_MODES

PROG = "edge-bench"
_log = logging.getLogger(__name__)
#: frames per run at most (--frames, --block, --warmup): each frame's stage times are kept in
#: memory, about 100 bytes a frame (a million frames: about half an hour as fast as possible here)
MAX_FRAMES = 1_000_000
#: frames decoded ahead as fast as possible (--prefetch), as edge-run does
DEFAULT_PREFETCH = 2
#: a cold start is timed by the wall clock (the verdict's time in edge-run's log): one during
#: which the wall clock moved this much against the monotonic clock (NTP setting a clock that
#: started wrong, as on a Raspberry Pi just after boot) is measured again, up to this many times
COLD_START_SLACK_S = 0.01
COLD_START_STEPS = 3


def _threads(text: str) -> list[int]:
    parts = text.split(",")
    if not all(part.strip() for part in parts):
        raise argparse.ArgumentTypeError(f"expected thread counts like 1,2,4, got {text!r}")
    try:
        values = [thread_count(part) for part in parts]
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"{e} (in {text!r})") from None
    return list(dict.fromkeys(values))


def build_parser() -> argparse.ArgumentParser:
    S = argparse.SUPPRESS  # flags left out do not override the config file
    p = OneLineParser(
        prog=PROG,
        description="Latency on this CPU, stage by stage: models and thread counts side by side.",
        epilog="Source flags as in edge-run. Exit status 2: bad input (one line on stderr).",
    )
    p.add_argument(
        "--config",
        type=path_arg,
        help="an edge-run config file: its source, region, decision and model (its trigger settings "
        "with --trigger occupancy; else every frame is judged)",
    )
    mod = p.add_argument_group("models")
    mod.add_argument(
        "--model",
        dest="models",
        type=path_arg,
        nargs="+",
        action="extend",
        metavar="M",
        help="one or more .tflite models, measured side by side (default: the config's, else bundled)",
    )
    mod.add_argument(
        "--threads",
        dest="thread_counts",
        type=_threads,
        metavar="N[,N...]",
        help="interpreter thread counts (default: the config's, 2)",
    )
    mod.add_argument(
        "--runtime", choices=RUNTIMES, default=S, help="default: ai_edge_litert, else tflite_runtime"
    )
    mod.add_argument("--threshold", type=number, default=S, help="presence threshold (default: the model's)")
    mod.add_argument(
        "--refine",
        choices=REFINE_MODES,
        default=S,
        help="ours looks again, as edge-run --refine (the invoke stage then sums every look; the "
        "textbook loop looks once; default auto: what edge-convert stored in the model)",
    )
    mod.add_argument(
        "--amx",
        action="store_true",
        help="let XNNPACK use AMX (x86; denied by default, see edge.runtime.deny_amx; the edge-run "
        "started by --cold-start denies it, as edge-run always does)",
    )
    src = add_source_arguments(p, "--demo")
    src.add_argument("--roi", type=_roi, default=S, metavar="X,Y,W,H", help="region inspected, normalised")
    src.add_argument(
        "--trigger",
        choices=[k for k in TRIGGER_KINDS if k != "gpio"],  # no photo-eye at the bench
        default=S,
        help="default here: every-frame, so the model runs on every frame as in the textbook loop",
    )
    run = p.add_argument_group("measuring")
    run.add_argument(
        "--frames",
        type=int_up_to(MAX_FRAMES, "its timings are kept in memory"),
        default=600,
        help="frames measured per run (default %(default)s)",
    )
    run.add_argument(
        "--warmup",
        type=int_up_to(MAX_FRAMES, "its timings are kept in memory"),
        default=10,
        help="frames not measured at each block's start (default %(default)s)",
    )
    run.add_argument(
        "--block",
        type=int_up_to(MAX_FRAMES, "its timings are kept in memory"),
        default=100,
        help="frames per run per round, the runs interleaved (default %(default)s)",
    )
    run.add_argument(
        "--baseline", action="store_true", help="also run the textbook loop on the same source and model"
    )
    run.add_argument("--invoke-only", action="store_true", help="time the interpreter's invoke alone")
    run.add_argument(
        "--overlay",
        action="store_true",
        help="draw the overlay on every frame, as --display/--record make it",
    )
    run.add_argument(
        "--log",
        action="store_true",
        help="write the verdict log and MISSING/WRONG snapshots (to a temporary folder)",
    )
    run.add_argument(
        "--prefetch",
        type=non_negative_int,
        default=DEFAULT_PREFETCH,
        help="as fast as possible: frames decoded ahead on a capture thread, as edge-run does (0: "
        "decode in the loop's thread; default %(default)s)",
    )
    run.add_argument(
        "--decode-threads",
        type=positive_int,
        metavar="N",
        help="video files: FFmpeg decoder threads in both loops (default: ours 1 when it decodes "
        "ahead on its own thread, the textbook loop OpenCV's default, one per core)",
    )
    run.add_argument(
        "--cpus", type=positive_int, help="pin the run to this many cores (sched_setaffinity; default: all)"
    )
    run.add_argument(
        "--cold-start",
        type=int_up_to(1000, "each is a process start", low=0),
        default=0,
        metavar="K",
        help="also start edge-run K times per model and thread count: process start to first verdict "
        "(default: not measured)",
    )
    run.add_argument("--json", type=path_arg, metavar="FILE", help="write the report as JSON")
    return p


def load_config(args: argparse.Namespace) -> Config:
    overrides = overrides_from(args)
    if args.config is None and "source.kind" not in overrides:
        overrides["source.kind"] = "demo"
    overrides.setdefault("trigger.kind", "every-frame")
    config = Config.load(args.config, overrides)
    check_source_flags(args, config.source.kind)
    config = with_video_pace(config, args)
    for warning in idle_warnings(config, list(overrides), "source"):  # the bench drops the rest
        _log.warning("%s", warning)  # logged, so that the report's warnings keep it
    # the bench never writes where the station writes: its outputs go to a temporary folder;
    # nor does it drive the station's pins, serve its web view or publish to its broker
    return dataclasses.replace(
        config,
        output=OutputConfig(),
        run=dataclasses.replace(config.run, duration=None),
        gpio=GpioConfig(),
        http=HttpConfig(),
        mqtt=MqttConfig(),
    )


def pin_cpus(n: int) -> list[int]:
    """Pin every thread of this process (and those it starts) to the first ``n`` allowed cores."""
    if not hasattr(os, "sched_setaffinity"):
        raise CliError("--cpus needs Linux (os.sched_setaffinity)")
    allowed = sorted(os.sched_getaffinity(0))
    if n > len(allowed):
        raise CliError(f"--cpus: expected at most {len(allowed)} (the cores this process may use), got {n}")
    cpus = allowed[:n]
    # numpy's and OpenCV's thread pools exist already: each thread has its own affinity
    for tid in [int(t) for t in os.listdir("/proc/self/task")] if Path("/proc/self/task").is_dir() else [0]:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, cpus)
    return cpus


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    for key in ("Model", "model name"):  # Raspberry Pi: "Model : Raspberry Pi 5 ..."
        for line in text.splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key and value.strip():
                return value.strip()
    return platform.machine()


def edge_run_argv(config: Config, model: Path, threads: int, events: Path) -> list[str]:
    """``edge-run`` flags for the same source, region and model, one frame, its verdict logged. A
    stream's address goes in a config file beside ``events``, readable by this user only: its
    password would show on the child's command line (``ps``, /proc) as a flag."""
    s = config.source
    argv = [sys.executable, "-m", "edge.cli.run"]
    if s.kind == "url":
        secret = events.with_name(events.stem + ".source.toml")
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:  # a JSON string is a TOML basic string
            f.write(f'[source]\nkind = "url"\nurl = {json.dumps(str(s.url), ensure_ascii=False)}\n')
        argv += ["--config", str(secret)]
    else:
        argv += {
            "demo": ["--demo", "--seed", str(config.demo.seed)]
            + (["--demo-variants", str(config.demo.variants)] if config.demo.variants else [])
            + (["--demo-stamps", str(config.demo.stamps)] if config.demo.stamps else [])
            + (["--expect", config.decision.expect] if config.decision.expect else []),
            "video": ["--video", str(s.video)],
            "images": ["--images", str(s.images)],
            "camera": ["--camera", str(s.camera)],
            "picamera": ["--picamera", str(s.camera)],
        }[s.kind]
    fps = s.pace_fps if s.kind == "video" else s.fps
    given = (
        ("width", s.width),
        ("height", s.height),
        ("fps", fps),
        ("exposure_ms", s.exposure_ms),
        ("gain", s.gain),
        ("mains_hz", s.mains_hz),
    )
    for dest, value in given:
        if value is not None and s.kind in SOURCE_FLAG_KINDS[dest]:  # a camera config's size: not a video's
            argv += ["--" + dest.replace("_", "-"), str(value)]
    if s.as_fast_as_possible and s.kind in SOURCE_FLAG_KINDS["as_fast_as_possible"]:
        argv.append("--as-fast-as-possible")
    if config.inspection.roi is not None:
        argv += ["--roi", ",".join(f"{v:g}" for v in config.inspection.roi)]
    if config.model.runtime:
        argv += ["--runtime", config.model.runtime]
    argv += ["--refine", config.model.refine]
    argv += [
        "--model",
        str(model),
        "--threads",
        str(threads),
        "--trigger",
        "every-frame",
        "--max-frames",
        "1",
    ]
    return [*argv, "--events", str(events)]


def cold_start(config: Config, model: Path, threads: int, times: int, folder: Path) -> dict[str, object]:
    """Start ``edge-run`` ``times`` times: seconds from before the process starts to its first verdict."""
    from edge.bench import stage_stats

    seconds: list[float] = []
    steps = 0
    while len(seconds) < times:
        events = folder / f"cold_{len(seconds)}.jsonl"
        argv = edge_run_argv(config, model, threads, events)
        offset = time.time() - time.monotonic()
        t0 = time.time()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            message = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            raise CliError(f"cold start: edge-run exited with {proc.returncode} ({message})")
        first = json.loads(events.read_text().splitlines()[0])
        events.unlink()
        if abs(time.time() - time.monotonic() - offset) > COLD_START_SLACK_S:  # the clock was set meanwhile
            steps += 1
            if steps > COLD_START_STEPS:
                raise CliError("cold start: the wall clock kept stepping (NTP?); measure again later")
            continue
        seconds.append(float(first["epoch"]) - t0)  # the verdict's wall time, to the millisecond
    return {**stage_stats(seconds), "n": times}


def bench(args: argparse.Namespace, config: Config) -> dict[str, Any]:
    """Measure what ``args`` ask for; the report (see docs/bench.md for its schema)."""
    from edge.bench import background_cores, cpu_seconds, rounded

    start, t0 = cpu_seconds(), time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        report = _bench(args, config, Path(tmp))
    wall = time.monotonic() - t0
    report["wall_s"] = round(wall, 3)
    report["background_cores"] = rounded(background_cores(start, cpu_seconds(), wall), 2)
    if report["background_cores"] is not None:
        report["title"] += f"; other processes kept {report['background_cores']:.2f} cores busy meanwhile"
    return report


def _measure(loops: list, detectors: list, view, args: argparse.Namespace) -> tuple[int, bool]:
    """Run the loops' blocks, interleaved (the order reversed every other round), until each has
    ``args.frames`` frames; returns the rounds run and whether a stop signal cut them short (what
    the blocks done so far measured stands)."""
    from edge import bench as b

    # a finite source that ends mid-block gives that block fewer frames: more rounds make up for it
    planned = math.ceil(args.frames / args.block)
    rounds = 0
    try:
        while rounds < 2 * planned + 2:
            short = [k for k, (totals, _) in enumerate(loops) if totals.frames < args.frames]
            if not short:
                break
            for k in short if rounds % 2 == 0 else short[::-1]:
                totals, runner = loops[k]
                n = min(args.block, args.frames - totals.frames)
                if runner is None:
                    block = b.run_invoke_block(detectors[k], view, n, args.warmup)
                else:
                    block = runner.block(n, args.warmup)
                if block.stopped:  # the loop took the signal; the bench stops with it
                    raise KeyboardInterrupt(block.stopped)
                totals.add(block)
            rounds += 1
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM: report what the blocks done so far measured
        return rounds, True
    finally:
        for _, runner in loops:
            if runner is not None:
                runner.close()
    return rounds, False


def _bench_warnings(
    args: argparse.Namespace,
    config: Config,
    source_name: str,
    runs: list[dict[str, Any]],
    rounds: int,
    interrupted: bool,
    cold_interrupted: bool,
) -> list[str]:
    """What the figures rest on, where it is less than asked for."""
    short_runs = sorted({r["frames"] for r in runs if r["frames"] < args.frames})
    warnings = (
        [
            f"{source_name} gave {' or '.join(map(str, short_runs))} of the {args.frames} frames asked for "
            f"per run in {rounds} rounds (each block of {args.block} skips {args.warmup} warm-up frames "
            "and the source ended early); the figures rest on fewer frames"
        ]
        if short_runs and not interrupted
        else []
    )
    if cold_interrupted:
        started = sum("cold_start_s" in r for r in runs)
        warnings.insert(
            0,
            f"interrupted during the cold starts: every block measured, the cold start of {started} of "
            f"the {len(runs)} runs",
        )
    elif interrupted:
        warnings.insert(
            0,
            f"interrupted in round {rounds + 1}: {' or '.join(str(r['frames']) for r in runs)} of the "
            f"{args.frames} frames asked for per run measured"
            + (", no cold start" if args.cold_start else "")
            + "; the figures rest on fewer frames",
        )
    if not args.invoke_only and any(r["invoke_ms_p50"] is None for r in runs):
        warnings.append(
            f"the model never ran on the {args.frames} frames asked for (trigger {config.trigger.kind}: "
            "no product in the region); the model's stages are null. Use --trigger every-frame, or a "
            "source where products cross"
        )
    return warnings


def _bench(args: argparse.Namespace, config: Config, tmp: Path) -> dict[str, Any]:
    from edge import bench as b
    from edge.cli.run import build_decider, build_sinks, build_source, build_trigger, inspection_roi
    from edge.contract import prepare_input
    from edge.runtime import TFLiteDetector, cpu_has_amx, refine_for
    from edge.sources import EndOfStream

    cpus = pin_cpus(args.cpus) if args.cpus else sorted(getattr(os, "sched_getaffinity", lambda _: [])(0))
    models = args.models or [config.model.path]
    thread_counts = args.thread_counts or [config.model.threads]
    arms = []  # (model, threads, detector)

    def refine_of(detector) -> str:
        return refine_for(detector.metadata, config.model.refine, str(detector.path))

    for model in models:
        for threads in thread_counts:
            detector = TFLiteDetector(model, threads, config.model.runtime, amx=args.amx)
            refine_of(detector)  # a mode that does not fit the model fails before anything runs
            arms.append((model, threads, detector))
    s = config.source
    unpaced = s.kind == "images" or (s.kind in ("demo", "video") and s.as_fast_as_possible)
    live = s.kind in ("camera", "picamera", "url")
    # the source opens once here, so a bad one fails before anything is measured
    source, truth = build_source(config)
    roi = inspection_roi(config, truth)
    with source:
        first = None
        while first is None:
            try:
                first = source.read(5.0)
            except EndOfStream:
                raise CliError(
                    f"{source.name}: no usable frame (every frame was unreadable or too small)"
                ) from None
            if first is None and live:
                raise CliError(f"{source.name}: no frame within 5 s")
        source_name, view = source.name, prepare_input(first.image, roi)

    prefetch = args.prefetch if unpaced else 0
    log_ids = itertools.count()

    def parts_for(detector) -> b.PipelineParts:
        def sinks(fps: float | None) -> list:
            # each run its own log and snapshots (a verdict log has one writer at a time)
            n = next(log_ids)
            output = OutputConfig(events=tmp / f"verdicts_{n}.jsonl", snapshots=tmp / f"snapshots_{n}")
            out = build_sinks(dataclasses.replace(config, output=output), fps) if args.log else []
            return [*out, b.DrawEveryFrame()] if args.overlay else out

        return b.PipelineParts(
            build_source=lambda: build_source(config),
            detector=detector,
            make_trigger=lambda: build_trigger(config),
            make_decider=lambda: build_decider(config, detector),
            make_sinks=sinks,
            roi=roi,
            refine=refine_of(detector),
            prefetch=prefetch,
            decode_threads=args.decode_threads or (1 if prefetch else None),
        )

    ours = [b.Totals() for _ in arms]
    textbook = [b.Totals() for _ in arms]
    pace = not unpaced and not live

    def textbook_device():
        return b.with_decode_threads(build_source(config)[0].device, args.decode_threads)

    loops: list[tuple[b.Totals, Any]] = []  # (where its blocks go, what runs them), per arm
    for i, (_, _, detector) in enumerate(arms):
        if args.invoke_only:
            loops.append((ours[i], None))
            continue
        loops.append((ours[i], b.PipelineRun(parts_for(detector), keep_open=unpaced)))
        if args.baseline:
            loops.append(
                (textbook[i], b.TextbookRun(textbook_device, detector, roi, pace, keep_open=unpaced))
            )
    rounds, interrupted = _measure(loops, [d for _, _, d in arms], view, args)
    cold_interrupted = False
    b.say_end_hints([runner for _, runner in loops])
    if interrupted:
        measured = [i for i in range(len(arms)) if ours[i].frames]
        if not measured:
            raise KeyboardInterrupt
        arms, ours, textbook = ([x[i] for i in measured] for x in (arms, ours, textbook))
    runs = []
    for i, (model, threads, detector) in enumerate(arms):
        if ours[i].frames == 0:
            smaller = " or a smaller --warmup (at least 1)" if args.warmup > 1 else ""
            raise CliError(
                f"{source_name}: ended within the warm-up ({args.warmup} frames); use a source of "
                f"more than {args.warmup} frames{smaller}"
            )
        run: dict[str, Any] = {
            "model": str(detector.path),
            "model_id": detector.model_id,
            "threads": threads,
            "amx_denied": bool(detector.amx_denied),
            "refine": "off" if args.invoke_only else refine_of(detector),
            **ours[i].summary(measure_overhead=unpaced and not args.invoke_only),
        }
        if args.invoke_only:
            for key in ("wall_ms_per_frame", "decode_ms_p50", "frame_age_ms", "dropped"):
                run.pop(key)
        if args.baseline and textbook[i].frames:
            tb = textbook[i].summary(measure_overhead=False)
            run.update(
                baseline_fps=tb["fps"],
                baseline_frame_age_ms_p50=tb["frame_age_ms_p50"],
                baseline_frame_age_ms_p99=tb["frame_age_ms_p99"],
                baseline_cpu_cores=tb["cpu_cores"],
                baseline_stages=tb["stages"],
                fps_ratio=b.rounded(b.ratio(run["fps"], tb["fps"])),
                frame_age_p99_ratio=b.rounded(b.ratio(run["frame_age_ms_p99"], tb["frame_age_ms_p99"])),
            )
        if args.cold_start and not interrupted:
            try:
                run["cold_start_s"] = cold_start(
                    config, model or detector.path, threads, args.cold_start, tmp
                )
            except KeyboardInterrupt:  # the blocks measured stand; the cold starts left are not taken
                interrupted = cold_interrupted = True
        runs.append(run)
    warnings = _bench_warnings(args, config, source_name, runs, rounds, interrupted, cold_interrupted)
    runtime = arms[0][2].runtime
    has_amx = cpu_has_amx()
    denied = any(d.amx_denied for _, _, d in arms)
    if args.invoke_only:
        how = "invoke only"
    elif unpaced:
        how = "as fast as possible" + (f", {args.prefetch} frames decoded ahead" if args.prefetch else "")
    elif live:
        how = "live"
    else:
        how = "paced at the source's frame rate"
    if s.kind == "video" and not args.invoke_only:
        ours_dt = args.decode_threads or (1 if prefetch else None)
        how += f", decoder threads: ours {ours_dt or 'default'}" + (
            f", textbook {args.decode_threads or 'default'}" if args.baseline else ""
        )
    title = (
        f"{PROG}: {source_name}, {how}"
        + ("" if args.invoke_only else f", trigger {config.trigger.kind}")
        + (", overlay drawn" if args.overlay else "")
        + (", verdict log and snapshots written" if args.log else "")
        + f"; {args.frames} frames per run in {rounds} round(s) of up to {min(args.block, args.frames)}, "
        f"warm-up {args.warmup} "
        f"per block not measured; {runtime.name} {runtime.version}; {len(cpus)} core(s) of "
        f"{os.cpu_count()} ({cpu_model()}); AMX "
        + ("denied" if denied else "allowed" if has_amx else "absent")
    )
    return {
        "schema": b.SCHEMA,
        "title": title,
        "mode": "invoke-only" if args.invoke_only else "pipeline",
        "source": source_name,
        "source_kind": s.kind,
        "as_fast_as_possible": unpaced,
        "trigger": config.trigger.kind,
        "prefetch": prefetch,
        "decode_threads": args.decode_threads,
        "overlay": bool(args.overlay),
        "log": bool(args.log),
        "baseline": bool(args.baseline and not args.invoke_only),
        "frames": args.frames,
        "warmup": args.warmup,
        "block": args.block,
        "rounds": rounds,
        "cpus": cpus,
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "runtime": f"{runtime.name} {runtime.version}",
        "cpu_has_amx": has_amx,
        "amx_denied": denied,
        "peak_rss_mb": b.rounded(b.peak_rss_mb(), 1),
        "interrupted": interrupted,
        "warnings": warnings,
        "runs": runs,
    }


@pipe_closed_quietly
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log_to_stderr(PROG)
    with warnings_kept() as said:  # what the config and the source say, for the report to keep
        return _main(args, said)


def _main(args: argparse.Namespace, said: list[str]) -> int:
    from edge.bench import format_report
    from edge.pipeline import stop_signals
    from edge.runtime import ModelError
    from edge.sinks import SinkError
    from edge.sources import SourceError

    try:
        if args.invoke_only:  # flags of the loop: accepted, they would be reported as if they had run
            loop = [
                f
                for f, on in (("--baseline", args.baseline), ("--overlay", args.overlay), ("--log", args.log))
                if on
            ]
            loop += [f"--{k}" for k in ("trigger", "refine") if hasattr(args, k)]  # given (no default)
            loop += ["--decode-threads"] * (args.decode_threads is not None)
            loop += ["--prefetch"] * (args.prefetch != DEFAULT_PREFETCH)
            if loop:
                raise CliError(
                    f"--invoke-only times the interpreter alone; {', '.join(loop)} "
                    f"{'needs' if len(loop) == 1 else 'need'} the whole loop"
                )
        if args.json is not None:
            check_output_file(args.json, "the report")
        config = load_config(args)
        if args.json is not None:  # before the measurement: the report must not replace what it reads
            from edge.cli.run import read_paths

            inputs, images = read_paths(config, args.config, args.models or ())
            if problem := clash([("--json", args.json)], inputs, images):
                raise CliError(problem)
            refuse_non_report(args.json, "the report")  # (after the clash, which says more)
        with stop_signals(interrupt):  # SIGTERM (systemctl stop, timeout) wherever it comes: as Ctrl-C
            report = bench(args, config)
    except (CliError, ConfigError, ModelError, SourceError, SinkError, OSError) as exc:
        return fail(PROG, exc)
    except KeyboardInterrupt:
        remove_made_folders()
        print(f"{PROG}: interrupted before anything was measured; nothing written", file=sys.stderr)
        return 130
    own = list(report["warnings"])  # the others are on stderr already
    report["warnings"] += said
    if args.json is not None:  # first: a reader of the table that goes away must not lose it
        try:
            write_json(args.json, report)
        except OSError as exc:
            return fail(PROG, exc)
    print(format_report(report), flush=True)
    for warning in own:
        warn(PROG, warning)
    return 130 if report["interrupted"] else 0


if __name__ == "__main__":
    sys.exit(main())
