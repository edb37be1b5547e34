"""Server-rendered SVG charts: plain functions from numbers to markup, no JavaScript, no CDN.

Every piece of text that goes into the markup is escaped here, so callers may mark the result safe.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from html import escape

WIDTH = 640
HEIGHT = 220
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 52, 16, 14, 30


def _num(value: float) -> str:
    """A short human label for an axis value: 3 significant digits."""
    return f"{value:.3g}"


def _finite(points: Iterable[tuple[int, float | None]]) -> list[tuple[int, float]]:
    return sorted(
        (int(step), float(loss))
        for step, loss in points
        if loss is not None and math.isfinite(float(loss))
    )


def loss_curve_svg(
    points: Iterable[tuple[int, float | None]],
    *,
    total_steps: int | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
    title: str = "Training loss by step",
) -> str:
    """A line chart of (step, loss). The x axis spans 0..total_steps, so the curve grows rightwards
    as training goes on; steps without a (finite) loss are skipped. ``data-points`` on the root
    element says how many points were drawn."""
    pts = _finite(points)
    label = escape(title)
    head = (
        f'<svg class="loss-curve" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{label}" data-points="{len(pts)}">'
        f"<title>{label}</title>"
    )
    x0, x1 = PAD_LEFT, width - PAD_RIGHT
    y0, y1 = PAD_TOP, height - PAD_BOTTOM  # y0 is the top edge
    axes = (
        f'<line class="axis" x1="{x0}" y1="{y1}" x2="{x1}" y2="{y1}"/>'
        f'<line class="axis" x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}"/>'
    )
    if not pts:
        empty = (
            f'<text class="empty" x="{(x0 + x1) / 2:.0f}" y="{(y0 + y1) / 2:.0f}" '
            f'text-anchor="middle">No loss points yet</text>'
        )
        return head + axes + empty + "</svg>"

    max_step = max(total_steps or 0, pts[-1][0], 1)
    low = min(loss for _, loss in pts)
    high = max(loss for _, loss in pts)
    if high - low < 1e-12:  # a flat line sits in the middle
        margin = abs(high) * 0.1 or 0.5
        low, high = low - margin, high + margin

    def x(step: int) -> float:
        return x0 + (x1 - x0) * step / max_step

    def y(loss: float) -> float:
        return y1 - (y1 - y0) * (loss - low) / (high - low)

    path = " ".join(
        f"{'M' if i == 0 else 'L'}{x(step):.1f},{y(loss):.1f}" for i, (step, loss) in enumerate(pts)
    )
    last_step, last_loss = pts[-1]
    ticks = (
        f'<text class="tick" x="{x0 - 6}" y="{y0 + 4}" text-anchor="end">{escape(_num(high))}</text>'
        f'<text class="tick" x="{x0 - 6}" y="{y1}" text-anchor="end">{escape(_num(low))}</text>'
        f'<text class="tick" x="{x0}" y="{y1 + 16}" text-anchor="middle">0</text>'
        f'<text class="tick" x="{x1}" y="{y1 + 16}" text-anchor="end">{max_step}</text>'
        f'<text class="axis-label" x="{(x0 + x1) / 2:.0f}" y="{y1 + 16}" text-anchor="middle">step</text>'
    )
    last = escape(f"step {last_step}: loss {_num(last_loss)}")
    marker = (
        f'<circle class="last" cx="{x(last_step):.1f}" cy="{y(last_loss):.1f}" r="3.5">'
        f"<title>{last}</title></circle>"
    )
    return head + axes + ticks + f'<path class="line" d="{path}"/>' + marker + "</svg>"
