"""Small file-system helpers shared by the sinks and the command lines: which folders opening a
path would create, why a folder could not be made, removing what a run that never started
created, and holding back what native code prints on stderr."""

from __future__ import annotations

import contextlib
import faulthandler
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path


def _scratch_file():
    """A file in memory (Linux), else a temporary file: a service may have no writable /tmp."""
    try:
        return os.fdopen(os.memfd_create("stampline-stderr"), "w+b")
    except (AttributeError, OSError):
        return tempfile.TemporaryFile()


@contextlib.contextmanager
def native_stderr_held(keep: Callable[[str], bool] = lambda line: False):
    """Hold what native code (a runtime, TensorFlow) writes straight to file descriptor 2 inside
    the block; after it, pass on the lines ``keep`` says to (a line with its newline), or all of
    them when the block raises, so a failure still says why. Where descriptor 2 cannot be held
    (none, or no file to hold it in), the block runs as it is."""
    try:
        sys.stderr.flush()
        held = _scratch_file()
    except (OSError, ValueError):
        yield
        return
    with held:
        try:
            saved = os.dup(2)
        except OSError:
            yield
            return
        failed = False
        os.dup2(held.fileno(), 2)
        # a native crash inside (LiteRT aborts on some corrupt model files) would leave nothing
        # but an exit status: its Python stack goes where stderr was, naming where it happened
        faulted = faulthandler.is_enabled()
        faulthandler.enable(file=saved)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            os.dup2(saved, 2)
            if faulted:
                faulthandler.enable(file=2)
            else:
                faulthandler.disable()
            os.close(saved)
            held.seek(0)
            lines = held.read().decode("utf-8", errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if failed or keep(line))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


def _written_in_place(path: Path) -> bool:
    """Whether ``path`` names a stream rather than a file to replace: a device or a ``/proc`` file
    (``/dev/stdout``, also through links to one: renamed over, a shell's redirection would lose
    the output), or anything not a regular file."""
    p, hops = path.absolute(), 0
    while True:
        if str(p).startswith(("/dev/", "/proc/")):
            return True
        if not p.is_symlink() or hops > 40:
            break
        link = Path(os.readlink(p))
        p, hops = (link if link.is_absolute() else p.parent / link), hops + 1
    return path.exists() and not path.is_file()


def write_whole(path: Path | str, data: bytes | str, sync: bool = False) -> None:
    """``data`` (text as UTF-8) as ``path``, whole or not at all: into a hidden temporary file
    beside it, renamed over it, so a full disk or a stop mid-write leaves the previous file (or none),
    never a cut one (data sets' loaders pass hidden files over). A link is written through (the
    file it names is replaced), an existing file keeps its permissions, and one in a folder that
    takes no new file is written in place. ``sync``: flushed to the disk first. An OSError names
    ``path`` (a full disk's has no file name). A device or stream (``/dev/stdout``) is written as
    it is."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    in_place = _written_in_place(path)
    final = path if in_place else path.resolve()
    mode = None
    if not in_place and final.is_file():
        mode = stat.S_IMODE(final.stat().st_mode)
    target = final if in_place else final.with_name(f".{final.name}.{os.getpid()}.part")
    try:
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        except PermissionError:
            if in_place or mode is None or not os.access(final, os.W_OK):
                raise
            target, in_place = final, True  # a folder closed to new files: the file itself, as before
            fd = os.open(target, os.O_WRONLY | os.O_TRUNC)
        try:
            if mode is not None and not in_place:
                os.fchmod(fd, mode)
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            if sync and not in_place:
                os.fsync(fd)
        finally:
            os.close(fd)
        if not in_place:
            os.replace(target, final)
    except OSError as exc:
        if not in_place:
            with contextlib.suppress(OSError):
                target.unlink()
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None


def missing_paths(path: Path) -> list[Path]:
    """``path`` and those of its folders that do not exist yet, deepest first: what opening it
    (after ``mkdir(parents=True)``) would create."""
    made = []
    for p in (path, *path.parents):
        if os.path.lexists(p):
            break
        made.append(p)
    return made


def file_in_the_way(folder: Path) -> Path | None:
    """The file standing where ``folder``, or the nearest of its folders that exists, should be
    a folder (None: there is none, or nothing of it exists)."""
    for p in (folder, *folder.parents):
        if os.path.lexists(p):
            return None if p.is_dir() else p
    return None


def why_no_folder(exc: OSError, folder: Path) -> str:
    """Why ``folder`` could not be made: a file standing where one of its folders should be is
    named (the system says only "File exists" or "Not a directory"), else the system's reason."""
    if (p := file_in_the_way(folder)) is not None:
        return f"{p} is a file, not a folder"
    return exc.strerror or str(exc)


def remove_if_empty(paths: list[Path]) -> None:
    """Remove what a sink created for a run that never started (deepest first): empty files and
    empty folders only, so nothing anyone wrote is lost."""
    for p in paths:
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                p.rmdir()  # fails unless empty
            elif p.is_file() and p.stat().st_size == 0:
                p.unlink()


def same_path(a: Path, b: Path) -> bool:
    """``a`` and ``b`` name one file or folder (the same inode, or the same path before either
    exists)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.expanduser().resolve() == b.expanduser().resolve()


def clash(
    outputs: Sequence[tuple[str, Path | None]],
    inputs: Sequence[tuple[str, Path | None]],
    protected: Sequence[tuple[str, Sequence[Path]]] = (),
    folders: Sequence[tuple[str, Path | None]] = (),
) -> str | None:
    """Why an output would overwrite what a command reads or another of its outputs (None: it
    would not): each named output must differ from every other output and from every input,
    differ from the files of each ``protected`` group (a data set's images and label files,
    wherever they are), and lie outside each of ``folders`` (a data set's folder, where a file
    added is read as part of the data set next time)."""
    named = [(k, p) for k, p in outputs if p is not None]
    for i, (key, path) in enumerate(named):
        for other, there in [*named[:i], *((k, p) for k, p in inputs if p is not None)]:
            if same_path(path, there):
                return f"{key} {path}: the same as {other} (it would be overwritten)"
        for other, folder in folders:
            if folder is None:
                continue
            if folder.is_dir() and folder.resolve() in (path.resolve(), *path.resolve().parents):
                return f"{key} {path}: inside {other} {folder} (write it outside the data)"
        if not path.exists():
            continue
        for what, files in protected:
            if any(same_path(path, f) for f in files):
                return f"{key} {path}: one of the files of {what} (it would be overwritten)"
    return None


def opencv_problem(path: Path | str) -> str | None:
    """Why OpenCV's path-taking calls (``VideoCapture``, ``VideoWriter``) must not be given ``path``,
    or None: a file name that is not valid UTF-8 (a Latin-1 name from an old archive) crashes the
    process in them. Images are read and written through bytes instead
    (``edge.datasets.decode_image``, ``write_image``), so any name does there."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return f"{shown(path)}: the file name is not valid UTF-8, which OpenCV cannot open; rename the file"
    return None


def shown(path: Path | str) -> str:
    """``path`` for a message: a file name that is not valid UTF-8 shows its odd bytes escaped
    (``caf\\xe9.jpg``) instead of failing to print."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def listed(items: Sequence[str], most: int = 5) -> str:
    """``items`` for a one-line message: the first ``most`` of them, then how many more."""
    more = f"; and {len(items) - most} more" if len(items) > most else ""
    return "; ".join(items[:most]) + more
