"""Checks of command-line arguments, run before any command starts its work.

Every function raises a :class:`~bayesbridge.errors.BayesBridgeError` whose message names the
option (``--members``), what was given, what is expected and a value that works; the entry
point prints it as one ``error:`` line with exit code 2 (``docs/design.md`` section 3.1).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from bayesbridge.errors import InputTypeError, ParameterError, ResourceLimitError, TimeAxisError

__all__ = ["SEED_MAX", "METHODS", "CODECS", "DYNAMICS", "PROPOSALS", "MIN_PARTICLES", "DEFAULT_PARTICLES", "check_seed", "check_count",
           "check_option_choice", "check_bridge_options", "parse_names", "month", "month_range",
           "available_memory", "check_memory"]

SEED_MAX = 2**32 - 1
"""Largest seed a command accepts (every generator of the package takes it)."""

# The choices of the library, copied here so that options are checked before torch loads
# (tests/test_bad_inputs.py checks that they agree with bayesbridge.infer, bayesbridge.bridge and
# bayesbridge.apps.bridge_options).
METHODS = ("enks", "enkf", "etkf", "pf", "svi", "kalman")
"""The engines (:data:`bayesbridge.infer.METHODS`)."""
CODECS = ("eof", "autoencoder", "vae")
"""The codecs of :class:`bayesbridge.bridge.BridgeConfig`."""
DYNAMICS = ("linear", "seasonal", "neural", "lstm")
"""The latent dynamics of :class:`bayesbridge.bridge.BridgeConfig`."""
PROPOSALS = ("auto", "guided", "bootstrap")
"""The particle proposals (:data:`bayesbridge.apps.bridge_options.PROPOSALS`)."""
MIN_PARTICLES = 10
"""Fewest particles of the particle filter (:data:`bayesbridge.apps.bridge_options.MIN_PARTICLES`)."""
DEFAULT_PARTICLES = 5000
"""Particles of the filter without ``--particles`` (:data:`bayesbridge.apps.bridge_options.DEFAULT_PARTICLES`)."""

# the rule of bayesbridge.apps.reanalysis.parse_month (kept here so that options are checked
# before the heavy modules load; tests/test_bad_inputs.py checks that both agree)
_MONTH = re.compile(r"^\s*(\d{1,4})[-/](\d{1,2})(?:[-/](\d{1,2}))?(?:[T ][0-9:.+\-Z]*)?\s*$")


def check_seed(seed: int, option: str = "--seed") -> int:
    """``seed`` if it is an integer in ``0..SEED_MAX``, else :class:`ParameterError`."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputTypeError(f"{option}: expected an integer, got {seed!r}; pass e.g. {option} 0.")
    if not 0 <= seed <= SEED_MAX:
        raise ParameterError(f"{option}: expected an integer from 0 to {SEED_MAX}, got {seed}; pass e.g. {option} 0.")
    return seed


def check_count(value: int, option: str, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` if it is an integer in ``minimum..maximum``, else :class:`ParameterError` naming ``option``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputTypeError(f"{option}: expected an integer, got {value!r}.")
    if value < minimum:
        raise ParameterError(f"{option}: expected an integer >= {minimum}, got {value}; pass {option} {minimum} or more.")
    if maximum is not None and value > maximum:
        raise ParameterError(f"{option}: expected an integer <= {maximum}, got {value}; pass {option} {maximum} or less.")
    return value


def check_option_choice(value: str, option: str, options: Sequence[str]) -> str:
    """``value`` if it is one of ``options``, else :class:`ParameterError` listing them."""
    if value not in options:
        raise ParameterError(f"{option}: expected one of {', '.join(options)}, got {value!r}.")
    return value


def check_bridge_options(method: str, codec: str, dynamics: str, members: int | None, particles: int | None = None,
                         proposal: str | None = None) -> None:
    """Check ``--method``, ``--codec``, ``--dynamics``, ``--members``, ``--particles`` and ``--proposal`` together.

    Each choice must be one of its options; ``svi`` cannot run with the LSTM's lag-augmented
    state; ``--members`` is at least 2; ``--particles`` (at least :data:`MIN_PARTICLES`) and
    ``--proposal`` belong to ``--method pf`` only, whose filter runs :data:`DEFAULT_PARTICLES`
    (at least ``--members``) particles when ``--particles`` is not given
    (:mod:`bayesbridge.apps.bridge_options`). ``members=None``:
    a command without ``--members`` (its own sizes are valid).
    """
    if members is not None:
        check_count(members, "--members", minimum=2)
    check_option_choice(method, "--method", METHODS)
    check_option_choice(codec, "--codec", CODECS)
    check_option_choice(dynamics, "--dynamics", DYNAMICS)
    if method == "svi" and dynamics == "lstm":
        raise ParameterError(
            "--method, --dynamics: svi cannot fit the lag-augmented state of the LSTM dynamics; use --method "
            "enks, enkf, etkf or pf with --dynamics lstm, or --method svi with --dynamics linear, seasonal or neural."
        )
    given = [option for option, value in (("--particles", particles), ("--proposal", proposal)) if value is not None]
    if given and method != "pf":
        raise ParameterError(
            f"{', '.join(given)}: only the particle filter uses {' and '.join(given)}, got --method {method}; "
            f"drop {' and '.join(given)} or use --method pf."
        )
    if particles is not None:
        if not isinstance(particles, int) or isinstance(particles, bool) or particles < MIN_PARTICLES:
            raise ParameterError(
                f"--particles: a particle filter needs at least {MIN_PARTICLES} particles (1000 or more for a "
                f"posterior that does not collapse), got {particles!r}; pass e.g. --particles 1000."
            )
    if proposal is not None:
        check_option_choice(proposal, "--proposal", PROPOSALS)


def parse_names(text: str, option: str, known: Sequence[str]) -> list[str]:
    """The comma-separated names of ``text``, each one of ``known``, none twice, at least one.

    Parameters
    ----------
    text : str
        E.g. ``"nino3,nino4"``.
    option : str
        Option name used in the messages.
    known : sequence of str
        The valid names.

    Returns
    -------
    list of str
    """
    names = [v.strip() for v in str(text).split(",") if v.strip()]
    if not names:
        raise ParameterError(
            f"{option}: no name in {text!r}; expected a comma-separated list of {', '.join(known)}, "
            f"e.g. {option} {','.join(known[:2])}."
        )
    unknown = [v for v in names if v not in known]
    if unknown:
        raise ParameterError(f"{option}: {', '.join(map(repr, unknown))} unknown; expected names from {', '.join(known)}.")
    twice = sorted({v for v in names if names.count(v) > 1})
    if twice:
        raise ParameterError(f"{option}: {', '.join(twice)} listed more than once; name each once.")
    return names


def month(text: str | None, option: str) -> str | None:
    """``text`` as ``YYYY-MM`` after checking that it is a month (``None`` passes through)."""
    if text is None:
        return None
    match = _MONTH.match(str(text))
    if match is None:
        raise TimeAxisError(f"{option}: {str(text)!r} is not a month; expected YYYY-MM, e.g. 1950-01.")
    year, mon, day = int(match[1]), int(match[2]), int(match[3] or 1)
    if year < 1 or not 1 <= mon <= 12 or not 1 <= day <= 31:
        raise TimeAxisError(
            f"{option}: {str(text)!r} is not a valid month (year >= 1, month 01..12, day 01..31); "
            f"expected YYYY-MM, e.g. 1950-01."
        )
    return f"{year:04d}-{mon:02d}"


def month_range(start: str | None, end: str | None) -> tuple[str | None, str | None]:
    """``(start, end)`` as ``YYYY-MM`` after checking both and that ``start`` is not after ``end``."""
    first, last = month(start, "--start"), month(end, "--end")
    if first is not None and last is not None and first > last:
        raise ParameterError(f"--start, --end: --start {first} comes after --end {last}; swap them.")
    return first, last


def available_memory() -> int:
    """Bytes this process may still allocate: the system's available memory, capped by a cgroup limit."""
    import psutil

    free = int(psutil.virtual_memory().available)
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:
            free = min(free, max(0, int(limit) - usage))
        break
    return free


def check_memory(needed: int, what: str, fix: str) -> None:
    """Raise :class:`ResourceLimitError` if ``needed`` bytes exceed 90 % of :func:`available_memory`.

    Parameters
    ----------
    needed : int
        Estimated peak memory of the request, in bytes.
    what : str
        The request, e.g. ``"--members 1000000000 over 60 months"``.
    fix : str
        What to do instead, e.g. ``"use --members 5000 or fewer"``.
    """
    free = available_memory()
    if needed > 0.9 * free:
        raise ResourceLimitError(
            f"{what} needs about {_size(needed)} of memory, but {_size(free)} is available; {fix}."
        )


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB") else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"
