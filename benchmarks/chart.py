"""Bar charts as SVG, one group of bars per benchmark mode (no plotting
library needed for a few rectangles)."""

from __future__ import annotations

from typing import Dict, List, Tuple
from xml.sax.saxutils import escape

_COLOURS = ["#3c7bf0", "#f0a33c", "#4caf50", "#9c27b0", "#e91e63", "#607d8b",
            "#795548", "#00bcd4"]  # fmt: skip


def bars_svg(title: str, panels: List[Tuple[str, Dict[str, float]]]) -> str:
    """
    Draw one panel of horizontal bars per C{(heading, {label: value})}; the
    longest bar of a panel is its largest value.
    """
    width, label_width, bar_height, gap = 760, 160, 16, 4
    y = 40
    parts: List[str] = []
    for heading, values in panels:
        parts.append(
            f'<text x="10" y="{y}" font-weight="bold">{escape(heading)}</text>'
        )
        y += 8
        top = max(values.values(), default=1.0) or 1.0
        for index, (label, value) in enumerate(values.items()):
            length = (width - label_width - 90) * value / top
            colour = _COLOURS[index % len(_COLOURS)]
            parts.append(
                f'<text x="{label_width - 6}" y="{y + 12}" text-anchor="end">'
                f"{escape(label)}</text>"
                f'<rect x="{label_width}" y="{y}" width="{length:.1f}" '
                f'height="{bar_height}" fill="{colour}"/>'
                f'<text x="{label_width + length + 4:.1f}" y="{y + 12}">'
                f"{value:,.0f}</text>"
                if value >= 1000
                else f"{value:.4g}</text>"
            )
            y += bar_height + gap
        y += 24
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" '
        f'font-family="sans-serif" font-size="12">'
        f'<rect width="{width}" height="{y}" fill="white"/>'
        f'<text x="10" y="20" font-size="15">{escape(title)}</text>'
    )
    return head + "".join(parts) + "</svg>\n"
