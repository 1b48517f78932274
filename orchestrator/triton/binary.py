"""Locate the `tritonserver` shipped in the nvidia-pytriton wheel and make it runnable.

The wheel holds the binary, the python backend and one backend stub per Python version. Triton
needs the stub for *this* Python inside the backend folder, the wheel's bundled libraries on
`LD_LIBRARY_PATH`, and this environment's `bin` first on `PATH` (the stub finds numpy and
onnxruntime through the interpreter it finds there). This is what PyTriton's own `triton.py` does.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from orchestrator.errors import UserError


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    backend_dir: Path  # a prepared copy holding the stub for this Python
    libs_dir: Path
    wheel_version: str

    def environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment a tritonserver process needs."""
        env = dict(os.environ if base is None else base)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(self.libs_dir), env.get("LD_LIBRARY_PATH", "")) if p)
        env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
        return env


def _wheel_root() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("tritonserver not found: the nvidia-pytriton package is not installed (pip install nvidia-pytriton==0.7.0)")
    return Path(list(spec.submodule_search_locations)[0])


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "triton-orchestrator"


@lru_cache(maxsize=None)
def find_triton(binary: str | None = None) -> TritonInstall:
    """Find the wheel's tritonserver and prepare (once, cached on disk) a backend folder with the stub.

    `binary` overrides the executable (for a tritonserver installed elsewhere); it must exist.
    """
    root = _wheel_root()
    dist = root / "tritonserver"
    exe = Path(binary) if binary else dist / "bin" / "tritonserver"
    if not exe.is_file() or not os.access(exe, os.X_OK):
        raise UserError(f"tritonserver binary not found or not executable: {exe}")
    libs = root.parent / "nvidia_pytriton.libs"
    version = metadata.version("nvidia-pytriton")
    py = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = dist / "python_backend_stubs" / py / "triton_python_backend_stub"
    if not stub.is_file():
        raise UserError(f"nvidia-pytriton {version} has no python-backend stub for Python {py} ({stub})")
    backends = _cache_root() / f"tritonserver-{version}-py{py}" / "backends"
    if not (backends / "python" / "triton_python_backend_stub").is_file():
        backends.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".backends.", dir=backends.parent))
        try:
            shutil.copytree(dist / "backends", tmp / "backends", ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copy2(stub, tmp / "backends" / "python" / "triton_python_backend_stub")
            try:
                os.replace(tmp / "backends", backends)
            except OSError:
                if not (backends / "python" / "triton_python_backend_stub").is_file():
                    raise  # not a lost race with another process preparing the same folder
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return TritonInstall(binary=exe, backend_dir=backends, libs_dir=libs, wheel_version=version)
