"""Embedded Triton servers are reachable on loopback only, and only their owner controls models.

Against real tritonserver processes: the listening sockets are read from /proc, the restricted
model-control API is tried over HTTP and gRPC without the key, and names that would reach the
python backend's command line are refused before anything starts.
"""

from __future__ import annotations

import ipaddress
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from orchestrator.errors import UserError
from orchestrator.triton.control import CONTROL_KEY_ENV
from orchestrator.triton.embedded import EmbeddedServer
from orchestrator.triton.remote import RemoteServer
from tests.triton_helpers import infer_logits

LISTEN = "0A"  # TCP state in /proc/net/tcp


def _socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[len("socket:["):-1])
    return out


def _address(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    # /proc/net/tcp6 prints four 32-bit words, each in host (little-endian) order
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))


def listening_addresses(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket the process listens on, from /proc."""
    inodes = _socket_inodes(pid)
    out = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == LISTEN and inode in inodes:
                addr, port = local.split(":")
                out.append((_address(addr), int(port, 16)))
    return out


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


@pytest.fixture(scope="module")
def server(resnet18_repo):
    with EmbeddedServer(resnet18_repo, name="secured", load=["resnet18"]) as s:
        yield s


def test_embedded_server_listens_on_loopback_only(server):
    sockets = listening_addresses(server.pid)
    ports = {port for _, port in sockets}
    assert {server.http_port, server.grpc_port, server.metrics_port} <= ports, sockets
    assert all(is_loopback(addr) for addr, _ in sockets), sockets


def _post(url: str, headers: dict | None = None) -> int:
    req = urllib.request.Request(url, data=b"{}", method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_model_control_without_the_key_is_refused_and_inference_stays_open(server):
    base = f"http://{server.http_url}/v2/repository"
    assert _post(f"{base}/models/resnet18/unload") == 403
    assert _post(f"{base}/models/resnet18/unload", {"orchestrator-control-key": "guess"}) == 403
    assert _post(f"{base}/index") == 403
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        with pytest.raises(InferenceServerException, match="restricted"):
            client.unload_model("resnet18")
        with pytest.raises(InferenceServerException, match="restricted"):
            client.load_model("resnet18")
        assert client.is_model_ready("resnet18")  # nothing was unloaded
    finally:
        client.close()
    # anyone may still run inference and read health and metadata
    assert infer_logits(server.grpc_url, "resnet18", np.zeros((1, 3, 224, 224), np.float32)).shape == (1, 1000)
    with urllib.request.urlopen(f"http://{server.http_url}/v2/health/ready", timeout=10) as r:
        assert r.status == 200
    # the owner, with the key, controls models
    ctl = server.control()
    try:
        assert ctl.loaded() == {"resnet18": "1"}
    finally:
        ctl.close()


def test_a_remote_server_is_controlled_with_the_key_from_the_environment(server, monkeypatch):
    """An embedded server is restricted like the Compose files' Tritons: attaching to it as a
    remote server works with $ORCHESTRATOR_TRITON_KEY set to its key, and not without."""
    remote = RemoteServer(f"grpc://{server.grpc_url}", name="remote")
    monkeypatch.delenv(CONTROL_KEY_ENV, raising=False)
    with pytest.raises(UserError, match="restricted"):
        remote.control().index()
    monkeypatch.setenv(CONTROL_KEY_ENV, server.control_key)
    ctl = remote.control()
    try:
        assert "resnet18" in ctl.loaded()
    finally:
        ctl.close()


@pytest.mark.parametrize("name", ["a$(touch${IFS}%s)b", "a;touch %s", "a/b", "..", "a b", ""])
def test_a_name_that_would_reach_a_shell_or_a_path_is_refused_before_start(resnet18_repo, tmp_path, name):
    target = tmp_path / "INJECTED"
    if "%s" in name:
        name = name % target
    with pytest.raises(UserError, match="must be a letter or digit"):
        EmbeddedServer(resnet18_repo, name=name).start()
    assert not target.exists()


def test_a_bad_listen_address_is_refused(resnet18_repo):
    with pytest.raises(UserError, match="IP address"):
        EmbeddedServer(resnet18_repo, name="x", host="localhost; rm")
