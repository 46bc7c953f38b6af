"""``edge-run``'s typed configuration: a TOML file (``--config``), command-line flags override it.

Every key has a type and a check; an unknown section or key, a wrong type or a value out of
range is a :class:`ConfigError` that names the key (``trigger.on: expected a number in (0, 1),
got 1.5``). TOML has no null: leave a key out to keep its default. ``systemd/stampline.toml`` is
the documented example of every key.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SOURCE_KINDS = ("camera", "picamera", "video", "url", "images", "demo")
TRIGGER_KINDS = ("occupancy", "every-frame")
RUNTIMES = ("ai_edge_litert", "tflite_runtime")


class ConfigError(ValueError):
    """A config file or flag value that cannot be used; the message names the key."""


Check = Callable[[Any], str | None]  # returns what was expected, or None when the value is fine


def _opt(default: Any, check: Check | None = None) -> Any:
    return field(default=default, metadata={"check": check})


def _positive(v: Any) -> str | None:
    return None if v > 0 else "a number > 0"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else "a number >= 0"


def _open_unit(v: Any) -> str | None:
    return None if 0.0 < v < 1.0 else "a number in (0, 1)"


def _unit(v: Any) -> str | None:
    return None if 0.0 <= v <= 1.0 else "a number in [0, 1]"


def _one_of(*choices: str) -> Check:
    def check(v: Any) -> str | None:
        return None if v in choices else "one of " + ", ".join(repr(c) for c in choices)

    return check


def _byte(v: Any) -> str | None:
    return None if 0 <= v <= 255 else "a grey level in 0..255"


def check_roi(v: Any) -> str | None:
    """A region of interest ``(x, y, w, h)`` normalised to the frame, inside it, not empty."""
    if len(v) != 4:
        return "4 numbers x, y, w, h"
    x, y, w, h = v
    if not (0 <= x < 1 and 0 <= y < 1 and 0 < w <= 1 and 0 < h <= 1):
        return "x, y in [0, 1) and w, h in (0, 1]"
    if x + w > 1 + 1e-9 or y + h > 1 + 1e-9:
        return "a region inside the frame (x + w <= 1, y + h <= 1)"
    return None


@dataclass(frozen=True)
class SourceConfig:
    #: camera | picamera | video | url | images | demo
    kind: str = _opt("camera", _one_of(*SOURCE_KINDS))
    #: V4L2 camera: index (0) or device path (/dev/v4l/by-id/...)
    camera: int | str = 0
    video: Path | None = None
    url: str | None = None
    images: Path | None = None
    #: requested frame size and rate; left out: the device's own (picamera: near the model input)
    width: int | None = _opt(None, _positive)
    height: int | None = _opt(None, _positive)
    fps: float | None = _opt(None, _positive)
    #: video files, image folders and the demo: every frame as fast as possible, none dropped
    as_fast_as_possible: bool = False
    #: a live source that delivers nothing for this long is closed and reopened (with back-off)
    stall_s: float = _opt(3.0, _positive)


@dataclass(frozen=True)
class ModelConfig:
    #: left out: the bundled model
    path: Path | None = None
    threads: int = _opt(2, _positive)
    #: left out: ai_edge_litert, else tflite_runtime
    runtime: str | None = _opt(None, _one_of(*RUNTIMES))
    #: presence threshold; left out: the one in the model's metadata
    threshold: float | None = _opt(None, _open_unit)


@dataclass(frozen=True)
class InspectionConfig:
    #: the region inspected, x, y, w, h normalised to the frame; left out: the whole frame
    #: (the demo line uses its own region unless one is given)
    roi: tuple[float, ...] | None = _opt(None, check_roi)


@dataclass(frozen=True)
class TriggerConfig:
    #: occupancy (software, against a learned empty belt) | every-frame (one verdict per frame)
    kind: str = _opt("occupancy", _one_of(*TRIGGER_KINDS))
    #: share of the region that must differ from the empty belt for a product to begin ...
    on: float = _opt(0.5, _open_unit)
    #: ... and below which it ends (hysteresis; must be < on)
    off: float = _opt(0.2, _open_unit)
    #: frames in a row below ``off`` that end a product
    exit_frames: int = _opt(2, _positive)
    #: grey-level difference from the empty belt that counts a cell as occupied
    level: int = _opt(30, _byte)
    #: frames averaged (median) into the empty-belt reference at start
    learn_frames: int = _opt(10, _positive)
    #: how fast the reference follows slow light changes while the belt is empty
    adapt_rate: float = _opt(0.02, _unit)
    #: a product in view longer than this is judged and the empty-belt reference relearned
    max_product_s: float = _opt(30.0, _positive)


@dataclass(frozen=True)
class DecisionConfig:
    #: frames (of those judged) that must see the stamp for OK; a product with fewer judged
    #: frames needs all of them
    min_hits: int = _opt(2, _positive)
    #: ... and at least this share of the judged frames
    min_hit_share: float = _opt(0.3, _unit)
    #: judged frames: occupancy >= this share of the product's peak occupancy (occupancy trigger)
    judge_share: float = _opt(0.8, _unit)


@dataclass(frozen=True)
class OutputConfig:
    #: the verdict log (JSON lines, appended across restarts)
    events: Path | None = None
    #: snapshots of every MISSING product (clean and annotated frame)
    snapshots: Path | None = None
    snapshot_max_count: int = _opt(1000, _positive)
    snapshot_max_mb: float = _opt(500.0, _positive)
    #: the run's summary as JSON
    summary: Path | None = None
    #: the annotated stream as a video file (.mp4)
    record: Path | None = None
    #: a window with the annotated stream (needs a display)
    display: bool = False


@dataclass(frozen=True)
class RunConfig:
    #: seconds; left out: until stopped
    duration: float | None = _opt(None, _positive)
    max_frames: int | None = _opt(None, _positive)


@dataclass(frozen=True)
class DemoConfig:
    seed: int = _opt(0, _non_negative)


@dataclass(frozen=True)
class Config:
    source: SourceConfig = field(default_factory=SourceConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    inspection: InspectionConfig = field(default_factory=InspectionConfig)
    trigger: TriggerConfig = field(default_factory=TriggerConfig)
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    run: RunConfig = field(default_factory=RunConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)

    def __post_init__(self) -> None:
        if self.trigger.off >= self.trigger.on:
            raise ConfigError(
                f"trigger.off: expected a number below trigger.on ({self.trigger.on}), got {self.trigger.off}"
            )
        src = self.source
        needs = {"video": src.video, "url": src.url, "images": src.images}
        if src.kind in needs and needs[src.kind] is None:
            raise ConfigError(f"source.{src.kind}: expected a value for source.kind = {src.kind!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Config:
        """A config from parsed TOML, with ``{"section.key": value}`` overrides applied on top."""
        merged: dict[str, dict[str, Any]] = {}
        sections = {f.name: f for f in dataclasses.fields(cls)}
        for name, table in data.items():
            if name not in sections:
                raise ConfigError(f"unknown section [{name}] (expected one of {', '.join(sections)})")
            if not isinstance(table, Mapping):
                raise ConfigError(f"{name}: expected a [{name}] table, got {_show(table)}")
            merged[name] = dict(table)
        for key, value in (overrides or {}).items():
            section, _, name = key.partition(".")
            merged.setdefault(section, {})[name] = value
        built = {}
        for name, f in sections.items():
            section_cls = f.default_factory  # type: ignore[misc]
            built[name] = _build_section(name, section_cls, merged.get(name, {}))  # type: ignore[arg-type]
        return cls(**built)

    @classmethod
    def load(cls, path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> Config:
        data: Mapping[str, Any] = {}
        if path is not None:
            path = Path(path)
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise ConfigError(f"{path}: config file not found") from None
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{path}: cannot read config ({exc})") from None
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: not valid TOML ({exc})") from None
        try:
            return cls.from_mapping(data, overrides)
        except ConfigError as exc:
            if path is None:
                raise
            raise ConfigError(f"{path}: {exc}") from None


def _build_section(section: str, cls: type, values: Mapping[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"unknown key '{section}.{key}' (expected one of {', '.join(sorted(fields))})")
        where = f"{section}.{key}"
        value = _coerce(value, hints[key], where)
        check = fields[key].metadata.get("check")
        if value is not None and check is not None:
            expected = check(value)
            if expected is not None:
                raise ConfigError(f"{where}: expected {expected}, got {_show(value)}")
        kwargs[key] = value
    return cls(**kwargs)


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    return repr(value) if not isinstance(value, Path) else repr(str(value))


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """A TOML (or flag) value -> the field's type, or ConfigError naming the key."""
    if value is None:
        return None
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(value, option, where)
            except ConfigError as exc:
                errors.append(exc)
        raise (
            errors[0]
            if len(options) == 1
            else ConfigError(
                f"{where}: expected {' or '.join(_name(o) for o in options)}, got {_show(value)}"
            )
        )
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif hint is str:
        if isinstance(value, str) and value:
            return value
    elif hint is Path:
        if isinstance(value, str | Path) and str(value):
            return Path(value)
    elif typing.get_origin(hint) is tuple:
        if isinstance(value, list | tuple):
            return tuple(_coerce(v, args[0], where) for v in value)
    raise ConfigError(f"{where}: expected {_name(hint)}, got {_show(value)}")


def _name(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        return "a list of " + {float: "numbers", int: "whole numbers"}.get(item, "strings")
    return {
        bool: "true or false",
        int: "a whole number",
        float: "a number",
        str: "a non-empty string",
        Path: "a path",
    }.get(hint, str(hint))
