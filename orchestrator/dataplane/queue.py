"""A route's waiting requests (`RouteQueue`), what a batching policy reads of each (`Queued`),
and the time tolerances every driver and policy compare with.

Times are seconds on any clock the driver keeps (the shim's monotonic clock, the simulator's
simulated one); nothing here reads a clock.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from typing import Final, Protocol

# A queued request's place in the deadline order: (deadline, arrival, insertion number), the
# number as a float (exact below 2**53). Typed as a tuple of any length so that compiled code
# keeps each key one Python object: mypyc unpacks a fixed-length tuple type into a C struct and
# packs a new tuple at every use, which costs two allocations per use and makes `pop`'s
# identity test with the front key always fail.
DeadlineKey = tuple[float, ...]

EPS_S: Final = 1e-9  # float slack when comparing computed times (a deadline met at `deadline + EPS_S` is met)
WAKE_PAST_S: Final = 1e-6  # wake just *after* a request turns hopeless, so the next decide drops it


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
    `by_deadline` / `deadline_keys` / `deadline_ids`: an append when deadlines arrive in order
    (one SLO per route, the usual case), a bisect insert otherwise; removing the most urgent is
    a delete at the front, and `take` removes a batch at the front in one. Requests without a
    deadline are kept apart, in insertion order (`no_deadline`). A request's deadline must not
    change while it is queued; ids are unique. `put` is `add` with the request's fields passed in
    (a driver that has them at hand: compiled, reading them through the `Queued` protocol is a
    lookup by name).
    """

    __slots__ = ("_entries", "deadline_keys", "by_deadline", "deadline_ids", "no_deadline", "_seq")

    def __init__(self, requests: Iterable[Queued] = ()):
        # id -> (request, its deadline key or None), insertion order: one dict operation per
        # request added or removed
        self._entries: dict[int, tuple[Queued, DeadlineKey | None]] = {}
        self.deadline_keys: list[DeadlineKey] = []  # sorted (deadline, arrival, insertion seq)
        self.by_deadline: list[Queued] = []  # the requests of `deadline_keys`, same order
        self.deadline_ids: list[int] = []  # and their ids
        self.no_deadline: dict[int, Queued] = {}  # id -> request without a deadline, insertion order
        self._seq = 0
        for r in requests:
            self.add(r)

    def add(self, r: Queued) -> None:
        self.put(r, r.id, r.arrival_s, r.deadline_s)

    def put(self, r: Queued, rid: int, arrival_s: float, deadline_s: float | None) -> None:
        """`add(r)`, where `rid`, `arrival_s` and `deadline_s` are r's."""
        entries = self._entries
        if rid in entries:
            raise ValueError(f"request id {rid} is already queued")
        self._seq += 1
        if deadline_s is None:
            entries[rid] = (r, None)
            self.no_deadline[rid] = r
            return
        key: DeadlineKey = (deadline_s, arrival_s, float(self._seq))
        entries[rid] = (r, key)
        keys = self.deadline_keys
        if not keys or key > keys[-1]:
            keys.append(key)
            self.by_deadline.append(r)
            self.deadline_ids.append(rid)
        else:
            i = bisect.bisect_right(keys, key)
            keys.insert(i, key)
            self.by_deadline.insert(i, r)
            self.deadline_ids.insert(i, rid)

    def pop(self, rid: int) -> Queued:
        """Remove and return the request with id `rid` (KeyError if it is not queued)."""
        entries = self._entries
        r, key = entries[rid]  # get and del, not dict.pop: compiled, pop is a method call by name
        del entries[rid]
        if key is None:
            del self.no_deadline[rid]
        else:
            keys = self.deadline_keys
            i = 0 if keys[0] is key else bisect.bisect_left(keys, key)
            del keys[i]
            del self.by_deadline[i]
            del self.deadline_ids[i]
        return r

    def take(self, ids: tuple[int, ...]) -> list[Queued]:
        """Remove and return the requests with these ids, in this order (KeyError if one is not
        queued: then none is removed). When they are the front of the deadline order (a batch a
        policy sends, the hopeless requests it drops), the sorted lists lose them in one slice
        deletion."""
        n = len(ids)
        front = self.deadline_ids
        entries = self._entries
        at_front = 2 <= n <= len(front)
        for j in range(n):
            if at_front and front[j] != ids[j]:
                at_front = False
            if not at_front and ids[j] not in entries:
                raise KeyError(ids[j])
        if not at_front:
            return [self.pop(rid) for rid in ids]
        out: list[Queued] = []
        for rid in ids:
            r, _ = entries[rid]
            del entries[rid]
            out.append(r)
        del self.deadline_keys[:n]
        del self.by_deadline[:n]
        del front[:n]
        return out

    def seq(self, i: int) -> int:
        """Insertion number of ``by_deadline[i]`` (smaller: queued earlier)."""
        return int(self.deadline_keys[i][2])

    def clear(self) -> None:
        self._entries.clear()
        self.deadline_keys.clear()
        self.by_deadline.clear()
        self.deadline_ids.clear()
        self.no_deadline.clear()

    def __iter__(self) -> Iterator[Queued]:
        return (r for r, _ in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, rid: object) -> bool:
        return rid in self._entries
