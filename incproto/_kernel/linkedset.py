# -*- test-case-name: tests.unit.test_linkedset -*-
"""L{LinkedSet}: a set whose members link to each other.

A factory's set of open connections grows with the connections it holds
(issue 24).  Python's C{set} spends 16 bytes a slot, keeps at least 40% of
its slots free and grows fourfold: 26 to 105 bytes a member, depending on
where it is in its growth (52 with 10,000).  A L{LinkedSet} is a ring:
each member holds its neighbours in two attributes of its own (C{_prev} and
C{_next}, slots where the member has slots), 16 bytes, with add, discard
and membership in constant time, as a set's.  (A list of the members, each
holding its index in it, would need an integer object per member: 28 bytes
more.)
"""

from __future__ import annotations

from collections.abc import MutableSet
from typing import Any, Iterator, List, Set


class LinkedSet(MutableSet):  # type: ignore[type-arg]
    """
    A mutable set of objects that can hold C{_prev} and C{_next} attributes
    (C{None} while in no set), each in one L{LinkedSet} at most: a member
    of another is taken for one of this one's.  Iteration is over the
    members as they were when it began (one may leave meanwhile), oldest
    first; like the reactor's objects, it is for one thread.

    The set is the ring's own sentinel: its C{_prev} is the newest member,
    its C{_next} the oldest, each itself while it is empty.
    """

    __slots__ = ("_count", "_next", "_prev")

    def __init__(self) -> None:
        self._prev: Any = self
        self._next: Any = self
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Any]:
        members: List[Any] = []
        member = self._next
        while member is not self:
            members.append(member)
            member = member._next
        return iter(members)

    def __contains__(self, member: object) -> bool:
        """Whether C{member} is in this set (it is in one set at most)."""
        return member is not self and getattr(member, "_next", None) is not None

    def add(self, member: Any) -> None:
        """Add C{member} (newest), unless it is in already."""
        if getattr(member, "_next", None) is None:
            newest = self._prev
            member._prev, member._next = newest, self
            newest._next = self._prev = member
            self._count += 1

    def discard(self, member: Any) -> None:
        """Take C{member} out, if it is in."""
        after = getattr(member, "_next", None)
        if after is not None and member is not self:
            before = member._prev
            before._next, after._prev = after, before
            member._prev = member._next = None
            self._count -= 1

    @classmethod
    def _from_iterable(cls, members: Any) -> Set[Any]:
        """What C{|}, C{&}, C{-} and C{^} make: a plain C{set} (a member
        is in one L{LinkedSet} at most)."""
        return set(members)

    def __repr__(self) -> str:
        return f"LinkedSet({list(self)!r})"
