"""LinkedSet behaves as a set of the objects it holds, whatever the order of
adds and discards, and compares equal to a set with the same members."""

from __future__ import annotations

import random
from typing import Any, List, Set

import pytest

from incproto._kernel.linkedset import LinkedSet


class Member:
    __slots__ = ("_next", "_prev", "name")

    def __init__(self, name: int) -> None:
        self.name = name
        self._prev: Any = None
        self._next: Any = None

    def __repr__(self) -> str:
        return f"Member({self.name})"


class Plain:
    """A member with a dictionary, and no links until it joins."""


def test_add_discard_and_membership() -> None:
    members = LinkedSet()
    a, b, c = Member(1), Member(2), Member(3)
    for member in (a, b, c, a):
        members.add(member)
    assert (len(members), list(members)) == (3, [a, b, c])  # oldest first
    members.discard(b)
    assert (a in members, b in members, c in members) == (True, False, True)
    assert members == {a, c} and {a, c} == members
    members.discard(b)  # not in: nothing
    members.discard(Member(9))
    members.discard(members)
    assert (len(members), list(members)) == (2, [a, c])
    members.add(b)
    assert list(members) == [a, c, b]
    for member in (a, b, c):
        members.discard(member)
    assert (len(members), bool(members), members == set()) == (0, False, True)
    assert members not in members
    assert repr(members) == "LinkedSet([])"


def test_set_operators_make_plain_sets() -> None:
    members = LinkedSet()
    a, b, c = Member(1), Member(2), Member(3)
    members.add(a)
    members.add(b)
    assert members | {c} == {a, b, c} and type(members | {c}) is set
    assert (members & {b, c}, members - {a}, members ^ {b, c}) == ({b}, {b}, {a, c})


def test_plain_objects_are_members_too() -> None:
    members = LinkedSet()
    a, b = Plain(), Plain()
    assert a not in members
    members.add(a)
    members.add(b)
    members.discard(a)
    assert (list(members), a in members) == ([b], False)


def test_iteration_sees_the_members_it_began_with() -> None:
    members = LinkedSet()
    every = [Member(i) for i in range(5)]
    for member in every:
        members.add(member)
    seen = []
    for member in members:
        seen.append(member)
        members.discard(member)
    assert (seen, len(members), list(members)) == (every, 0, [])


@pytest.mark.parametrize("seed", range(5))
def test_random_adds_and_discards_match_a_set(seed: int) -> None:
    rng = random.Random(seed)
    pool: List[Member] = [Member(i) for i in range(50)]
    members = LinkedSet()
    reference: Set[Member] = set()
    for _ in range(2000):
        member = rng.choice(pool)
        if rng.random() < 0.55:
            members.add(member)
            reference.add(member)
        else:
            members.discard(member)
            reference.discard(member)
        assert len(members) == len(reference)
    assert members == reference and len(list(members)) == len(reference)
    assert all((m in members) == (m in reference) for m in pool)
