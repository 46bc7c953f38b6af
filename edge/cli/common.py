"""What every command line shares: one-line errors with exit status 2, argument types."""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import importlib.util
import json
import logging
import math
import os
import re
import signal
import sys
import threading
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import numpy as np

from edge import contract
from edge.files import missing_paths, native_stderr_held, remove_if_empty, why_no_folder, write_whole
from edge.runtime import MAX_THREADS

USAGE_ERROR = 2


class CliError(Exception):
    """A usage, config, data or model error: reported on one line, exit status 2."""


def first_line(exc: BaseException | str, limit: int | None = None) -> str:
    """An error's first line (its type's name when it has no text), at most ``limit`` characters:
    what a one-line report of a library's exception shows."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


class _CurrentStderr(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a line is logged (as logging's own
    last resort does), not the stream of the moment it was made."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def to_the_journal() -> bool:
    """Whether stderr is systemd's journal (a service's): ``JOURNAL_STREAM`` names its device and
    inode (systemd.exec(5)); a pipe or terminal of the service's own children is not it."""
    dev, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
        return f"{st.st_dev}:{st.st_ino}" == f"{dev}:{inode}"
    except (OSError, ValueError, AttributeError):  # no stderr, or one without a file (a test's)
        return False


def journal_priority(level: int) -> str:
    """The ``<N>`` prefix journald reads as a line's priority (sd-daemon(3)) for a logging
    ``level``, where stderr is the journal: ``journalctl -p warning`` then shows the warnings and
    errors, which all came as "info" before. Elsewhere nothing."""
    if not to_the_journal():
        return ""
    for floor, n in ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6)):
        if level >= floor:
            return f"<{n}>"
    return "<7>"


def warn(prog: str, text: str) -> None:
    """``prog: WARNING: text`` on stderr (a warning priority in the journal)."""
    print(f"{journal_priority(logging.WARNING)}{prog}: WARNING: {text}", file=sys.stderr, flush=True)


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return journal_priority(record.levelno) + super().format(record)


def log_to_stderr(prog: str, verbose: bool = False) -> None:
    """The library's log lines on stderr as ``prog: LEVEL: message`` (warnings and up; INFO too
    when ``verbose``), each with its priority for the journal where stderr is it. Set before
    anything logs: a library's first ``logging.warning`` (TensorFlow's converter) would otherwise
    set the bare ``WARNING:edge.synth:...`` format for every line after."""
    handler = _CurrentStderr()
    handler.setFormatter(_JournalFormatter(f"{prog}: %(levelname)s: %(message)s"))
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger().setLevel(level)  # (where logging was set up before, as in a program embedding it)


@contextlib.contextmanager
def warnings_kept(name: str = "edge"):
    """The texts of the warnings the logger ``name`` and its children give inside the block (they
    are logged as usual too): for a report that must hold what stderr said (edge-bench's JSON)."""
    kept: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(record.getMessage())

    handler = _Keep(logging.WARNING)
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield kept
    finally:
        logger.removeHandler(handler)


@contextlib.contextmanager
def stops_deferred():
    """Ctrl-C (SIGINT) or SIGTERM waits until the block is done, then goes to the handler that was
    in force (as if it came then; KeyboardInterrupt where that was the system's default): for a
    step that must be whole (a checkpoint with its record, an image with its annotation)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    old = {sig: signal.signal(sig, lambda sig, _frame: got.append(sig)) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    handler = old[got[0]] if got else signal.SIG_IGN
    if callable(handler):
        handler(got[0], None)
    elif handler == signal.SIG_DFL:
        raise KeyboardInterrupt


#: the signals that stop a tool as Ctrl-C does (``stops_deferred``)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def interrupt(signal_name: str) -> None:
    """The ``on_stop`` of ``edge.pipeline.stop_signals`` for a tool that ends on a stop signal as on
    Ctrl-C: SIGTERM (``timeout``, ``kill``, ``systemctl stop``) then runs its clean-up too."""
    raise KeyboardInterrupt(signal_name)


#: the exit status of a tool whose reader went away (``edge-eval ... | head -1``), as a C tool
#: killed by SIGPIPE gives
PIPE_CLOSED = 128 + 13


def pipe_closed_quietly(main: Callable[..., int]) -> Callable[..., int]:
    """``main`` ending without a traceback when whoever reads its output stops reading."""

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        try:
            return main(argv)
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)  # nothing more to flush into the closed pipe
            os.dup2(devnull, sys.stdout.fileno())
            return PIPE_CLOSED

    return wrapper


def fail(prog: str, exc: BaseException | str, status: int = USAGE_ERROR) -> int:
    """Say what went wrong in one line (an OSError as ``file: reason``, see ``os_error_text``); the
    folders this run made and left empty go again."""
    if isinstance(exc, BrokenPipeError) and exc.filename is None:  # our reader went away, not a file
        raise exc  # (pipe_closed_quietly ends the tool)
    text = os_error_text(exc) if isinstance(exc, OSError) else exc
    print(f"{journal_priority(logging.ERROR)}{prog}: error: {first_line(text)}", file=sys.stderr)
    remove_made_folders()
    return status


#: Folders made by :func:`make_folder` in this process, parents before children.
_made_folders: list[Path] = []


def make_folder(folder: Path) -> None:
    """``mkdir -p folder``, remembering which folders it made, so that a run that fails does not
    leave them behind empty (:func:`remove_made_folders`)."""
    _made_folders.extend(reversed(missing_paths(folder)))
    folder.mkdir(parents=True, exist_ok=True)


def remove_made_folders() -> None:
    """Remove the folders :func:`make_folder` made that are still empty, deepest first."""
    remove_if_empty(_made_folders[::-1])
    _made_folders.clear()


def os_error_text(exc: OSError) -> str:
    """An OSError as ``file: reason`` (no errno prefix), for a one-line error."""
    return f"{getattr(exc, 'filename', '') or ''}: {exc.strerror or exc}".lstrip(": ")


def native_stderr_muted():
    """Discard what native code writes straight to file descriptor 2 inside the block. When the
    block raises, what was written is passed on to stderr, so a failed import still says why."""
    return native_stderr_held()


def import_quietly(name: str) -> ModuleType:
    """Import a module without its native start-up lines on stderr. TensorFlow 2.21 prints
    "oneDNN custom operations are on" twice, before any flag is read, and neither
    TF_CPP_MIN_LOG_LEVEL nor ABSL_MIN_LOG_LEVEL turns it off; a tool's one-line error or first
    progress line should be the first thing its user sees."""
    if name in sys.modules:
        return sys.modules[name]
    with native_stderr_muted():
        return importlib.import_module(name)


def tensorflow_problem(what: str) -> str | None:
    """Why ``what`` cannot run here: TensorFlow is not installed (a device's install: numpy, OpenCV
    and LiteRT only), said with the command that installs it; None where it is. Told before any
    work (edge-train made its synthetic data for two minutes, then gave a traceback)."""
    if importlib.util.find_spec("tensorflow") is not None:
        return None
    return (
        f"{what} needs TensorFlow, which is not installed here (a device install has numpy, OpenCV "
        "and LiteRT only); install the training extra: pip install 'stampline[train]'"
    )


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def keras_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a Keras model, told from the file itself before TensorFlow loads
    (seconds): a message naming the file, or None when it may be one."""
    if not path.exists():
        return f"{path}: model file not found"
    if not path.is_file():
        return f"{path}: expected a Keras model file, found a folder"
    if path.suffix == ".h5":
        try:
            with path.open("rb") as f:
                ok = f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE
        except OSError as exc:
            return f"{path}: cannot read the model ({exc.strerror})"
        return None if ok else f"{path}: not a Keras model file (expected an HDF5 .h5 file)"
    if path.suffix != ".keras":
        return f"{path}: expected a Keras model (.keras) or weights (.h5) file"
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except OSError as exc:
        return f"{path}: cannot read the model ({exc.strerror})"
    except zipfile.BadZipFile:
        return f"{path}: not a Keras model file (expected a .keras archive as edge-train writes)"
    if "config.json" not in names:
        return f"{path}: not a Keras model file (a zip archive without the config.json of a .keras model)"
    return None


def keras_sidecar(model_path: Path) -> dict:
    """What edge-train wrote beside a Keras model (``model.json``: labels, kind, provenance), or
    {} when there is none. CliError naming the file if it is there but not a JSON object."""
    side = model_path.with_name("model.json")
    if not side.exists():
        return {}
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise CliError(
            f"{side}: not valid JSON (the model.json edge-train writes beside its model)"
        ) from None
    if not isinstance(data, dict):
        raise CliError(f"{side}: expected a JSON object (the model.json edge-train writes beside its model)")
    if problem := _sidecar_problem(data):
        raise CliError(f"{side}: {problem} (the model.json edge-train writes beside its model)")
    return data


def _sidecar_problem(data: dict) -> str | None:
    """What is wrong with the keys of a ``model.json`` (None: nothing): each is optional, and
    read as the embedded metadata's key of the same name would be."""
    labels = data.get("labels")
    if labels is not None:
        try:
            contract.ModelMetadata(labels=labels)
        except contract.ContractError as exc:
            return f"labels: {exc}"
    kind = data.get("kind")
    if kind is not None and kind not in contract.KIND_OUTPUTS:
        return f"kind: expected one of {', '.join(contract.KIND_OUTPUTS)}, got {kind!r}"
    threshold = data.get("threshold")
    if threshold is not None and (
        isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold < 1
    ):
        return f"threshold: expected a number between 0 and 1, got {threshold!r}"
    if not isinstance(data.get("provenance", {}), dict):
        return f"provenance: expected an object, got {data['provenance']!r}"
    return None


def keras_model_problem(
    path: Path, model, labels: Sequence[str] | None = None, kind: str | None = None
) -> str | None:
    """Why a loaded Keras ``model`` is not a Stampline model (for ``labels`` and ``kind``, its
    model.json's, when given): a message naming the file, or None."""
    try:  # (a Sequential model never called has no output: not ours either)
        names = list(model.output_names) if isinstance(model.output, dict) else []
    except (AttributeError, ValueError):
        names = []
    if contract.PRESENCE not in names:
        return (
            f"{path}: model outputs {names or 'unnamed'} lack {contract.PRESENCE!r}; "
            "expected a Stampline model (named outputs presence, box/center/heatmap)"
        )
    if tuple(model.input_shape[1:]) != contract.INPUT_SHAPE:
        return f"{path}: input {tuple(model.input_shape[1:])} != expected {contract.INPUT_SHAPE}"
    if (
        labels is not None
        and contract.CLASS in names
        and model.output[contract.CLASS].shape[-1] != len(labels)
    ):
        return (
            f"{path}: class output has {model.output[contract.CLASS].shape[-1]} labels, "
            f"model.json lists {len(labels)}"
        )
    if kind is not None and not (
        set(contract.KIND_OUTPUTS[kind][0]) <= set(names)
        or set(contract.KIND_DIRECT_OUTPUTS.get(kind, (None,))) <= set(names)
    ):
        return f"{path}: model.json says kind {kind!r}, but the model's outputs {sorted(names)} are not one's"
    kind = kind or contract.kind_of_outputs(names)
    if (
        labels is not None
        and kind is not None
        and contract.has_class_head(kind, len(labels))
        and contract.CLASS not in names
    ):
        return (
            f"{path}: model.json lists {len(labels)} labels ({', '.join(labels)}), but the model has no "
            f"{contract.CLASS!r} output to tell them apart"
        )
    return None


class DefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown in --help, except where there is none to show: required options, options
    left out by default (None, an empty list, a switch that is off), and help that already says.
    The description and epilog keep their lines (examples to copy)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        default = action.default
        if (
            action.required
            or default is None
            or default is False
            or default == []
            or "default" in (action.help or "")
        ):
            return action.help
        return super()._get_help_string(action)


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (``prog: error: ...``), exit status 2,
    like every other bad input; ``--help`` still shows the usage.

    A value that starts with a minus and a digit is a value, not an option: argparse knows ``-5``
    and ``-0.5`` but took ``--roi -0.1,0,0.5,0.5`` for a missing value ("expected one argument")
    instead of saying what is wrong with the region."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\.?\d[\d.,eE+-]*$")

    def error(self, message: str):  # type: ignore[override]
        fail(self.prog, message)
        raise SystemExit(USAGE_ERROR)


def check_output_file(path: Path, what: str, json_report: bool = False) -> None:
    """Fail now, not after the run, when ``path`` cannot be written: its folder is made if
    missing; a folder in its place or a read-only folder is a CliError naming the path. A
    ``json_report`` replaces only an earlier JSON report (or an empty file): a model, a verdict
    log or notes there were replaced without a word."""
    if path.is_dir():
        raise CliError(f"{path}: is a folder (expected a file for {what})")
    if json_report:
        refuse_non_report(path, what)
    parent = path.parent
    try:
        make_folder(parent)
    except OSError as exc:
        why = why_no_folder(exc, parent)
        raise CliError(f"{path}: cannot make its folder {parent} for {what} ({why})") from None
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise CliError(f"{path}: not writable (needed for {what})")
    # os.access says yes to root everywhere (/proc, a read-only mount): open it as the write will
    existed = path.exists()
    if existed and not path.is_file():
        return  # /dev/stdout, a named pipe (opening one to try would wait for its reader)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | (0 if existed else os.O_CREAT | os.O_EXCL)))
    except OSError as exc:
        raise CliError(f"{path}: not writable (needed for {what}: {exc.strerror})") from None
    if not existed:
        path.unlink(missing_ok=True)


#: an earlier report larger than this is not read to tell what it is
REPORT_READ_MAX = 64 << 20


def refuse_non_report(path: Path, what: str) -> None:
    """CliError where ``path`` holds something a JSON report (``what``) must not replace."""
    if held := not_a_report(path):
        raise CliError(f"{path}: holds {held}, which {what} would replace; give another path (or remove it)")


def not_a_report(path: Path) -> str | None:
    """What a file that is not a JSON report holds (None: a report, empty, or not a file)."""
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return None
        if path.stat().st_size > REPORT_READ_MAX:
            return "a file too large for a report"
        data = json.loads(path.read_bytes())
    except OSError:
        return None  # (writing it says why)
    except (ValueError, RecursionError):
        return "something other than a JSON report (a verdict log, a model, notes?)"
    if not isinstance(data, dict):
        return "JSON that is not a report"
    if "seq" in data and "product_id" in data:
        return "a verdict log"
    return None


def _int_of(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _whole_number(text: str) -> int:
    from edge.config import MAX_WHOLE

    value = _int_of(text)
    if abs(value) > MAX_WHOLE:  # (a camera 10**20: an OpenCV traceback; a batch of it, TensorFlow's)
        raise argparse.ArgumentTypeError(f"expected at most {MAX_WHOLE:,}, got {text}")
    return value


def path_arg(text: str) -> Path:
    """A path given on the command line (an empty one, ``--model ''``, is not the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty one")
    return Path(text)


#: processes generating synthetic images at most (edge-synth, edge-train --workers): each one a
#: Python process of some 200 MB; a typo of 10**20 spawned thousands before anything failed
MAX_WORKERS = 64


def positive_int(text: str) -> int:
    value = _whole_number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return value


def thread_count(text: str) -> int:
    """An interpreter thread count: a whole number from 1 to ``MAX_THREADS``."""
    value = positive_int(text)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_THREADS} threads, got {value}")
    return value


def int_up_to(limit: int, what: str, low: int = 1) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``limit`` (``what`` says why the limit)."""

    def parse(text: str) -> int:
        value = _int_of(text)  # (its own limit said, not the general one)
        if value < low:
            raise argparse.ArgumentTypeError(
                f"expected a number {'> 0' if low == 1 else f'>= {low}'}, got {value}"
            )
        if value > limit:
            raise argparse.ArgumentTypeError(f"expected at most {limit:,} ({what}), got {value:,}")
        return value

    return parse


#: a number of worker processes, 1 to ``MAX_WORKERS``
worker_count = int_up_to(MAX_WORKERS, "worker processes")


def non_negative_int(text: str) -> int:
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def number(text: str) -> float:
    """Any number (a flag whose range the config checks)."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def number_or_auto(text: str) -> float | str:
    """A number, or the word ``auto`` (a camera setting left to the camera)."""
    return "auto" if text.strip().lower() == "auto" else number(text)


def finite_float(text: str) -> float:
    value = number(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value:g}")
    return value


def presence_threshold(text: str) -> float:
    """A presence threshold: strictly between 0 and 1, as the config's ``model.threshold``."""
    value = number(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {value}")
    return value


def unit_float(text: str) -> float:
    value = number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value


def _finite(obj: object) -> object:
    """NaN (a metric with nothing to measure) -> null, numpy scalars -> Python: strict JSON."""
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Path, data: object) -> None:
    """Write ``data`` as indented, strict JSON (NaN as null), whole or not at all: into a
    temporary file beside ``path`` renamed over it, so a full disk leaves the previous file (or
    none), never an empty or cut one. An OSError names ``path`` (a full disk's has no file name).
    A path that is not a regular file (``/dev/stdout``) is written as it is."""
    text = json.dumps(_finite(data), indent=2, sort_keys=True, allow_nan=False) + "\n"
    write_whole(path, text, sync=True)
