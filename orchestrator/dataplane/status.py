"""What became of one request: the one vocabulary of the shim's results, its telemetry, the live
bench's and the simulator's outcomes (evaluation.py)."""

from __future__ import annotations

from orchestrator.names import Choice


class Status(Choice):
    """A request's outcome. A `str`, so `result.status == "ok"` and CSV/JSON hold the plain value."""

    OK = "ok"  # answered within its deadline (or it had none)
    LATE = "late"  # answered after its deadline
    DROPPED = "dropped"  # not sent: it could no longer meet its deadline (no outputs)
    ERROR = "error"  # the call failed (after the retry, if any)
    UNSERVED = "unserved"  # no route: the plan in force does not serve its family

    @property
    def answered(self) -> bool:
        """It came back with a model's outputs (in time or not)."""
        return self in (Status.OK, Status.LATE)

    @property
    def missed_deadline(self) -> bool:
        """Late or dropped: what the deadline-miss counters count (errors are counted apart)."""
        return self in (Status.LATE, Status.DROPPED)


STATUS_NAMES = tuple(s.value for s in Status)  # the order of the simulator's integer codes
ANSWERED = tuple(s.value for s in Status if s.answered)
