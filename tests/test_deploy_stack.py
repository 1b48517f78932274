"""deploy/Dockerfile and the Compose stack (deploy/compose.yaml, deploy/compose.gpu.yaml).

No container engine runs here: nothing is built, pulled or started. What is checked: the
Dockerfile parses into stages, its final stage runs as a non-root user without build tools and
without the model repository baked in, and its ENTRYPOINT/CMD (and every command the Compose and
Kubernetes files give the image) parse with the real `orchestrator` CLI; `docker-compose config`
accepts the stack (and its GPU variant) and refuses it without the keys; the orchestrator finds the
Tritons by their service name (the cluster files' pools), no Triton port is published, state sits
on a named volume, and every long-running service has a healthcheck.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from orchestrator.cli import build_parser
from orchestrator.cluster import Cluster
from orchestrator.triton.control import CONTROL_KEY_ENV
from tests.test_deploy import _compose_client

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
STACK, GPU_STACK = DEPLOY / "compose.yaml", DEPLOY / "compose.gpu.yaml"
IMAGE = "triton-orchestrator:0.1.0"
BUILD_TOOLS = ("gcc", "g++", "build-essential", "libc6-dev", "make", "mypy")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined."""
    out, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def stages(path: Path) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for word, rest in instructions(path):
        if word == "FROM":
            result.append([])
        elif result:
            result[-1].append((word, rest))
    return result


def command_of(stage: list[tuple[str, str]], word: str) -> list[str]:
    (value,) = [rest for w, rest in stage if w == word]
    return json.loads(value)  # the exec form: no shell between the runtime and the process


def parses(args: list[str]) -> str:
    return build_parser().parse_args(args).command


def test_dockerfile_is_multi_stage_and_its_image_runs_the_cli_as_non_root():
    dockerfile = DEPLOY / "Dockerfile"
    froms = [rest for w, rest in instructions(dockerfile) if w == "FROM"]
    assert len(froms) == 2 and froms[0].endswith(" AS build") and "--from=build" in dict(stages(dockerfile)[1])["COPY"]
    args = dict(instructions(dockerfile))
    assert args["ARG"].startswith("BASE=python:3.11-slim-") and "@sha256" not in args["ARG"]  # a tag (see the file)
    final = stages(dockerfile)[-1]
    user = [rest for w, rest in final if w == "USER"]
    assert user and user[-1].split(":")[0] not in ("0", "root")
    run_lines = " ".join(rest for w, rest in final if w == "RUN")
    assert not any(tool in run_lines.split() for tool in BUILD_TOOLS), "build tools in the final stage"
    assert "apt-get install" not in run_lines and "pip install" not in run_lines
    entry, cmd = command_of(final, "ENTRYPOINT"), command_of(final, "CMD")
    assert entry == ["orchestrator"] and parses(cmd) == "serve"
    assert "/var/lib/orchestrator" in json.loads(dict(final)["VOLUME"])
    for stage in stages(dockerfile):
        for word, rest in stage:
            if word == "COPY" and not rest.startswith("--from"):
                *sources, _ = rest.split()
                assert all((ROOT / s).exists() for s in sources), rest
                assert not any("model_repository" in s for s in sources), "the model repository is mounted, not baked"
    assert "model_repository" in (ROOT / ".dockerignore").read_text().split()


def compose_config(*files: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    client = _compose_client()
    if client is None:
        pytest.skip("no compose client (`docker compose` plugin or `docker-compose`) installed")
    args = client + [a for f in files for a in ("-f", str(f))] + ["config"]
    base = {k: v for k, v in os.environ.items() if k not in (CONTROL_KEY_ENV, "ORCHESTRATOR_TOKEN")}
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env={**base, **env})


KEYS = {CONTROL_KEY_ENV: "k3y", "ORCHESTRATOR_TOKEN": "t0ken"}


def test_the_stack_refuses_to_start_without_its_keys():
    for missing in KEYS:
        run = compose_config(STACK, env={k: v for k, v in KEYS.items() if k != missing})
        assert run.returncode != 0 and missing in run.stderr, run.stderr


@pytest.mark.parametrize("files, cluster_file, pools", [
    ((STACK,), "cluster.stack.toml", {"triton-cpu"}),
    ((STACK, GPU_STACK), "cluster.stack-gpu.toml", {"triton-cpu", "triton-gpu"}),
], ids=["cpu", "gpu"])
def test_the_stack_finds_its_tritons_by_service_name_and_exposes_only_the_orchestrator(files, cluster_file, pools):
    run = compose_config(*files, env=KEYS)
    assert run.returncode == 0, run.stderr
    services = yaml.safe_load(run.stdout)["services"]
    tritons = {n for n, s in services.items() if s.get("image", "").startswith("nvcr.io/nvidia/tritonserver:")}
    assert tritons == pools
    cluster = Cluster.load(DEPLOY / cluster_file)
    assert {p.dns for p in cluster.pools} == tritons and not cluster.devices
    for name in tritons:
        svc = services[name]
        assert not svc.get("ports"), f"{name} publishes a Triton port"
        assert "--strict-readiness=false" in svc["command"] and "--model-control-mode=explicit" in svc["command"]
        pool = next(p for p in cluster.pools if p.dns == name)
        assert f"--model-config-name={pool.config}" in svc["command"] and str(pool.port) in svc["expose"]
        assert ("devices" in str(svc.get("deploy", {}).get("resources", {}).get("reservations", {}))) == (pool.kind == "gpu")
        if pool.kind == "cpu":
            assert float(svc["deploy"]["resources"]["limits"]["cpus"]) == pool.cores
    for name in ("profile", "control-plane", "gateway"):
        svc = services[name]
        assert svc["image"] == IMAGE
        command = parses(svc["command"])
        assert command == {"profile": "profile", "control-plane": "serve", "gateway": "gateway"}[name]
        if name != "profile":
            assert svc["healthcheck"]["test"] and svc["restart"] == "unless-stopped"
    mounts = {str(v).split(":")[-2] if isinstance(v, str) else v["target"]: v for v in services["control-plane"]["volumes"]}
    state = mounts["/var/lib/orchestrator"]
    assert (state.split(":")[0] if isinstance(state, str) else state["source"]) == "state"  # the named volume
    config = mounts["/etc/orchestrator/cluster.toml"]
    assert (config if isinstance(config, str) else config["source"]).split(":")[0].endswith(cluster_file)
    published = {n: s.get("ports") for n, s in services.items() if s.get("ports")}
    assert set(published) == {"control-plane", "gateway"}
    assert services["gateway"]["command"][services["gateway"]["command"].index("--control-plane") + 1] == \
        "http://control-plane:8080"
    assert services["control-plane"]["environment"]["ORCHESTRATOR_TOKEN"] == "t0ken"
