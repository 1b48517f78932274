"""deploy/: the Docker Compose files for the stock Triton container and the cluster files that point at them.

There is no Docker engine here, so nothing is pulled or run in a container. What is checked:
- the compose files parse and name the right image, ports, flags, GPU reservation, healthcheck
  and read-only model mount (and the GPU and CPU files differ only where they should);
- `docker compose config` (or the older `docker-compose config`) accepts them, where a compose
  client is installed - it is client-side, no engine needed;
- the example cluster files load and agree with the compose files (port, config name, repository);
- the container's exact command line, run with the same Triton release (2.51, the wheel's
  binary), becomes ready on the healthcheck's URL and serves the orchestrator's remote path:
  the config name picks `configs/<name>.pbtxt`, and a load with an override works; model
  control needs the orchestrator's key ($ORCHESTRATOR_TRITON_KEY), and the file refuses to
  run without one.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml

from orchestrator.cluster import Cluster
from orchestrator.triton.control import CONTROL_KEY_ENV, CONTROL_KEY_HEADER
from orchestrator.triton.embedded import RESTRICTED_APIS

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
NGC_TO_TRITON = {"24.10": "2.51"}  # NGC container release -> Triton release (NVIDIA's support matrix)
GPU_FILE, CPU_FILE = DEPLOY / "docker-compose.yml", DEPLOY / "docker-compose.cpu.yml"
CLUSTERS = {GPU_FILE: DEPLOY / "cluster.compose.toml", CPU_FILE: DEPLOY / "cluster.compose-cpu.toml"}


def triton_service(path: Path) -> dict:
    return yaml.safe_load(path.read_text())["services"]["triton"]


def flag(command: list[str], name: str) -> str | None:
    values = [a.split("=", 1)[1] for a in command if a.startswith(f"--{name}=")]
    assert len(values) <= 1, f"--{name} given more than once"
    return values[0] if values else None


@pytest.mark.parametrize("path, config_name", [(GPU_FILE, "ort-gpu"), (CPU_FILE, "ort-cpu")])
def test_compose_runs_stock_triton_with_explicit_control(path, config_name):
    svc = triton_service(path)
    assert svc["image"] == IMAGE
    cmd = svc["command"]
    assert isinstance(cmd, list) and cmd[0] == "tritonserver"
    assert flag(cmd, "model-repository") == "/models"
    assert flag(cmd, "model-control-mode") == "explicit"
    assert flag(cmd, "model-config-name") == config_name
    assert flag(cmd, "load-model") is None  # the orchestrator decides what is loaded
    # model control only with the orchestrator's key, the same APIs and header as embedded servers
    restricted = f"{RESTRICTED_APIS}:{CONTROL_KEY_HEADER}=${{{CONTROL_KEY_ENV}:?"
    assert flag(cmd, "http-restricted-api").startswith(restricted)
    assert flag(cmd, "grpc-restricted-protocol").startswith(restricted)
    assert sorted(svc["ports"]) == ["8000:8000", "8001:8001", "8002:8002"]
    assert svc["volumes"] == ["../model_repository:/models:ro"]
    assert (path.parent / "../model_repository").resolve() == ROOT / "model_repository"
    hc = svc["healthcheck"]
    assert hc["test"][:3] == ["CMD", "curl", "-f"] and hc["test"][3].endswith("localhost:8000/v2/health/ready")
    assert hc["retries"] >= 1 and "start_period" in hc
    assert svc["restart"] in ("always", "unless-stopped", "on-failure")


def test_gpu_compose_reserves_an_nvidia_gpu():
    devices = triton_service(GPU_FILE)["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert devices[0].get("count") == 1 or devices[0].get("device_ids")


def test_cpu_compose_is_the_gpu_one_without_the_gpu():
    gpu, cpu = triton_service(GPU_FILE), triton_service(CPU_FILE)
    assert "deploy" not in cpu and "runtime" not in cpu and "gpus" not in cpu
    gpu.pop("deploy")
    gpu["command"] = [a.replace("ort-gpu", "ort-cpu") for a in gpu["command"]]
    assert gpu == cpu  # no other drift between the two files


@pytest.mark.parametrize("compose_file", [GPU_FILE, CPU_FILE], ids=["gpu", "cpu"])
def test_cluster_file_matches_its_compose_file(compose_file):
    cluster = Cluster.load(CLUSTERS[compose_file])
    svc = triton_service(compose_file)
    assert cluster.model_repository == ROOT / "model_repository"  # the directory the container mounts
    (device,) = cluster.devices
    assert device.is_remote and device.embedded is None
    assert device.url == "grpc://localhost:8001" and "8001:8001" in svc["ports"]
    assert device.config == flag(svc["command"], "model-config-name")
    assert device.kind == ("gpu" if compose_file == GPU_FILE else "cpu")


def test_exporter_writes_the_configs_the_containers_name():
    triton_config = pytest.importorskip("exporters.triton_config", reason="exporters.triton_config not present")
    files = triton_config.render_all(triton_config.ConfigSettings(name="resnet18", image_size=224, num_classes=1000))
    for compose_file, kind in [(GPU_FILE, "KIND_GPU"), (CPU_FILE, "KIND_CPU")]:
        text = files[f"configs/{flag(triton_service(compose_file)['command'], 'model-config-name')}.pbtxt"]
        assert 'backend: "onnxruntime"' in text and kind in text  # the stock image has no Python onnxruntime


def _compose_client() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


@pytest.mark.parametrize("compose_file", [GPU_FILE, CPU_FILE], ids=["gpu", "cpu"])
def test_docker_compose_config_accepts_the_file(compose_file):
    client = _compose_client()
    if client is None:
        pytest.skip("no compose client (`docker compose` plugin or `docker-compose`) installed; "
                    "the files are still checked by parsing above")
    env = {k: v for k, v in os.environ.items() if k != CONTROL_KEY_ENV}
    run = subprocess.run(client + ["-f", str(compose_file), "config"], capture_output=True, text=True, timeout=60,
                         env=env)
    assert run.returncode != 0 and CONTROL_KEY_ENV in run.stderr, "the file must refuse to run without a key"
    run = subprocess.run(client + ["-f", str(compose_file), "config"], capture_output=True, text=True, timeout=60,
                         env={**env, CONTROL_KEY_ENV: "k3y"})
    assert run.returncode == 0, run.stderr
    svc = yaml.safe_load(run.stdout)["services"]["triton"]
    assert svc["image"] == IMAGE
    assert flag(svc["command"], "http-restricted-api") == f"{RESTRICTED_APIS}:{CONTROL_KEY_HEADER}=k3y"
    (volume,) = svc["volumes"]
    if isinstance(volume, str):  # docker-compose 1.x prints the short form, with the source resolved
        source, target, mode = volume.split(":")
        read_only = mode == "ro"
    else:  # docker compose 2.x prints the long form
        source, target, read_only = volume["source"], volume["target"], volume.get("read_only", False)
    assert Path(source) == ROOT / "model_repository" and target == "/models" and read_only


# --- the container's command on the same Triton release -----------------------------------------

TOY_MODEL = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Identity: logits = input (a stand-in for the ONNX model; the wheel has no onnxruntime backend)."""

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("logits", pb_utils.get_input_tensor_by_name(r, "input").as_numpy())])
                for r in requests]
'''


def toy_config(max_batch_size: int) -> str:
    return textwrap.dedent(f"""\
        name: "toy"
        backend: "python"
        max_batch_size: {max_batch_size}
        input [ {{ name: "input" data_type: TYPE_FP32 dims: [ 4 ] }} ]
        output [ {{ name: "logits" data_type: TYPE_FP32 dims: [ 4 ] }} ]
        instance_group [ {{ kind: KIND_CPU count: 1 }} ]
        """)


@pytest.fixture
def toy_repository(tmp_path) -> Path:
    """A repository laid out like the exporter's: config.pbtxt plus configs/ort-cpu.pbtxt.

    The wheel's Triton has only the python backend, so both are python-backend configs; they differ
    in max_batch_size (8 vs 4) so that a test can tell which one the server picked.
    """
    model = tmp_path / "repo" / "toy"
    (model / "1").mkdir(parents=True)
    (model / "configs").mkdir()
    (model / "1" / "model.py").write_text(TOY_MODEL)
    (model / "config.pbtxt").write_text(toy_config(8))
    (model / "configs" / "ort-cpu.pbtxt").write_text(toy_config(4))
    return tmp_path / "repo"


def start_like_the_container(compose_file: Path, repository: Path, log: Path, key: str = "deploy-test-key"):
    """The compose file's command on the wheel's tritonserver: /models -> `repository`, free ports,
    `key` for $ORCHESTRATOR_TRITON_KEY (as compose would substitute it).

    Returns (process, http port, grpc port). Only what a container would give for free is added:
    ports (the container's are fixed), the backend folder, and a shared-memory prefix of its own
    (other servers may share this machine).
    """
    from orchestrator.triton.binary import find_triton
    from orchestrator.triton.embedded import free_ports

    install = find_triton()
    http, grpc, metrics = free_ports(3)
    command = triton_service(compose_file)["command"]
    args = [str(install.binary)] + [re.sub(r"\$\{%s:\?[^}]*\}" % CONTROL_KEY_ENV, key, a.replace("=/models", f"={repository}"))
                                    for a in command[1:]] + [
        f"--http-port={http}", f"--grpc-port={grpc}", f"--metrics-port={metrics}",
        f"--backend-directory={install.backend_dir}",
        f"--backend-config=python,shm-region-prefix-name=deploytest{uuid.uuid4().hex[:8]}_",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=install.environment(), start_new_session=True)
    return proc, http, grpc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_healthy(compose_file: Path, proc: subprocess.Popen, http_port: int, log: Path, timeout_s: float = 90) -> None:
    """Poll the healthcheck's URL (port rewritten) as `curl -f` would: done on HTTP 200."""
    url = "http://" + triton_service(compose_file)["healthcheck"]["test"][3].replace(":8000", f":{http_port}")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"tritonserver exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.3)
    pytest.fail(f"{url} not ready after {timeout_s} s:\n{log.read_text()[-3000:]}")


def test_gpu_command_starts_and_is_ready_without_a_gpu(tmp_path, toy_repository):
    """Nothing is loaded at start, so even the GPU file's command becomes ready on a machine without one."""
    log = tmp_path / "triton.log"
    proc, http, _ = start_like_the_container(GPU_FILE, toy_repository, log)
    try:
        wait_healthy(GPU_FILE, proc, http, log)
    finally:
        stop(proc)
    assert proc.returncode is not None


def test_cpu_command_serves_the_orchestrator_remote_path(tmp_path, toy_repository, monkeypatch):
    import tritonclient.grpc as grpcclient

    from orchestrator.triton.runtime import instance_config_for, server_for_device

    log = tmp_path / "triton.log"
    proc, http, grpc = start_like_the_container(CPU_FILE, toy_repository, log, key="compose-key")
    monkeypatch.setenv(CONTROL_KEY_ENV, "compose-key")
    try:
        wait_healthy(CPU_FILE, proc, http, log)
        # without the key nobody loads a model (inference and health stay open, see below)
        req = urllib.request.Request(f"http://localhost:{http}/v2/repository/models/toy/load", data=b"{}",
                                     method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        assert refused.value.code == 403
        (device,) = Cluster.load(CLUSTERS[CPU_FILE]).devices
        device = dataclasses.replace(device, url=f"grpc://localhost:{grpc}")  # the container's 8001, here
        server = server_for_device(device, toy_repository).start()
        ctl = server.control(toy_repository)
        try:
            tag = IMAGE.split(":")[1].split("-")[0]
            assert ctl.server_version().startswith(NGC_TO_TRITON[tag] + "."), "image and embedded Triton differ"
            assert ctl.loaded() == {}  # explicit control: nothing loaded at start
            # A plain load (as `curl -X POST .../repository/models/toy/load` would do) picks configs/ort-cpu.pbtxt.
            assert int(ctl.load("toy")["max_batch_size"]) == 4
            # The orchestrator's load: an override built from the same configs/ort-cpu.pbtxt, 2 instances.
            cfg = ctl.load("toy", instance_config_for(device, instances=2))
            assert int(cfg["max_batch_size"]) == 4
            assert [(g["kind"], int(g["count"])) for g in cfg["instance_group"]] == [("KIND_CPU", 2)]
            client = grpcclient.InferenceServerClient(server.grpc_url)
            x = np.arange(8, dtype=np.float32).reshape(2, 4)
            inp = grpcclient.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            out = client.infer("toy", [inp]).as_numpy("logits")
            client.close()
            assert np.array_equal(out, x)
            ctl.unload("toy")
            assert ctl.loaded() == {}
        finally:
            ctl.close()
    finally:
        stop(proc)
