"""edge-run's flags reach the run: the retention flags bound the verdict log and the snapshots,
every flag of ``OVERRIDES`` sets its config key, ``--min-hits`` changes verdicts, ``-v`` adds the
INFO lines."""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.cli.common import non_negative_int, number, number_or_auto, path_arg, positive_int, thread_count
from edge.cli.run import OVERRIDES, _pin, _roi, _trigger, build_parser, main, overrides_from
from edge.config import Config, DecisionConfig, camera_device
from edge.runtime import BUNDLED_MODEL

needs_model = pytest.mark.skipif(not BUNDLED_MODEL.is_file(), reason=f"{BUNDLED_MODEL} not built yet")

MB = 2**20  # the flags' megabytes
PLAIN_PHOTOS = 100
_SNAPSHOT = re.compile(r"\d{8}T[\d.]+_(\d{6})_p(\d+)_(clean|annotated)\.jpg")


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def rotated(events: Path) -> list[str]:
    """The names of the verdict log's rotated files there are (``v.jsonl.1``, ...)."""
    return sorted(p.name for p in events.parent.glob(f"{events.name}.*") if p.suffix[1:].isdigit())


def snapshot_products(folder: Path) -> dict[int, set[str]]:
    """Product number -> the kinds of snapshot kept of it (clean, annotated); every file must be one."""
    out: dict[int, set[str]] = {}
    for p in folder.iterdir():
        m = _SNAPSHOT.fullmatch(p.name)
        assert m, f"not a snapshot: {p.name}"
        out.setdefault(int(m.group(2)), set()).add(m.group(3))
    return out


@pytest.fixture(scope="module")
def plain_photos(tmp_path_factory) -> Path:
    """Photos of a plain surface, no stamp: with --images each is a product (trigger every-frame)
    judged MISSING, so each gives a verdict line and a snapshot."""
    folder = tmp_path_factory.mktemp("plain") / "photos"
    folder.mkdir()
    for i in range(PLAIN_PHOTOS):
        cv2.imwrite(str(folder / f"frame_{i}.png"), np.full((120, 160, 3), (60, 140, 200), np.uint8))
    return folder


# -- 1. retention: output.events_max_mb, events_keep, snapshot_max_count, snapshot_max_mb -------


@needs_model
def test_a_small_events_max_mb_rotates_keeping_events_keep_files_and_snapshots_keep_the_newest_count(
    tmp_path: Path, plain_photos: Path, capsys
):
    events, snaps = tmp_path / "v.jsonl", tmp_path / "S"
    # 7340 bytes (MB of 2**20 bytes; of 10**6 it would be 340 bytes less, more than a line): some 26
    # lines a file, so 100 verdicts rotate 3 times
    max_mb = 0.007
    argv = ["--images", str(plain_photos), "--refine", "off", "--events", str(events)]
    argv += ["--events-max-mb", str(max_mb), "--events-keep", "2"]
    argv += ["--snapshots", str(snaps), "--snapshot-max-count", "3"]
    assert main(argv) == 0
    assert f"{PLAIN_PHOTOS} products: 0 OK, {PLAIN_PHOTOS} MISSING" in capsys.readouterr().out

    assert rotated(events) == ["v.jsonl.1", "v.jsonl.2"]  # .3 was removed (events_keep 2)
    files = [events.with_name("v.jsonl.2"), events.with_name("v.jsonl.1"), events]
    records = [r for f in files for r in read_log(f)]
    seqs = [r["seq"] for r in records]
    assert seqs == list(range(seqs[0], PLAIN_PHOTOS + 1))  # the newest verdicts, none lost in between
    assert seqs[0] > 1  # ... and the oldest file did go
    assert {r["verdict"] for r in records} == {"MISSING"}
    # each rotated file ended at the line that took it to events_max_mb megabytes
    rotate_at = int(max_mb * MB)
    for f in files[:2]:
        size, last = f.stat().st_size, f.read_bytes().splitlines(keepends=True)[-1]
        assert size - len(last) < rotate_at <= size, f.name
    assert events.stat().st_size < rotate_at

    kept = snapshot_products(snaps)
    assert kept == {p: {"clean", "annotated"} for p in (98, 99, 100)}  # the newest 3 products


@needs_model
def test_events_max_mb_0_never_rotates_and_snapshot_max_mb_bounds_the_snapshot_folder(
    tmp_path: Path, plain_photos: Path
):
    events, snaps = tmp_path / "v.jsonl", tmp_path / "S"
    max_mb = 0.05  # 52428 bytes: a few products' snapshots (a pair is some 10 KB)
    argv = ["--images", str(plain_photos), "--refine", "off", "--max-frames", "30"]
    argv += ["--events", str(events), "--events-max-mb", "0"]
    argv += ["--snapshots", str(snaps), "--snapshot-max-mb", str(max_mb)]
    assert main(argv) == 0

    assert rotated(events) == []
    assert [r["seq"] for r in read_log(events)] == list(range(1, 31))  # all in one file

    total = sum(p.stat().st_size for p in snaps.iterdir())
    assert 0 < total <= int(max_mb * MB)
    kept = snapshot_products(snaps)
    newest = sorted(kept)
    assert 1 <= len(newest) < 30 and newest == list(range(31 - len(newest), 31))  # the newest
    assert all(kinds == {"clean", "annotated"} for kinds in kept.values())


@needs_model
def test_a_snapshot_max_mb_below_one_products_snapshots_is_said(tmp_path: Path, plain_photos: Path, caplog):
    """Each product's pictures were written and removed at once: an empty folder, nothing said."""
    snaps = tmp_path / "S"
    argv = ["--images", str(plain_photos), "--refine", "off", "--max-frames", "3"]
    with caplog.at_level("WARNING", logger="edge.sinks"):
        assert main([*argv, "--snapshots", str(snaps), "--snapshot-max-mb", "0.001"]) == 0
    said = [r.getMessage() for r in caplog.records if "none is kept" in r.getMessage()]
    assert len(said) == 1 and "more than snapshot_max_mb (0.00 MB)" in said[0], said
    assert list(snaps.iterdir()) == []


# -- 2. every flag of OVERRIDES sets its config key ---------------------------------------------

#: a valid sample for a flag of each type: (the text given, the value the config holds)
TYPE_SAMPLES: dict[object, tuple[str, object]] = {
    positive_int: ("3", 3),
    non_negative_int: ("3", 3),
    thread_count: ("3", 3),
    int: ("7", 7),
    number: ("0.25", 0.25),
    number_or_auto: ("8.5", 8.5),
    camera_device: ("2", 2),
    path_arg: ("some/where", Path("some/where")),
    _roi: ("0.1,0.2,0.5,0.6", (0.1, 0.2, 0.5, 0.6)),
    _trigger: ("every-frame", "every-frame"),
    _pin: ("17", 17),
}
#: flags of free text (or a parser of their own): a sample each, by argparse dest
TEXT_SAMPLES: dict[str, tuple[str, object]] = {
    "url": ("rtsp://cam.local/stream", "rtsp://cam.local/stream"),
    "expect": ("qc-passed", "qc-passed"),
    "http": ("0.0.0.0:8080", "0.0.0.0:8080"),
    "http_token": ("s3cret-token", "s3cret-token"),
    "mqtt": ("broker.local:1884", "broker.local:1884"),
    "station": ("line-7", "line-7"),
}
#: what a flag's key needs beside it to make a valid config
NEEDS = {"mqtt": ["--events", "v.jsonl"]}
#: flags that set the config another way than OVERRIDES (the source kind)
NOT_IN_OVERRIDES = {"picamera", "demo"}

ACTIONS = {a.dest: a for a in build_parser()._actions}


def default_of(key: str) -> object:
    section, name = key.split(".")
    return getattr(getattr(Config(), section), name)


def sample(dest: str) -> tuple[list[str], object] | None:
    """A flag's command line and the value its config key must then hold; None: no sample."""
    action = ACTIONS[dest]
    flag = max(action.option_strings, key=len)
    if isinstance(action, argparse._StoreTrueAction):
        return [flag], True
    if action.choices is not None:  # one other than the default
        choice = next(c for c in action.choices if c != default_of(OVERRIDES[dest]))
        return [flag, str(choice)], choice
    given = TEXT_SAMPLES.get(dest) or TYPE_SAMPLES.get(action.type)
    if given is None:
        return None
    return [flag, given[0]], given[1]


def test_every_flag_that_sets_a_config_key_is_in_overrides_and_has_a_sample():
    suppressed = {
        dest
        for dest, a in ACTIONS.items()
        if a.default is argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)
    }
    assert suppressed - NOT_IN_OVERRIDES == set(OVERRIDES)  # a flag left out would do nothing
    no_sample = [dest for dest in OVERRIDES if sample(dest) is None]
    assert no_sample == [], f"add a sample for these flags' types to TYPE_SAMPLES: {no_sample}"


def test_each_flag_names_its_config_key():
    """The mapping checked against the flags' names (the test below takes its keys from it): a
    flag is named as its key (``--min-hits``: decision.min_hits), as its section and key
    (``--demo-variants``: demo.variants), as its key without the unit (``--reject-delay``:
    gpio.reject_delay_s), or as its section, for the section's main key (``--model``: model.path)."""
    main_keys = {"model.path", "trigger.kind", "http.listen", "mqtt.broker"}

    def named(dest: str, key: str) -> bool:
        section, name = key.split(".")
        return dest in (name, f"{section}_{name}", name.removesuffix("_s")) or (
            dest == section and key in main_keys
        )

    assert [(dest, key) for dest, key in OVERRIDES.items() if not named(dest, key)] == []


@pytest.mark.parametrize(("dest", "key"), list(OVERRIDES.items()), ids=list(OVERRIDES))
def test_each_flag_sets_its_config_key(dest: str, key: str):
    given = sample(dest)
    assert given is not None, f"no sample for --{dest}"
    argv, value = given
    assert value != default_of(key)  # else the default would pass
    args = build_parser().parse_args([*argv, *NEEDS.get(dest, [])])
    config = Config.load(None, overrides_from(args))
    section, name = key.split(".")
    got = getattr(getattr(config, section), name)
    assert got == value and type(got) is type(value)


# -- 3. --min-hits changes verdicts; -v adds the INFO lines -------------------------------------


@pytest.fixture(scope="module")
def partly_hidden_stamp(tmp_path_factory) -> Path:
    """The demo line's first product (stamped) crossing its region, as photos of the region, with
    the middle three of the frames it fills painted over: a product whose stamp only some of its
    judged frames see (read with --trigger occupancy, after frames of the empty belt)."""
    from edge.demo import DemoLine

    line = DemoLine(0)
    product = line.products_between(0, 200)[0]
    assert product.stamp
    spans = range(product.first_frame, product.last_frame + 1)
    covers = {t: line.cover_at(t)[1] for t in spans}
    full = [t for t in spans if covers[t] >= 0.95 * max(covers.values())]
    hidden = set(full[len(full) // 2 - 1 : len(full) // 2 + 2])
    folder = tmp_path_factory.mktemp("hidden") / "photos"
    folder.mkdir()
    x, y, w, h = line.roi_px
    for i, t in enumerate(range(product.first_frame - 12, product.last_frame + 5)):  # empty belt first
        image = line.render(t)[y : y + h, x : x + w]
        if t in hidden:
            image[:] = (200, 200, 200)
        cv2.imwrite(str(folder / f"frame_{i}.jpg"), image)
    return folder


@needs_model
def test_min_hits_decides_between_ok_and_missing(tmp_path: Path, partly_hidden_stamp: Path):
    def verdict(min_hits: int) -> dict:
        events = tmp_path / f"hits{min_hits}.jsonl"
        argv = ["--images", str(partly_hidden_stamp), "--trigger", "occupancy", "--min-hits", str(min_hits)]
        assert main([*argv, "--events", str(events)]) == 0
        (record,) = read_log(events)  # one product
        return record

    seen = verdict(1)
    hits, frames = seen["hits"], seen["frames"]
    # a product only some of whose judged frames saw the stamp, enough of them for the share rule
    assert math.ceil(DecisionConfig.min_hit_share * frames) <= hits < frames and hits >= 2, seen
    assert seen["verdict"] == "OK"
    at = verdict(hits)
    assert (at["verdict"], at["hits"], at["frames"]) == ("OK", hits, frames)
    above = verdict(hits + 1)
    assert (above["verdict"], above["hits"], above["frames"]) == ("MISSING", hits, frames)


@needs_model
def test_verbose_adds_the_info_lines(tmp_path: Path, plain_photos: Path):
    """In a process of its own: logging is set up once a process (under pytest, not at all)."""

    def stderr(*flags: str) -> str:
        events = tmp_path / f"v{len(flags)}.jsonl"
        argv = ["--images", str(plain_photos), "--refine", "off", "--max-frames", "12"]
        argv += ["--events", str(events), "--events-max-mb", "0.001", *flags]
        cmd = [sys.executable, "-m", "edge.cli.run", *argv]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert rotated(events)  # the verdict log did rotate, which is said at INFO
        return done.stderr

    quiet, verbose = stderr(), stderr("-v")
    assert "edge-run: WARNING: product 1 MISSING" in quiet  # the log lines are on stderr ...
    assert not [line for line in quiet.splitlines() if line.startswith("edge-run: INFO: ")]  # ... not INFO
    info = [line for line in verbose.splitlines() if line.startswith("edge-run: INFO: ")]
    assert any(line.endswith("v1.jsonl: rotated (at most 20 older files kept)") for line in info), verbose
    assert "edge-run: WARNING: product 1 MISSING" in verbose
