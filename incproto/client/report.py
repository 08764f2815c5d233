# -*- test-case-name: tests.unit.test_client -*-
"""How results are shown: a live progress line, a summary table, JSON, and
the merge of results from several load processes."""

from __future__ import annotations

import json
import os
from typing import IO, Any, Callable, Dict, List, Optional

from incproto.client.stats import Histogram

# A mode's result: a flat dict (times in seconds, rates per second), as the
# modes fire it, the report prints it and the load processes exchange it.
Result = Dict[str, Any]

_LABELS = {
    "target": ("target", "{}"),
    "connections": ("connections", "{:,}"),
    "concurrency": ("concurrent loops", "{:,}"),
    "processes": ("load processes", "{}"),
    "length": ("message payload", "{:,} bytes"),
    "bytes": ("message", "{:,} bytes"),
    "messages": ("messages answered", "{:,}"),
    "seconds": ("seconds", "{:.3f}"),
    "rate": ("per second", "{:,.0f}"),
    "mb_per_s": ("MB/s", "{:,.1f}"),
    "latency_p50": ("latency p50", "ms"),
    "latency_p99": ("latency p99", "ms"),
    "wait_p50": ("wait for greeting p50", "ms"),
    "wait_max": ("wait for greeting max", "ms"),
    "served_p50": ("served p50", "ms"),
    "served_p99": ("served p99", "ms"),
}


def summary(result: Result) -> str:
    """The result as a two-column table, one figure a row."""
    rows = [("mode", result["mode"])]
    for key, (label, form) in _LABELS.items():
        value = result.get(key)
        if value is None:
            continue
        text = f"{value * 1e3:,.2f} ms" if form == "ms" else form.format(value)
        rows.append((label, text))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {text}" for label, text in rows)


def as_json(result: Result) -> str:
    """The result as one line of JSON (without the raw histogram)."""
    return json.dumps({k: v for k, v in result.items() if k != "histogram"})


def merge(results: List[Result]) -> Result:
    """
    Combine the results of load processes that ran the same mode at once:
    counts and rates add, latency percentiles come from the merged
    histogram, times are the longest.
    """
    merged = dict(results[0])
    for key in ("connections", "concurrency", "messages", "rate"):
        if key in merged:
            merged[key] = sum(r[key] for r in results)
    merged["seconds"] = max(r["seconds"] for r in results)
    if "histogram" in merged:
        histogram = Histogram()
        for result in results:
            histogram.update(Histogram.from_json(result["histogram"]))
        merged["histogram"] = histogram.to_json()
        merged["latency_p50"] = histogram.percentile(50)
        merged["latency_p99"] = histogram.percentile(99)
    merged["processes"] = len(results)
    return merged


class ProgressLine:
    """
    One status line, rewritten in place, on a terminal only.  It is cut to
    the terminal's width: a line that wrapped could not be rewritten.

    @ivar stream: where it is written (standard error).
    @ivar columns: returns the terminal's width.
    """

    def __init__(
        self, stream: IO[str], columns: Optional[Callable[[], int]] = None
    ) -> None:
        self.stream = stream
        self.columns = columns or (lambda: _columns(stream))
        self._shown: Optional[str] = None

    def show(self, text: str) -> None:
        """Replace the line with C{text}, cut to the terminal's width."""
        width = max(self.columns() - 1, 1)
        if len(text) > width:
            text = text[: width - 1] + "\u2026"
        self.stream.write("\r\x1b[K" + text)
        self.stream.flush()
        self._shown = text

    def clear(self) -> None:
        """Remove the line, if one is shown."""
        if self._shown is not None:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = None


def _columns(stream: IO[str]) -> int:
    """The width of the terminal C{stream} writes to (80 if unknown)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 80
