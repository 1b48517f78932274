"""The compiled form of the per-request code: a mypyc build of the modules in `MODULES`.

Every simulated request, and every request the shim routes live, runs through dataplane/
(queue.py, latency.py, batching.py: the batching policy; route_state.py: a route's state;
backlog.py: the on-time prediction; routing.py: the pick) and, in the simulator, simulation/ (events.py, devices.py, driver.py: the
event loop). They are plain, typed Python. ``orchestrator
compile`` (``make compile``) compiles them with mypyc into C extensions next
to their sources (``orchestrator/**/*.so``, git-ignored), which Python then imports instead of the
``.py`` files: the same code, about twice as fast (benchmarks/simulator_bench.py). Without a
build the sources run; nothing else differs. ``orchestrator compile --status`` says which run.

Two guards keep a build from running code other than the sources:

* a build records its sources' hashes (``orchestrator/native-sources.json``); when one has
  changed since, the package warns once and runs all of `MODULES` from source (the compiled
  modules call each other directly, so none of them can be kept);
* ``ORCHESTRATOR_INTERPRETED=1`` runs the sources even where a build is current (to compare the
  two: tests/test_native.py checks they simulate the same outcomes, request by request).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from pathlib import Path

MODULES = ("orchestrator.dataplane.queue", "orchestrator.dataplane.latency", "orchestrator.dataplane.batching",
           "orchestrator.dataplane.backlog", "orchestrator.dataplane.route_state", "orchestrator.dataplane.routing",
           "orchestrator.simulation.events", "orchestrator.simulation.devices", "orchestrator.simulation.driver")
GROUP = "orchestrator._native"  # mypyc's shared library for the group: orchestrator/_native__mypyc.*.so
PACKAGE_DIR = Path(__file__).resolve().parent
ROOT = PACKAGE_DIR.parent
SOURCES_FILE = PACKAGE_DIR / "native-sources.json"  # module -> sha256 of the source it was compiled from
BUILD_DIR = ROOT / "build" / "native"  # generated C, objects and the build log
INTERPRETED_ENV = "ORCHESTRATOR_INTERPRETED"
# mypy options for the build: the compiled modules must type-check; modules they import are read
# for their types only (errors there are theirs, not the build's)
MYPY_OPTIONS = ("--ignore-missing-imports", "--follow-imports=silent")


def source_path(module: str) -> Path:
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


def _extensions(module: str) -> list[Path]:
    base = ROOT.joinpath(*module.split("."))
    return [p for p in (base.with_name(base.name + s) for s in importlib.machinery.EXTENSION_SUFFIXES) if p.exists()]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers() -> dict[str, Path]:
    """Extensions in the package that the build no longer makes (an older build's, from before a
    module moved or left `MODULES`), by module name: they would shadow their sources."""
    known = set(MODULES) | {GROUP + "__mypyc"}
    out = {}
    for path in PACKAGE_DIR.rglob("*.so"):
        module = ".".join(path.relative_to(ROOT).parent.parts + (path.name.split(".")[0],))
        if module not in known:
            out[module] = path
    return out


def built_files() -> list[Path]:
    """The build's files in the package: each module's extension, the group library, the hashes,
    and any extension an older build left."""
    files = [p for m in MODULES + (GROUP + "__mypyc",) for p in _extensions(m)] + sorted(leftovers().values())
    return files + ([SOURCES_FILE] if SOURCES_FILE.exists() else [])


def stale_sources() -> list[str]:
    """Sources (paths relative to the checkout) that differ from what the build compiled; empty
    when there is no build."""
    present = {m: bool(_extensions(m)) for m in MODULES}  # (runs at every package import: look once)
    if not any(present.values()):
        return []
    try:
        built = json.loads(SOURCES_FILE.read_text())
    except (OSError, ValueError):
        built = {}
    return [str(source_path(m).relative_to(ROOT)) for m in MODULES
            if not present[m] or built.get(m) != _digest(source_path(m))]


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Imports `names` from their ``.py`` files even where an extension sits beside them."""

    def __init__(self, names: set[str]):
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if name in self.names and source_path(name).exists():
            return importlib.util.spec_from_file_location(name, source_path(name))
        return None


def _use_sources(names: set[str]) -> None:
    for f in sys.meta_path:
        if isinstance(f, _SourceFinder):
            f.names |= names
            return
    sys.meta_path.insert(0, _SourceFinder(set(names)))


def select() -> None:
    """Run at package import (orchestrator/__init__.py): use the build when it is current."""
    old = leftovers()
    if old:
        warnings.warn(f"{', '.join(str(p.relative_to(ROOT)) for p in old.values())}: left by an older build, "
                      f"not run (`make compile` removes them)", RuntimeWarning, stacklevel=3)
        _use_sources(set(old))
    if os.environ.get(INTERPRETED_ENV, "") not in ("", "0"):
        _use_sources(set(MODULES))
        return
    stale = stale_sources()
    if stale:
        warnings.warn(f"{', '.join(stale)} changed since `make compile`: running the sources "
                      f"(run `make compile` again for the compiled speed)", RuntimeWarning, stacklevel=3)
        _use_sources(set(MODULES))


def compiled() -> bool:
    """Whether the modules loaded (or to be loaded) are the compiled ones."""
    import orchestrator.simulator  # noqa: F401  (loads the group)
    return all(Path(sys.modules[m].__file__ or "").suffix == ".so" for m in MODULES)


def clean() -> list[Path]:
    removed = built_files()
    for p in removed:
        p.unlink()
    return removed


def build() -> int:
    """Compile `MODULES` in place (the previous build is removed first, so a failed build leaves
    the sources running, not an old build). Returns the exit status; prints one line, or the
    compiler's last lines on failure (the whole log is in build/native/build.log)."""
    import subprocess
    import time

    from orchestrator.errors import UserError

    if importlib.util.find_spec("mypyc") is None:
        raise UserError("`orchestrator compile` needs mypy, which holds mypyc: pip install -e '.[dev]'")
    clean()
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    log = BUILD_DIR / "build.log"
    digests = {m: _digest(source_path(m)) for m in MODULES}
    script = (
        "import sys\n"
        "from setuptools import Distribution\n"
        "from mypyc.build import mypycify\n"
        f"exts = mypycify({list(MYPY_OPTIONS) + [str(source_path(m).relative_to(ROOT)) for m in MODULES]!r},\n"
        f"                opt_level='3', group_name={GROUP!r}, target_dir={str(BUILD_DIR.relative_to(ROOT))!r})\n"
        "dist = Distribution({'name': 'orchestrator-native', 'ext_modules': exts})\n"
        "cmd = dist.get_command_obj('build_ext')\n"
        f"cmd.inplace, cmd.build_temp = True, {str(BUILD_DIR / 'tmp')!r}\n"
        "dist.run_command('build_ext')\n")
    started = time.monotonic()
    print(f"compiling {', '.join(MODULES)} with mypyc ...", flush=True)
    with open(log, "w") as out:
        status = subprocess.run([sys.executable, "-c", script], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT).returncode
    if status != 0 or not all(_extensions(m) for m in MODULES):
        lines = log.read_text(errors="replace").splitlines()
        # mypy's "file:line: error: ..." lines, or the compiler's "error: ..." ones (not a traceback)
        errors = [ln for ln in lines if ": error:" in ln or ln.startswith("error:")] or lines[-3:]
        print("\n".join(errors), file=sys.stderr)
        print(f"compile failed (exit {status}); the sources run. Full log: {log.relative_to(ROOT)}", file=sys.stderr)
        clean()
        return status or 1
    tmp = SOURCES_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(digests, indent=1) + "\n")
    tmp.replace(SOURCES_FILE)
    print(f"compiled in {time.monotonic() - started:.0f} s: {', '.join(str(p.relative_to(ROOT)) for p in built_files())}")
    return 0
