# -*- test-case-name: tests.unit.test_words -*-
"""Counts in words for messages: C{1 connection}, C{2 connections}."""

from __future__ import annotations

from typing import Optional


def counted(count: int, noun: str, plural: Optional[str] = None) -> str:
    """
    C{count} and C{noun}, singular for exactly one.

    @param plural: the plural, if not C{noun} and an C{s}.
    """
    if count == 1:
        return f"1 {noun}"
    return f"{count} {plural or noun + 's'}"
