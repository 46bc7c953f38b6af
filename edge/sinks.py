"""Where results go: the verdict log, snapshots of missing products, a recording, a window.

Each sink is a context manager with one method, ``write(result)``, called for every frame;
``needs_annotated`` asks the loop to draw the overlay on every frame (recording, display).

Verdict log (``--events``): one JSON line per verdict, written whole and ``fsync``-ed, appended
across restarts, one writer at a time (an exclusive ``flock``). On opening, a torn last line
(power cut mid-write) is cut off, its bytes kept in ``verdicts.jsonl.torn``, and the sequence
continues from the last well-formed line. A
line a full disk takes only part of is cut back before the error is raised. A SIGKILL can lose at
most the product in progress; every line on disk parses. The next sequence and product numbers
are also kept beside the log (``verdicts.jsonl.next``), so a log moved away to be archived does
not make the numbering start again.

Rotation: once the log reaches ``max_bytes`` it becomes ``verdicts.jsonl.1`` (the older ones move
to ``.2``, ``.3``, ...; beyond ``keep`` the oldest is removed) and a new log begins, so a station
that runs for months keeps a bounded amount on its card. The numbering goes on across rotations;
the MQTT publisher follows the log from file to file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

import cv2
import numpy as np

from edge.config import MAX_ROTATED_LOGS
from edge.decision import TriggerState
from edge.files import missing_paths, opencv_problem, remove_if_empty, why_no_folder
from edge.overlay import annotate_verdict, box_to_pixels
from edge.types import Frame, Outcome, Prediction, Verdict

_log = logging.getLogger(__name__)

TAIL_BYTES = 1 << 16
#: the wall clock moving this much against the boot clock between two verdicts, plus a thousandth
#: of the time between them (NTP's slewing stays below half that), is a step (NTP setting a clock
#: that started wrong, someone setting it by hand): said in the journal
CLOCK_STEP_S = 2.0
CLOCK_SLEW = 1e-3
#: a clock this far behind the last verdict in the log, at start, is said to be wrong
CLOCK_BEHIND_S = 60.0
CLOCK_HINT = "verdict times follow the clock, seq keeps their order"
#: counts on while the machine is suspended, as the wall clock does (Linux; elsewhere monotonic)
BOOT_CLOCK = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)
#: the verdicts that are flagged: snapshotted here, red/amber on the overlay
FLAGGED = (Outcome.MISSING, Outcome.WRONG)
JPEG_QUALITY = 90
#: a recording that plays this many times faster than the line ran (frames dropped) is said to
SPEED_SAID = 1.5
#: containers OpenCV's FFmpeg writer takes the mp4v stream in
RECORD_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v")


class SinkError(RuntimeError):
    """A sink that cannot be opened or written (reported on one line, exit status 2)."""


@dataclass(frozen=True, eq=False)
class FrameResult:
    """One frame and everything decided about it: what every sink receives."""

    frame: Frame
    roi_px: tuple[int, int, int, int]
    prediction: Prediction | None
    trigger: TriggerState
    verdict: Verdict | None = None
    annotated: np.ndarray | None = None
    #: no new frame: the verdict on a product ended because the frames stopped (``frame`` is the
    #: last one seen; sinks of frames leave it out)
    stopped: bool = False
    #: the verdict the overlay shows on this frame (given on it or up to ``VERDICT_HOLD_S`` of the
    #: line's time before), whether or not anything draws it
    shown: Verdict | None = None


class Sink(Protocol):
    needs_annotated: bool

    def write(self, result: FrameResult) -> None: ...


class _ClosingSink:
    """A sink as a context manager: ``close`` on leaving."""

    def __enter__(self):
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        pass


def lock_exclusive(fd: int, what: str) -> bool:
    """Lock an open file for this process alone (released when it is closed or the process ends);
    False when another process holds it. Where the file system cannot lock it (some network
    file systems) it goes on unlocked, with a warning naming ``what``."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        _log.warning(
            "%s: cannot be locked here (%s): make sure no other edge-run uses it", what, exc.strerror
        )
    return True


def span(seconds: float) -> str:
    """A length of time for people: ``45 s``, ``1.0 h``, ``56 years``."""
    s = abs(seconds)
    if s < 120:
        return f"{s:.0f} s"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.0f} min"
    return f"{s / 86400:.0f} days" if s < 2 * 365.25 * 86400 else f"{s / (365.25 * 86400):.0f} years"


def iso_time(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC).astimezone().isoformat(timespec="milliseconds")


def verdict_record(verdict: Verdict, roi_px: tuple[int, int, int, int], source_scale: float = 1.0) -> dict:
    """The verdict log's line for one verdict (a pure function of the verdict). ``roi_px`` is the
    region in the frame as processed, ``source_scale`` the source's pixels per pixel of it
    (``Frame.source_scale``): ``box_px`` is in the source's pixels."""
    if source_scale != 1.0:
        roi_px = tuple(round(v * source_scale) for v in roi_px)
    rec: dict[str, object] = {
        "seq": verdict.seq,
        "product_id": verdict.product_id,
        "time": iso_time(verdict.wall_time),
        "epoch": round(verdict.wall_time, 3),
        "verdict": verdict.outcome.value,
        "score": round(verdict.score, 4),
        "box": [round(v, 4) for v in verdict.box] if verdict.box is not None else None,
        "box_px": list(box_to_pixels(verdict.box, roi_px)) if verdict.box is not None else None,
        "frames": len(verdict.frames),
        "hits": verdict.hits,
        "frame_first": verdict.frames[0],
        "frame_last": verdict.frames[-1],
        "model_id": verdict.model_id,
    }
    if verdict.box is None and verdict.center is not None:  # a centre model: where it saw the stamp
        cx, cy = verdict.center
        rec["center"] = [round(cx, 4), round(cy, 4)]
        rec["center_px"] = list(box_to_pixels((cx, cy, cx, cy), roi_px)[:2])
    if verdict.evidence is not None and verdict.evidence.name is not None:
        rec["image"] = verdict.evidence.name  # the photo judged (image folders)
    if verdict.label is not None:
        rec["label"] = verdict.label
    if verdict.label_votes:
        rec["label_votes"] = dict(verdict.label_votes)
    if verdict.interrupted_s is not None:  # judged on the frames before the frames stopped
        rec["interrupted_s"] = round(verdict.interrupted_s, 1)
    if verdict.truth is not None:
        rec["truth"] = dict(verdict.truth)
    return rec


def _valid_record(rec: object) -> bool:
    """A verdict line whose numbering a restart can continue from."""
    if not isinstance(rec, dict):
        return False
    return all(
        isinstance(rec.get(k), int) and not isinstance(rec.get(k), bool) and rec[k] >= 0
        for k in ("seq", "product_id")
    )


def parse_verdict_line(line: bytes) -> dict | None:
    """The record of one line of the verdict log (without or with its newline), None when it is
    not a whole verdict record (torn, not JSON, not an object, or without whole, non-negative
    ``seq`` and ``product_id``): the one reading of a line that the log, its restarts and the
    MQTT publisher share."""
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return rec if _valid_record(rec) else None


def read_last_record(path: Path) -> dict | None:
    """The last complete, well-formed verdict line of a log (None if there is none); lines that
    do not parse or lack whole-number ``seq`` and ``product_id`` are passed over."""
    try:
        with open(path, "rb") as f:
            return last_record_in(f.fileno())
    except FileNotFoundError:
        return None


def last_record_in(fd: int) -> dict | None:
    """:func:`read_last_record` of an open file (its last ``TAIL_BYTES``)."""
    size = os.fstat(fd).st_size
    tail = os.pread(fd, TAIL_BYTES, max(size - TAIL_BYTES, 0))
    for line in reversed(tail.split(b"\n")):
        if (rec := parse_verdict_line(line)) is not None:
            return rec
    return None


def verdict_log_problem(path: Path) -> str | None:
    """Why ``path`` cannot be the verdict log appended to (None: it can, or is not there yet):
    what ``VerdictLog`` refuses at its start, and ``--check-config`` before it."""
    if path.exists() and not path.is_file():
        return "not a regular file (expected a file for the verdict log)"
    if problem := not_a_verdict_log(path):
        return f"{problem} (expected an edge-run verdict log or a new file)"
    return None


#: how every line of the verdict log begins (``verdict_record``'s first key)
RECORD_START = b'{"seq":'


def not_a_verdict_log(path: Path) -> str | None:
    """Why an existing, non-empty ``path`` is not a verdict log to append to (None: it is one, or
    it is empty or not there). Its first line must be a verdict record; a first line without a
    newline (torn by a power cut) must begin as one. So a video, a model or a notes file named
    by mistake is refused, never appended to or cut."""
    try:
        with open(path, "rb") as f:
            head = f.read(TAIL_BYTES)
    except OSError:  # not there, or not readable: opening it says why
        return None
    head = head.lstrip(b"\0")  # a power cut can leave the first write's blocks zeroed
    if not head:
        return None
    end = head.find(b"\n")
    if end < 0:  # one line: a first record torn anywhere (even within its first key), or not a log
        torn = head.startswith(RECORD_START) or RECORD_START.startswith(head)
        return None if torn and len(head) < TAIL_BYTES else "not a verdict log"
    if parse_verdict_line(head[:end]) is not None:
        return None
    return "not a verdict log (its first line is not a verdict record)"


def rotated_log(path: Path, i: int) -> Path:
    """The ``i``-th newest rotated file of the verdict log ``path`` (``i`` = 0: the log itself)."""
    return path if i == 0 else path.with_name(f"{path.name}.{i}")


def rotated_files(path: Path) -> tuple[dict[int, int], list[Path]]:
    """The verdict log's files there are: rotation number (0: the log itself) -> inode, for the
    regular files, and the entries with such a name that are not regular files (left alone).
    Listed from the folder, so a number missing (a gap, or a rename in progress) hides no other."""
    files: dict[int, int] = {}
    odd: list[Path] = []
    prefix = path.name + "."
    try:
        entries = list(os.scandir(path.parent))
    except FileNotFoundError:
        return files, odd
    for entry in entries:
        if entry.name == path.name:
            number = 0
        elif entry.name.startswith(prefix) and entry.name[len(prefix) :].isdigit():
            number = int(entry.name[len(prefix) :])
            if not 1 <= number <= MAX_ROTATED_LOGS or str(number) != entry.name[len(prefix) :]:
                continue  # an archive copy (verdicts.jsonl.2026, verdicts.jsonl.20260101, .01)
        else:
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                files[number] = entry.stat().st_ino  # as fstat says (a listing may differ)
            else:
                odd.append(Path(entry.path))
        except OSError:
            continue
    return files, odd


class VerdictLog(_ClosingSink):
    """The verdict log: JSON lines, fsync-ed one by one, appended across restarts, rotated at
    ``max_bytes`` (None: never) keeping ``keep`` older files."""

    needs_annotated = False

    def __init__(self, path: str | Path, max_bytes: int | None = None, keep: int = 20):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = max(int(keep), 1)
        self.rotations = 0
        #: the size at which the log rotates next (pushed on by a rotation that failed)
        self._rotate_at = max_bytes
        #: the next sequence and product numbers, beside the log (``verdicts.jsonl.next``)
        self.state_path = self.path.with_name(self.path.name + ".next")
        #: torn last lines cut off the log, kept (``verdicts.jsonl.torn``)
        self.torn_path = self.path.with_name(self.path.name + ".torn")
        self._fd: int | None = None
        self._state_fd: int | None = None
        self.next_seq = 1
        self.next_product = 1
        self.written = 0
        #: (boot clock, wall clock minus boot clock) at the last verdict written: a change of the
        #: difference is a clock step
        self._clock: tuple[float, float] | None = None
        #: what opening the log created (files, folders), removed again if the run never starts
        self._made: list[Path] = []

    def __enter__(self) -> VerdictLog:
        if problem := verdict_log_problem(self.path):
            raise SinkError(f"{self.path}: {problem}")
        state = [] if os.path.lexists(self.state_path) else [self.state_path]
        self._made = state + missing_paths(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = self._open_locked()
        except OSError as exc:
            why = why_no_folder(exc, self.path.parent) if not self.path.parent.is_dir() else exc.strerror
            raise SinkError(f"{self.path}: cannot open the verdict log ({why})") from None
        try:
            self._repair()
        except OSError as exc:
            self.close()
            raise SinkError(f"{self.path}: cannot open the verdict log ({exc.strerror})") from None
        last = read_last_record(self.path)
        if last is None:  # a log rotated just now: the newest rotated file has the last verdict
            rotated = [n for n in rotated_files(self.path)[0] if n > 0]
            last = read_last_record(rotated_log(self.path, min(rotated))) if rotated else None
        if last is not None:
            self.next_seq = last["seq"] + 1
            self.next_product = last["product_id"] + 1
            behind = float(last.get("epoch", 0) or 0) - time.time()
            if behind > CLOCK_BEHIND_S:
                _log.warning(
                    "%s: the clock reads %s, %s before the last verdict in the log (%s): is it set? "
                    "(a Raspberry Pi has no clock of its own: NTP, or a real-time clock); %s",
                    self.path,
                    iso_time(time.time()),
                    span(behind),
                    iso_time(float(last["epoch"])),
                    CLOCK_HINT,
                )
        # the numbering outlives the log: a log moved away (archived, rotated) must not make the
        # next verdicts reuse sequence numbers a consumer has already seen
        saved = self._read_numbering()
        self.next_seq = max(self.next_seq, saved[0])
        self.next_product = max(self.next_product, saved[1])
        try:
            self._state_fd = os.open(self.state_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            _log.warning("%s: cannot keep the numbering (%s)", self.state_path, exc.strerror)
        return self

    def _open_locked(self) -> int:
        """The log opened for appending, locked (SinkError if another process holds it)."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        # one writer per log: a second edge-run would number its verdicts over the first's
        if not lock_exclusive(fd, f"output.events {self.path}"):
            os.close(fd)
            raise SinkError(
                f"output.events {self.path}: another process is writing this verdict log (a second "
                "edge-run, or another line's config naming the same file?)"
            )
        return fd

    def _rotate(self) -> None:
        """The full log becomes ``.1``, the older ones move up a number, and beyond the newest
        ``keep`` the oldest are removed; a new log begins. A rotation that fails is logged and
        the log goes on growing (the next attempt when it has grown by ``max_bytes`` again)."""
        files, odd = rotated_files(self.path)
        newest_first = sorted(n for n in files if n > 0)
        # the oldest beyond the newest keep - 1 go first (with the log as .1 that makes keep)
        beyond = newest_first[self.keep - 1 :]
        kept = [n for n in newest_first[: self.keep - 1] if n < MAX_ROTATED_LOGS]
        beyond += newest_first[len(kept) : self.keep - 1]  # (a number that would pass MAX_ROTATED_LOGS)
        in_the_way = [p for p in odd if p.name in {rotated_log(self.path, n + 1).name for n in [0, *kept]}]
        if in_the_way:
            _log.warning(
                "%s: cannot rotate the verdict log: %s is in the way (not a regular file); it goes on",
                self.path,
                in_the_way[0],
            )
            self._rotate_at += self.max_bytes
            return
        if self._state_fd is not None:  # the numbering must outlive the renames (power cut)
            with contextlib.suppress(OSError):
                os.fsync(self._state_fd)
        for n in beyond:
            with contextlib.suppress(OSError):
                rotated_log(self.path, n).unlink()
        if len(beyond) > 1:
            _log.info(
                "%s: removed %d older verdict logs beyond events_keep = %d", self.path, len(beyond), self.keep
            )
        try:
            for n in reversed(kept):  # oldest first, so no name is taken twice
                os.replace(rotated_log(self.path, n), rotated_log(self.path, n + 1))
            os.replace(self.path, rotated_log(self.path, 1))
        except OSError as exc:
            _log.warning(
                "%s: cannot rotate the verdict log (%s: %s); it goes on",
                self.path,
                exc.filename,
                exc.strerror,
            )
            self._rotate_at += self.max_bytes
            return
        try:
            fd = self._open_locked()
        except (OSError, SinkError) as exc:  # go on in the rotated file rather than lose verdicts
            _log.warning("%s: cannot start a new verdict log (%s)", self.path, exc)
            self._rotate_at += self.max_bytes
            return
        self._rotate_at = self.max_bytes
        old, self._fd = self._fd, fd
        if old is not None:
            os.close(old)
        try:  # make the renames and the new file durable
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass
        self.rotations += 1
        _log.info("%s: rotated (at most %d older files kept)", self.path, self.keep)

    def _reopen_if_gone(self) -> None:
        """The log removed or moved away while it is written (by hand: every later verdict went
        into a file no longer there, unsaid): a new one begins at its path, and the journal says
        so; the numbering goes on."""
        try:
            here: int | None = os.stat(self.path).st_ino
        except FileNotFoundError:
            here = None
        except OSError:
            return
        if self._fd is None or here == os.fstat(self._fd).st_ino:
            return
        how = "removed" if here is None else "replaced by another file"
        try:
            fd = self._open_locked()
        except (OSError, SinkError) as exc:
            _log.warning("%s: the verdict log was %s; cannot begin a new one (%s)", self.path, how, exc)
            return
        old, self._fd = self._fd, fd
        os.close(old)
        _log.warning(
            "%s: the verdict log was %s while edge-run wrote it: a new one begins (move rotated files, "
            "verdicts.jsonl.1 and on, to archive them)",
            self.path,
            how,
        )

    def _read_numbering(self) -> tuple[int, int]:
        try:
            seq, product = (int(v) for v in self.state_path.read_text().split()[:2])
            return max(seq, 1), max(product, 1)
        except (OSError, ValueError):
            return 1, 1

    def _repair(self) -> None:
        """Mend a last line without a newline, so every line parses: a whole record (a log saved
        by an editor that drops the last newline) gets its newline; a torn one (a power cut
        mid-write) is cut off, its bytes first appended to ``<log>.torn``, so nothing that was
        on disk is destroyed."""
        try:
            with open(self.path, "r+b") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                if size == 0:
                    return
                f.seek(size - 1)
                if f.read(1) == b"\n":
                    return
                f.seek(max(size - TAIL_BYTES, 0))
                tail = f.read()
                cut = tail.rfind(b"\n")
                keep = size - len(tail) + cut + 1 if cut >= 0 else 0
                f.seek(keep)
                fragment = f.read()
                if parse_verdict_line(fragment) is not None:
                    f.seek(0, os.SEEK_END)
                    f.write(b"\n")
                    f.flush()
                    os.fsync(f.fileno())
                    _log.warning("%s: its last line had no newline; added", self.path)
                    return
                kept = ""
                if fragment.strip(b"\0 \t\r"):  # blocks a power cut left zeroed hold nothing
                    with open(self.torn_path, "ab") as t:
                        t.write(fragment + b"\n")
                        t.flush()
                        os.fsync(t.fileno())
                    kept = f", kept in {self.torn_path.name}"
                f.truncate(keep)
                os.fsync(f.fileno())
                _log.warning("%s: cut a torn last line (%d bytes%s)", self.path, size - keep, kept)
        except FileNotFoundError:
            return

    def write(self, result: FrameResult) -> None:
        if result.verdict is None or self._fd is None:
            return
        rec = verdict_record(result.verdict, result.roi_px, result.frame.source_scale)
        data = (json.dumps(rec, separators=(",", ":")) + "\n").encode("utf-8")
        self._reopen_if_gone()
        start = None
        try:
            start = os.fstat(self._fd).st_size
            view = memoryview(data)
            while view:  # a full disk may take part of a line: go on until it refuses
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError as exc:
            if start is not None:  # leave no part of this line behind, so every line parses
                try:
                    os.ftruncate(self._fd, start)
                    os.fsync(self._fd)
                except OSError:
                    pass
            raise SinkError(f"{self.path}: cannot write the verdict log ({exc.strerror})") from None
        self.written += 1
        self._check_clock()
        if self._state_fd is not None:  # not fsync-ed: the log itself is the record
            v = result.verdict
            try:
                os.pwrite(self._state_fd, f"{v.seq + 1} {v.product_id + 1}\n".ljust(40).encode(), 0)
            except OSError as exc:
                _log.warning("%s: cannot keep the numbering (%s)", self.state_path, exc.strerror)
                os.close(self._state_fd)
                self._state_fd = None
        if self._rotate_at is not None and start + len(data) >= self._rotate_at:
            self._rotate()

    def _check_clock(self) -> None:
        """Say in the journal when the wall clock stepped since the last verdict (read at one
        instant with the boot clock, which counts a suspended machine's time too)."""
        boot = time.clock_gettime(BOOT_CLOCK)
        offset = time.time() - boot
        if self._clock is not None:
            last_boot, last_offset = self._clock
            step = offset - last_offset
            if abs(step) > CLOCK_STEP_S + CLOCK_SLEW * (boot - last_boot):
                _log.warning(
                    "the wall clock stepped %s %s since the last verdict; %s",
                    "ahead" if step > 0 else "back",
                    span(step),
                    CLOCK_HINT,
                )
        self._clock = (boot, offset)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        if exc_type is not None and self.written == 0 and self.rotations == 0:
            # the run failed to start (a model refused after the log opened): leave no empty log
            remove_if_empty(self._made)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._state_fd is not None:
            os.close(self._state_fd)
            self._state_fd = None


_SNAPSHOT = re.compile(r"^(\d{8}T\d{6}(?:\.\d+)?_\d+_p\d+)_(clean|annotated)\.jpg$")
_SNAPSHOT_TMP = re.compile(r"^\d{8}T\d{6}(?:\.\d+)?_\d+_p\d+_(clean|annotated)\.tmp$")


#: snapshots pause while their disk has less free than this: the verdict log, which stops the run
#: when it cannot be written, keeps room for about 45,000 verdicts
SNAPSHOT_MIN_FREE = 16_000_000


def free_bytes(folder: Path) -> int | None:
    """Free bytes on ``folder``'s disk for this user (None: cannot tell)."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


class SnapshotSink(_ClosingSink):
    """Clean and annotated JPEGs of every flagged product (MISSING or WRONG), oldest removed
    beyond the limits.

    ``max_count`` counts products (two files each); ``max_bytes`` all snapshot files together.
    ``numbering``: the verdict log (entered before this sink), whose sequence numbers go on
    across restarts: they order the snapshots a folder already holds, below its ``next_seq``;
    without one, or for numbers from before the numbering restarted (at or above ``next_seq``:
    a log deleted, or snapshots kept before there was a log; those count as older), the time in
    their names does. The wall clock can be wrong for a while (a Raspberry Pi has no clock of its
    own: after a power cut it starts from the last saved time, or 1970, until NTP answers), and
    snapshots named by such a clock must not be taken for the oldest and removed first.
    """

    needs_annotated = False

    def __init__(
        self,
        folder: str | Path,
        max_count: int = 1000,
        max_bytes: int = 500 << 20,
        numbering: VerdictLog | None = None,
    ):
        self.folder = Path(folder)
        self.numbering = numbering
        self.max_count = int(max_count)
        self.max_bytes = int(max_bytes)
        self._said_too_small = False
        self._kept: list[tuple[str, int]] = []  # (stem, bytes of both files), oldest first
        self.written = 0
        self.removed = 0
        self.failed = 0
        #: flagged products without snapshots: their disk was nearly full (``SNAPSHOT_MIN_FREE``)
        self.low_disk = 0
        self._paused = False
        self._made: list[Path] = []
        self._lock_fd: int | None = None

    def __enter__(self) -> SnapshotSink:
        self._made = missing_paths(self.folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)  # the folder itself
            if not lock_exclusive(self._lock_fd, f"output.snapshots {self.folder}"):
                self._unlock()
                raise SinkError(
                    f"output.snapshots {self.folder}: another process keeps snapshots in this folder "
                    "(a second edge-run, or another line's config naming the same folder?); its "
                    "retention would remove them"
                )
            sizes: dict[str, int] = {}
            for p in self.folder.iterdir():
                if _SNAPSHOT_TMP.match(p.name):  # left by a power cut mid-write
                    p.unlink(missing_ok=True)
                    continue
                m = _SNAPSHOT.match(p.name)
                if m:
                    sizes[m.group(1)] = sizes.get(m.group(1), 0) + p.stat().st_size
        except OSError as exc:
            self._unlock()
            why = why_no_folder(exc, self.folder) if not self.folder.is_dir() else exc.strerror
            raise SinkError(f"{self.folder}: cannot use the snapshot folder ({why})") from None
        self._kept = sorted(sizes.items(), key=self._age)
        try:
            self._prune()
        except BaseException:
            self._unlock()
            raise
        return self

    def _age(self, item: tuple[str, int]) -> tuple:
        """Sort key of an existing snapshot, oldest first (see ``numbering``)."""
        stem = item[0]
        seq = int(stem.split("_")[1])
        if self.numbering is not None and seq < self.numbering.next_seq:
            return (1, seq, stem)
        return (0, 0, stem)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._unlock()
        if exc_type is not None and self.written == 0:
            remove_if_empty(self._made)  # a run that never started leaves no empty folder

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def count(self) -> int:
        return len(self._kept)

    @property
    def bytes(self) -> int:
        return sum(b for _, b in self._kept)

    def write(self, result: FrameResult) -> None:
        v = result.verdict
        if v is None or v.outcome not in FLAGGED or v.evidence is None:
            return
        free = free_bytes(self.folder)
        if free is not None and free < SNAPSHOT_MIN_FREE:  # the verdict log must not starve
            self.low_disk += 1
            if not self._paused:
                self._paused = True
                _log.warning(
                    "%s: snapshots paused: %.1f MB free on its disk (below %.0f MB, kept for the verdict "
                    "log); they resume when space is freed",
                    self.folder,
                    free / 1e6,
                    SNAPSHOT_MIN_FREE / 1e6,
                )
            return
        if self._paused:
            self._paused = False
            _log.warning("%s: snapshots resumed (%d flagged products had none)", self.folder, self.low_disk)
        stamp = dt.datetime.fromtimestamp(v.wall_time, tz=dt.UTC).strftime("%Y%m%dT%H%M%S.%f")[:-3]
        stem = f"{stamp}_{v.seq:06d}_p{v.product_id}"
        clean = v.evidence.image
        annotated = annotate_verdict(clean, result.roi_px, v)
        total = 0
        try:
            for kind, image in (("clean", clean), ("annotated", annotated)):
                total += self._write_jpeg(self.folder / f"{stem}_{kind}.jpg", image)
        except SinkError as exc:  # a full disk must not stop the inspection; the log has the verdict
            self.failed += 1
            _log.warning("%s", exc)
        self._kept.append((stem, total))
        self.written += 1
        self._prune()

    def _write_jpeg(self, path: Path, image: np.ndarray) -> int:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise SinkError(f"{path}: cannot encode the snapshot")
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_bytes(buf.tobytes())
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)  # a full disk keeps no half-written files
            raise SinkError(f"{path}: cannot write the snapshot ({exc.strerror})") from None
        return len(buf)

    def _prune(self) -> None:
        total = self.bytes
        if self._kept and self._kept[-1][1] > self.max_bytes and not self._said_too_small:
            self._said_too_small = True  # (each product's pictures were written and removed at once)
            _log.warning(
                "%s: one product's snapshots take %.2f MB, more than snapshot_max_mb (%.2f MB): none "
                "is kept; raise output.snapshot_max_mb (--snapshot-max-mb)",
                self.folder,
                self._kept[-1][1] / 2**20,
                self.max_bytes / 2**20,
            )
        while self._kept and (len(self._kept) > self.max_count or total > self.max_bytes):
            stem, size = self._kept.pop(0)
            for kind in ("clean", "annotated"):
                try:
                    (self.folder / f"{stem}_{kind}.jpg").unlink()
                except FileNotFoundError:
                    pass
            total -= size
            self.removed += 1


#: ``--record`` stops (the file finished, so it plays) when its disk has less free than this:
#: OpenCV's writer says nothing when a write fails, and an .mp4 cut off by a full disk has no
#: index and does not play at all
RECORD_MIN_FREE = 16_000_000
#: the free space is looked at every this many frames (a statvfs call)
RECORD_FREE_EVERY = 30


def record_type_problem(path: Path) -> str | None:
    """Why a recording cannot be written as ``path``'s file type (None: it can)."""
    if path.suffix.lower() in RECORD_SUFFIXES:
        return None
    return f"cannot record to this file type (expected {', '.join(RECORD_SUFFIXES)})"


class VideoRecorder(_ClosingSink):
    """The annotated stream as a video file (``mp4v``), opened at the first frame's size. Stops
    recording, with one warning, before its disk is full (``RECORD_MIN_FREE``)."""

    needs_annotated = True

    def __init__(self, path: str | Path, fps: float, live: bool = True):
        self.path = Path(path)
        self.fps = float(fps) if fps and fps > 0 else 30.0
        self._writer: cv2.VideoWriter | None = None
        #: the first and last frame's capture time; frames that come in real time (``live``: a
        #: camera, a stream, a paced video) span how long the line ran
        self._span: tuple[float, float] | None = None
        self.live = live
        #: the first frame's size, and the recording's (rounded up to even numbers)
        self._frame_size = (0, 0)
        self._size = (0, 0)
        self.frames = 0
        #: why recording stopped before the run ended (a disk nearly full), or None
        self.stopped: str | None = None

    def _free_problem(self) -> str | None:
        free = free_bytes(self.path.parent)
        if free is None or free >= RECORD_MIN_FREE:
            return None
        return f"{free / 1e6:.1f} MB free on its disk (it stops below {RECORD_MIN_FREE / 1e6:.0f} MB)"

    def __enter__(self) -> VideoRecorder:
        if problem := record_type_problem(self.path):
            raise SinkError(f"{self.path}: {problem}")
        if not self.path.parent.is_dir():
            raise SinkError(f"{self.path}: folder {self.path.parent} does not exist")
        existed = self.path.exists()
        if problem := opencv_problem(self.path):
            raise SinkError(problem)
        try:  # the writer opens the file only at the first frame: find out now if it cannot
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644))
        except OSError as exc:
            raise SinkError(f"{self.path}: cannot record ({exc.strerror})") from None
        if not existed:
            self.path.unlink(missing_ok=True)
        if problem := self._free_problem():
            raise SinkError(f"{self.path}: cannot record: {problem}")
        size = self.path.stat().st_size if existed else 0
        if size:  # a service restarted with the same record path, a name reused: said, not silent
            _log.warning(
                "%s: replaced by this run's recording (the file there held %.1f MB); give each run "
                "its own file to keep them",
                self.path,
                size / 1e6,
            )
        return self

    def write(self, result: FrameResult) -> None:
        if result.stopped or self.stopped is not None:
            return  # no new frame; or the recording was stopped
        if self.frames % RECORD_FREE_EVERY == 0 and (problem := self._free_problem()):
            self.stopped = problem
            _log.warning(
                "%s: recording stopped after %d frames: %s; the inspection, verdict log and snapshots go on",
                self.path,
                self.frames,
                problem,
            )
            self.close()
            return
        image = result.annotated if result.annotated is not None else result.frame.image
        h, w = image.shape[:2]
        if self._writer is None:
            self._frame_size = (w, h)
            # the encoder takes even sizes only (it would drop an odd row or column): pad instead
            self._size = (w + w % 2, h + h % 2)
            self._writer = cv2.VideoWriter(
                str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self._size
            )
            if not self._writer.isOpened():
                self._writer = None
                raise SinkError(f"{self.path}: cannot record (OpenCV has no writer for this file type)")
        fw, fh = self._frame_size
        if (w, h) != (fw, fh):  # another size (a folder of photos): fitted whole, its aspect kept
            f = min(fw / w, fh / h)
            tw, th = max(1, round(w * f)), max(1, round(h * f))
            fitted = np.zeros((fh, fw, 3), np.uint8)
            x, y = (fw - tw) // 2, (fh - th) // 2
            fitted[y : y + th, x : x + tw] = cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA)
            image = fitted
        if (fw, fh) != self._size:
            pad_y, pad_x = self._size[1] - fh, self._size[0] - fw
            image = cv2.copyMakeBorder(image, 0, pad_y, 0, pad_x, cv2.BORDER_REPLICATE)
        self._writer.write(image)
        self.frames += 1
        t = result.frame.t_capture
        self._span = (t, t) if self._span is None else (self._span[0], t)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            self._say_speed()

    def _say_speed(self) -> None:
        """A recording of a loop that dropped frames plays faster than the line ran (its frames
        are written at the source's rate; filling the gaps would cost the inspection encoding
        time): said, with by how much, when it is 1.5 times or more."""
        if self._span is None or self.frames < 2 or not self.live:
            return
        ran = self._span[1] - self._span[0]
        plays = (self.frames - 1) / self.fps
        if plays > 0 and ran / plays >= SPEED_SAID:
            _log.warning(
                "%s: %d frames over %.0f s of the line, written at %g fps: it plays %.1fx faster than "
                "the line ran (the loop kept up with %.1f frames/s)",
                self.path,
                self.frames,
                ran,
                self.fps,
                ran / plays,
                (self.frames - 1) / ran,
            )


def display_available() -> str | None:
    """Why a window cannot be opened here, or None if it can."""
    if os.name == "posix" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "--display needs a desktop session (no DISPLAY or WAYLAND_DISPLAY); run headless or --record"
    info = cv2.getBuildInformation()
    gui = re.search(r"^\s*GUI:\s*(\S+)", info, re.MULTILINE)
    if gui and gui.group(1).upper() == "NONE":
        return (
            "--display needs OpenCV with GUI support; this is opencv-python-headless "
            "(install opencv-python instead, or record with --record)"
        )
    return None


class Display(_ClosingSink):
    """A window with the annotated stream; only where a display exists."""

    needs_annotated = True
    WINDOW = "stampline"

    def __enter__(self) -> Display:
        reason = display_available()
        if reason:
            raise SinkError(reason)
        try:
            cv2.namedWindow(self.WINDOW, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            raise SinkError(
                f"--display: cannot open a window ({str(exc).strip().splitlines()[-1]})"
            ) from None
        return self

    def write(self, result: FrameResult) -> None:
        if result.stopped:
            return  # no new frame
        image = result.annotated if result.annotated is not None else result.frame.image
        cv2.imshow(self.WINDOW, image)
        cv2.waitKey(1)

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.WINDOW)
        except cv2.error:
            pass
