"""The mypyc build of the per-request code (orchestrator/native.py): it is what runs, it gives the
same outcomes as the sources, and a build older than its sources is not run."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from orchestrator import native

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import outcomes  # noqa: E402

ROOT = Path(native.__file__).resolve().parents[1]

# The seeded simulations of benchmarks/outcomes.py (a Proteus-scale cluster under a step, two CPU
# devices under a bursty load with several policies), every request's outcome saved; the script
# prints whether the compiled modules ran.
OUTCOMES = ROOT / "benchmarks" / "outcomes.py"


def _simulate(tmp_path: Path, interpreted: bool) -> tuple[str, dict[str, np.ndarray]]:
    env = dict(os.environ)
    env.pop(native.INTERPRETED_ENV, None)
    if interpreted:
        env[native.INTERPRETED_ENV] = "1"
    out = tmp_path / ("interpreted.npz" if interpreted else "compiled.npz")
    done = subprocess.run([sys.executable, str(OUTCOMES), "save", str(out)], env=env, capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    with np.load(out) as data:
        return done.stdout.split(":")[0], {k: data[k] for k in data.files}


def _require_build() -> None:
    """CI compiles first (`make test`), so there a missing build fails; elsewhere it skips."""
    if not native.built_files():
        if os.environ.get("CI"):
            pytest.fail("no mypyc build: `make test` runs `orchestrator compile` before the tests")
        pytest.skip("not compiled (`make compile`)")


def test_the_build_is_current_and_is_what_runs():
    _require_build()
    assert native.stale_sources() == []
    assert native.compiled(), "a current build is on disk but the sources were imported"


def test_compiled_and_interpreted_simulations_agree_request_by_request(tmp_path):
    _require_build()
    mode_c, compiled = _simulate(tmp_path, interpreted=False)
    mode_i, interpreted = _simulate(tmp_path, interpreted=True)
    assert (mode_c, mode_i) == ("compiled", "interpreted")
    assert outcomes.differences(compiled, interpreted) == []
    assert all(a.size > 100 for a in compiled.values())
    statuses = set(compiled["proteus.status"].tolist())
    assert {"ok", "late"} <= statuses  # the step overloads the cluster: the comparison covers misses too


def test_a_build_older_than_its_sources_is_not_run(tmp_path):
    """A copy of the package with its build, one source edited after: the package warns, names
    the file, and imports every compiled module from its source (they call each other directly)."""
    _require_build()
    copy = tmp_path / "orchestrator"
    shutil.copytree(ROOT / "orchestrator", copy, ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    env.pop(native.INTERPRETED_ENV, None)
    probe = ("import orchestrator, orchestrator.native as n, orchestrator.dataplane.routing as r, orchestrator.simulation.driver as s\n"
             "print(r.__file__); print(s.__file__); print(n.stale_sources())")

    def probe_run():
        done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, cwd=tmp_path,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines(), done.stderr

    (routing, simulator, stale), err = probe_run()
    assert routing.startswith(str(copy)) and routing.endswith(".so") and simulator.endswith(".so")
    assert stale == "[]" and "RuntimeWarning" not in err

    backlog = copy / "dataplane" / "backlog.py"
    backlog.write_text(backlog.read_text() + "\n# edited after the build\n")
    (routing, simulator, stale), err = probe_run()
    assert routing == str(copy / "dataplane" / "routing.py") and simulator == str(copy / "simulation" / "driver.py")
    assert stale == "['orchestrator/dataplane/backlog.py']"
    assert "orchestrator/dataplane/backlog.py changed since `make compile`" in err

    # the hashes the build recorded are what it is judged by: restore the file, and the build runs
    json.loads((copy / "native-sources.json").read_text())  # still there, untouched
    backlog.write_text(backlog.read_text().replace("\n# edited after the build\n", ""))
    (routing, _, stale), err = probe_run()
    assert routing.endswith(".so") and stale == "[]"


def test_an_extension_left_by_an_older_build_does_not_shadow_its_source(tmp_path):
    """A module that left the build (moved, or no longer compiled) may leave its extension beside
    its source, where Python would import it first: the package warns, runs the source, and the
    next build removes it."""
    _require_build()
    copy = tmp_path / "orchestrator"
    shutil.copytree(ROOT / "orchestrator", copy, ignore=shutil.ignore_patterns("__pycache__"))
    (built,) = [p for p in (copy / "simulation").glob("driver.*.so")]
    stray = copy / built.name.replace("driver.", "simulator.")  # as if simulator.py had been compiled
    shutil.copy(built, stray)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    env.pop(native.INTERPRETED_ENV, None)
    done = subprocess.run([sys.executable, "-c", "import orchestrator.simulator as s, orchestrator.native as n\n"
                           "print(s.__file__); print(sorted(n.leftovers()))"],
                          env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [str(copy / "simulator.py"), "['orchestrator.simulator']"]
    assert f"orchestrator/{stray.name}: left by an older build, not run" in done.stderr
    probe = "import orchestrator.native as n; print(len(n.clean()) > 0, sorted(n.leftovers()))"
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert done.stdout.split() == ["True", "[]"] and not stray.exists()


def test_a_failed_build_names_the_error_and_leaves_the_sources_running(tmp_path):
    """A type error in a compiled module: the build stops with mypy's line for it, exits non-zero
    and leaves no extension behind (a copy of the package, built in place)."""
    copy = tmp_path / "orchestrator"
    shutil.copytree(ROOT / "orchestrator", copy,
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "native-sources.json"))
    routing = copy / "dataplane" / "routing.py"
    routing.write_text(routing.read_text() + "\n\nNOT_A_NUMBER: int = 'seven'\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", "import sys; from orchestrator import native; sys.exit(native.build())"],
                          env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode != 0
    assert "orchestrator/dataplane/routing.py:" in done.stderr and "error: Incompatible types" in done.stderr
    assert "compile failed" in done.stderr and "Traceback" not in done.stderr
    assert not list(copy.rglob("*.so")) and not (copy / "native-sources.json").exists()
    probe = subprocess.run([sys.executable, "-c", "import orchestrator.dataplane.routing as r; print(r.__file__)"], env=env,
                           capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert probe.stdout.strip() == str(routing)


def test_the_outcome_comparison_names_what_changed():
    before = {"a.status": np.array(["ok", "late", "ok"]), "a.latency_ms": np.array([1.0, np.nan, 3.0])}
    assert outcomes.differences(before, {k: v.copy() for k, v in before.items()}) == []  # NaN equals NaN
    after = {"a.status": np.array(["ok", "ok", "ok"]), "a.latency_ms": np.array([1.0, np.nan, 3.5])}
    assert outcomes.differences(before, after) == [
        "a.latency_ms: 1 of 3 requests differ (first: request 2, 3.0 -> 3.5)",
        "a.status: 1 of 3 requests differ (first: request 1, late -> ok)"]
    assert outcomes.differences(before, {"a.status": before["a.status"]}) == ["a.latency_ms: only in before"]
