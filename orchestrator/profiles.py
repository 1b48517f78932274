"""Profile records: measured latency and throughput per variant x device class x batch size.

`profiles.json` holds a list of `ProfileRecord`s; a CSV with the same columns is written beside it
for people. The profiler (orchestrator/profiler.py) produces them; the planner reads them.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from orchestrator.errors import UserError
from orchestrator.files import write_atomic


@dataclass(frozen=True)
class ProfileRecord:
    variant: str
    device_class: str
    batch_size: int
    instances: int  # Triton model instances
    threads: int  # onnxruntime intra-op threads per instance
    p50_ms: float
    p95_ms: float
    p99_ms: float
    throughput_rps: float  # inferences (images) per second at this batch size
    samples: int  # number of timed requests behind the percentiles
    triton_version: str = ""
    measured_at: str = ""
    source: str = "triton"  # triton | perf_analyzer | published | synthetic | observed (a live run's own)
    note: str = ""
    # Triton's own statistics over the timed requests (None where not measured): the backend's
    # execution time per batch (compute_infer) and the time a request waited in its queue
    triton_compute_ms: float | None = None
    triton_queue_ms: float | None = None

    @property
    def key(self) -> tuple[str, str, int, int, int]:
        return (self.variant, self.device_class, self.batch_size, self.instances, self.threads)


def scaled_record(r: ProfileRecord, factor: float, note: str = "") -> ProfileRecord:
    """`r` as a device that takes `factor` times its time would read: latencies x factor,
    throughput / factor (`note` says why; the record itself when the factor is 1)."""
    if factor == 1.0:
        return r
    return replace(r, p50_ms=r.p50_ms * factor, p95_ms=r.p95_ms * factor, p99_ms=r.p99_ms * factor,
                   throughput_rps=r.throughput_rps / factor,
                   note=f"profiled x {factor:.2f}: {note}" if note else r.note)


_FIELDS = [f.name for f in fields(ProfileRecord)]
_REQUIRED = _FIELDS[:10]  # the fields without a default
# The least value of each number field: integers >= this; floats finite and >= this.
_INT_FIELDS = {"batch_size": 1, "instances": 1, "threads": 1, "samples": 0}
_FLOAT_FIELDS = {"p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "throughput_rps": 0.0}
_OPTIONAL_FLOAT_FIELDS = {"triton_compute_ms", "triton_queue_ms"}  # null where not measured


def checked_record(d: object, where: str) -> ProfileRecord:
    """One record of a profiles file, every field checked; a UserError naming `where` and the field if bad."""
    if not isinstance(d, dict):
        raise UserError(f"{where}: expected an object with the fields {', '.join(_REQUIRED)}, not {d!r}")
    missing = [k for k in _REQUIRED if k not in d]
    if missing:
        raise UserError(f"{where}: missing field {missing[0]!r}")
    vals = {k: _value(k, d[k], where) for k in _FIELDS if k in d}
    return ProfileRecord(**vals)


def _value(key: str, value: object, where: str) -> object:
    if key in _INT_FIELDS:
        least = _INT_FIELDS[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise UserError(f"{where}: field {key!r} must be an integer >= {least}, not {value!r}")
        return value
    if key in _OPTIONAL_FLOAT_FIELDS and value is None:
        return None
    if key in _FLOAT_FIELDS or key in _OPTIONAL_FLOAT_FIELDS:
        least = _FLOAT_FIELDS.get(key, 0.0)
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or value < least):
            raise UserError(f"{where}: field {key!r} must be a finite number >= {least:g}, not {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise UserError(f"{where}: field {key!r} must be a string, not {value!r}")
    return value


@dataclass
class ProfileSet:
    """A set of records, at most one per key (a newer measurement replaces an older one)."""

    records: list[ProfileRecord]

    def __post_init__(self) -> None:
        by_key: dict[tuple, ProfileRecord] = {}
        for r in self.records:
            by_key[r.key] = r
        self.records = list(by_key.values())

    def add(self, record: ProfileRecord) -> None:
        self.records = [r for r in self.records if r.key != record.key] + [record]

    def has(self, key: tuple) -> bool:
        return any(r.key == key for r in self.records)

    def for_pair(self, variant: str, device_class: str) -> list[ProfileRecord]:
        """Records of one (variant, device class), ordered by batch size."""
        return sorted((r for r in self.records if r.variant == variant and r.device_class == device_class),
                      key=lambda r: (r.instances, r.threads, r.batch_size))

    def device_classes(self) -> set[str]:
        return {r.device_class for r in self.records}

    def variants(self) -> set[str]:
        return {r.variant for r in self.records}

    def to_json(self) -> str:
        return json.dumps({"records": [asdict(r) for r in self.sorted()]}, indent=2) + "\n"

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=_FIELDS)
        w.writeheader()
        for r in self.sorted():
            w.writerow(asdict(r))
        return buf.getvalue()

    def sorted(self) -> list[ProfileRecord]:
        return sorted(self.records, key=lambda r: r.key)

    def save(self, path: str | os.PathLike) -> Path:
        """Write JSON atomically, and a CSV for people beside it (same stem)."""
        p = Path(path)
        write_atomic(p, self.to_json())
        write_atomic(p.with_suffix(".csv"), self.to_csv())
        return p

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ProfileSet":
        p = Path(path)
        try:
            raw = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"{p}: profiles file not found (run `orchestrator profile` first)") from None
        except IsADirectoryError:
            raise UserError(f"{p}: is a directory, not a profiles file") from None
        except UnicodeDecodeError as e:
            raise UserError(f"{p}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
        except OSError as e:
            raise UserError(f"{p}: cannot read the profiles file ({e.strerror})") from None
        except json.JSONDecodeError as e:
            raise UserError(f"{p}: not valid JSON ({e})") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("records"), list):
            raise UserError(f"{p}: expected an object with a 'records' list")
        return cls([checked_record(d, f"{p}: record #{i + 1}") for i, d in enumerate(raw["records"])])

    @classmethod
    def load_or_empty(cls, path: str | os.PathLike) -> "ProfileSet":
        return cls.load(path) if Path(path).exists() else cls([])
