"""The Prometheus text exposition format (version 0.0.4), written by every /metrics endpoint
(control plane, shim, gateway)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Sample = tuple[Mapping[str, object], float]  # (labels, value)


def escape(value: object) -> str:
    """A label value, escaped."""
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, object]) -> str:
    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}" if labels else ""


def _value(value: float) -> str:
    """A sample value: ints as ints, floats to full precision (counters must not round)."""
    if isinstance(value, (bool, int)):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def metric_lines(name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> list[str]:
    """HELP, TYPE and one line per sample of a counter or gauge."""
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}",
            *(f"{name}{_labels(labels)} {_value(value)}" for labels, value in samples)]


def histogram_lines(name: str, help_text: str, bounds: Sequence[float],
                    series: Iterable[tuple[Mapping[str, object], Sequence[int], float]]) -> list[str]:
    """A histogram: per label set, counts per bucket (one more than `bounds`, the last for the
    rest) and the sum of the observations; buckets are written cumulative, `le` in the unit of
    `bounds`."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    for labels, counts, total in series:
        cumulative = 0
        for bound, n in zip(bounds, counts):
            cumulative += n
            lines.append(f"{name}_bucket{_labels({**labels, 'le': f'{bound:g}'})} {cumulative}")
        cumulative += counts[len(bounds)]
        lines.append(f"{name}_bucket{_labels({**labels, 'le': '+Inf'})} {cumulative}")
        lines.append(f"{name}_sum{_labels(labels)} {total:.6f}")
        lines.append(f"{name}_count{_labels(labels)} {cumulative}")
    return lines
