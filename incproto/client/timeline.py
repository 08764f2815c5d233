# -*- test-case-name: tests.test_client -*-
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

MAX_ROWS = 400
_WIDTH = 900
_LEFT = 60
_TOP = 50
_ROW = 14
_WAITING = "#f0a33c"
_SERVED = "#3c7bf0"


def _tick_step(span: float) -> float:
    """A round step giving about 5 to 10 ticks over C{span} seconds."""
    step = 10 ** math.floor(math.log10(span)) if span > 0 else 1.0
    for factor in (1, 2, 5, 10):
        if span / (step * factor) <= 10:
            return step * factor
    return step * 10


def timeline_svg(
    connections: Sequence[CheckedConnection], origin: float, title: str
) -> str:
    """
    Draw C{connections} as an SVG document.

    @param connections: the run's connections, in the order they were opened.
    @param origin: the run's start (C{perf_counter}); times are drawn from it.
    @param title: the chart's heading.
    """
    rows: List[CheckedConnection] = list(connections)
    note = ""
    if len(rows) > MAX_ROWS:
        every = math.ceil(len(rows) / MAX_ROWS)
        rows = rows[::every]
        note = f" (every {every}th connection of {len(connections):,})"
    end = max((c.closedAt or c.started for c in rows), default=origin)
    span = max(end - origin, 1e-3)
    plot = _WIDTH - _LEFT - 20
    height = _TOP + _ROW * len(rows) + 40

    def x(t: float) -> float:
        return _LEFT + (t - origin) / span * plot

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" '
        f'height="{height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{_WIDTH}" height="{height}" fill="white"/>',
        f'<text x="{_LEFT}" y="18" font-size="14">{escape(title + note)}</text>',
        f'<rect x="{_LEFT}" y="28" width="10" height="10" fill="{_WAITING}"/>'
        f'<text x="{_LEFT + 14}" y="37">waiting for the greeting</text>'
        f'<rect x="{_LEFT + 170}" y="28" width="10" height="10" fill="{_SERVED}"/>'
        f'<text x="{_LEFT + 184}" y="37">served</text>'
        f'<line x1="{_LEFT + 240}" y1="28" x2="{_LEFT + 240}" y2="38" '
        f'stroke="black"/><text x="{_LEFT + 246}" y="37">arrival, sends</text>',
    ]
    for row, connection in enumerate(rows):
        y = _TOP + row * _ROW
        greeted = connection.greetedAt
        closed = connection.closedAt or end
        waited_until = greeted if greeted is not None else closed
        parts.append(
            f'<text x="{_LEFT - 6}" y="{y + 10}" text-anchor="end">'
            f"{connection.number}</text>"
            f'<line x1="{x(connection.started):.1f}" y1="{y}" '
            f'x2="{x(connection.started):.1f}" y2="{y + _ROW - 2}" stroke="black"/>'
            f'<rect x="{x(connection.started):.1f}" y="{y + 2}" '
            f'width="{max(x(waited_until) - x(connection.started), 0.5):.1f}" '
            f'height="{_ROW - 6}" fill="{_WAITING}"/>'
        )
        if greeted is not None:
            parts.append(
                f'<rect x="{x(greeted):.1f}" y="{y + 2}" '
                f'width="{max(x(closed) - x(greeted), 0.5):.1f}" '
                f'height="{_ROW - 6}" fill="{_SERVED}"/>'
            )
        for when, kind, _ in connection.events:
            if kind == "sent":
                parts.append(
                    f'<line x1="{x(when):.1f}" y1="{y}" x2="{x(when):.1f}" '
                    f'y2="{y + _ROW - 2}" stroke="black"/>'
                )
    axis = _TOP + _ROW * len(rows) + 6
    parts.append(
        f'<line x1="{_LEFT}" y1="{axis}" x2="{_LEFT + plot}" y2="{axis}" '
        f'stroke="black"/>'
    )
    step = _tick_step(span)
    tick = 0.0
    while tick <= span + 1e-9:
        tx = _LEFT + tick / span * plot
        parts.append(
            f'<line x1="{tx:.1f}" y1="{axis}" x2="{tx:.1f}" y2="{axis + 4}" '
            f'stroke="black"/><text x="{tx:.1f}" y="{axis + 16}" '
            f'text-anchor="middle">{tick:g} s</text>'
        )
        tick += step
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
