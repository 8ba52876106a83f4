"""Exception hierarchy of bayesbridge.

Every error raised for bad user input is a subclass of :class:`BayesBridgeError` and of the
matching built-in (``ValueError``, ``TypeError``, ``FileNotFoundError`` ...), so callers can catch
either. Messages follow one rule: name the argument, say what was expected, what was received,
and how to fix it.
"""

from __future__ import annotations

import numbers

__all__ = [
    "BayesBridgeError",
    "InputValueError",
    "InputTypeError",
    "DataFileError",
    "VariableNotFoundError",
    "TimeAxisError",
    "CalendarError",
    "RegionError",
    "GridCoverageError",
    "AllMissingError",
    "ShapeMismatchError",
    "ParameterError",
    "FilterDivergenceError",
    "NotFittedError",
    "TaskFailedError",
    "ClusterError",
    "OutputPathError",
    "ObservationValueError",
    "ResourceLimitError",
    "check_choice",
    "check_int",
]


class BayesBridgeError(Exception):
    """Base class of every error bayesbridge raises on purpose."""


class InputValueError(BayesBridgeError, ValueError):
    """An argument has the right type but an unusable value."""


class InputTypeError(BayesBridgeError, TypeError):
    """An argument has the wrong type."""


class DataFileError(BayesBridgeError, OSError):
    """A data file is missing, unreadable or not in a recognised format (the message names it)."""


class VariableNotFoundError(InputValueError, KeyError):
    """A requested variable is absent; the message lists the variables that exist."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class TimeAxisError(InputValueError):
    """Missing, non-monotonic, duplicated or irregular time axis."""


class CalendarError(InputValueError):
    """Calendars that differ between files, or a time outside the usable calendar range."""


class RegionError(InputValueError):
    """Unknown region name or malformed region bounds."""


class GridCoverageError(InputValueError):
    """The grid does not cover the requested region; the message gives the grid's extent."""


class AllMissingError(InputValueError):
    """Every value in a region, series or observation array is missing (NaN)."""


class ShapeMismatchError(InputValueError):
    """Array shapes disagree; the message states both shapes."""


class ParameterError(InputValueError):
    """A model or method parameter is outside its valid range."""


class FilterDivergenceError(BayesBridgeError, FloatingPointError):
    """An inference engine diverged (NaN/inf states, or innovations far outside their range)."""


class NotFittedError(BayesBridgeError, RuntimeError):
    """A codec or dynamics model was used before ``fit``."""


class TaskFailedError(BayesBridgeError, RuntimeError):
    """A task of :func:`bayesbridge.parallel.map_tasks` failed after its retries.

    The message names the task's index, parameters and seed and quotes the original error;
    ``task``, ``params`` and ``seed`` hold them for programmatic use.
    """

    def __init__(self, message: str, task: int | None = None, params: dict | None = None,
                 seed: int | None = None) -> None:
        super().__init__(message)
        self.task = task
        self.params = params
        self.seed = seed


class ClusterError(BayesBridgeError, ConnectionError):
    """A dask scheduler could not be reached or a local cluster could not be started."""


class OutputPathError(InputValueError):
    """An output path is unusable: a file where a folder is expected (or the reverse), below a
    file, or not writable; the message names the path and how to fix it."""


class ObservationValueError(InputValueError):
    """An observed value is infinite or outside its physically plausible range; the message names
    the column, the first offending date and the value."""


class ResourceLimitError(InputValueError):
    """The requested problem size would not fit in the memory available; the message gives the
    estimate, what is available and a size that fits."""


def check_choice(value, name: str, options, error: type[InputValueError] = ParameterError) -> None:
    """Raise ``error`` naming ``name``, the valid ``options`` and ``value`` unless ``value`` is one of them.

    The one check behind every ``Literal`` option of the package's configuration dataclasses and
    functions (e.g. ``check_choice(cfg.variant, "variant", get_args(Variant))``).

    Parameters
    ----------
    value : object
        The value received.
    name : str
        Argument name used in the message.
    options : sequence
        The valid values, listed in the message in this order.
    error : type
        The :class:`InputValueError` subclass raised (default :class:`ParameterError`).
    """
    if value not in options:
        raise error(f"{name}: expected one of {', '.join(map(repr, options))}, got {value!r}.")


def check_int(value, name: str, *, minimum: int, error: type[InputValueError] = ParameterError) -> int:
    """Return ``value`` as a Python ``int`` after checking that it is an integer ``>= minimum``.

    The shared integer check of the package (counts, lengths, seeds, years). Booleans and
    non-integers (``1.5``, ``"3"``, ``None``) raise :class:`InputTypeError`; integers below
    ``minimum`` raise ``error``. Python and numpy integers (any :class:`numbers.Integral`) are
    accepted. Both messages name the argument, the expectation, the value received and the fix:
    ``"years: expected an integer >= 2, got float 2.5; pass an int."`` and
    ``"years: expected an integer >= 2, got 1; pass years=2 or more."``.

    Parameters
    ----------
    value : object
        The value received.
    name : str
        Argument name used in the message.
    minimum : int
        Smallest valid value (inclusive).
    error : type
        The :class:`InputValueError` subclass raised for a value below ``minimum`` (default
        :class:`ParameterError`).

    Returns
    -------
    int
        ``int(value)``.

    Raises
    ------
    InputTypeError
        ``value`` is a bool or not an integer.
    InputValueError
        ``value < minimum`` (as ``error``).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputTypeError(f"{name}: expected an integer >= {minimum}, got {type(value).__name__} {value!r}; pass an int.")
    if value < minimum:
        raise error(f"{name}: expected an integer >= {minimum}, got {value}; pass {name}={minimum} or more.")
    return int(value)
