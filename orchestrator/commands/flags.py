"""Flag values the commands share: numbers (argparse types), `--slo FAMILY=MS`, and output paths.

The argparse types refuse NaN, infinities and values out of range; argparse turns what they say
into `argument --FLAG: ...`, which the CLI prints as one line (orchestrator/cli.py).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Collection
from pathlib import Path

from orchestrator.errors import UserError

MIN_SLO_MS = 1.0  # an SLO under a millisecond is a typo (or 1e-300), not a deadline


def _finite(text: str, cast=float):
    try:
        value = cast(text)
    except ValueError:
        kind = "an integer" if cast is int else "a number"
        raise argparse.ArgumentTypeError(f"must be {kind}, not {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _finite(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def non_negative_int(text: str) -> int:
    value = _finite(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, not {text}")
    return value


def positive_float(text: str) -> float:
    value = _finite(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def port(text: str) -> int:
    """A TCP port, 0 (any free port) to 65535."""
    value = _finite(text, int)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number in 0..65535, not {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {text}")
    return value


def fraction(text: str) -> float:
    """A share in (0, 1]."""
    value = _finite(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], not {text}")
    return value


def factor(text: str) -> float:
    """A multiplier >= 1."""
    value = _finite(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {text}")
    return value


def _per_family(items: list[str] | None, flag: str, what: str, low: float, high: float) -> dict[str, float]:
    """`flag FAMILY=NUMBER` (repeatable) as {family: number}, NUMBER finite in low..high; else a
    UserError that names the flag, what the number is, and the item."""
    out: dict[str, float] = {}
    for item in items or []:
        family, sep, text = (part.strip() for part in item.partition("="))
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not sep or not family or not (math.isfinite(value) and low <= value <= high):
            raise UserError(f"{flag} expects FAMILY={what}, not {item!r}")
        out[family] = value
    return out


def parse_slo(items: list[str] | None) -> dict[str, float]:
    """`--slo FAMILY=MS` (repeatable) as {family: ms}; MS finite and at least MIN_SLO_MS."""
    return _per_family(items, "--slo", f"MS with MS a finite number of milliseconds >= {MIN_SLO_MS:g}",
                       MIN_SLO_MS, math.inf)


def parse_demand_floor(items: list[str] | None) -> dict[str, float]:
    """`--demand-floor FAMILY=RPS` (repeatable) as {family: rps}; RPS finite and in 0..1e7."""
    return _per_family(items, "--demand-floor", "RPS with RPS a number of requests/s in 0..1e7", 0.0, 1e7)


def check_flag_families(per_family: dict[str, float], families: Collection[str], catalog: str | os.PathLike,
                        flag: str = "--slo") -> None:
    """Every family `flag` (--slo, --demand-floor) names must have variants in the catalog."""
    for family in per_family:
        if family not in families:
            raise UserError(f"{flag} names family {family!r}, which has no variant in {catalog} "
                            f"(families: {', '.join(sorted(families)) or 'none'})")


def check_output_file(path: str | os.PathLike, flag: str) -> Path:
    """A file a command will write: not a directory, in a directory that exists and can be written."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{flag} {p}: is a directory; give the path of a file")
    parent = p.parent
    if not parent.exists():
        raise UserError(f"{flag} {p}: the directory {parent} does not exist")
    if not parent.is_dir():
        raise UserError(f"{flag} {p}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {p}: the directory {parent} is not writable")
    return p


def check_output_folder(path: str | os.PathLike, flag: str) -> Path:
    """A folder a command writes into (made with its parents when missing): not an existing file."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{flag} {p}: is a file; give a folder to write into")
    for above in p.parents:
        if above.exists():
            if not above.is_dir():
                raise UserError(f"{flag} {p}: {above} is not a directory")
            break
    return p
