"""Small file helpers shared by everything that writes state."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from orchestrator.errors import UserError


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old or the new file, never half of one.

    The parent folders are made when missing; a directory at `path`, or a folder that cannot be
    written, is a UserError naming the path (and nothing is left behind)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a directory; a file is to be written there")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as e:
        raise UserError(f"{path}: cannot write there ({e.strerror})") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise UserError(f"{path}: cannot write it ({e.strerror})") from None
        raise
