"""Figures drawn in a forked process while the main job goes on.

Drawing the report's figures (matplotlib, single-threaded, text layout in Python) takes seconds
that nothing else in the job waits for. :func:`start_rendering` forks the process once the
figures' data exist and draws them in the child, which inherits the data (nothing is pickled),
while the parent writes its netCDF files; :meth:`Rendering.wait` collects the files and raises
if a figure failed. Where ``fork`` is unavailable, or with ``background=False``, the figures are
drawn in the calling process when :meth:`Rendering.wait` is called.
"""

from __future__ import annotations

import multiprocessing
import signal
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path

from bayesbridge.errors import BayesBridgeError

__all__ = ["Rendering", "start_rendering", "RenderingError"]

FigureJob = Callable[[], object]
"""A callable returning a matplotlib Figure."""


class RenderingError(BayesBridgeError, RuntimeError):
    """A figure could not be drawn (the message holds the figure's name and the child's traceback)."""


def _draw_all(jobs: Mapping[str, FigureJob], folder: Path) -> dict[str, Path]:
    from bayesbridge.plots.report import save_figure

    return {name: save_figure(job(), folder / f"{name}.png") for name, job in jobs.items()}


def _child(jobs: Mapping[str, FigureJob], folder: Path, conn) -> None:
    # a Ctrl-C reaches the whole process group: the child stops at once and the parent, which
    # holds interrupts while it moves its outputs into place, sees the failure in wait()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        conn.send(("ok", {name: str(path) for name, path in _draw_all(jobs, folder).items()}))
    except BaseException:  # noqa: BLE001 - everything goes back to the parent as text
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


class Rendering:
    """Figures being drawn: in a forked child, or deferred to :meth:`wait`.

    Parameters
    ----------
    jobs : mapping of str to callable
        Figure name (file stem) to a callable returning the figure.
    folder : pathlib.Path
        Where ``<name>.png`` files are written.
    background : bool
        Fork a child to draw them now (default); else draw them in :meth:`wait`.
    """

    def __init__(self, jobs: Mapping[str, FigureJob], folder: Path, background: bool = True) -> None:
        self.jobs, self.folder = dict(jobs), Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._process = None
        self._conn = None
        if background and self.jobs and "fork" in multiprocessing.get_all_start_methods():
            ctx = multiprocessing.get_context("fork")
            self._conn, child_conn = ctx.Pipe(duplex=False)
            self._process = ctx.Process(target=_child, args=(self.jobs, self.folder, child_conn), daemon=True)
            self._process.start()
            child_conn.close()

    def wait(self) -> dict[str, Path]:
        """The files written, by figure name; raises :class:`RenderingError` if a figure failed."""
        if self._process is None:
            return _draw_all(self.jobs, self.folder)
        try:
            message = self._conn.recv() if self._conn.poll(None) else ("error", "no reply")
        except EOFError:
            message = ("error", "the drawing process ended without a reply")
        self._process.join()
        self._conn.close()
        if message[0] != "ok" or self._process.exitcode != 0:
            detail = message[1] if message[0] != "ok" else f"exit code {self._process.exitcode}"
            raise RenderingError(f"figures: drawing failed in the background process ({detail})")
        return {name: Path(path) for name, path in message[1].items()}

    def cancel(self) -> None:
        """Stop the drawing process (a job that fails elsewhere need not wait for its figures)."""
        if self._process is not None and self._process.is_alive():
            self._process.terminate()
            self._process.join()


def start_rendering(jobs: Mapping[str, FigureJob], folder: Path, *, background: bool = True) -> Rendering:
    """Start drawing ``jobs`` into ``folder`` (see :class:`Rendering`; ``background`` as there)."""
    return Rendering(jobs, folder, background)
