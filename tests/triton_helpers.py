"""Small helpers shared by the tests that talk to a live Triton."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from orchestrator.cluster import Cluster


def infer_logits(url: str, model: str, batch: np.ndarray) -> np.ndarray:
    """Logits from a plain tritonclient gRPC call (the reference the orchestrator is compared with)."""
    client = grpcclient.InferenceServerClient(url)
    try:
        inp = grpcclient.InferInput("input", list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch)
        return client.infer(model, [inp]).as_numpy("logits")
    finally:
        client.close()


def one_cpu_cluster(model_repo, directory: Path, cores: str = "") -> Cluster:
    """A cluster file with one embedded 1-thread CPU device `cpu0` (class cpu-1t), written and loaded."""
    path = Path(directory) / "cluster.toml"
    pin = f"cores = [{cores}], " if cores else ""
    path.write_text(f"""
model_repository = "{model_repo}"
[[device]]
id = "cpu0"
class = "cpu-1t"
kind = "cpu"
memory_mb = 2048
embedded = {{ {pin}threads = 1 }}
""")
    return Cluster.load(path)


def group_processes(pgid: int) -> list[tuple[int, str]]:
    """(pid, cmdline) of every live process in a process group."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append((int(entry), cmd))
    return out
