"""The simulator's event engine: timed events in one heap, ordered by (time, sequence number),
and the routes' wake-ups kept apart (a held queue's wake-up moves with most arrivals).

The driver (driver.py) runs the loop: it reads `heap`, `wakes` and `soonest_moved` directly to
find the next event, because that loop runs once per simulated request.
"""

from __future__ import annotations

from heapq import heappush
import math
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from orchestrator.simulation.devices import SimRoute

# event kinds (the heap orders by time, then sequence number; the kind breaks no tie)
DONE: Final = 0
TICK: Final = 1
SWITCH: Final = 2
UNLOAD: Final = 3


class Events:
    """`heap`: (time, seq, kind, payload). Wake-ups: each route has at most one pending, its
    `wake_at`, which a later decision may move earlier (never later) before it fires. `wakes` is
    a heap of (time, seq, route), an entry live while its route's wake_at is still that time;
    `moved` holds the routes whose wake_at moved since they were last put there (in order), the
    earliest at `soonest_moved`: they go on `wakes` only once one of them is due next
    (`flush_moved`), not at every move."""

    def __init__(self) -> None:
        # typed entries: compiled, reading an entry's time is then a native float, not a boxed one
        self.heap: list[tuple[float, int, int, object]] = []
        self.seq = 0  # one sequence for both heaps: equal times keep the order they were pushed in
        self.wakes: list[tuple[float, int, SimRoute]] = []
        self.moved: dict[SimRoute, None] = {}  # route -> None, insertion-ordered
        self.soonest_moved = math.inf

    def push(self, t: float, kind: int, payload: object) -> None:
        self.seq += 1
        heappush(self.heap, (t, self.seq, kind, payload))

    def flush_moved(self) -> None:
        """Put the moved wake-ups on the wake-up heap."""
        for route in self.moved:
            wake = route.wake_at
            assert wake is not None  # a route moves here only by setting its wake-up
            self.seq += 1
            heappush(self.wakes, (wake, self.seq, route))
        self.moved.clear()
        self.soonest_moved = math.inf
