"""Filters for the evaluation pages: intervals, latencies and costs in a few characters."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()
DASH = "—"


@register.filter
def interval(value: Any) -> str:
    """A (low, high) share as percents: (0.62, 0.91) -> '62–91 %'."""
    if not value:
        return DASH
    low, high = value
    return f"{round(100 * float(low))}–{round(100 * float(high))} %"


@register.filter
def seconds(value: Any) -> str:
    """A latency: 0.0421 -> '42 ms', 1.234 -> '1.23 s'; None -> '—'."""
    if value is None or value == "":
        return DASH
    v = float(value)
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


@register.filter
def money(value: Any) -> str:
    """A cost in dollars: 12.5 -> '$12.50', 0.0123 -> '$0.0123', 0.00001 -> '< $0.001';
    None (the price is unknown) -> '—'."""
    if value is None or value == "":
        return DASH
    v = float(value)
    if v == 0 or v >= 1:
        return f"${v:,.2f}"
    if v >= 0.001:
        return f"${v:.4f}"
    return "< $0.001"


@register.filter
def tokens(value: Any) -> str:
    """Tokens per example: 123.4 -> '123'."""
    if value is None or value == "":
        return DASH
    return f"{float(value):,.0f}"
