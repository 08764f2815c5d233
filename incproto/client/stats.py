# -*- test-case-name: tests.unit.test_client -*-
"""Latency histograms that merge across load processes, and percentiles."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Dict, Iterable, Optional

# Buckets 1% wide: a percentile is reported to within 1% of its value.
_GROWTH = math.log(1.01)


class Histogram:
    """
    Durations in logarithmic buckets, 1% wide, from 1 microsecond up.

    Bucket counts add, so the histograms of several load processes merge
    into the histogram of the whole run.  The smallest and largest
    durations are kept exactly, and percentiles never fall outside them.

    @ivar lowest: the smallest duration recorded, or C{None}.
    @ivar highest: the largest duration recorded, or C{None}.
    """

    def __init__(
        self,
        counts: Optional[Dict[int, int]] = None,
        lowest: Optional[float] = None,
        highest: Optional[float] = None,
    ) -> None:
        self.counts: Counter[int] = Counter(counts or {})
        self.lowest = lowest
        self.highest = highest

    def add(self, seconds: float) -> None:
        """Record one duration."""
        micros = max(seconds * 1e6, 1.0)
        self.counts[int(math.log(micros) / _GROWTH)] += 1
        self._observe(seconds, seconds)

    def _observe(self, lowest: Optional[float], highest: Optional[float]) -> None:
        if lowest is not None:
            self.lowest = lowest if self.lowest is None else min(self.lowest, lowest)
        if highest is not None:
            self.highest = (
                highest if self.highest is None else max(self.highest, highest)
            )

    def update(self, other: Histogram) -> None:
        """Add the durations of C{other}."""
        self.counts.update(other.counts)
        self._observe(other.lowest, other.highest)

    @property
    def total(self) -> int:
        """How many durations were recorded."""
        return sum(self.counts.values())

    def percentile(self, percent: float) -> Optional[float]:
        """
        The duration below which C{percent} of the recorded ones fall.

        @return: seconds (the upper edge of the bucket, but no more than the
            largest duration recorded and no less than the smallest), or
            C{None} if empty.
        """
        total = self.total
        if not total:
            return None
        rank = max(1, math.ceil(total * percent / 100))
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                edge = math.exp((bucket + 1) * _GROWTH) / 1e6
                if self.highest is not None:
                    edge = min(edge, self.highest)
                if self.lowest is not None:
                    edge = max(edge, self.lowest)
                return edge
        raise AssertionError("unreachable")

    def to_json(self) -> Dict[str, Any]:
        """Bucket counts with string keys, and the extremes, for JSON."""
        return {
            "buckets": {str(bucket): n for bucket, n in self.counts.items()},
            "lowest": self.lowest,
            "highest": self.highest,
        }

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> Histogram:
        """The inverse of L{to_json}."""
        counts = {int(bucket): n for bucket, n in data["buckets"].items()}
        return cls(counts, data["lowest"], data["highest"])


def histogram_of(seconds: Iterable[float]) -> Histogram:
    """A histogram of C{seconds}."""
    histogram = Histogram()
    for value in seconds:
        histogram.add(value)
    return histogram
