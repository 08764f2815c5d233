# -*- test-case-name: tests.unit.test_histogram,tests.unit.test_metrics -*-
"""A histogram of durations kept as plain numbers: a comparison (or a
C{bisect}) and two additions per observation, read by the metrics collector
at each scrape.

Not C{prometheus_client.Histogram}: that takes a lock per bucket counted,
and belongs to a registry; incproto observes on the reactor thread only,
into counters of its own objects, which its collector reads when scraped
(L{incproto.serving.metrics}).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import List, Sequence, Tuple

# Buckets, in seconds, of each of incproto's histograms (see
# docs/operations.md for why these).
CONNECTION_SECONDS = (0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 14400.0)
QUEUE_WAIT_SECONDS = (0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0)
HANDLER_SECONDS = (1e-05, 5e-05, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 1.0)
JOB_SECONDS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)


class Histogram:
    """
    Counts of observed values by bucket, and their sum.

    @ivar bounds: the buckets' upper bounds (inclusive), ascending; a last
        bucket, C{+Inf}, holds the rest.
    @ivar counts: observations per bucket (not cumulative), C{+Inf} last.
    @ivar total: the sum of the observed values.
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError(f"bucket bounds must ascend: {bounds}")
        self.bounds = tuple(bounds)
        self.counts: List[int] = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        """
        Count C{value} in the first bucket whose bound is at least it.

        Most values fall in the first bucket (an inline handler's call takes
        microseconds, and is timed at every read): one comparison finds it
        there.  C{bisect} is Python code on PyPy, where it was 4% of the
        server's time under ping (vmprof).
        """
        bounds = self.bounds
        if value <= bounds[0]:
            self.counts[0] += 1
        else:
            self.counts[bisect_left(bounds, value)] += 1
        self.total += value

    def cumulative(self) -> List[Tuple[float, int]]:
        """
        The buckets as Prometheus exposes them: C{(bound, count of values at
        most bound)}, infinity last (its count is the number of values).
        """
        buckets, seen = [], 0
        for bound, count in zip([*self.bounds, math.inf], self.counts):
            seen += count
            buckets.append((bound, seen))
        return buckets
