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

ROOT = Path(native.__file__).resolve().parents[1]

# Simulates two cases and saves every request's outcome: a Proteus-scale cluster (accuracy-first
# routing over spill routes, processor sharing, noise, re-plans) and two CPU devices under a
# bursty load with the baselines too; prints whether the compiled modules ran.
SIMULATE = """
import sys
import numpy as np
from orchestrator import native, scenarios
from orchestrator.planner import PlannerOptions
from orchestrator.simulator import SimConfig, Simulator
from orchestrator.workloads import ConstantRate, FamilyLoad, MarkovModulatedRate, StepRate, generate

out = {}
config = SimConfig(planner=PlannerOptions(time_limit_s=30.0))  # solves end at the gap: no time-limit plans
sc = scenarios.proteus_scale(devices=8)
loads = [FamilyLoad(f, StepRate((0.6 * d, 1.3 * d), 4.0), sc.slo_ms[f]) for f, d in sc.demand_rps.items()]
trace = generate(loads, 8.0, seed=2)
run = Simulator(sc.catalog, sc.cluster, sc.profiles, sc.slo_ms, config).run(trace, "milp")
out["proteus"] = run.outcomes
small = scenarios.small_resnet(devices=2, slo_ms=300.0)
trace = generate([FamilyLoad("resnet", MarkovModulatedRate((8.0, 40.0), (10.0, 5.0)), 300.0)], 60, seed=3)
sim = Simulator(small.catalog, small.cluster, small.profiles, {"resnet": 300.0}, config)
for policy in ("milp", "model-switching", "clipper-ht"):
    out[policy] = sim.run(trace, policy).outcomes
arrays = {f"{case}.{field}": np.asarray(getattr(o, field)).astype(str if field in ("status", "variant", "device")
                                                                    else float)
          for case, o in out.items() for field in ("status", "latency_ms", "variant", "device")}
np.savez(sys.argv[1], **arrays)
print("compiled" if native.compiled() else "interpreted")
"""


def _simulate(tmp_path: Path, interpreted: bool) -> tuple[str, dict[str, np.ndarray]]:
    env = dict(os.environ)
    env.pop(native.INTERPRETED_ENV, None)
    if interpreted:
        env[native.INTERPRETED_ENV] = "1"
    out = tmp_path / ("interpreted.npz" if interpreted else "compiled.npz")
    done = subprocess.run([sys.executable, "-c", SIMULATE, str(out)], env=env, capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    with np.load(out) as data:
        return done.stdout.strip(), {k: data[k] for k in data.files}


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
    assert compiled.keys() == interpreted.keys()
    for key in compiled:
        a, b = compiled[key], interpreted[key]
        assert a.shape == b.shape and a.size > 100, key
        if a.dtype.kind == "f":
            assert np.array_equal(a, b, equal_nan=True), f"{key}: {np.sum(a != b)} requests differ"
        else:
            assert np.array_equal(a, b), f"{key}: {np.sum(a != b)} requests differ"
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
    probe = ("import orchestrator, orchestrator.native as n, orchestrator.routing as r, orchestrator.simulator as s\n"
             "print(r.__file__); print(s.__file__); print(n.stale_sources())")

    def probe_run():
        done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, cwd=tmp_path,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines(), done.stderr

    (routing, simulator, stale), err = probe_run()
    assert routing.startswith(str(copy)) and routing.endswith(".so") and simulator.endswith(".so")
    assert stale == "[]" and "RuntimeWarning" not in err

    backlog = copy / "backlog.py"
    backlog.write_text(backlog.read_text() + "\n# edited after the build\n")
    (routing, simulator, stale), err = probe_run()
    assert routing == str(copy / "routing.py") and simulator == str(copy / "simulator.py")
    assert stale == "['orchestrator/backlog.py']"
    assert "orchestrator/backlog.py changed since `make compile`" in err

    # the hashes the build recorded are what it is judged by: restore the file, and the build runs
    json.loads((copy / "native-sources.json").read_text())  # still there, untouched
    backlog.write_text(backlog.read_text().replace("\n# edited after the build\n", ""))
    (routing, _, stale), err = probe_run()
    assert routing.endswith(".so") and stale == "[]"


def test_a_failed_build_names_the_error_and_leaves_the_sources_running(tmp_path):
    """A type error in a compiled module: the build stops with mypy's line for it, exits non-zero
    and leaves no extension behind (a copy of the package, built in place)."""
    copy = tmp_path / "orchestrator"
    shutil.copytree(ROOT / "orchestrator", copy,
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "native-sources.json"))
    routing = copy / "routing.py"
    routing.write_text(routing.read_text() + "\n\nNOT_A_NUMBER: int = 'seven'\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", "import sys; from orchestrator import native; sys.exit(native.build())"],
                          env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode != 0
    assert "orchestrator/routing.py:" in done.stderr and "error: Incompatible types" in done.stderr
    assert "compile failed" in done.stderr and "Traceback" not in done.stderr
    assert not list(copy.glob("*.so")) and not (copy / "native-sources.json").exists()
    probe = subprocess.run([sys.executable, "-c", "import orchestrator.routing as r; print(r.__file__)"], env=env,
                           capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert probe.stdout.strip() == str(routing)
