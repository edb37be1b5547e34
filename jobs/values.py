"""Numbers and flags from request parameters: one rule each, for views, forms and filters.

A value that does not parse (or is not finite, or does not fit a database integer) is None,
never an exception: a malformed query string gets the default or a form error, not a 500.
"""

from __future__ import annotations

import math
from typing import Any

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def parse_int(value: Any) -> int | None:
    """An integer that fits a signed 64-bit column, else None."""
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if -(2**63) <= number < 2**63 else None


def parse_float(value: Any) -> float | None:
    """A finite float, else None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def parse_flag(value: Any, *, default: bool) -> bool:
    """An optional flag: ``default`` when absent; off only for "0", "false" or "off"."""
    if value is None:
        return default
    return str(value).strip().lower() not in ("0", "false", "off")
