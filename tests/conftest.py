"""Shared fixtures for the whole test suite.

Model repositories (exported once per test session with `orchestrator export`'s own code, random
weights with seed 0, into a temporary folder; treat them as READ-ONLY, copy what you modify):

- `model_repo` -> Path: the full default repository: resnet18, resnet34, resnet50, resnet101 and
  resnet152, each `<name>/config.pbtxt`, `<name>/configs/*.pbtxt`, `<name>/1/model.{onnx,py}`,
  plus the catalog `variants.json`. Building it takes about a minute on 2 cores, once.
- `resnet18_repo` -> Path: a repository holding only resnet18 (a few seconds), for tests that need
  one small model and a server that sees nothing else.
- `model_repo_export` / `resnet18_repo_export` -> ExportRun: the same repositories with the
  per-variant export results and the progress lines printed while exporting them.

Under pytest-xdist (`make test` runs two workers) the workers share each repository: the first
to need it exports it, under a file lock, and the others wait for it and read its ExportRun.
"""

from __future__ import annotations

import fcntl
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import pytest

DEFAULT_VARIANTS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


@dataclass(frozen=True)
class ExportRun:
    path: Path
    results: list  # list[exporters.repository.VariantResult], in the order exported
    log: list[str]


def _export(path: Path, names: list[str]) -> ExportRun:
    from exporters.repository import export_variants

    log: list[str] = []
    results = export_variants(names, path, log=log.append)
    return ExportRun(path=path, results=results, log=log)


def _session_export(tmp_path_factory, name: str, names: list[str]) -> ExportRun:
    """The repository `name`, exported once per test run (once for all xdist workers)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return _export(tmp_path_factory.mktemp(name) / "model_repository", names)
    shared = tmp_path_factory.getbasetemp().parent  # the run's folder, above each worker's own
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        done = shared / f"{name}.export.pickle"
        if done.exists():
            return pickle.loads(done.read_bytes())
        run = _export(shared / name / "model_repository", names)
        done.write_bytes(pickle.dumps(run))
        return run


@pytest.fixture(scope="session")
def model_repo_export(tmp_path_factory) -> ExportRun:
    return _session_export(tmp_path_factory, "model_repo", DEFAULT_VARIANTS)


@pytest.fixture(scope="session")
def model_repo(model_repo_export) -> Path:
    return model_repo_export.path


@pytest.fixture(scope="session")
def resnet18_repo_export(tmp_path_factory) -> ExportRun:
    return _session_export(tmp_path_factory, "resnet18_repo", ["resnet18"])


@pytest.fixture(scope="session")
def resnet18_repo(resnet18_repo_export) -> Path:
    return resnet18_repo_export.path


def pytest_terminal_summary(terminalreporter):
    """The planner's nightly scale table (tests/test_planner_nightly.py), when those tests ran."""
    import sys

    nightly = sys.modules.get("test_planner_nightly") or sys.modules.get("tests.test_planner_nightly")
    if nightly is not None:
        nightly.summary(terminalreporter.write_line)
