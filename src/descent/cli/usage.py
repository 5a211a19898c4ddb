"""What the subcommands share: a bad command-line value is a :class:`UsageError`, printed
by :func:`fail` as one line naming the value, with exit status 2."""

from __future__ import annotations

import math
import sys


class UsageError(ValueError):
    """A bad command-line value: printed as is, exit status 2."""


def positive_int(value: str | None, flag: str, least: int = 1) -> int | None:
    if value is None:
        return None
    what = "a positive integer" if least == 1 else f"an integer ≥ {least}"
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"invalid {flag} {value!r}: expected {what}") from None
    if n < least:
        raise UsageError(f"invalid {flag} {value!r}: expected {what}")
    return n


def nonnegative_float(value: str | None, flag: str) -> float | None:
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"invalid {flag} {value!r}: expected a number") from None
    if not (x >= 0 and math.isfinite(x)):
        raise UsageError(f"invalid {flag} {value!r}: expected a finite number ≥ 0")
    return x


def fail(command: str, exc: Exception) -> int:
    print(f"descent {command}: {exc}", file=sys.stderr)
    return 2
