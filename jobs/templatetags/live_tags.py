"""Filters for the live run and job pages: durations and rates in a few characters."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.filter
def duration(seconds: Any) -> str:
    """75 -> '1 min 15 s', 3725 -> '1 h 02 min'; None -> '–'."""
    if seconds is None or seconds == "":
        return "–"
    total = round(float(seconds))
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


@register.filter
def rate(value: Any, digits: int = 2) -> str:
    """A per-second figure with sensible precision: 0.4321 -> '0.43', 12.3 -> '12.3', 1234 -> '1,234'."""
    if value is None or value == "":
        return "–"
    v = float(value)
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.{int(digits)}f}"


@register.filter
def sci(value: Any) -> str:
    """A learning rate: 0.0002 -> '2.0e-04'."""
    if value is None or value == "":
        return "–"
    return f"{float(value):.1e}"


@register.filter
def ordinal(value: Any) -> str:
    """1 -> '1st', 2 -> '2nd', 11 -> '11th'."""
    n = int(value)
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
