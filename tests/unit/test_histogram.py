"""Tests for incproto._kernel.histogram: buckets as Prometheus counts them."""

from __future__ import annotations

import math
import random

import pytest

from incproto._kernel.histogram import (
    CONNECTION_SECONDS,
    HANDLER_SECONDS,
    JOB_SECONDS,
    QUEUE_WAIT_SECONDS,
    Histogram,
)


def test_a_value_on_a_bound_counts_in_that_bucket() -> None:
    """Prometheus's le is inclusive: 1.0 is at most 1.0."""
    histogram = Histogram((0.5, 1.0))
    for value in (0.0, 0.5, 0.75, 1.0, 1.5, 100.0):
        histogram.observe(value)
    assert histogram.cumulative() == [(0.5, 2), (1.0, 4), (math.inf, 6)]
    assert histogram.total == 103.75


@pytest.mark.parametrize("seed", range(3))
def test_each_value_counts_in_the_first_bucket_at_least_it(seed: int) -> None:
    rng = random.Random(seed)
    histogram = Histogram(HANDLER_SECONDS)
    expected = [0] * (len(HANDLER_SECONDS) + 1)
    for _ in range(2000):
        value = rng.choice([0.0, *HANDLER_SECONDS, 10 ** rng.uniform(-7, 1)])
        histogram.observe(value)
        index = next(
            (i for i, bound in enumerate(HANDLER_SECONDS) if value <= bound),
            len(HANDLER_SECONDS),
        )
        expected[index] += 1
    assert histogram.counts == expected


def test_an_empty_histogram_has_every_bucket_at_zero() -> None:
    assert Histogram((1.0,)).cumulative() == [(1.0, 0), (math.inf, 0)]


@pytest.mark.parametrize("bounds", [(1.0, 0.5), (1.0, 1.0)])
def test_bounds_must_ascend(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="must ascend"):
        Histogram(bounds)


@pytest.mark.parametrize(
    "bounds", [CONNECTION_SECONDS, QUEUE_WAIT_SECONDS, HANDLER_SECONDS, JOB_SECONDS]
)
def test_incprotos_buckets_are_valid(bounds: tuple[float, ...]) -> None:
    Histogram(bounds)
