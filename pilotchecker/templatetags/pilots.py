"""Pilot pages: the outcome strip, the daily pass-rate chart, check badges, JSON."""

from __future__ import annotations

import json

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

register = template.Library()

OUTCOME_COLOURS = {
    "passed": "#1e7b4f",
    "warning": "#d49b00",
    "failed": "#a4262c",
    "no-report": "#6b1d22",
    "lost": "#8a94a3",
}
OUTCOME_WORDS = {
    "passed": "passed",
    "warning": "warning",
    "failed": "failed its checks",
    "no-report": "ended without a report",
    "lost": "lost (no report in time)",
}
CHECK_BADGES = {"pass": "passed", "warn": "warning", "fail": "failed"}


@register.simple_tag
def outcome_strip(pilots, length: int = 20) -> SafeString:
    """The last ``length`` pilot outcomes as a row of coloured bars, oldest left."""
    bar, gap, height = 9, 3, 20
    pilots = list(pilots)[-length:]
    empty = length - len(pilots)
    counts: dict[str, int] = {}
    rects = []
    for i in range(length):
        x = i * (bar + gap)
        if i < empty:
            rects.append((x, 6, height - 12, "#e3e8ee", "no pilot"))
            continue
        p = pilots[i - empty]
        counts[p.outcome] = counts.get(p.outcome, 0) + 1
        when = p.finished_at.strftime("%Y-%m-%d %H:%M") if p.finished_at else ""
        label = f"#{p.pk} {OUTCOME_WORDS.get(p.outcome, p.outcome)} {when}"
        rects.append((x, 0, height, OUTCOME_COLOURS.get(p.outcome, "#8a94a3"), label))
    summary = ", ".join(f"{n} {word}" for word, n in counts.items()) or "no pilots yet"
    body = format_html_join(
        "",
        '<rect x="{}" y="{}" width="' + str(bar) + '" height="{}" rx="2" fill="{}">'
        "<title>{}</title></rect>",
        rects,
    )
    return format_html(
        '<svg class="strip" width="{}" height="{}" viewBox="0 0 {} {}" role="img" '
        'aria-label="Last {} pilots: {}">{}</svg>',
        length * (bar + gap) - gap,
        height,
        length * (bar + gap) - gap,
        height,
        len(pilots),
        summary,
        body,
    )


@register.simple_tag
def daily_chart(days) -> SafeString:
    """Pass rate per day as bars (height = rate), pilots per day written under each."""
    bar, gap, top, height = 26, 8, 16, 80
    parts = []
    for i, d in enumerate(days):
        x = i * (bar + gap)
        parts.append(
            format_html(
                '<rect x="{}" y="{}" width="{}" height="{}" fill="#eef2f7"></rect>',
                x,
                top,
                bar,
                height,
            )
        )
        if d["rate"] is not None:
            h = max(2, round(height * d["rate"] / 100))
            colour = "#1e7b4f" if d["rate"] >= 90 else "#d49b00" if d["rate"] >= 50 else "#a4262c"
            parts.append(
                format_html(
                    '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}: {} of {} '
                    "passed ({}%)</title></rect>"
                    '<text x="{}" y="{}" class="rate">{}%</text>',
                    x,
                    top + height - h,
                    bar,
                    h,
                    colour,
                    d["day"].isoformat(),
                    d["passed"],
                    d["pilots"],
                    d["rate"],
                    x + bar / 2,
                    top - 4,
                    d["rate"],
                )
            )
        parts.append(
            format_html(
                '<text x="{}" y="{}" class="day">{}</text><text x="{}" y="{}" class="n">{}</text>',
                x + bar / 2,
                top + height + 14,
                d["day"].strftime("%d"),
                x + bar / 2,
                top + height + 27,
                d["pilots"] or "",
            )
        )
    width = len(days) * (bar + gap) - gap
    total = sum(d["pilots"] for d in days)
    passed = sum(d["passed"] for d in days)
    return format_html(
        '<svg class="daily" width="{}" height="{}" viewBox="0 0 {} {}" role="img" '
        'aria-label="Pass rate per day over {} days: {} of {} pilots passed">{}</svg>',
        width,
        top + height + 32,
        width,
        top + height + 32,
        len(days),
        passed,
        total,
        SafeString("".join(parts)),
    )


@register.simple_tag
def check_badge(status: str) -> SafeString:
    return format_html(
        '<span class="badge state-{}">{}</span>', CHECK_BADGES.get(status, "failed"), status
    )


@register.filter
def as_json(value) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


@register.filter
def short_value(value) -> str:
    """A check's value or threshold in a table cell."""
    if value is None:
        return "–"
    if isinstance(value, list | tuple):
        # Required or found items (CVMFS repositories, paths, commands).
        return ", ".join(short_value(v) for v in value) or "none"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)
