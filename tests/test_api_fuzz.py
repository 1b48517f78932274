"""Schemathesis over docs/openapi.yaml against a real control plane (two embedded Triton servers):
no server error, and every response as the spec says (status code, content type, body schema,
documented headers) — once without the token (every change must be a documented 401) and once
with it (changes run: settings, solve, apply, manual load/unload).

Bounded so that both runs take about two minutes together on two slow cores:
- the CLI runs in a subprocess with a fixed seed, `--max-examples` per operation and the
  examples, coverage and fuzzing phases. The stateful phase is left out: it chains
  solve -> apply from the responses' links, and each such apply loads and unloads real ResNets
  on one-core Tritons (tens of seconds each);
- with the token, POST .../models/{variant}/load is left out as well (a fuzzed load of
  ResNet-152 with 16 instances takes as long); tests/test_controlplane_api.py loads by hand.
  Fuzzed solves with dry_run false and fuzzed applies still run: the spec's examples point no
  path at a real device or variant, so what they apply is mostly refused (404) or plans for
  what is loaded already;
- the number of cases is fixed (the seed, `--max-examples` per operation in the fuzzing phase,
  and the coverage phase's boundary cases of the schema), not a time budget, so a slow machine
  runs the same requests, only slower.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from controlplane_helpers import TOKEN, running_control_plane  # noqa: E402

pytest.importorskip("schemathesis")

SPEC = Path(__file__).parent.parent / "docs" / "openapi.yaml"
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
          "response_headers_conformance")
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "50"))  # per operation, in the fuzzing phase
TIMEOUT_S = 300  # per run: a safety net; a run takes well under a minute


# 503 is how GET /api/v1/plan says "no plan applied yet" (the shims wait on it) and /readyz "a
# device does not answer": documented answers, not server errors. Any other 5xx fails the run.
CONFIG = """
[[operations]]
include-path-regex = "^/(api/v1/plan|readyz)$"
checks.not_a_server_error.expected-statuses = ["1xx", "2xx", "3xx", "4xx", "503"]
"""


@pytest.fixture(scope="module")
def server(model_repo):
    with running_control_plane(model_repo, controller=False) as s:
        yield s


def schemathesis(url: str, report: Path, token: str | None) -> subprocess.CompletedProcess:
    config = report.parent / "schemathesis.toml"
    config.write_text(CONFIG)
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", str(SPEC), "--url", url, "--checks", CHECKS,
           "--phases", "examples,coverage,fuzzing", "--max-examples", str(MAX_EXAMPLES), "--seed", "14",
           "--request-timeout", "60", "--workers", "1",
           "--generation-database", "none", "--no-color", "--suppress-health-check", "all",
           "--report", "json", "--report-json-path", str(report)]
    if token is not None:
        cmd += ["-H", f"Authorization: Bearer {token}", "--exclude-path-regex", r"/models/[^/]+/load$"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S,
                          cwd=report.parent, env={**os.environ, "NO_COLOR": "1"})


@pytest.mark.slow
@pytest.mark.parametrize("token", [None, TOKEN], ids=["no-token", "token"])
def test_the_api_answers_as_the_spec_says_under_fuzzing(server, tmp_path, token):
    started = time.monotonic()
    proc = schemathesis(server.url, tmp_path / "report.json", token)
    took = time.monotonic() - started
    summary = proc.stdout[proc.stdout.rfind("SUMMARY"):] if "SUMMARY" in proc.stdout else proc.stdout[-3000:]
    print(f"schemathesis ({'token' if token else 'no token'}) in {took:.0f} s:\n{summary}")
    assert proc.returncode == 0, proc.stdout[-12000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["complete"] and report["exit_code"] == 0 and not report["failures"] and not report["errors"]
    assert report["operations"]["tested"] == report["operations"]["selected"] >= 19
    kinds = [d["kind"] for d in server.cp.store.decisions(10000)]
    print(f"{report['operations']['tested']} operations, {report['test_cases']['generated']} test cases in "
          f"{report['running_time']:.0f} s; decisions so far: { {k: kinds.count(k) for k in sorted(set(kinds))} }")
