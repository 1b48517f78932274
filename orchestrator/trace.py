"""Request traces: arrival time, model family and deadline per request, and their CSV file format.

A trace file is a CSV with a header naming at least the columns ``time_s,family,deadline_ms``
(any order; extra columns are allowed and ignored)::

    time_s,family,deadline_ms
    0.013542,resnet,300
    0.061207,resnet,300

``time_s`` is seconds since the start of the trace (>= 0, non-decreasing), ``deadline_ms`` the
request's deadline in milliseconds (> 0). Times are written with microsecond resolution. Every
problem in a file is reported as one line naming the file and the line number.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Collection

import numpy as np

from orchestrator.errors import UserError
from orchestrator.files import write_atomic

COLUMNS = ("time_s", "family", "deadline_ms")


@dataclass
class Trace:
    """Requests sorted by arrival time; one entry per request in each array."""

    time_s: np.ndarray  # float64, non-decreasing, >= 0
    family: np.ndarray  # str per request
    deadline_ms: np.ndarray  # float64, > 0

    def __post_init__(self) -> None:
        self.time_s = np.asarray(self.time_s, dtype=np.float64)
        self.family = np.asarray(self.family, dtype=object)
        self.deadline_ms = np.asarray(self.deadline_ms, dtype=np.float64)
        if not (len(self.time_s) == len(self.family) == len(self.deadline_ms)):
            raise ValueError("trace arrays differ in length")

    def __len__(self) -> int:
        return len(self.time_s)

    @property
    def duration_s(self) -> float:
        """Time of the last arrival (a trace starts at 0)."""
        return float(self.time_s[-1]) if len(self) else 0.0

    def families(self) -> list[str]:
        return sorted(set(self.family.tolist()))

    def family_index(self) -> tuple[list[str], np.ndarray]:
        """The families (sorted) and each request's index among them, in one pass over the
        requests (comparing the object array with each family is a pass per family, and at
        Proteus scale, 9 families and 780,000 requests, took a second of a simulation)."""
        names = self.family.tolist()
        families = sorted(set(names))
        position = {f: i for i, f in enumerate(families)}
        return families, np.fromiter(map(position.__getitem__, names), dtype=np.int64, count=len(names))

    def for_family(self, family: str) -> "Trace":
        keep = self.family == family
        return Trace(self.time_s[keep], self.family[keep], self.deadline_ms[keep])

    def window_counts(self, window_s: float = 1.0, duration_s: float | None = None) -> np.ndarray:
        """Arrivals per window [k*window_s, (k+1)*window_s) from 0 to the end of the trace."""
        if window_s <= 0:
            raise UserError(f"window must be positive, not {window_s}")
        end = self.duration_s if duration_s is None else duration_s
        n = max(1, math.ceil(end / window_s)) if end > 0 else 1
        idx = np.minimum((self.time_s // window_s).astype(np.int64), n - 1)
        return np.bincount(idx, minlength=n)

    @staticmethod
    def merge(*traces: "Trace") -> "Trace":
        """One trace holding every request of `traces`, sorted by time (stable for ties)."""
        if not traces:
            return Trace(np.empty(0), np.empty(0, dtype=object), np.empty(0))
        t = np.concatenate([tr.time_s for tr in traces])
        order = np.argsort(t, kind="stable")
        return Trace(t[order], np.concatenate([tr.family for tr in traces])[order],
                     np.concatenate([tr.deadline_ms for tr in traces])[order])


def write_trace(path: str | os.PathLike, trace: Trace) -> None:
    """Write `trace` as CSV, atomically (readers see the old file or the new one)."""
    if len(trace) and (np.any(np.diff(trace.time_s) < 0) or trace.time_s[0] < 0):
        raise ValueError("trace times must be >= 0 and sorted")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for t, fam, dl in zip(trace.time_s.tolist(), trace.family.tolist(), trace.deadline_ms.tolist()):
        w.writerow((f"{t:.6f}", fam, f"{dl:g}"))
    write_atomic(Path(path), buf.getvalue())


def read_trace(path: str | os.PathLike, known_families: Collection[str] | None = None) -> Trace:
    """Read and validate a trace CSV; `known_families`, when given, is the set a family must be in."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"{p}: trace file not found") from None
    except IsADirectoryError:
        raise UserError(f"{p}: is a directory, not a trace file") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{p}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise UserError(f"{p}: cannot read the trace file ({e.strerror})") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise UserError(f"{p}: empty file; the first line must be the header {','.join(COLUMNS)}")
    header = [h.strip() for h in header]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise UserError(f"{p}:1: missing column(s) {', '.join(missing)} in the header "
                        f"(need {','.join(COLUMNS)}; found {','.join(header) or 'nothing'})")
    i_time, i_family, i_deadline = (header.index(c) for c in COLUMNS)
    known = set(known_families) if known_families is not None else None

    times: list[float] = []
    families: list[str] = []
    deadlines: list[float] = []
    prev_time, prev_line = 0.0, 0
    for row in reader:
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue  # blank line
        if len(row) < len(header):
            raise UserError(f"{p}:{line}: expected {len(header)} fields as in the header, found {len(row)}")
        t = _number(row[i_time], "time_s", p, line)
        dl = _number(row[i_deadline], "deadline_ms", p, line)
        fam = row[i_family].strip()
        if t < 0:
            raise UserError(f"{p}:{line}: time_s must not be negative, got {row[i_time].strip()}")
        if dl <= 0:
            raise UserError(f"{p}:{line}: deadline_ms must be positive, got {row[i_deadline].strip()}")
        if not fam:
            raise UserError(f"{p}:{line}: family is empty")
        if known is not None and fam not in known:
            raise UserError(f"{p}:{line}: unknown family {fam!r} (known: {', '.join(sorted(known)) or 'none'})")
        if t < prev_time:
            raise UserError(f"{p}:{line}: time_s {row[i_time].strip()} is earlier than {prev_time:g} on line "
                            f"{prev_line}; times must be sorted (non-decreasing)")
        prev_time, prev_line = t, line
        times.append(t)
        families.append(fam)
        deadlines.append(dl)
    return Trace(np.array(times, dtype=np.float64), np.array(families, dtype=object),
                 np.array(deadlines, dtype=np.float64))


def _number(cell: str, column: str, path: Path, line: int) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise UserError(f"{path}:{line}: {column} is not a number: {cell.strip()!r}") from None
    if not math.isfinite(value):
        raise UserError(f"{path}:{line}: {column} is not a finite number: {cell.strip()!r}")
    return value
