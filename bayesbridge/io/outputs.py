"""Output folders: checked before the work, written as one set, cleaned after killed runs.

A command that writes several files (``posterior.nc``, ``inference_data.nc``,
``validation.csv`` ...) must never leave a folder that mixes the files of two runs. It writes
them through :func:`output_set`:

1. :func:`check_output_dir` (called before any computation) says whether the folder can be
   written at all: not an existing file, a creatable parent, writable;
2. the files are written into a staging folder beside them, ``DIR/.bayesbridge-staging-<pid>-
   <start>-<random>`` (the process id and start time of the writer, so that leftovers of dead
   runs can be told from runs in progress);
3. when every file is complete, a journal listing them (``.commit``) is written into the staging
   folder, interrupts (SIGINT, SIGTERM, SIGHUP) are held back (recorded, and delivered once the
   commit is done), the files are renamed into
   ``DIR`` one by one (``os.replace``, atomic per file, on the same file system) and the staging
   folder is removed; held-back interrupts are delivered afterwards.

Step 3 runs under an exclusive lock on ``DIR`` (``flock`` of the folder itself, so no lock file
is left behind): two runs that finish at the same moment commit one after the other, and the
folder holds the complete set of the one that committed last, never a mix.

An exception or interrupt before step 3 leaves ``DIR`` exactly as it was. A process killed
outright (SIGKILL, power loss) during the renames of step 3 leaves a journal behind:
:func:`clean_stale`, which every writing command runs on its output folder before working,
completes such a commit (roll forward) and removes the staging folders and ``.*.tmp`` files
(:func:`bayesbridge.io.atomic_path`) of every dead process.

Notes
-----
The test suite pauses the writer at a stage by setting ``BAYESBRIDGE_TEST_STAGE_PAUSE`` to
``"<stage>:<seconds>"`` (stages: ``staging``, ``staged``, ``moving``, ``moved``); the writer
then prints ``bayesbridge-stage: <stage>`` to stderr and sleeps. Nothing else reads it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from bayesbridge.errors import OutputPathError

__all__ = ["output_set", "check_output_dir", "check_output_file", "clean_stale", "process_tag",
           "STAGING_PREFIX", "commit_lock"]

STAGING_PREFIX = ".bayesbridge-staging-"
"""Name prefix of staging folders (followed by :func:`process_tag` and a random token)."""

_JOURNAL = ".commit"
_TAG = r"(?P<pid>\d+)-(?P<start>\d+)"
_STAGING_RE = re.compile(re.escape(STAGING_PREFIX) + _TAG + r"-[0-9a-f]+$")
_TMP_RE = re.compile(r"^\..+\." + _TAG + r"\.[^./]+\.tmp$")
_LEGACY_AGE_S = 86400.0  # staging folders without a process tag (older versions): removed after a day
_HELD_SIGNALS = tuple(getattr(signal, s) for s in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, s))
_PAUSE_ENV = "BAYESBRIDGE_TEST_STAGE_PAUSE"


def process_tag(pid: int | None = None) -> str:
    """``"<pid>-<start>"``: the process id and its start time (whole seconds since the epoch).

    Together they identify a process even after its id is reused; file and folder names carry
    them so that :func:`clean_stale` removes only the leftovers of dead processes.

    Parameters
    ----------
    pid : int, optional
        Process id (default: this process).

    Returns
    -------
    str
    """
    import psutil

    pid = os.getpid() if pid is None else int(pid)
    return f"{pid}-{int(psutil.Process(pid).create_time())}"


def _alive(pid: int, start: int) -> bool:
    import psutil

    try:
        return abs(int(psutil.Process(pid).create_time()) - start) <= 1
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # AccessDenied and the like: assume it runs
        return True


def _writable_ancestor(path: Path, name: str) -> Path:
    """The nearest existing folder above ``path`` (or ``path``), checked writable by a probe file."""
    probe_dir = path
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise OutputPathError(
            f"{name}: cannot create {str(path)!r} because {str(probe_dir)!r} is a file, not a folder; "
            f"choose another path."
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".bayesbridge-probe-", dir=probe_dir)
    except OSError as exc:
        raise OutputPathError(
            f"{name}: cannot write into {str(probe_dir)!r} ({exc.strerror or exc}); choose a folder "
            f"you can write to, or fix its permissions."
        ) from exc
    os.close(fd)
    os.unlink(probe)
    return probe_dir


def check_output_dir(path: str | os.PathLike, name: str = "out") -> Path:
    """Check, before any work, that the folder ``path`` can receive output files.

    The folder may exist (its other files are kept) or not (it is created later, with its
    parents); it must not be a file, and the nearest existing folder above it must be writable
    (checked with a probe file, which works for every user and file system). Leftovers of
    killed runs in it are cleaned (:func:`clean_stale`).

    Parameters
    ----------
    path : str or os.PathLike
        The output folder.
    name : str
        Argument name used in messages (e.g. ``"--out"``).

    Returns
    -------
    pathlib.Path
        ``path`` (user ``~`` expanded).

    Raises
    ------
    OutputPathError
        ``path`` is a file, lies below a file, or cannot be written.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputPathError(
            f"{name}: {str(path)!r} is a file, but an output folder is expected; pass a folder path "
            f"(it is created if missing), e.g. {name} {path.with_suffix('')}-out."
        )
    _writable_ancestor(path, name)
    if path.is_dir():
        clean_stale(path)
    return path


def check_output_file(path: str | os.PathLike, name: str = "out", suffixes: tuple[str, ...] = ()) -> Path:
    """Check, before any work, that the file ``path`` can be written (replaced if it exists).

    Parameters
    ----------
    path : str or os.PathLike
        The output file.
    name : str
        Argument name used in messages.
    suffixes : tuple of str
        Accepted file name endings (e.g. ``(".nc",)``); empty accepts any.

    Returns
    -------
    pathlib.Path
        ``path`` (user ``~`` expanded).

    Raises
    ------
    OutputPathError
        ``path`` is a folder, lies below a file, cannot be written, or has another ending.
    """
    path = Path(path).expanduser()
    example = f"{path}/result{suffixes[0] if suffixes else ''}"
    if path.is_dir():
        raise OutputPathError(
            f"{name}: {str(path)!r} is a folder, but a file name is expected; pass a file path, e.g. "
            f"{name} {example}."
        )
    if suffixes and path.suffix.lower() not in suffixes:
        raise OutputPathError(
            f"{name}: {str(path)!r} should end in {' or '.join(suffixes)}; e.g. {name} "
            f"{path.with_suffix(suffixes[0])}."
        )
    _writable_ancestor(path.parent, name)
    if path.parent.is_dir():
        clean_stale(path.parent)
    return path


def clean_stale(folder: str | os.PathLike) -> list[Path]:
    """Remove what killed runs left in ``folder``; complete their interrupted commits.

    Staging folders (``.bayesbridge-staging-<pid>-<start>-*``) and temporary files
    (``.<name>.<pid>-<start>.*.tmp``) whose process no longer exists are removed; a staging
    folder holding a commit journal first has its remaining files moved into ``folder`` (the
    commit is rolled forward, so the folder again holds one complete set). Files of running
    processes are never touched. Staging folders without a process tag (written by older
    versions) are removed once they are a day old.

    Parameters
    ----------
    folder : str or os.PathLike
        An output folder (missing: nothing to do).

    Returns
    -------
    list of pathlib.Path
        The staging folders and files removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if name.startswith(STAGING_PREFIX) and entry.is_dir():
            match = _STAGING_RE.match(name)
            if match is not None:
                if _alive(int(match["pid"]), int(match["start"])):
                    continue
                with commit_lock(folder):
                    _roll_forward(entry, folder)
            elif time.time() - entry.stat().st_mtime < _LEGACY_AGE_S:
                continue
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        elif name.startswith(".") and name.endswith(".tmp") and entry.is_file():
            match = _TMP_RE.match(name)
            if match is not None and not _alive(int(match["pid"]), int(match["start"])):
                entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed


def _roll_forward(stage: Path, folder: Path) -> None:
    """Finish the commit of a dead run: move the files its journal lists that are still staged."""
    journal = stage / _JOURNAL
    if not journal.is_file():
        return
    try:
        names = json.loads(journal.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    for rel in names:
        src = stage / rel
        if src.is_file():
            target = folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, target)


@contextlib.contextmanager
def commit_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (waits for another process's commit to finish).

    The lock is a ``flock`` of the folder's own descriptor, released when it is closed (also
    when the process dies). Where ``flock`` is unavailable (Windows), commits are not serialised.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _pause(stage: str) -> None:
    """Test hook: stop at ``stage`` when ``BAYESBRIDGE_TEST_STAGE_PAUSE`` asks for it."""
    wanted = os.environ.get(_PAUSE_ENV)
    if not wanted:
        return
    name, _, seconds = wanted.partition(":")
    if name == stage:
        print(f"bayesbridge-stage: {stage}", file=sys.stderr, flush=True)
        time.sleep(float(seconds or 60.0))


@contextlib.contextmanager
def _held_signals() -> Iterator[None]:
    """Hold back SIGINT, SIGTERM and SIGHUP; deliver the first one that arrived on exit.

    Python runs signal handlers in the main thread whichever thread the operating system gave
    the signal to (torch and dask start threads of their own, so blocking the main thread's
    signal mask is not enough): the handlers are replaced by one that only records the signal,
    and the signal is raised again once the previous handlers are back. Outside the main
    thread handlers cannot be changed, and nothing is held back.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {}
    for sig in _HELD_SIGNALS:
        handler = signal.getsignal(sig)
        if handler is None:  # installed outside Python: leave it alone
            continue
        previous[sig] = handler
        signal.signal(sig, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received:
            signal.raise_signal(received[0])


@contextlib.contextmanager
def output_set(folder: str | os.PathLike) -> Iterator[Path]:
    """Write a set of files into ``folder`` all together, or not at all.

    Yields a fresh staging folder beside the destination (inside ``folder``); write every output
    there under its final relative name (sub-folders such as ``figures/`` allowed). When the
    block succeeds, the files are moved into ``folder`` together (see the module notes: a
    journal, interrupts held back during the renames, roll forward after a hard kill); when it
    fails or is interrupted, the staging folder is removed and ``folder`` is unchanged.
    Leftovers of killed runs in ``folder`` are cleaned first (:func:`clean_stale`).

    Parameters
    ----------
    folder : str or os.PathLike
        The output folder (created, with its parents, if missing).

    Yields
    ------
    pathlib.Path
        The staging folder.

    Raises
    ------
    OutputPathError
        ``folder`` cannot be created or written.

    Examples
    --------
    >>> with output_set("results") as stage:                # doctest: +SKIP
    ...     posterior.to_netcdf(stage / "posterior.nc")
    ...     table.to_csv(stage / "validation.csv")
    """
    folder = check_output_dir(folder, "out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"out: cannot create {str(folder)!r} ({exc.strerror or exc}).") from exc
    stage = folder / f"{STAGING_PREFIX}{process_tag()}-{secrets.token_hex(6)}"
    stage.mkdir()
    try:
        _pause("staging")
        yield stage
        _pause("staged")
        files = sorted(str(p.relative_to(stage)) for p in stage.rglob("*")
                       if p.is_file() and p.name != _JOURNAL and not p.name.endswith(".tmp"))
        journal = stage / f"{_JOURNAL}.tmp"
        journal.write_text(json.dumps({"files": files}))
        with _held_signals(), commit_lock(folder):
            os.replace(journal, stage / _JOURNAL)
            for i, rel in enumerate(files):
                target = folder / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(stage / rel, target)
                if i == 0:
                    _pause("moving")
            _pause("moved")
            shutil.rmtree(stage, ignore_errors=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
