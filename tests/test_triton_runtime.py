"""The Triton runtime against real tritonserver processes (from the nvidia-pytriton wheel)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from orchestrator.cluster import Cluster
from orchestrator.errors import UserError
from orchestrator.triton.control import InstanceConfig
from orchestrator.triton.embedded import EmbeddedServer, port_is_free
from orchestrator.triton.gpu import gpu_inventory
from orchestrator.triton.remote import RemoteServer
from orchestrator.triton.runtime import ClusterRuntime
from tests.triton_helpers import group_processes, infer_logits, one_cpu_cluster


def test_two_embedded_servers_serve_different_variants_at_once(model_repo):
    batch = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    results: dict[str, np.ndarray] = {}
    errors: list[Exception] = []
    with EmbeddedServer(model_repo, name="a", load=["resnet18"]) as a, \
            EmbeddedServer(model_repo, name="b", load=["resnet34"]) as b:
        assert a.http_port != b.http_port and a.shm_prefix != b.shm_prefix
        assert a.control().loaded() == {"resnet18": "1"}
        assert b.control().loaded() == {"resnet34": "1"}
        pgids = [a.pid, b.pid]

        def call(server, model):
            try:
                for _ in range(3):
                    results[model] = infer_logits(server.grpc_url, model, batch)
            except Exception as e:  # surfaced by the assertion below
                errors.append(e)

        threads = [threading.Thread(target=call, args=(a, "resnet18")), threading.Thread(target=call, args=(b, "resnet34"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert results["resnet18"].shape == results["resnet34"].shape == (2, 1000)
        assert not np.allclose(results["resnet18"], results["resnet34"])  # two different models answered
        assert all(group_processes(p) for p in pgids)  # server + stub processes exist while running
    for pgid in pgids:
        assert group_processes(pgid) == [], "a tritonserver or stub process outlived its server"


def test_override_with_two_cpu_instances_then_unload(model_repo):
    with EmbeddedServer(model_repo, name="inst") as server:
        ctl = server.control(model_repo)
        config = ctl.load("resnet18", InstanceConfig(kind="cpu", count=2, threads=1))
        assert [(g["kind"], g["count"]) for g in config["instance_group"]] == [("KIND_CPU", 2)]
        assert config["parameters"]["intra_op_threads"]["string_value"] == "1"
        # The repository's other fields survive the override (an override replaces the whole config).
        assert config["backend"] == "python" and int(config["max_batch_size"]) >= 16
        # Triton warmed the model up before it was ready: one random sample of batch 1
        [warmup] = config["model_warmup"]
        assert int(warmup["batch_size"]) == 1 and warmup["inputs"]["input"]["random_data"]
        # Each python-backend instance is a stub process of its own: two instances, two stubs.
        stubs = [cmd for _, cmd in group_processes(server.pid) if "triton_python_backend_stub" in cmd and "resnet18" in cmd]
        assert len(stubs) == 2, stubs
        out = infer_logits(server.grpc_url, "resnet18", np.zeros((1, 3, 224, 224), np.float32))
        assert out.shape == (1, 1000)
        # Triton counts a request in its statistics after it has sent the response (under load a
        # query right after the answer can still read the warmups only); each instance ran the
        # warmup sample once before the model was ready, and they count as inferences too
        deadline = time.monotonic() + 10.0
        while True:
            stats = ctl.statistics("resnet18")["model_stats"][0]
            count = int(stats["inference_stats"]["success"].get("count", 0))
            if count > 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert count == 2 + 1
        ctl.unload("resnet18")
        states = {m["name"]: m.get("state") for m in ctl.index()}
        assert states["resnet18"] == "UNAVAILABLE"
        assert "resnet18" not in ctl.loaded()
        assert not [cmd for _, cmd in group_processes(server.pid) if "resnet18" in cmd]


def test_cluster_runtime_loads_per_device_and_reports_endpoints(model_repo, tmp_path):
    cluster = one_cpu_cluster(model_repo, tmp_path, cores="0")
    with ClusterRuntime(cluster) as rt:
        config = rt.load("cpu0", "resnet18", max_batch_size=4)
        assert int(config["max_batch_size"]) == 4
        ep = rt.endpoints()["cpu0"]
        assert ep["grpc"] and ep["http"]
        assert infer_logits(ep["grpc"], "resnet18", np.zeros((4, 3, 224, 224), np.float32)).shape == (4, 1000)
        with pytest.raises(InferenceServerException, match="batch"):
            infer_logits(ep["grpc"], "resnet18", np.zeros((5, 3, 224, 224), np.float32))
        pid = rt.servers["cpu0"].pid
        assert os.sched_getaffinity(pid) == {0}
    assert group_processes(pid) == []


def test_a_server_dies_with_its_owner_unless_told_to_outlive_it(model_repo, tmp_path):
    """An owner killed with -9 takes its tritonserver along (PR_SET_PDEATHSIG set before exec)."""
    script = ("import sys, time\n"
              "from orchestrator.triton.embedded import EmbeddedServer\n"
              "s = EmbeddedServer(sys.argv[1], name='owned').start()\n"
              "print(s.pid, flush=True)\n"
              "time.sleep(120)\n")
    owner = subprocess.Popen([sys.executable, "-c", script, str(model_repo)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        pid = int(owner.stdout.readline())
        assert group_processes(pid), "the owner's tritonserver never started"
        owner.kill()
        owner.wait(10)
        deadline = time.monotonic() + 20
        while group_processes(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert group_processes(pid) == [], "tritonserver outlived the owner that was killed"
    finally:
        owner.kill()
        owner.wait(10)


# -- bad input: each fails with one clear line and leaves the rest as it was ---------------------

def test_port_in_use_is_reported_and_nothing_is_started(model_repo):
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        server = EmbeddedServer(model_repo, http_port=port, name="busy")
        with pytest.raises(UserError, match=f"port {port} is already in use"):
            server.start()
        assert server.pid is None


def test_a_crashed_server_restarts_at_once_on_its_fixed_ports(model_repo):
    # a killed server's connections sit in TIME_WAIT on its ports for ~60 s; tritonserver binds with
    # SO_REUSEADDR, so a restart on the same fixed ports must not be refused as "already in use"
    import tritonclient.http as httpclient
    from orchestrator.triton.embedded import free_ports
    base = next(p for p in sorted(free_ports(8)) if p < 65000 and all(port_is_free(p + i) for i in range(3)))
    first = EmbeddedServer(model_repo, http_port=base, name="crash").start()
    clients = [httpclient.InferenceServerClient(first.http_url), grpcclient.InferenceServerClient(first.grpc_url)]
    assert all(c.is_server_live() for c in clients)
    os.killpg(first.pid, signal.SIGKILL)
    first._proc.wait(10)
    for c in clients:  # the clients close after the server's side did: the server's ends stay in TIME_WAIT
        c.close()
    with socket.socket() as plain:  # what a restart meets: a bind without SO_REUSEADDR is refused
        with pytest.raises(OSError):
            plain.bind(("127.0.0.1", base))
    first.stop()
    with EmbeddedServer(model_repo, http_port=base, name="crash") as second:
        assert second.http_port == base and httpclient.InferenceServerClient(second.http_url).is_server_live()


def test_missing_binary_is_reported(model_repo, tmp_path):
    server = EmbeddedServer(model_repo, binary=str(tmp_path / "no-such-tritonserver"))
    with pytest.raises(UserError, match="tritonserver binary not found"):
        server.start()


def test_corrupt_model_fails_to_load_and_other_models_stay_loaded(model_repo, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(Path(model_repo) / "resnet18", repo / "resnet18")
    shutil.copytree(Path(model_repo) / "resnet18", repo / "broken", ignore=shutil.ignore_patterns("model.onnx"))
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"this is not an onnx file")
    for cfg in [repo / "broken" / "config.pbtxt", *(repo / "broken" / "configs").glob("*.pbtxt")]:
        cfg.write_text(cfg.read_text().replace('"resnet18"', '"broken"'))
    with EmbeddedServer(repo, name="corrupt", load=["resnet18"]) as server:
        ctl = server.control(repo)
        with pytest.raises(UserError, match="load of 'broken' failed") as err:
            ctl.load("broken", InstanceConfig())
        assert "\n" not in str(err.value)
        assert ctl.loaded() == {"resnet18": "1"}
        assert infer_logits(server.grpc_url, "resnet18", np.zeros((1, 3, 224, 224), np.float32)).shape == (1, 1000)


def test_remote_server_that_does_not_answer(model_repo):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        remote = RemoteServer(f"grpc://127.0.0.1:{port}", name="gpu9", connect_timeout_s=1)
        with pytest.raises(UserError, match=r"gpu9: Triton at grpc://127.0.0.1:\d+ does not answer"):
            remote.start()
        with pytest.raises(UserError, match="gpu9: .*does not answer"):
            remote.control().loaded()


@pytest.mark.parametrize("body, message", [
    ('id = "x"\nclass = "c"\nkind = "tpu"\nmemory_mb = 1\nurl = "grpc://h:1"', "device 'x': field 'kind' must be one of"),
    ('id = "x"\nclass = "c"\nkind = "cpu"\nurl = "grpc://h:1"', "device 'x': field 'memory_mb' is missing"),
    ('id = "x"\nclass = "c"\nkind = "cpu"\nmemory_mb = 1', "device 'x': give exactly one of 'url'"),
    ('id = "x"\nclass = "c"\nkind = "cpu"\nmemory_mb = 1\nurl = "ftp://h"', "device 'x': field 'url' must look like"),
    ('id = "x"\nclass = "c"\nkind = "cpu"\nmemory_mb = 1\nembedded = { threads = 0 }', "field 'embedded.threads'"),
    ('id = "x"\nclass = "c"\nkind = "cpu"\nmemory_mb = 1\nurl = "grpc://h:1"\ncolour = 3', "unknown field 'colour'"),
])
def test_cluster_file_errors_name_file_device_and_field(tmp_path, body, message):
    path = tmp_path / "bad.toml"
    path.write_text("[[device]]\n" + body + "\n")
    with pytest.raises(UserError) as err:
        Cluster.load(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_gpu_inventory_without_gpu_never_raises():
    gpus, note = gpu_inventory()
    if not gpus:  # this machine: no driver; the note says why instead of an NVML exception
        assert note


def test_override_sets_the_thread_parameter_each_backend_reads():
    from orchestrator.triton.control import apply_instance_config

    python_cfg = apply_instance_config({"name": "m", "backend": "python", "max_batch_size": 32},
                                       InstanceConfig(count=3, threads=2, max_batch_size=8))
    assert python_cfg["parameters"] == {"intra_op_threads": {"string_value": "2"}}
    assert python_cfg["instance_group"] == [{"kind": "KIND_CPU", "count": 3}] and python_cfg["max_batch_size"] == 8
    ort_cfg = apply_instance_config({"name": "m", "backend": "onnxruntime", "max_batch_size": 32},
                                    InstanceConfig(kind="gpu", gpus=(1,), threads=4))
    assert ort_cfg["parameters"] == {"intra_op_thread_count": {"string_value": "4"}}
    assert ort_cfg["instance_group"] == [{"kind": "KIND_GPU", "count": 1, "gpus": [1]}]
    with pytest.raises(UserError, match="exceeds the repository's max_batch_size 32"):
        apply_instance_config({"name": "m", "max_batch_size": 32}, InstanceConfig(max_batch_size=64))


def test_override_asks_for_a_warmup_sample_where_every_input_has_a_fixed_numeric_shape():
    from orchestrator.triton.control import apply_instance_config

    image = {"name": "input", "data_type": "TYPE_FP32", "dims": ["3", "224", "224"]}
    cfg = apply_instance_config({"name": "m", "max_batch_size": 8, "input": [image]}, InstanceConfig())
    assert cfg["model_warmup"] == [{"name": "orchestrator-warmup", "batch_size": 1, "inputs": {
        "input": {"data_type": "TYPE_FP32", "dims": ["3", "224", "224"], "random_data": True}}}]
    # the model's own warmup samples stay as they are
    own = [{"name": "mine", "batch_size": 4, "inputs": {"input": {"data_type": "TYPE_FP32", "dims": ["3", "224", "224"],
                                                                  "zero_data": True}}}]
    cfg = apply_instance_config({"name": "m", "input": [image], "model_warmup": own}, InstanceConfig())
    assert cfg["model_warmup"] == own
    # no sample where an input's shape varies or holds strings: random data of what shape?
    for other in ({"name": "len", "data_type": "TYPE_INT64", "dims": ["-1"]},
                  {"name": "text", "data_type": "TYPE_STRING", "dims": ["1"]}):
        cfg = apply_instance_config({"name": "m", "input": [image, other]}, InstanceConfig())
        assert "model_warmup" not in cfg


def test_a_probe_tells_a_silent_server_from_a_closed_port_over_http():
    """Over HTTP as over gRPC, a socket that accepts and never answers (a hung server) is
    `TimedOut`: the health monitor calls it down after 0.7 s of silence. A port nobody listens on
    is `Unreachable`: down at once. (An HTTP socket timeout is an OSError, and was once taken for
    a refused connection.)"""
    from orchestrator.triton.control import ModelControl, TimedOut, Unreachable
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    try:
        for port, kind in ((silent.getsockname()[1], TimedOut), (closed_port, Unreachable)):
            control = ModelControl(f"127.0.0.1:{port}", protocol="http", name="cpu0")
            try:
                control.probe(0.3)
            except UserError as e:
                assert type(e) is kind, (port, e)
            else:
                raise AssertionError("the probe answered")
            finally:
                control.close()
    finally:
        silent.close()


def test_a_server_restarted_between_two_probes_is_a_new_run_and_an_unload_is_not(resnet18_repo):
    """No probe meets the gap (the monitor is not running; each `check` is one probe): the index
    tells the new run, because a model the old run had tried (READY) has no state on a fresh
    server. An unload leaves the model UNAVAILABLE: the same run."""
    from orchestrator.controlplane.health import HealthMonitor
    from orchestrator.triton.control import ModelControl
    server = EmbeddedServer(resnet18_repo, name="rerun", control_key="fixed-key-for-this-test").start()
    control = ModelControl(server.grpc_url, "grpc", name="rerun", control_key="fixed-key-for-this-test")
    changes = []
    monitor = HealthMonitor(["rerun"], lambda d, timeout_s: control.probe(timeout_s),
                            on_change=lambda d, h: changes.append(h.ups))
    try:
        control.load("resnet18")
        first = monitor.check("rerun")
        assert first.live and first.ups == 1
        control.unload("resnet18")
        assert monitor.check("rerun").ups == 1 and changes == []  # UNAVAILABLE: unloaded, same run
        control.load("resnet18")
        monitor.check("rerun")
        server.restart()  # the same ports and key; nothing loaded
        again = monitor.check("rerun")
        assert again.live and again.ups == 2 and changes == [2], (again, changes)
        assert monitor.check("rerun").ups == 2  # told once
    finally:
        control.close()
        server.stop()


def test_a_silent_server_whose_processes_work_is_down_only_after_the_longer_silence(tmp_path):
    """A one-core server saturated by inference can miss its probes; its processes (here a real
    process group spinning on the CPU, standing in for a server and its stubs, as the runtime
    sees them through /proc) show that it works, so the monitor waits `busy_down_after_s` before
    calling it down. Stopped (SIGSTOP), the same group is down after the usual `down_after_s`;
    an idle silent one is too."""
    from orchestrator.controlplane.health import HealthMonitor
    runtime = ClusterRuntime(one_cpu_cluster(tmp_path, tmp_path))  # not started: its server stands for our group
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    answers = iter([True])

    def probe(device_id, timeout_s):
        if next(answers, False):
            return []
        raise UserError(f"{device_id}: did not answer within {timeout_s} s")

    def silent_for(monitor, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.2)
            state = monitor.check("cpu0")
        return state

    try:
        server = runtime.servers["cpu0"]
        server._adopted = spin.pid  # what `adopt` sets for a run this process did not start
        monitor = HealthMonitor(["cpu0"], probe, busy=runtime.busy, down_after_s=0.7, busy_down_after_s=3.0)
        assert monitor.check("cpu0").live
        state = silent_for(monitor, 1.6)  # past down_after_s, working all along
        assert state.live and "busy working" in state.error, state
        os.killpg(spin.pid, signal.SIGSTOP)
        state = silent_for(monitor, 0.9)
        assert not state.live and "busy" not in state.error, state

        answers = iter([True])
        server._adopted = idle.pid
        monitor = HealthMonitor(["cpu0"], probe, busy=runtime.busy, down_after_s=0.7, busy_down_after_s=3.0)
        assert monitor.check("cpu0").live
        assert not silent_for(monitor, 0.9).live
    finally:
        for proc in (spin, idle):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
