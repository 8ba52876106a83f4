"""Progress on a terminal, plain lines in a log.

On a terminal, long steps show a rich progress bar or spinner; when the output is a file or a
pipe (a batch job's log), each step is one printed line and no bar is drawn, so logs do not fill
with carriage-return updates. tqdm bars of library calls are switched on only when standard
error is a terminal (:func:`bars_enabled`).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence

from bayesbridge.cli.console import console

__all__ = ["interactive", "bars_enabled", "status", "steps"]


def interactive() -> bool:
    """Whether the console writes to a terminal (rich's detection, honouring ``FORCE_TERMINAL``)."""
    return bool(console.is_terminal)


def bars_enabled() -> bool:
    """Whether tqdm progress bars (written to standard error) should be drawn: only on a terminal."""
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def status(text: str) -> Iterator[None]:
    """A spinner with ``text`` on a terminal; one printed line otherwise."""
    if interactive():
        with console.status(text):
            yield
    else:
        console.print(text, soft_wrap=True, markup=False, highlight=False)
        yield


@contextlib.contextmanager
def steps(label: str, names: Sequence[str]) -> Iterator[Callable[[str], None]]:
    """Yield ``advance(step)``: a progress bar over ``names`` on a terminal, one line per step otherwise.

    Parameters
    ----------
    label : str
        Prefix of the description (``"demo"``).
    names : sequence of str
        The steps, in order; ``advance`` is called with each as it starts.
    """
    if not interactive():
        seen: set[str] = set()

        def log(step: str) -> None:
            if step not in seen:
                seen.add(step)
                console.print(f"{label}: {step}", soft_wrap=True, markup=False, highlight=False)

        yield log
        console.print(f"{label}: done", soft_wrap=True, markup=False, highlight=False)
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(label, total=len(names))

        def advance(step: str) -> None:
            done = list(names).index(step) if step in names else 0
            bar.update(task, completed=done, description=f"{label}: {step}")

        yield advance
        bar.update(task, completed=len(names), description=f"{label}: done")
