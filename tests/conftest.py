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
"""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def model_repo_export(tmp_path_factory) -> ExportRun:
    return _export(tmp_path_factory.mktemp("model_repo") / "model_repository", DEFAULT_VARIANTS)


@pytest.fixture(scope="session")
def model_repo(model_repo_export) -> Path:
    return model_repo_export.path


@pytest.fixture(scope="session")
def resnet18_repo_export(tmp_path_factory) -> ExportRun:
    return _export(tmp_path_factory.mktemp("resnet18_repo") / "model_repository", ["resnet18"])


@pytest.fixture(scope="session")
def resnet18_repo(resnet18_repo_export) -> Path:
    return resnet18_repo_export.path


def pytest_terminal_summary(terminalreporter):
    """The planner's nightly scale table (tests/test_planner_nightly.py), when those tests ran."""
    import sys

    nightly = sys.modules.get("test_planner_nightly") or sys.modules.get("tests.test_planner_nightly")
    if nightly is not None:
        nightly.summary(terminalreporter.write_line)
