"""Shared set-up of the control-plane tests: a cluster of embedded Tritons, profiles, a running control plane."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from orchestrator.catalog import Catalog
from orchestrator.cluster import Cluster
from orchestrator.controlplane.server import ControlPlaneServer
from orchestrator.controlplane.service import ControlPlaneConfig
from orchestrator.profiles import ProfileRecord, ProfileSet
from orchestrator.triton.runtime import ClusterRuntime

TOKEN = "test-token"
DEVICE_CLASS = "cpu-1t"
# batch-1 latency (ms) on one core, roughly what this machine measures; batching is about linear on CPU
BATCH1_MS = {"resnet18": 40.0, "resnet34": 90.0, "resnet50": 95.0, "resnet101": 180.0, "resnet152": 240.0}


def synthetic_profiles(catalog: Catalog, batches=(1, 2, 4, 8)) -> ProfileSet:
    """Profiles shaped like this machine's (source "synthetic"): tests must not spend minutes profiling."""
    records = []
    for name in catalog.variants:
        base = BATCH1_MS[name]
        for b in batches:
            lat = base * (0.8 * b + 0.2)
            records.append(ProfileRecord(variant=name, device_class=DEVICE_CLASS, batch_size=b, instances=1,
                                         threads=1, p50_ms=lat, p95_ms=lat * 1.1, p99_ms=lat * 1.2,
                                         throughput_rps=b * 1000.0 / lat, samples=50, source="synthetic"))
    return ProfileSet(records)


def cluster_for(model_repo: Path, devices: int = 2, memory_mb: int = 700) -> Cluster:
    raw = {"name": "test", "model_repository": str(model_repo),
           "device": [{"id": f"cpu{i}", "class": DEVICE_CLASS, "kind": "cpu", "memory_mb": memory_mb,
                       "embedded": {"threads": 1}} for i in range(devices)]}
    return Cluster.from_dict(raw)


@contextlib.contextmanager
def running_control_plane(model_repo: Path, db_path: str = ":memory:", runtime: ClusterRuntime | None = None,
                          controller: bool = False, devices: int = 2, **config):
    """A started ControlPlaneServer over `runtime` (or fresh embedded servers, stopped at the end)."""
    cluster = runtime.cluster if runtime is not None else cluster_for(model_repo, devices)
    cfg = ControlPlaneConfig(token=TOKEN, db_path=str(db_path), **{"drain_s": 0.2, **config})
    server = ControlPlaneServer(cluster, synthetic_profiles(Catalog.load(model_repo)), cfg, model_repository=model_repo,
                                runtime=runtime, port=0, controller=controller)
    with server:
        yield server


def read_lines(proc: subprocess.Popen, lines: list[str]) -> None:
    """Collect a subprocess's output lines (run in a thread)."""
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))


def wait_for_line(lines: list[str], pattern: re.Pattern, proc: subprocess.Popen, timeout_s: float) -> re.Match:
    """The first collected line that matches `pattern`; fails if the process exits or none comes in time."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        for line in list(lines):
            m = pattern.match(line)
            if m:
                return m
        assert proc.poll() is None, "the process exited:\n" + "\n".join(lines)
        time.sleep(0.1)
    raise AssertionError(f"no line like {pattern.pattern}:\n" + "\n".join(lines))


def call(url: str, method: str = "GET", body=None, token: str | None = TOKEN, raw: bytes | None = None,
         timeout: float = 120) -> tuple[int, dict]:
    """One HTTP call; returns (status, JSON body) for 2xx and error answers alike."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = resp.read()
            status = resp.status
    except urllib.error.HTTPError as e:
        text = e.read()
        status = e.code
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, {"text": text.decode(errors="replace")}


def copy_repository(src: Path, dst: Path, variants: list[str]) -> Path:
    """A copy of part of a model repository (symlinked model files), to corrupt one variant safely."""
    dst.mkdir(parents=True, exist_ok=True)
    catalog = Catalog.load(src)
    kept = Catalog({n: v for n, v in catalog.variants.items() if n in variants})
    for name in variants:
        shutil.copytree(src / name, dst / name, symlinks=True,
                        copy_function=lambda s, d: Path(d).symlink_to(Path(s).resolve()))
    kept.save(dst)
    return dst


class StubRuntime:
    """Stands in for Triton (no server runs): every device is live, a load makes a model READY at
    once, an unload removes it. For tests of the REST layer that need no real inference; what it
    holds is `models[device_id] -> {variant: (instances, threads)}`."""

    def __init__(self, device_ids):
        self.models: dict[str, dict[str, tuple[int, int | None]]] = {d: {} for d in device_ids}

    def control(self, device_id: str) -> "StubControl":
        return StubControl(self, device_id)

    def endpoints(self) -> dict:
        return {d: {"grpc": f"127.0.0.1:{9001 + 3 * i}", "http": None} for i, d in enumerate(self.models)}

    def load(self, device_id: str, variant: str, instances: int = 1, threads: int | None = None, **_) -> dict:
        self.models[device_id][variant] = (instances, threads)
        return {}

    def unload(self, device_id: str, variant: str) -> None:
        self.models[device_id].pop(variant, None)


class StubControl:
    """One stub device's model control: what ModelControl answers, from StubRuntime.models."""

    def __init__(self, runtime: StubRuntime, device_id: str):
        self.models = runtime.models[device_id]

    def is_live(self) -> bool:
        return True

    def probe(self, timeout_s: float) -> list[dict]:
        return self.index()

    def index(self) -> list[dict]:
        return [{"name": n, "version": "1", "state": "READY", "reason": ""} for n in sorted(self.models)]

    def loaded(self) -> dict[str, str]:
        return {n: "1" for n in self.models}

    def is_model_ready(self, model: str) -> bool:
        return model in self.models

    def model_config(self, model: str) -> dict:
        instances, threads = self.models[model]
        params = {"intra_op_threads": {"string_value": str(threads)}} if threads else {}
        return {"instance_group": [{"count": instances}], "parameters": params}


def stub_control_plane(**config):
    """A ControlPlane over the small-ResNet scenario (two one-core CPU devices, synthetic profiles)
    and a StubRuntime, with an in-memory store and the test token: the REST layer in milliseconds."""
    from orchestrator import scenarios
    from orchestrator.controlplane.service import ControlPlane
    from orchestrator.controlplane.store import Store

    sc = scenarios.small_resnet(devices=2)
    runtime = StubRuntime([d.id for d in sc.cluster.devices])
    cfg = ControlPlaneConfig(token=TOKEN, **{"drain_s": 0.0, **config})
    return ControlPlane(sc.cluster, sc.catalog, sc.profiles, runtime, Store(":memory:"), cfg)
