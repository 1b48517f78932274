"""A route's waiting requests (`RouteQueue`), what a batching policy reads of each (`Queued`),
and the time tolerances every driver and policy compare with.

Times are seconds on any clock the driver keeps (the shim's monotonic clock, the simulator's
simulated one); nothing here reads a clock.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from typing import Protocol

EPS_S = 1e-9  # float slack when comparing computed times (a deadline met at `deadline + EPS_S` is met)
WAKE_PAST_S = 1e-6  # wake just *after* a request turns hopeless, so the next decide drops it


def met(finish_s: float, deadline_s: float) -> bool:
    """Whether an answer at `finish_s` meets `deadline_s` (the one rule the shim, the gateway and
    the simulator use)."""
    return finish_s <= deadline_s + EPS_S


class Queued(Protocol):
    """What a policy reads of a waiting request (read-only: a request class may narrow a type,
    e.g. a deadline that is never None)."""

    @property
    def id(self) -> int: ...

    @property
    def arrival_s(self) -> float: ...

    @property
    def deadline_s(self) -> float | None: ...

    @property
    def serve_late(self) -> bool: ...



class RouteQueue:
    """A route's waiting requests: in arrival (insertion) order, and indexed by deadline.

    Iterating yields the requests in insertion order, as a dict of them would. Alongside, the
    requests with a deadline are kept sorted by (deadline, arrival, insertion) in
    `by_deadline` / `deadline_keys`: an append when deadlines arrive in order (one SLO per
    route, the usual case), a bisect insert otherwise; removing the most urgent is a delete
    at the front. Requests without a deadline are kept apart, in insertion order
    (`no_deadline`). A request's deadline must not change while it is queued; ids are unique.
    """

    __slots__ = ("_items", "_key_of", "deadline_keys", "by_deadline", "no_deadline", "_seq")

    def __init__(self, requests: Iterable[Queued] = ()):
        self._items: dict[int, Queued] = {}  # id -> request, insertion order
        self._key_of: dict[int, tuple[float, float, int] | None] = {}  # id -> its deadline key (None: no deadline)
        self.deadline_keys: list[tuple[float, float, int]] = []  # sorted (deadline, arrival, insertion seq)
        self.by_deadline: list[Queued] = []  # the requests of `deadline_keys`, same order
        self.no_deadline: dict[int, Queued] = {}  # id -> request without a deadline, insertion order
        self._seq = 0
        for r in requests:
            self.add(r)

    def add(self, r: Queued) -> None:
        rid = r.id
        if rid in self._items:
            raise ValueError(f"request id {rid} is already queued")
        self._items[rid] = r
        self._seq += 1
        deadline = r.deadline_s  # read once: a protocol attribute is a lookup by name when compiled
        if deadline is None:
            self._key_of[rid] = None
            self.no_deadline[rid] = r
            return
        key = (deadline, r.arrival_s, self._seq)
        self._key_of[rid] = key
        keys = self.deadline_keys
        if not keys or key > keys[-1]:
            keys.append(key)
            self.by_deadline.append(r)
        else:
            i = bisect.bisect_right(keys, key)
            keys.insert(i, key)
            self.by_deadline.insert(i, r)

    def pop(self, rid: int) -> Queued:
        """Remove and return the request with id `rid` (KeyError if it is not queued)."""
        r = self._items.pop(rid)
        key = self._key_of.pop(rid)
        if key is None:
            del self.no_deadline[rid]
        else:
            keys = self.deadline_keys
            i = 0 if keys[0] is key else bisect.bisect_left(keys, key)
            del keys[i]
            del self.by_deadline[i]
        return r

    def seq(self, i: int) -> int:
        """Insertion number of ``by_deadline[i]`` (smaller: queued earlier)."""
        return self.deadline_keys[i][2]

    def clear(self) -> None:
        self._items.clear()
        self._key_of.clear()
        self.deadline_keys.clear()
        self.by_deadline.clear()
        self.no_deadline.clear()

    def __iter__(self) -> Iterator[Queued]:
        return iter(self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, rid: object) -> bool:
        return rid in self._items

