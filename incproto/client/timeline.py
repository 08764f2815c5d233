# -*- test-case-name: tests.unit.test_client -*-
"""A timeline chart of a run, as SVG: a row per connection showing when it
arrived, how long it waited for the greeting, and how long it was served.

Like the series' charts, it makes sequential, concurrent and limited servers
look different at a glance.  The SVG is written by hand: a few rectangles do
not need a plotting library.
"""

from __future__ import annotations

import math
from typing import List, Sequence
from xml.sax.saxutils import escape

from incproto.client.connection import CheckedConnection

MAX_ROWS = 200
_WIDTH = 900
_LEFT = 78
_RIGHT = 20
_TOP = 62
# Row height: 14 px for a few connections, shrinking so that the plot
# stays within _PLOT_HEIGHT for many.
_ROW = 14.0
_PLOT_HEIGHT = 560.0
_LABELLED_ROWS = 30
_WAITING = "#f0a33c"
_SERVED = "#3c7bf0"


def _tick_step(span: float) -> float:
    """A round step giving about 5 to 10 ticks over C{span} seconds."""
    step = 10 ** math.floor(math.log10(span)) if span > 0 else 1.0
    for factor in (1, 2, 5, 10):
        if span / (step * factor) <= 10:
            return step * factor
    return step * 10


def ordinal(number: int) -> str:
    """C{1st}, C{2nd}, C{3rd}, C{4th}, ..., C{11th}, ..., C{21st}."""
    if number % 100 in (11, 12, 13):
        return f"{number}th"
    return f"{number}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(number % 10, 'th') }"


def timeline_svg(
    connections: Sequence[CheckedConnection], origin: float, title: str
) -> str:
    """
    Draw C{connections} as an SVG document.

    The time axis runs from C{origin} (or, if that is long before, from the
    first connection's arrival) to the last close, in seconds since
    C{origin}.  More than L{MAX_ROWS} connections
    are sampled evenly (the title says which), and rows get thinner as they
    get more numerous, so the chart stays about 700 pixels tall.

    @param connections: the run's connections, in the order they were opened.
    @param origin: the run's start, on its clock; times are drawn from it.
    @param title: the chart's heading.
    """
    rows: List[CheckedConnection] = list(connections)
    if len(rows) > MAX_ROWS:
        every = math.ceil(len(rows) / MAX_ROWS)
        rows = rows[::every]
        title += f" (every {ordinal(every)} of {len(connections):,} connections)"
    start = min((c.started for c in rows), default=origin)
    end = max((c.closedAt or c.started for c in rows), default=start)
    if start - origin <= 0.2 * (end - start):
        start = origin  # close enough to show the axis from 0
    span = max(end - start, 1e-3)
    plot = _WIDTH - _LEFT - _RIGHT
    row = min(_ROW, _PLOT_HEIGHT / max(len(rows), 1))
    bar = max(row * 0.6, 1.0)
    plot_height = row * len(rows)
    axis = _TOP + plot_height + 6
    height = round(axis + 44)

    def x(t: float) -> float:
        return _LEFT + (t - start) / span * plot

    legend = _TOP - 26
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" '
        f'height="{height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{_WIDTH}" height="{height}" fill="white"/>',
        f'<text x="{_LEFT}" y="18" font-size="14">{escape(title)}</text>',
        f'<rect x="{_LEFT}" y="{legend}" width="10" height="10" fill="{_WAITING}"/>'
        f'<text x="{_LEFT + 14}" y="{legend + 9}">waiting for the greeting</text>'
        f'<rect x="{_LEFT + 170}" y="{legend}" width="10" height="10" '
        f'fill="{_SERVED}"/>'
        f'<text x="{_LEFT + 184}" y="{legend + 9}">served (greeted until closed)'
        f"</text>",
    ]
    # Few rows: each is numbered and ticked at its connect and sends.
    labelled = len(rows) <= _LABELLED_ROWS
    if labelled:
        parts.append(
            f'<line x1="{_LEFT + 370}" y1="{legend}" x2="{_LEFT + 370}" '
            f'y2="{legend + 10}" stroke="black"/>'
            f'<text x="{_LEFT + 376}" y="{legend + 9}">connected; each send</text>'
        )
    for index, connection in enumerate(rows):
        y = _TOP + index * row
        greeted = connection.greetedAt
        closed = connection.closedAt or end
        waited_until = greeted if greeted is not None else closed
        if labelled:
            parts.append(
                f'<text x="{_LEFT - 6}" y="{y + row / 2 + 4:.1f}" '
                f'text-anchor="end">{connection.number}</text>'
            )
        parts.append(
            f'<rect x="{x(connection.started):.1f}" y="{y + (row - bar) / 2:.1f}" '
            f'width="{max(x(waited_until) - x(connection.started), 0.5):.1f}" '
            f'height="{bar:.1f}" fill="{_WAITING}"/>'
        )
        if greeted is not None:
            parts.append(
                f'<rect x="{x(greeted):.1f}" y="{y + (row - bar) / 2:.1f}" '
                f'width="{max(x(closed) - x(greeted), 0.5):.1f}" '
                f'height="{bar:.1f}" fill="{_SERVED}"/>'
            )
        if labelled:
            ticks = [connection.started]
            ticks += [when for when, kind, _ in connection.events if kind == "sent"]
            for when in ticks:
                parts.append(
                    f'<line x1="{x(when):.1f}" y1="{y:.1f}" x2="{x(when):.1f}" '
                    f'y2="{y + row - 1:.1f}" stroke="black"/>'
                )
    if not labelled:
        # Connection numbers at about six rows, on a left axis.
        for index in sorted({0, *range(0, len(rows), max(len(rows) // 5, 1))}):
            y = _TOP + index * row + row / 2
            parts.append(
                f'<line x1="{_LEFT - 4}" y1="{y:.1f}" x2="{_LEFT}" y2="{y:.1f}" '
                f'stroke="black"/><text x="{_LEFT - 6}" y="{y + 4:.1f}" '
                f'text-anchor="end">{rows[index].number:,}</text>'
            )
    parts.append(
        f'<line x1="{_LEFT}" y1="{axis}" x2="{_LEFT + plot}" y2="{axis}" '
        f'stroke="black"/>'
    )
    step = _tick_step(span)
    tick = math.ceil((start - origin) / step - 1e-9) * step
    while tick <= end - origin + 1e-9:
        tx = x(origin + tick)
        parts.append(
            f'<line x1="{tx:.1f}" y1="{axis}" x2="{tx:.1f}" y2="{axis + 4}" '
            f'stroke="black"/><text x="{tx:.1f}" y="{axis + 16}" '
            f'text-anchor="middle">{_seconds(tick, step)}</text>'
        )
        tick += step
    parts.append(
        f'<text x="{_LEFT + plot / 2}" y="{axis + 34}" text-anchor="middle">'
        f"seconds since the run started</text>"
        f'<text x="{_LEFT - 6}" y="{_TOP - 9}" text-anchor="end">connection</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _seconds(value: float, step: float) -> str:
    """A tick label: as many decimals as the step needs."""
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{value:.{decimals}f}"
