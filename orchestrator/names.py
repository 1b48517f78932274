"""Names a user writes that reach a command line, a path or a Triton parameter.

Device ids, cluster names, families and variants end up in `tritonserver` arguments (the
python backend's shared-memory prefix, which Triton hands to a shell when it starts the stub),
in run-directory names and in Triton model names. They are held to one safe set: a letter or
digit first, then letters, digits, `_`, `.` and `-`, at most 64 characters, and never `..`.

`Choice` is the base of the enums of names a setting chooses from (batching policy, routing,
percentile, demand estimator, outcome status).
"""

from __future__ import annotations

import re
from enum import Enum

from orchestrator.errors import UserError


class Choice(str, Enum):
    """A name from a fixed set; a `str`, so it compares, formats and serialises as its value."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def choices(cls) -> tuple[str, ...]:
        return tuple(m.value for m in cls)

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NAME_RULE = "a letter or digit, then letters, digits, '_', '.' or '-' (at most 64 characters)"


def is_safe_name(value: object) -> bool:
    return isinstance(value, str) and NAME_PATTERN.fullmatch(value) is not None and ".." not in value


def check_name(value: object, what: str) -> str:
    """`value` if it is a safe name, else a UserError naming `what` (e.g. "cluster.toml: device 'x': field 'id'")."""
    if not is_safe_name(value):
        raise UserError(f"{what} must be {NAME_RULE}, not {value!r}")
    return value  # type: ignore[return-value]
