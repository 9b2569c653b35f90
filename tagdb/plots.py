"""Histograms drawn as SVG on the server: bars, axes with tick labels, the attribute's
name and unit. No JavaScript and no plotting library; the markup is built from numbers
and escaped text only."""

from __future__ import annotations

import math
from html import escape

from .store import Histogram

WIDTH, HEIGHT = 720, 340
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 70, 20, 16, 58


def nice_ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """Round tick values covering [lo, hi]: steps of 1, 2 or 5 times a power of ten."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(target, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
        value += step
    return ticks


def tick_label(value: float, step: float) -> str:
    """A tick's label with as many decimals as the step needs."""
    if step >= 1 or step <= 0:
        return f"{value:,.0f}"
    decimals = min(6, max(0, -math.floor(math.log10(step) + 1e-9)))
    return f"{value:,.{decimals}f}"


def missing_text(hist: Histogram) -> str:
    """'716 events have no lead_jet_pt', or '' when every passing event has a value."""
    n = hist.missing
    if not n:
        return ""
    return f"{n:,} {'event has' if n == 1 else 'events have'} no {hist.attribute}"


def _fmt(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def histogram_svg(
    hist: Histogram, unit: str = "", title: str = "", integer_bins: bool = False
) -> str:
    """The SVG markup of ``hist``: one bar per bin, with a tooltip giving its range and
    count. ``integer_bins`` labels bins by the integer at their centre. Passing events
    without a value of the attribute are in no bar; a line under the plot counts them."""
    edges = [float(e) for e in hist.edges]
    counts = [int(c) for c in hist.counts]
    lo, hi = edges[0], edges[-1]
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    top = max(counts, default=0)
    y_ticks = nice_ticks(0, top if top > 0 else 1, 5)
    if len(y_ticks) > 1 and y_ticks[-1] < top:
        # Headroom: the axis ends on the first round value above the fullest bin.
        y_ticks.append(y_ticks[-1] + (y_ticks[1] - y_ticks[0]))
    y_max = max(y_ticks[-1], top, 1)

    def x_of(v: float) -> float:
        return MARGIN_LEFT + (v - lo) / (hi - lo) * plot_w

    def y_of(v: float) -> float:
        return MARGIN_TOP + plot_h - v / y_max * plot_h

    label = escape(hist.attribute + (f" [{unit}]" if unit else ""))
    missing_note = missing_text(hist)
    heading = escape(title or f"Distribution of {hist.attribute}")
    parts = [
        f'<svg class="histogram" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-labelledby="hist-title hist-desc" font-family="system-ui, sans-serif" '
        f'font-size="12">',
        f'<title id="hist-title">{heading}</title>',
        f'<desc id="hist-desc">{len(counts)} bins from {_fmt(lo)} to {_fmt(hi)}; '
        f"{sum(counts):,} events in range, the fullest bin holds {top:,}."
        f"{(' ' + escape(missing_note)) if missing_note else ''}</desc>",
        f'<rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{plot_w}" height="{plot_h}" '
        f'fill="#fbfcfe" stroke="none"/>',
    ]
    # Horizontal grid lines and y tick labels.
    y_step = y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else 1
    for t in y_ticks:
        y = y_of(t)
        parts.append(
            f'<line x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT + plot_w}" y1="{_fmt(y)}" y2="{_fmt(y)}" '
            f'stroke="#e3e8ef" stroke-width="1"/>'
        )
        parts.append(
            f'<text x="{MARGIN_LEFT - 8}" y="{_fmt(y + 4)}" text-anchor="end" fill="#5b6878">'
            f"{tick_label(t, y_step)}</text>"
        )
    # Bars.
    for i, n in enumerate(counts):
        if n <= 0:
            continue
        x0, x1 = x_of(edges[i]), x_of(edges[i + 1])
        gap = 1 if x1 - x0 > 4 else 0
        y = y_of(n)
        if integer_bins:
            where = f"{hist.attribute} = {_fmt((edges[i] + edges[i + 1]) / 2)}"
        else:
            closing = "]" if i == len(counts) - 1 else ")"
            where = f"{hist.attribute} in [{_fmt(edges[i])}, {_fmt(edges[i + 1])}{closing}"
        parts.append(
            f'<rect class="bar" x="{_fmt(x0 + gap / 2)}" y="{_fmt(y)}" '
            f'width="{_fmt(max(x1 - x0 - gap, 0.5))}" height="{_fmt(MARGIN_TOP + plot_h - y)}" '
            f'fill="#2f6fb5"><title>{escape(where)}: {n:,} events</title></rect>'
        )
    # Axes.
    base = MARGIN_TOP + plot_h
    parts.append(
        f'<line x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT + plot_w}" y1="{base}" y2="{base}" '
        f'stroke="#324155" stroke-width="1.2"/>'
    )
    parts.append(
        f'<line x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT}" y1="{MARGIN_TOP}" y2="{base}" '
        f'stroke="#324155" stroke-width="1.2"/>'
    )
    x_ticks = nice_ticks(lo, hi, 8)
    if integer_bins:
        x_ticks = [t for t in x_ticks if float(t).is_integer()] or x_ticks
    x_step = x_ticks[1] - x_ticks[0] if len(x_ticks) > 1 else 1
    for t in x_ticks:
        x = x_of(t)
        if x < MARGIN_LEFT - 0.5 or x > MARGIN_LEFT + plot_w + 0.5:
            continue
        parts.append(
            f'<line x1="{_fmt(x)}" x2="{_fmt(x)}" y1="{base}" y2="{base + 5}" stroke="#324155"/>'
        )
        parts.append(
            f'<text x="{_fmt(x)}" y="{base + 19}" text-anchor="middle" fill="#324155">'
            f"{tick_label(t, x_step)}</text>"
        )
    parts.append(
        f'<text x="{MARGIN_LEFT + plot_w / 2:.1f}" y="{HEIGHT - 12}" text-anchor="middle" '
        f'font-size="13" font-weight="600" fill="#1b2430">{label}</text>'
    )
    width = (hi - lo) / max(len(counts), 1)
    y_label = (
        "events"
        if integer_bins
        else f"events / {tick_label(width, width / 10)}{(' ' + escape(unit)) if unit else ''}"
    )
    parts.append(
        f'<text transform="translate(16 {MARGIN_TOP + plot_h / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle" font-size="13" font-weight="600" fill="#1b2430">{y_label}</text>'
    )
    if missing_note:
        parts.append(
            f'<text class="missing" x="{WIDTH - MARGIN_RIGHT}" y="{HEIGHT - 12}" '
            f'text-anchor="end" font-size="11" fill="#5b6878">{escape(missing_note)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)
