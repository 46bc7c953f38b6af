"""``edge-run``: watch a line, draw the stamp's box, one verdict per product, flag and log MISSING.

Examples::

    edge-run --demo --duration 20                    # a synthetic line, the bundled model, headless
    edge-run --camera 0 --roi 0.2,0,0.6,1 --events verdicts.jsonl --snapshots missing/
    edge-run --config /etc/stampline/stampline.toml  # the service
    edge-run --check-config /etc/stampline/stampline.toml
    edge-run --demo --demo-variants 3 --expect qc-passed --model tests/fixtures/variants_int8.tflite
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import ipaddress
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.cli.common import (
    CliError,
    OneLineParser,
    check_output_file,
    fail,
    log_to_stderr,
    non_negative_int,
    not_a_report,
    number,
    number_or_auto,
    path_arg,
    pipe_closed_quietly,
    positive_int,
    thread_count,
    warn,
    write_json,
)
from edge.config import (
    GPIO_PINS,
    MAX_ROTATED_LOGS,
    RUNTIMES,
    SOURCE_KEY_KINDS,
    TRIGGER_KINDS,
    Config,
    ConfigError,
    DecisionConfig,
    GpioConfig,
    OutputConfig,
    SourceConfig,
    TriggerConfig,
    camera_device,
    check_pin,
    idle_settings,
    parse_endpoint,
    pin_key,
    read_config_file,
    secret_warnings,
)
from edge.files import clash, file_in_the_way, same_path
from edge.runtime import BUNDLED_MODEL, REFINE_MODES

if TYPE_CHECKING:
    from edge.demo import DemoLine
    from edge.synth import Stamp

PROG = "edge-run"


def _roi(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected x,y,w,h (four numbers), got {text!r}") from None
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"expected x,y,w,h (four numbers), got {text!r}")
    return values


def _trigger(text: str) -> str | tuple[str, int | str]:
    kind, _, pin = text.partition(":")
    if kind == "gpio" and pin:
        problem = check_pin(pin)
        if problem is not None:
            raise argparse.ArgumentTypeError(f"gpio:PIN: expected PIN to be {problem}, got {pin!r}")
        return "gpio", int(pin) if pin.isdigit() else pin
    if text in TRIGGER_KINDS and text != "gpio":
        return text
    raise argparse.ArgumentTypeError(
        f"expected occupancy, every-frame or gpio:PIN (a BCM number like gpio:17), got {text!r}"
    )


def _pin(text: str) -> int | str:
    problem = check_pin(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"expected {problem}, got {text!r}")
    return int(text) if text.isdigit() else text


def _endpoint(default_host: str | None, default_port: int | None):
    def parse(text: str) -> str:
        try:
            parse_endpoint(text, default_host, default_port)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    return parse


def add_station_arguments(p: argparse.ArgumentParser) -> None:
    """The station's flags (GPIO outputs, web view, MQTT); everything else is in the config's
    [gpio], [http], [mqtt] and [watchdog] tables."""
    S = argparse.SUPPRESS
    st = p.add_argument_group("station (see Wiring a station in the README)")
    st.add_argument(
        "--http",
        type=_endpoint("127.0.0.1", None),
        default=S,
        metavar="HOST:PORT",
        help="serve the live view, /metrics, /healthz and /api/status; :PORT or PORT alone listens on "
        "127.0.0.1 only (default: off)",
    )
    st.add_argument(
        "--http-token",
        default=S,
        metavar="TOKEN",
        help="a token the web view asks for: 8 or more letters, digits or . _ ~ - (default: none; a "
        "service keeps it in http.token_file, off the command line)",
    )
    st.add_argument(
        "--mqtt",
        type=_endpoint(None, 1883),
        default=S,
        metavar="HOST[:PORT]",
        help="publish every verdict of --events to this broker, QoS 1, none lost (default: off)",
    )
    st.add_argument(
        "--station", default=S, metavar="NAME", help="the station's name in MQTT topics (default: host name)"
    )
    st.add_argument(
        "--reject-pin", type=_pin, default=S, metavar="PIN", help="pulse this pin for MISSING and WRONG"
    )
    st.add_argument(
        "--reject-delay",
        type=number,
        default=S,
        metavar="S",
        help=f"from the trigger edge (or the verdict) to the pulse (default {GpioConfig.reject_delay_s:g})",
    )
    st.add_argument(
        "--reject-pulse",
        type=number,
        default=S,
        metavar="S",
        help=f"the pulse's length (default {GpioConfig.reject_pulse_s:g})",
    )


#: flag (argparse dest) -> config key; a flag given on the command line overrides the file
OVERRIDES = {
    "camera": "source.camera",
    "video": "source.video",
    "url": "source.url",
    "images": "source.images",
    "width": "source.width",
    "height": "source.height",
    "fps": "source.fps",
    "exposure_ms": "source.exposure_ms",
    "gain": "source.gain",
    "mains_hz": "source.mains_hz",
    "as_fast_as_possible": "source.as_fast_as_possible",
    "seed": "demo.seed",
    "demo_variants": "demo.variants",
    "demo_stamps": "demo.stamps",
    "model": "model.path",
    "threads": "model.threads",
    "runtime": "model.runtime",
    "threshold": "model.threshold",
    "refine": "model.refine",
    "roi": "inspection.roi",
    "trigger": "trigger.kind",
    "min_hits": "decision.min_hits",
    "expect": "decision.expect",
    "events": "output.events",
    "events_max_mb": "output.events_max_mb",
    "events_keep": "output.events_keep",
    "snapshots": "output.snapshots",
    "snapshot_max_count": "output.snapshot_max_count",
    "snapshot_max_mb": "output.snapshot_max_mb",
    "summary": "output.summary",
    "record": "output.record",
    "display": "output.display",
    "heatmap": "output.heatmap",
    "duration": "run.duration",
    "http": "http.listen",
    "http_token": "http.token",
    "mqtt": "mqtt.broker",
    "station": "mqtt.station",
    "reject_pin": "gpio.reject_pin",
    "reject_delay": "gpio.reject_delay_s",
    "reject_pulse": "gpio.reject_pulse_s",
    "max_frames": "run.max_frames",
}


def add_source_arguments(p: argparse.ArgumentParser, default: str) -> argparse._ArgumentGroup:
    """The source flags, shared by edge-run and edge-bench (left-out flags do not override the
    config file)."""
    S = argparse.SUPPRESS
    src = p.add_argument_group(f"source (one of; default: {default})")
    one = src.add_mutually_exclusive_group()
    one.add_argument(
        "--camera", type=camera_device, default=S, metavar="N", help="V4L2 camera index or device path"
    )
    one.add_argument(
        "--picamera",
        type=non_negative_int,
        nargs="?",
        const=None,
        default=S,
        metavar="N",
        help="Raspberry Pi camera (picamera2); N: its number, 1 for a second camera port (default: "
        "the config's source.camera, else 0)",
    )
    one.add_argument("--video", type=path_arg, default=S, metavar="FILE", help="a video file")
    one.add_argument("--url", default=S, help="an RTSP/HTTP stream")
    one.add_argument(
        "--images",
        type=path_arg,
        default=S,
        metavar="DIR",
        help="a folder of images, in the order of their numbers (frame_2 before frame_10); each image "
        "is a product (trigger every-frame) unless --trigger says otherwise",
    )
    one.add_argument("--demo", action="store_true", default=S, help="a synthetic production line (no camera)")
    src.add_argument(
        "--width",
        type=positive_int,
        default=S,
        help="requested frame width (default: the device's; --picamera: 320x240, the ISP scales)",
    )
    src.add_argument(
        "--height", type=positive_int, default=S, help="requested frame height (default: the device's)"
    )
    src.add_argument(
        "--fps",
        type=number,
        default=S,
        help="requested frame rate (default: the device's; --video: the pace instead of the file's)",
    )
    src.add_argument(
        "--exposure-ms",
        type=number_or_auto,
        default=S,
        metavar="MS",
        help="camera: a fixed exposure time, or auto (default: not touched)",
    )
    src.add_argument(
        "--gain",
        type=number_or_auto,
        default=S,
        help="camera: a fixed gain (--picamera: analogue gain, 1.0 none; V4L2: its own units), or auto "
        "(default: not touched)",
    )
    src.add_argument(
        "--mains-hz",
        type=int,
        choices=(50, 60),
        default=S,
        help="camera: the lights' mains frequency; automatic exposure keeps to their flicker "
        "(default: not touched)",
    )
    src.add_argument(
        "--as-fast-as-possible",
        action="store_true",
        default=S,
        help="video/demo: every frame, unpaced, none dropped (default: paced at the frame rate)",
    )
    src.add_argument("--seed", type=int, default=S, help="demo line seed (default 0)")
    variants = src.add_mutually_exclusive_group()
    variants.add_argument(
        "--demo-variants",
        type=positive_int,
        default=S,
        metavar="N",
        help="demo products carry one of the first N procedural stamp variants (edge-synth "
        "--write-stamps): most the --expect one (else the first), a known share another "
        "(default: the single default stamp)",
    )
    variants.add_argument(
        "--demo-stamps",
        type=path_arg,
        default=S,
        metavar="DIR",
        help="demo products carry one of the stamp images in DIR (labels: file stems), as --demo-variants",
    )
    return src


#: source flags and the sources they are for (given with another, they are refused, not ignored):
#: those of their keys, except that ``--fps`` also paces a video (``source.pace_fps``)
SOURCE_FLAG_KINDS = {
    **{k: SOURCE_KEY_KINDS[k] for k in ("width", "height", "exposure_ms", "gain", "mains_hz")},
    "fps": (*SOURCE_KEY_KINDS["fps"], "video"),
    "as_fast_as_possible": SOURCE_KEY_KINDS["as_fast_as_possible"],
    "seed": ("demo",),
    "demo_variants": ("demo",),
    "demo_stamps": ("demo",),
}


def check_source_flags(args: argparse.Namespace, kind: str) -> None:
    """CliError when a source flag was given that the configured source ``kind`` does not use."""
    given = vars(args)
    for dest, kinds in SOURCE_FLAG_KINDS.items():
        if dest in given and given[dest] is not False and kind not in kinds:
            names = [f"--{k}" for k in kinds]
            some = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
            flag = "--" + dest.replace("_", "-")
            raise CliError(f"{flag}: only for {some}, not for the {kind} source")


def with_video_pace(config: Config, args: argparse.Namespace) -> Config:
    """``--fps`` given with a video source paces the file (``source.pace_fps``); a camera's
    ``source.fps`` from a config file does not."""
    if config.source.kind != "video" or "fps" not in vars(args):
        return config
    return dataclasses.replace(config, source=dataclasses.replace(config.source, pace_fps=args.fps, fps=None))


def no_heatmap(detector) -> str:
    return (
        f"output.heatmap (--heatmap): model {detector.model_id} ({detector.path.name}) gives no heatmap "
        "(only grid-head and class-activation models do); none is drawn"
    )


def idle_warnings(config: Config, given: Sequence[str] = (), section: str | None = None) -> list[str]:
    """``edge.config.idle_settings`` as lines, each key with its flag when it has one; ``given``:
    the keys set by flags on this command line (the others came from the config file). A file's
    key left unused because a flag chose another source or trigger (a station's config run once
    on a video) is expected, not said. ``section``: only its keys (``source``)."""
    flags = {key: "--" + dest.replace("_", "-") for dest, key in OVERRIDES.items()}
    if config.source.kind == "video":  # --fps paces a video (with_video_pace)
        flags["source.pace_fps"] = "--fps"
        given = ["source.pace_fps" if key == "source.fps" else key for key in given]
    out = []
    for key, why, because in idle_settings(config):
        if (because in given and key not in given) or (section and not key.startswith(f"{section}.")):
            continue
        if key in given and key in flags:
            key = f"{flags[key]} ({key})"
        elif key in flags:
            key = f"{key} ({flags[key]})"
        out.append(f"{key}: {why}; ignored")
    return out


def build_parser() -> argparse.ArgumentParser:
    S = argparse.SUPPRESS  # flags left out do not override the config file
    p = OneLineParser(
        prog=PROG,
        description="Inspect products for their stamp: live frames -> boxes -> one verdict per product.",
        epilog="Flags override the config file. Exit status 2: bad input (one line on stderr).",
    )
    p.add_argument("--config", type=path_arg, help="TOML config file (flags override it)")
    p.add_argument(
        "--check-config",
        type=path_arg,
        nargs="+",
        metavar="FILE",
        help="validate a config file and exit; several: the stations of one machine, also checked "
        "against each other (cameras, outputs, web port, MQTT identity, GPIO pins)",
    )
    add_source_arguments(p, "camera 0")
    mod = p.add_argument_group("model")
    mod.add_argument("--model", type=path_arg, default=S, help="a .tflite model (default: the bundled one)")
    mod.add_argument("--threads", type=thread_count, default=S, help="interpreter threads (default 2)")
    mod.add_argument(
        "--runtime", choices=RUNTIMES, default=S, help="default: ai_edge_litert, else tflite_runtime"
    )
    mod.add_argument("--threshold", type=number, default=S, help="presence threshold (default: the model's)")
    mod.add_argument(
        "--refine",
        choices=REFINE_MODES,
        default=S,
        help="look again: a box model at a crop around the box, zoom (2 invokes a judged frame) or "
        "zoom-flip (3: the crop and its mirror image); a centre model with a heatmap at the view's four "
        "corner tiles, tiles (5: the surest look's centre); off (1); default auto: what edge-convert "
        "stored in the model",
    )
    dec = p.add_argument_group("inspection")
    dec.add_argument(
        "--roi",
        type=_roi,
        default=S,
        metavar="X,Y,W,H",
        help="region inspected, normalised (default: whole frame; --demo: the demo line's own region)",
    )
    dec.add_argument(
        "--trigger",
        type=_trigger,
        default=S,
        metavar="{" + ",".join(k if k != "gpio" else "gpio:PIN" for k in TRIGGER_KINDS) + "}",
        help=f"where products begin and end; gpio:PIN: a photo-eye on a GPIO pin (BCM number or "
        f"gpiozero name; see [gpio] in the config) (default {TriggerConfig.kind})",
    )
    dec.add_argument(
        "--min-hits",
        type=positive_int,
        default=S,
        help=f"frames that must see the stamp for OK; a product judged on fewer frames (a photo of "
        f"--images, a quick pass) needs all of them (default {DecisionConfig.min_hits})",
    )
    dec.add_argument(
        "--expect",
        default=S,
        metavar="LABEL",
        help="the stamp variant every product must carry, a label of the model's class head: a "
        "product with another variant is WRONG, flagged like MISSING (default: any variant is OK)",
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--events", type=path_arg, default=S, metavar="FILE", help="verdict log (JSON lines, appended)"
    )
    out.add_argument(
        "--events-max-mb",
        type=number,
        default=S,
        help=f"the verdict log rotates at this size to FILE.1, FILE.2, ... (0: never; default "
        f"{OutputConfig.events_max_mb:g})",
    )
    out.add_argument(
        "--events-keep",
        type=positive_int,
        default=S,
        help=f"rotated verdict logs kept (default {OutputConfig.events_keep})",
    )
    out.add_argument(
        "--snapshots", type=path_arg, default=S, metavar="DIR", help="snapshots of MISSING and WRONG products"
    )
    out.add_argument(
        "--snapshot-max-count",
        type=positive_int,
        default=S,
        help=f"products kept in --snapshots (default {OutputConfig.snapshot_max_count})",
    )
    out.add_argument(
        "--snapshot-max-mb",
        type=number,
        default=S,
        help=f"megabytes kept in --snapshots (default {OutputConfig.snapshot_max_mb:g})",
    )
    out.add_argument("--summary", type=path_arg, default=S, metavar="FILE", help="the run's summary as JSON")
    out.add_argument(
        "--record", type=path_arg, default=S, metavar="FILE.mp4", help="record the annotated stream"
    )
    out.add_argument("--display", action="store_true", default=S, help="show a window (needs a display)")
    out.add_argument(
        "--heatmap", action="store_true", default=S, help="overlay the model's heatmap (where it looks)"
    )
    add_station_arguments(p)
    run = p.add_argument_group("run")
    run.add_argument("--duration", type=number, default=S, metavar="S", help="stop after S seconds")
    run.add_argument("--max-frames", type=positive_int, default=S, metavar="N", help="stop after N frames")
    run.add_argument("-v", "--verbose", action="store_true", help="log what the loop does (to stderr)")
    return p


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    given = vars(args)
    out = {key: given[dest] for dest, key in OVERRIDES.items() if dest in given}
    kinds = [k for k in ("camera", "video", "url", "images") if k in given]
    if "picamera" in given:
        kinds.append("picamera")
        if given["picamera"] is not None:
            out["source.camera"] = given["picamera"]
    if given.get("demo"):
        kinds.append("demo")
    if kinds:
        out["source.kind"] = kinds[0]
    if kinds == ["images"] and "trigger" not in given:
        out["trigger.kind"] = "every-frame"  # photos of products, not frames of a belt
    if isinstance(given.get("trigger"), tuple):  # gpio:PIN
        out["trigger.kind"], out["gpio.trigger_pin"] = given["trigger"]
    if "http_token" in given:  # the flag's token stands in for the config's, given either way
        out["http.token_file"] = None
    return out


def demo_stamps(config: Config) -> list[Stamp] | None:
    """The stamp variants of the demo line (``demo.variants`` or ``demo.stamps``); None: the
    single default stamp."""
    from edge import synth

    d = config.demo
    if d.variants is not None:
        return synth.variant_stamps(d.variants)
    if d.stamps is not None:
        try:
            return synth.load_stamps([d.stamps])
        except ValueError as exc:
            raise ConfigError(f"demo.stamps: {exc}") from None
    return None


def check_model(config: Config, strict: bool = False) -> str | None:
    """ConfigError unless ``decision.expect`` (if set) is a label of the model's class head and
    ``model.refine`` fits the model's kind; returns the second looks the model will take (None:
    its metadata could not be read).

    Reads only the model's embedded metadata, so it runs before anything is opened. A model that
    cannot be read is left to the detector to report, unless ``strict`` (``--check-config``, which
    opens nothing else): then it is the error."""
    from edge.contract import CLASS, ContractError, read_embedded_metadata, read_model
    from edge.decision import expect_problem
    from edge.runtime import ModelError, refine_for

    path = config.model.path or BUNDLED_MODEL
    try:
        meta = read_embedded_metadata(read_model(path), str(path))
    except OSError as exc:
        if strict:
            raise ConfigError(f"model.path: cannot read {path} ({exc.strerror or exc})") from None
        return None
    except ContractError as exc:
        if strict:
            raise ConfigError(f"model.path: {exc}") from None
        return None
    expect = config.decision.expect
    if expect is not None and (problem := expect_problem(expect, meta.labels, CLASS in meta.outputs)):
        raise ConfigError(f"decision.expect {expect!r}: {problem} (model {path.name})")
    demo = config.demo
    if expect is not None and config.source.kind == "demo" and demo.variants is None and demo.stamps is None:
        # its one stamp has no variant name, so its ground truth cannot tell OK from WRONG
        raise ConfigError(
            f"decision.expect {expect!r}: the demo line with its one stamp names no variant to compare; "
            "give it variants (--demo-variants N or --demo-stamps DIR) to try --expect"
        )
    try:
        return refine_for(meta, config.model.refine, str(path))
    except ModelError as exc:
        raise ConfigError(f"model.refine: {exc}") from None


def check_source_paths(config: Config) -> None:
    """ConfigError naming the key when a file or folder the source needs is not there
    (``--check-config``: a service must not find out at its start)."""
    s = config.source
    need: list[tuple[str, Path | None, str]] = []
    if s.kind == "video":
        need.append(("source.video", s.video, "file"))
    if s.kind == "images":
        need.append(("source.images", s.images, "folder"))
    if s.kind == "demo" and config.demo.stamps is not None:
        need.append(("demo.stamps", config.demo.stamps, "file or folder"))
    for key, path, kind in need:
        if path is None:
            continue
        if not path.exists():
            raise ConfigError(f"{key}: {path} does not exist (expected a {kind})")
        if (kind == "file" and not path.is_file()) or (kind == "folder" and not path.is_dir()):
            found = "folder" if path.is_dir() else "file"
            raise ConfigError(f"{key}: {path} is a {found} (expected a {kind})")
    if s.kind in ("video", "images"):  # opened as the run opens it: a photo given as the video,
        # a folder without images (a video's first frame is decoded; a folder's files are listed)
        from edge import sources

        device = sources.VideoFile(s.video) if s.kind == "video" else sources.ImageFolder(s.images)
        try:
            device.open()
        except sources.SourceError as exc:
            raise ConfigError(f"source.{s.kind}: {exc}") from None
        finally:
            device.close()


def demo_label_warning(line: DemoLine, labels: Sequence[str]) -> str | None:
    """What makes a demo line's verdicts say little for a model with these labels: stamps on the
    line that the model was not trained on, or an expected variant no product carries. A model
    labelled with the default label learned the procedural seal, the first variant."""
    from edge import contract
    from edge.synth import VARIANTS

    stamps = list(line.labels)
    if not stamps:
        return None
    known = set(labels) | ({VARIANTS[0][0]} if tuple(labels) == contract.DEFAULT_LABELS else set())
    unknown = [x for x in stamps if x not in known]
    if len(unknown) == len(stamps):
        return (
            f"the demo line's stamps {stamps} are none of the model's labels {list(labels)}: it was "
            "trained on other stamps, so its verdicts here say little (give --model one trained on "
            "these stamps)"
        )
    if unknown:
        return (
            f"the demo line's stamps {unknown} are not among the model's labels {list(labels)}: it "
            "was not trained on them, so the verdicts of products carrying them say little"
        )
    if line.expect is not None and line.expect not in stamps:
        return f"--expect {line.expect!r}: no product on the demo line carries it (its stamps: {stamps})"
    return None


def read_paths(
    config: Config, config_path: Path | None, models: Sequence[Path | str | None] = ()
) -> tuple[list[tuple[str, Path | None]], list[tuple[str, Sequence[Path]]]]:
    """What a run reads, as (named paths, named groups of files) for ``edge.files.clash``: the
    config file, the model(s) and the record beside one, the video or the folder of images, the
    files the web view and the broker read; and the images in that folder."""
    s = config.source
    files: list[tuple[str, Path | None]] = [("the config file", config_path)]
    for m in models or [config.model.path]:
        model = Path(m or BUNDLED_MODEL)
        files.append(("model.path", model))
        if model.with_suffix(".json").is_file():  # the model's record beside it (the bundled one's)
            files.append(("the model's record", model.with_suffix(".json")))
    if s.kind == "video":
        files.append(("source.video", s.video))
    files.append(("http.token_file", config.http.token_file))
    files += [
        (f"mqtt.{k}", getattr(config.mqtt, k)) for k in ("password_file", "ca_file", "cert_file", "key_file")
    ]
    images: list[tuple[str, Sequence[Path]]] = []
    if s.kind == "images":
        files.append(("source.images", s.images))
        if s.images is not None and s.images.is_dir():
            from edge.datasets import image_files

            images.append((f"source.images {s.images}", image_files(s.images)))
    return files, images


def check_paths_apart(config: Config, config_path: Path | None = None) -> None:
    """ConfigError when an output would overwrite an input or another output: the verdict log,
    the summary and the recording are three files, none of them a file the run reads (the config
    file, the model, the video or an image read, a token or certificate), and an existing verdict
    log is one (as the run itself refuses)."""
    o = config.output
    inputs, images = read_paths(config, config_path)
    outputs = [("output.events", o.events), ("output.summary", o.summary), ("output.record", o.record)]
    outputs.append(("output.snapshots", o.snapshots))
    if problem := clash(outputs, inputs, images):
        raise ConfigError(problem)
    if o.events is not None:  # what the run would refuse to append to, --check-config refuses too
        from edge.sinks import verdict_log_problem

        if problem := verdict_log_problem(o.events):
            raise ConfigError(f"output.events {o.events}: {problem}")
    # a file where a folder must be (or one of its folders): the run refused it, the check did not
    for key, p, folder in (
        ("output.snapshots", o.snapshots, True),
        ("output.events", o.events, False),
        ("output.summary", o.summary, False),
        ("output.record", o.record, False),
    ):
        if p is not None and (file := file_in_the_way(p if folder else p.parent)) is not None:
            raise ConfigError(f"{key} {p}: {file} is a file, not a folder")
        if p is not None and not folder and p.is_dir():
            raise ConfigError(f"{key} {p}: is a folder (expected a file)")
    # what the recorder refused only once started, --check-config refuses too
    from edge.sinks import record_type_problem

    if o.record is not None and (problem := record_type_problem(o.record)):
        raise ConfigError(f"output.record {o.record}: {problem}")


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | str:
    """A host as an address (``localhost`` is 127.0.0.1), or its name, case folded."""
    name = host.strip("[]").lower()
    try:
        return ipaddress.ip_address("127.0.0.1" if name == "localhost" else name)
    except ValueError:
        return name


def _listen_key(host: str) -> tuple[bool, bool, str]:
    """A web view's listening host as (IPv6?, every address?, the address in one spelling); a
    name is compared as written."""
    ip = _address(host)
    if isinstance(ip, str):
        return False, False, ip
    return ip.version == 6, ip.is_unspecified, str(ip)


def _host_key(host: str) -> str:
    """A broker's host as one machine knows it: case folded, loopback as one."""
    ip = _address(host)
    return "loopback" if not isinstance(ip, str) and ip.is_loopback else host.strip("[]").lower()


def claims(config: Config) -> list[tuple[str, str, str, tuple]]:
    """What a station holds that another on the same machine must not touch: (key, what it does
    with it, the thing, a comparable value) for its camera, the files and folders it writes and
    reads, its web port, MQTT identity and GPIO pins."""
    from edge.station.mqtt import client_id, station_name

    s, o = config.source, config.output
    out: list[tuple[str, str, str, tuple]] = []
    if s.kind == "camera":
        camera = camera_device(s.camera)
        device = f"/dev/video{camera}" if isinstance(camera, int) else str(camera)
        out.append(("source.camera", "read", device, ("camera", os.path.realpath(device))))
    if s.kind == "picamera":
        out.append(("source.camera", "read", f"Pi camera {s.camera}", ("picamera", s.camera)))
    for key, path in (
        ("output.events", o.events),
        ("output.summary", o.summary),
        ("output.record", o.record),
        ("output.snapshots", o.snapshots),
    ):
        if path is not None:  # the verdict log: with its numbering, MQTT state and rotated files
            out.append((key, "write", str(path), ("write", path, key == "output.events")))
    for key, path in (
        ("model.path", config.model.path),
        ("source.video", s.video if s.kind == "video" else None),
        ("source.images", s.images if s.kind == "images" else None),
    ):
        if path is not None:
            out.append((key, "read", str(path), ("read", path)))
    if config.http.listen is not None:
        host, port = parse_endpoint(config.http.listen, "127.0.0.1", None)
        out.append(("http.listen", "listen on", config.http.listen, ("port", host.strip("[]"), port)))
    m = config.mqtt
    if m.broker is not None:
        # one broker whatever the port (a TLS and a plain listener share their clients and topics)
        broker = _host_key(parse_endpoint(m.broker, None, 1883)[0])
        station = station_name(m)
        key = "mqtt.station" if m.station is not None else "mqtt.station, left out: the host name"
        out.append(
            (key, "publish to", f"{m.topic_prefix}/{station}/", ("topics", broker, m.topic_prefix, station))
        )
        client = client_id(m)
        out.append(("mqtt.client_id", "connect to the broker as", client, ("client", broker, client)))
    g = config.gpio
    for name in GPIO_PINS:
        value = getattr(g, name)
        if name == "trigger_pin" and config.trigger.kind != "gpio":
            continue  # not used
        if value is not None and (line := pin_key(value)) is not None:
            out.append((f"gpio.{name}", "use", line, ("pin", line)))
    return out


def _in_log(log: Path, path: Path) -> bool:
    """``path`` is the verdict log ``log`` or one of the files beside it that go with it: its
    numbering (``.next``), MQTT's place in it (``.mqtt``, written through ``.mqtt.tmp``), torn
    lines cut off it (``.torn``) and its rotated files (``.1`` .. ``.999``)."""
    if same_path(log, path):
        return True
    if not (path.name.startswith(log.name + ".") and same_path(log.parent, path.parent)):
        return False
    suffix = path.name[len(log.name) + 1 :]
    return suffix in ("next", "mqtt", "mqtt.tmp", "torn") or (
        suffix.isdigit() and 1 <= int(suffix) <= MAX_ROTATED_LOGS and not suffix.startswith("0")
    )


def _same_claim(a: tuple, b: tuple) -> bool:
    """Two lines' claims (see :func:`claims`) clash: one thing both hold, or one line writes
    what the other reads."""
    if a[0] == "write" and b[0] in ("write", "read"):
        return (
            (a[2] and _in_log(a[1], b[1]))
            or (b[0] == "write" and b[2] and _in_log(b[1], a[1]))
            or (same_path(a[1], b[1]))
        )
    if a[0] == "read" and b[0] == "write":
        return _same_claim(b, a)
    if a[0] != b[0] or a[0] == "read":
        return False
    if a[0] == "port":
        (_, host_a, port_a), (_, host_b, port_b) = a, b
        if port_a != port_b or port_a == 0:
            return False
        (v6_a, any_a, key_a), (v6_b, any_b, key_b) = _listen_key(host_a), _listen_key(host_b)
        if (any_a and v6_a) or (any_b and v6_b):
            return True  # "::" takes the port on every address, IPv4's too
        if v6_a != v6_b:
            return False  # an IPv4 and an IPv6 address are two sockets
        return any_a or any_b or key_a == key_b
    return a == b


def check_lines_apart(named: Sequence[tuple[Path, Config]]) -> None:
    """ConfigError when two station configs meant to run side by side on one machine (two lines,
    one Raspberry Pi: ``edge-run --check-config /etc/stampline/*.toml``) claim the same camera,
    output file or folder, web port, MQTT topics or client id, or GPIO pin, or one writes what
    the other reads; every clash of the first such pair is named, on one line."""
    held = [(path, claims(config)) for path, config in named]
    for i, (path, mine) in enumerate(held):
        for other, theirs in held[:i]:
            said: list[str] = []
            for key, verb, shown, value in mine:
                for other_key, other_verb, other_shown, other_value in theirs:
                    if not _same_claim(value, other_value):
                        continue
                    what = shown if shown == other_shown else f"{other_shown} / {shown}"
                    if verb == "write" == other_verb and not same_path(Path(shown), Path(other_shown)):
                        what += ", a verdict log and a file that goes with it"
                    if verb == other_verb:
                        where = key if key == other_key else f"{other_key} / {key}"
                        said.append(f"both {verb} {what} ({where})")
                    elif verb == "read":
                        said.append(f"{other} writes {other_shown} ({other_key}), which {path} reads ({key})")
                    else:
                        said.append(f"{path} writes {shown} ({key}), which {other} reads ({other_key})")
            if said:
                raise ConfigError(f"{other} and {path}: {'; '.join(said)}; each line needs its own")


def inspection_roi(config: Config, truth: object | None) -> tuple[float, float, float, float] | None:
    """The region inspected: the config's, else the demo line's (its camera looks at its belt
    through it), else None (the whole frame)."""
    return config.inspection.roi if config.inspection.roi is not None else getattr(truth, "roi", None)


def build_trigger(config: Config, first_product: int = 1, station_trigger=None):
    """The trigger ``trigger.kind`` names, numbering products from ``first_product``; a photo-eye's
    (``station_trigger``, the station's GPIO) where the station has one."""
    from edge.decision import EveryFrameTrigger, OccupancyTrigger

    if config.trigger.kind == "every-frame":
        return EveryFrameTrigger(first_product)
    if station_trigger is not None:
        station_trigger.start_numbering(first_product)
        return station_trigger
    return OccupancyTrigger(config.trigger, first_product)


def build_decider(config: Config, detector, first_seq: int = 1):
    """The decider of a run: ``model.threshold``, else the model's own, and ``[decision]``."""
    from edge.decision import Decider

    meta = detector.metadata
    threshold = config.model.threshold or meta.threshold
    return Decider(threshold, config.decision, first_seq, detector.model_id, meta.labels)


def build_source(config: Config):
    """The configured source (not yet opened) and, for the demo, its ground truth."""
    from edge import sources

    s: SourceConfig = config.source
    if s.kind == "demo":
        from edge.demo import DemoCamera, DemoLine

        line = DemoLine(config.demo.seed, demo_stamps(config), config.decision.expect)
        paced = not s.as_fast_as_possible
        src = sources.Source(
            DemoCamera(line), threaded=paced, pace=paced, truth=line.truth_at, prefetch=0 if paced else 2
        )
        return src, line
    controls = sources.CameraControls(s.exposure_ms, s.gain, s.mains_hz)
    if s.kind == "camera":
        device = sources.OpenCVCamera(s.camera, s.width, s.height, s.fps, controls)
        return sources.Source(device, threaded=True, stall_s=s.stall_s), None
    if s.kind == "picamera":
        device = sources.PiCamera(s.width, s.height, s.fps, number=int(s.camera), controls=controls)
        return sources.Source(device, threaded=True, stall_s=s.stall_s), None
    if s.kind == "url":
        stream = sources.StreamURL(
            s.url, timeout_ms=round(s.open_timeout_s * 1000), read_timeout_ms=round(s.stall_s * 1000)
        )
        return sources.Source(stream, threaded=True, stall_s=s.stall_s), None
    if s.kind == "video":
        paced = not s.as_fast_as_possible
        # as fast as possible: decode ahead on one capture thread (FFmpeg's own threads would
        # compete with the model), nothing dropped
        device = sources.VideoFile(s.video, decode_threads=None if paced else 1, fps=s.pace_fps)
        return sources.Source(device, threaded=paced, pace=paced, prefetch=0 if paced else 2), None
    return sources.Source(sources.ImageFolder(s.images), threaded=False), None


def build_sinks(config: Config, fps: float | None) -> list:
    from edge import sinks

    o = config.output
    out: list = []
    log = None
    if o.events is not None:
        rotate_at = int(o.events_max_mb * 2**20) or None  # 0: never (else >= 0.001 MB)
        log = sinks.VerdictLog(o.events, rotate_at, o.events_keep)
        out.append(log)
    if o.snapshots is not None:
        out.append(
            sinks.SnapshotSink(
                o.snapshots,
                o.snapshot_max_count,
                int(o.snapshot_max_mb * 2**20),
                numbering=log,  # entered before the snapshots
            )
        )
    if o.record is not None:
        # frames come in real time unless read as fast as possible or from photos
        realtime = config.source.kind != "images" and not config.source.as_fast_as_possible
        out.append(sinks.VideoRecorder(o.record, fps or 30.0, live=realtime))
    if o.display:
        out.append(sinks.Display())
    return out


def run(config: Config, config_path: Path | None = None) -> int:
    from edge.pipeline import Pipeline, RunOptions, SystemdNotifier, stop_signals
    from edge.runtime import TFLiteDetector, model_warnings, refine_for
    from edge.sinks import VerdictLog
    from edge.station.station import Station

    check_model(config)
    check_paths_apart(config, config_path)
    if config.output.summary is not None:
        check_output_file(config.output.summary, "the summary", json_report=True)
    if config.output.record is not None:
        check_output_file(config.output.record, "the recording")
    source, truth = build_source(config)
    roi = inspection_roi(config, truth)
    with contextlib.ExitStack() as stack:
        # a stop asked for while starting up (systemctl stop) ends the run as soon as the loop
        # starts, with its summary, instead of killing it half-opened
        pending: list[str] = []  # noted, not acted on, until the loop takes the signals over
        stack.enter_context(stop_signals(pending.append))
        # the cheap checks first (camera, files, folders), so a bad one is the only line printed
        stack.enter_context(source)
        built_sinks = build_sinks(config, source.fps)
        for sink in built_sinks:
            stack.enter_context(sink)
        # pins, the web view's port, MQTT's libraries: checked before the model loads
        station = stack.enter_context(Station(config, source.stats))
        detector = TFLiteDetector(config.model.path, config.model.threads, config.model.runtime)
        meta_threshold = detector.metadata.threshold
        refine = refine_for(detector.metadata, config.model.refine, str(detector.path))
        for warning in model_warnings(detector.metadata):
            print(
                f"{PROG}: WARNING: model {detector.model_id} ({detector.path.name}): {warning}",
                file=sys.stderr,
                flush=True,
            )
        if truth is not None and (warning := demo_label_warning(truth, detector.metadata.labels)):
            warn(PROG, warning)
        if config.output.heatmap and not detector.metadata.has_heatmap:
            warn(PROG, no_heatmap(detector))
        runtime = f"{detector.runtime.name} {detector.runtime.version}, {detector.threads} thread(s)"
        frames = source.device.describe() if hasattr(source.device, "describe") else ""
        if config.source.as_fast_as_possible:
            frames += ", as fast as possible" if frames else "as fast as possible"
        print(
            f"{PROG}: {source.name}{f', {frames}' if frames else ''}, "
            f"model {detector.model_id} ({detector.path.name}, {model_facts(detector.metadata)}) "
            f"on {runtime}, region {','.join(f'{v:g}' for v in roi) if roi else 'whole frame'}, "
            f"trigger {config.trigger.kind}, {threshold_said(config.model.threshold, meta_threshold)}, "
            f"second looks {refine}; Ctrl-C to stop",
            flush=True,
        )
        for line in station.describe():
            print(f"{PROG}: {line}", flush=True)
        for warning in secret_warnings(config):  # (the secrets read: how they are kept and sent)
            warn(PROG, warning)
        log = next((s for s in built_sinks if isinstance(s, VerdictLog)), None)
        trigger = build_trigger(config, log.next_product if log else 1, station.trigger)
        decider = build_decider(config, detector, log.next_seq if log else 1)
        pipeline = Pipeline(
            source,
            station.watch(detector, runtime),
            trigger,
            decider,
            [*built_sinks, *station.sinks],
            RunOptions(
                roi=roi,
                refine=refine,
                heatmap=config.output.heatmap,
                model_id=detector.model_id,
                runtime=runtime,
            ),
            truth=truth,
            notifier=SystemdNotifier(),
        )
        if pending:
            pipeline.stop(pending[0])
        summary = pipeline.run(config.run.duration, config.run.max_frames)
    print(summary.format(), flush=True)
    if config.output.summary is not None:
        write_json(config.output.summary, summary.to_dict())
    if pipeline.failure is not None:  # the summary is out; now the error, exit status 2
        raise pipeline.failure
    if summary.frames == 0 and summary.skipped:  # e.g. a folder of files that are not images
        from edge.sources import SourceError

        raise SourceError(
            f"{summary.source}: no usable frame ({summary.skipped} unreadable or too small, none inspected)"
        )
    if summary.frames == 0 and summary.end.startswith("duration"):
        # a stream that opened and never gave a frame (an .mp4 served over HTTP that OpenCV
        # cannot decode, a camera that stays dark): a run that checked nothing has failed
        from edge.sources import SourceError

        raise SourceError(
            f"{summary.source}: no frame came in {summary.duration_s:.0f} s; nothing was inspected "
            f"({summary.reopens} reopens)"
        )
    return 0


def config_key_of(message: str, config: Config, overrides: Mapping[str, object]) -> str | None:
    """The config file's key whose file, folder or address ``message`` (a model's or source's
    error) is about; None when a flag gave it, or the message is about none of them."""
    s = config.source
    named = [("model.path", config.model.path)]
    named += [(f"source.{kind}", getattr(s, kind)) for kind in ("video", "images", "url") if s.kind == kind]
    for key, value in named:
        if value is not None and key not in overrides and str(value) in message:
            return key
    return None


def check_config(path: Path, args: argparse.Namespace) -> tuple[Config, str]:
    """``--check-config``: the config file at ``path`` (with the flags given) checked as the
    service would find it at its start, and the line saying it is fine."""
    from edge.runtime import ModelError, NoRuntime, TFLiteDetector, model_warnings

    overrides = overrides_from(args)
    config = with_video_pace(Config.load(path, overrides), args)
    try:
        refine = check_model(config, strict=True)
        try:  # loaded as the run loads it: a file cut short past its metadata, tensors of another model
            detector = TFLiteDetector(config.model.path, 1, config.model.runtime)
        except ModelError as exc:
            runtime = isinstance(exc, NoRuntime)
            key = ("model.runtime" if config.model.runtime else "the install") if runtime else "model.path"
            raise ConfigError(f"{key}: {exc}") from None
        check_source_paths(config)
        check_paths_apart(config, path)
    except ConfigError as exc:  # named like the file's own errors
        raise ConfigError(f"{path}: {exc}") from None
    for warning in model_warnings(detector.metadata):
        print(
            f"{PROG}: WARNING: {path}: model {detector.model_id} ({detector.path.name}): {warning}",
            file=sys.stderr,
        )
    for warning in relative_path_warnings(path, config):
        warn(PROG, f"{path}: {warning}")
    for warning in idle_warnings(config, list(overrides)):
        warn(PROG, f"{path}: {warning}")
    if config.output.heatmap and not detector.metadata.has_heatmap:
        warn(PROG, f"{path}: {no_heatmap(detector)}")
    if config.source.kind == "picamera":  # checked where the run would start: warned, not refused
        from edge.sources import picamera_problem

        if problem := picamera_problem():
            warn(PROG, f"{path}: source.kind picamera: {problem}; the run fails here until then")
    if config.source.kind in ("camera", "picamera"):
        from edge.sources import exposure_warnings

        s = config.source
        for warning in exposure_warnings(s.exposure_ms, s.mains_hz, s.fps):
            warn(PROG, f"{path}: {warning}")
    from edge.station.common import StationError

    try:  # (their errors name the key; the file first, as every other error of the check)
        if config.mqtt.broker is not None:
            from edge.station.mqtt import read_password, tls_context

            read_password(config.mqtt)
            tls_context(config.mqtt)
        if config.http.listen is not None:
            from edge.station.common import http_token

            http_token(config.http)
    except StationError as exc:
        raise StationError(f"{path}: {exc}") from None
    for warning in secret_warnings(config):  # (the secrets read: how they are kept and sent)
        warn(PROG, f"{path}: {warning}")
    model = config.model.path.name if config.model.path else "the bundled model"
    o = config.output
    writes = [
        f"{name} {p}"
        for name, p in (("verdicts", o.events), ("snapshots", o.snapshots), ("summary", o.summary))
        if p
    ]
    return config, (
        f"{path}: ok (source {config.source.kind}, trigger {config.trigger.kind}, "
        f"model {model} {detector.model_id} ({model_facts(detector.metadata)}), "
        f"{threshold_said(config.model.threshold, detector.metadata.threshold)}, second looks {refine}"
        + (f"; writes {', '.join(writes)}" if writes else "")
        + ")"
    )


#: the config's path keys a station reads or appends to across restarts
STATE_PATHS = ("output.events", "output.snapshots", "output.summary", "model.path")


def relative_path_warnings(path: Path, config: Config) -> list[str]:
    """A relative path in the config file is taken from the file's folder (before 2026-12-01,
    from the working directory): where the working directory holds it and the file's folder does
    not (a station upgraded from then, its verdict log in /var/lib/stampline), say so, lest the
    numbering start again at 1 in a new log."""
    try:
        raw = read_config_file(Path(path))  # as Config.load read it (a BOM too)
    except ConfigError:
        return []  # (Config.load has said what is wrong with it)
    out = []
    for key in STATE_PATHS:
        section, name = key.split(".")
        value = raw.get(section, {}).get(name) if isinstance(raw.get(section), dict) else None
        if not isinstance(value, str) or not value or Path(value).expanduser().is_absolute():
            continue
        taken = getattr(getattr(config, section), name)
        here = Path.cwd() / value
        if taken is not None and here.exists() and not Path(taken).exists() and not same_path(here, taken):
            out.append(
                f"{key} = {value!r} is taken from the config file's folder, {taken}, which does not exist; "
                f"the working directory holds {here} (a relative path was taken from there before "
                f"2026-12-01): give the absolute path to go on with it"
            )
    return out


def model_facts(meta) -> str:
    """A model's kind and labels, for the lines that name it."""
    labels = f", labels {', '.join(meta.labels)}" if len(meta.labels) > 1 else ""
    return f"{meta.kind}{labels}"


def threshold_said(configured: float | None, model: float) -> str:
    """The presence threshold in force, and whose it is."""
    if configured is None or configured == model:
        return f"threshold {model:g}"
    return f"threshold {configured:g} (the model's own: {model:g})"


@pipe_closed_quietly
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log_to_stderr(PROG, args.verbose)
    from edge.runtime import ModelError
    from edge.sinks import SinkError
    from edge.sources import SourceError

    try:
        if args.check_config is not None:
            if len(args.check_config) > 1:
                if overrides_from(args):
                    raise CliError(
                        "--check-config with several files takes no other flags (each would apply to "
                        "every file)"
                    )
                for i, path in enumerate(args.check_config):
                    if any(same_path(path, other) for other in args.check_config[:i]):
                        raise CliError(f"--check-config: {path} is given twice")
            checked = [(path, check_config(path, args)) for path in args.check_config]
            if len(checked) > 1:
                check_lines_apart([(path, config) for path, (config, _said) in checked])
            for path, (config, _said) in checked:  # (after the lines' clashes, which say more)
                summary = config.output.summary
                if summary is not None and (held := not_a_report(summary)):
                    raise ConfigError(
                        f"{path}: output.summary {summary}: holds {held}, which the summary would replace"
                    )
            for _path, (_config, said) in checked:
                print(said)
            return 0
        overrides = overrides_from(args)
        config = Config.load(args.config, overrides)
        check_source_flags(args, config.source.kind)
        config = with_video_pace(config, args)
        if args.config is not None:
            for warning in relative_path_warnings(args.config, config):
                warn(PROG, f"{args.config}: {warning}")
        for warning in idle_warnings(config, list(overrides)):
            warn(PROG, warning)
        if getattr(args, "http_token", None):
            warn(
                PROG,
                "--http-token: every user of this machine can read it on the command line (ps); "
                "give it in http.token_file instead",
            )
        try:
            return run(config, args.config)
        except (ModelError, SourceError) as exc:
            key = args.config and config_key_of(str(exc), config, overrides)
            if not key:
                raise
            # the operator reads the journal: say where the file was named, as --check-config does
            raise type(exc)(f"{args.config}: {key}: {exc}") from None
    except (CliError, ConfigError, ModelError, SourceError, SinkError, OSError) as exc:
        return fail(PROG, exc)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
