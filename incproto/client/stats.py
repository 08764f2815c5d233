# -*- test-case-name: tests.test_client -*-
"""Latency histograms that merge across load processes, and percentiles."""

from __future__ import annotations

import math
from collections import Counter
from typing import Dict, Iterable, Optional

# Buckets 1% wide: a percentile is reported to within 1% of its value.
_GROWTH = math.log(1.01)


class Histogram:
    """
    Durations in logarithmic buckets, 1% wide, from 1 microsecond up.

    Bucket counts add, so the histograms of several load processes merge
    into the histogram of the whole run.
    """

    def __init__(self, counts: Optional[Dict[int, int]] = None) -> None:
        self.counts: Counter[int] = Counter(counts or {})

    def add(self, seconds: float) -> None:
        """Record one duration."""
        micros = max(seconds * 1e6, 1.0)
        self.counts[int(math.log(micros) / _GROWTH)] += 1

    def update(self, other: Histogram) -> None:
        """Add the durations of C{other}."""
        self.counts.update(other.counts)

    @property
    def total(self) -> int:
        """How many durations were recorded."""
        return sum(self.counts.values())

    def percentile(self, percent: float) -> Optional[float]:
        """
        The duration below which C{percent} of the recorded ones fall.

        @return: seconds (the upper edge of the bucket), or C{None} if empty.
        """
        total = self.total
        if not total:
            return None
        rank = max(1, math.ceil(total * percent / 100))
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return math.exp((bucket + 1) * _GROWTH) / 1e6
        raise AssertionError("unreachable")

    def to_json(self) -> Dict[str, int]:
        """Bucket counts with string keys, for JSON."""
        return {str(bucket): count for bucket, count in self.counts.items()}

    @classmethod
    def from_json(cls, counts: Dict[str, int]) -> Histogram:
        """The inverse of L{to_json}."""
        return cls({int(bucket): count for bucket, count in counts.items()})


def histogram_of(seconds: Iterable[float]) -> Histogram:
    """A histogram of C{seconds}."""
    histogram = Histogram()
    for value in seconds:
        histogram.add(value)
    return histogram
