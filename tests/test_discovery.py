"""Node discovery: [[pool]] parsing, the join/leave logic, and a real DNS server (Debian's dnsmasq,
started here on a loopback address with a hosts file the test rewrites) in front of real
tritonservers: a device that appears is reconciled and gets traffic, one that disappears is
planned around, and no request is lost meanwhile."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from orchestrator.cluster import Cluster
from orchestrator.controlplane.discovery import Discovery, ResolveFailed, resolve
from orchestrator.errors import UserError
from orchestrator.shim import Client
from orchestrator.triton.control import CONTROL_KEY_ENV, InstanceConfig
from orchestrator.triton.embedded import EmbeddedServer, free_ports
from tests.controlplane_helpers import DEVICE_CLASS, call, running_control_plane

ROOT = Path(__file__).resolve().parents[1]
POOL = {"name": "triton", "dns": "triton.test", "class": DEVICE_CLASS, "kind": "cpu", "memory_mb": 700}


def pool_cluster(model_repo=None, **fields):
    raw = {"name": "pooled", "pool": [{**POOL, **fields}]}
    if model_repo is not None:
        raw["model_repository"] = str(model_repo)
    return Cluster.from_dict(raw)


# -- the cluster file ---------------------------------------------------------------------------
def test_a_pool_names_its_devices_by_address():
    pool = pool_cluster(port=9001, cores=4, config="ort-cpu", dns_server="127.0.0.1:5353").pools[0]
    assert pool.dns_server == ("127.0.0.1", 5353) and pool.refresh_s == 5.0
    dev = pool.device("10.0.3.7")
    assert (dev.id, dev.url, dev.threads, dev.config, dev.pool) == (
        "triton-10.0.3.7", "grpc://10.0.3.7:9001", 4, "ort-cpu", "triton")
    v6 = pool.device("fd00::1")
    assert v6.id == "triton-fd00--1" and v6.url == "grpc://[fd00::1]:9001"
    assert pool_cluster(scheme="http").pools[0].device("10.0.0.1").url == "http://10.0.0.1:8000"


@pytest.mark.parametrize("fields, message", [
    ({"dns": "bad name!"}, "field 'dns' must be a DNS name"),
    ({"port": 0}, "field 'port' must be in 1..65535"),
    ({"cores": 0}, "field 'cores' must be an integer in 1..1024"),
    ({"refresh_s": 0}, "field 'refresh_s' must be in 0.1..3600"),
    ({"dns_server": "dns.local:53"}, "field 'dns_server' must be IP:PORT"),
    ({"scheme": "https"}, "field 'scheme' must be"),
    ({"name": "a" * 25}, "at most 24 characters"),
    ({"colour": "red"}, "unknown field 'colour'"),
    ({"kind": "tpu"}, "field 'kind' must be one of"),
])
def test_bad_pool_fields_are_named(fields, message):
    with pytest.raises(UserError, match=message) as e:
        pool_cluster(**fields)
    assert "pool" in str(e.value)


def test_two_pools_may_not_share_a_name():
    with pytest.raises(UserError, match="two pools have the name 'triton'"):
        Cluster.from_dict({"pool": [POOL, POOL]})


# -- the join/leave logic -----------------------------------------------------------------------
def test_addresses_that_come_and_go_join_and_leave_and_a_silent_resolver_changes_nothing():
    answers = [["10.0.0.1"], ["10.0.0.1", "10.0.0.2"], ResolveFailed("timeout"), ["10.0.0.2"], [], ["10.0.0.9"]]
    events = []

    def scripted(pool):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    pool = pool_cluster().pools[0]
    d = Discovery([pool], lambda dev: events.append(("join", dev.id)), lambda i: events.append(("leave", i)),
                  resolve=scripted, taken=lambda device_id: device_id == "triton-10.0.0.9")
    assert d.poll(pool) == (["triton-10.0.0.1"], [])
    assert d.poll(pool) == (["triton-10.0.0.2"], [])
    assert d.poll(pool) == ([], [])  # the resolver did not answer: both stay
    assert d.status()[0]["error"] == "timeout" and d.status()[0]["addresses"] == ["10.0.0.1", "10.0.0.2"]
    assert d.poll(pool) == ([], ["triton-10.0.0.1"])
    assert d.poll(pool) == ([], ["triton-10.0.0.2"])  # no addresses: no devices
    assert d.poll(pool) == ([], [])  # an id a [[device]] already has is not taken over
    assert events == [("join", "triton-10.0.0.1"), ("join", "triton-10.0.0.2"), ("leave", "triton-10.0.0.1"),
                      ("leave", "triton-10.0.0.2")]


# -- a real DNS server ----------------------------------------------------------------------------
class Dnsmasq:
    """dnsmasq answering for *.test from a hosts file only (NXDOMAIN for a name it lacks), on a free
    UDP/TCP port of 127.0.0.1, TTL 0."""

    def __init__(self, directory: Path):
        if shutil.which("dnsmasq") is None:
            pytest.fail("dnsmasq is not installed (make system-deps installs Debian's dnsmasq-base)")
        self.hosts = directory / "hosts"
        self.hosts.write_text("")
        self.port = free_ports(1, "127.0.0.1")[0]
        self.log = directory / "dnsmasq.log"
        self.proc = subprocess.Popen(
            ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
             f"--addn-hosts={self.hosts}", "--listen-address=127.0.0.1", "--bind-interfaces", f"--port={self.port}",
             "--local=/test/", "--local-ttl=0", "--user=root", "--pid-file=", f"--log-facility={self.log}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not self._answers() and time.monotonic() < deadline:
            assert self.proc.poll() is None, f"dnsmasq exited: {self.log.read_text() if self.log.exists() else ''}"
            time.sleep(0.05)

    def _answers(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def set(self, name: str, addresses: list[str]) -> float:
        """Rewrite the hosts file and make dnsmasq read it (SIGHUP); returns when (monotonic)."""
        self.hosts.write_text("".join(f"{a} {name}\n" for a in addresses))
        self.proc.send_signal(signal.SIGHUP)
        return time.monotonic()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def dnsmasq(tmp_path):
    server = Dnsmasq(tmp_path)
    yield server
    server.stop()


def wait_for(what: str, condition, timeout_s: float):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s")


def test_resolution_through_dnsmasq_follows_its_hosts_file(dnsmasq):
    pool = pool_cluster(dns_server=f"127.0.0.1:{dnsmasq.port}").pools[0]
    assert resolve(pool) == []  # no such name yet: no devices
    dnsmasq.set("triton.test", ["127.0.0.3", "127.0.0.2", "::1"])
    wait_for("both addresses", lambda: resolve(pool) == ["127.0.0.2", "127.0.0.3", "::1"], 5)
    dnsmasq.set("triton.test", ["127.0.0.3"])
    wait_for("one address", lambda: resolve(pool) == ["127.0.0.3"], 5)
    dnsmasq.stop()
    with pytest.raises(ResolveFailed, match="gave no answer"):
        resolve(pool)


@contextlib.contextmanager
def tritons_on(model_repo: Path, addresses: list[str], key: str):
    """One embedded tritonserver per loopback address, all on the same ports (like pods)."""
    port = free_ports(1, "127.0.0.1")[0]
    while not all(_free(p) for p in (port, port + 1, port + 2)):
        port = free_ports(1, "127.0.0.1")[0]
    servers = {a: EmbeddedServer(model_repo, host=a, http_port=port, name=f"node-{a.split('.')[-1]}",
                                 control_key=key) for a in addresses}
    try:
        for s in servers.values():
            s.start()
        yield servers, port + 1
    finally:
        for s in servers.values():
            s.stop()


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.slow
def test_devices_join_and_leave_by_dns_under_load_without_losing_a_request(model_repo, dnsmasq, monkeypatch):
    key = "discovery-test-key"
    monkeypatch.setenv(CONTROL_KEY_ENV, key)
    a, b = "127.0.0.2", "127.0.0.3"
    with tritons_on(model_repo, [a, b], key) as (servers, grpc_port):
        # b already has resnet18 loaded: joining, it is reconciled with that, not loaded again
        servers[b].control(model_repo).load("resnet18", InstanceConfig(kind="cpu", count=1, threads=1))
        dnsmasq.set("triton.test", [a])
        cluster = pool_cluster(model_repo, port=grpc_port, dns_server=f"127.0.0.1:{dnsmasq.port}", refresh_s=0.2)
        with running_control_plane(model_repo, runtime=_runtime(cluster, model_repo), controller=True,
                                   tick_s=0.2, dwell_s=0.5) as server:
            cp = server.cp
            dev_a, dev_b = f"triton-{a}", f"triton-{b}"
            assert cp.device_ids() == [dev_a]
            cp.update_family("resnet", {"demand_override": 40.0})  # more than one device serves
            wait_for("a first plan on the one device", lambda: cp.plan and cp.plan.placements_on(dev_a), 60)
            results, stop = [], threading.Event()
            sender = threading.Thread(target=send, args=(server.url, results, stop), daemon=True)
            sender.start()
            try:
                wait_for("requests answered", lambda: len(results) >= 5, 60)
                changed = dnsmasq.set("triton.test", [a, b])
                plan_b = wait_for(f"a plan with {dev_b}", lambda: cp.plan if cp.plan.placements_on(dev_b) else None, 30)
                join_s = time.monotonic() - changed
                on_b = len([r for r in results if r.device_id == dev_b])
                wait_for(f"traffic on {dev_b}", lambda: len([r for r in results if r.device_id == dev_b]) > on_b + 2, 30)
                applied = next(d for d in cp.store.decisions(50) if d["plan_version"] == plan_b.version
                               and d["kind"] in ("replan", "apply"))
                diff = applied["detail"]["diff"]
                seen = [x for part in ("keep", "reload", "unload") for x in diff[part]]
                assert {"device_id": dev_b, "variant": "resnet18"} in [
                    {"device_id": x["device_id"], "variant": x["variant"]} for x in seen], diff  # what b had is known
                assert not [x for x in diff["load"] if x["device_id"] == dev_b and x["variant"] == "resnet18"], diff

                changed = dnsmasq.set("triton.test", [b])
                wait_for(f"a plan without {dev_a}", lambda: not cp.plan.placements_on(dev_a), 30)
                leave_s = time.monotonic() - changed
                assert dev_a not in cp.device_ids()
                servers[a].stop()  # the pod is gone after it left DNS
                count = len(results)
                wait_for("requests answered after the leave", lambda: len(results) > count + 5, 30)
            finally:
                stop.set()
                sender.join(60)
            status, body = call(server.url + "/api/v1/cluster")
            assert status == 200 and [d["id"] for d in body["devices"]] == [dev_b], body
            assert body["devices"][0]["pool"] == "triton" and body["pools"][0]["addresses"] == [b], body
            reasons = [d["reason"] for d in cp.store.decisions(200)]
            assert any(f"{dev_b} joined" in r for r in reasons) and any(f"{dev_a} left" in r for r in reasons)
    statuses = {s: sum(1 for r in results if r.status == s) for s in {r.status for r in results}}
    print(f"discovery: join -> plan in force {join_s:.2f} s, leave -> plan in force {leave_s:.2f} s; "
          f"requests {len(results)}: {statuses}")
    assert set(statuses) <= {"ok", "late"}, statuses  # every request answered with outputs


def _runtime(cluster, model_repo):
    from orchestrator.triton.runtime import ClusterRuntime

    return ClusterRuntime(cluster, model_repo)


def send(url: str, results: list, stop: threading.Event, rate_rps: float = 8.0) -> None:
    """An open-loop sender through a shim that follows the control plane (deadline 2 s)."""
    image = np.zeros((3, 224, 224), np.float32)
    with Client(url, poll_s=0.1) as client:
        futures = []
        next_at = time.monotonic()
        while not stop.is_set():
            futures.append(client.infer_async("resnet", image, deadline_ms=2000))
            next_at += 1.0 / rate_rps
            time.sleep(max(0.0, next_at - time.monotonic()))
            while futures and futures[0].done():
                results.append(futures.pop(0).result())
        for f in futures:
            results.append(f.result(timeout=30))


def test_profile_and_serve_name_a_pool_they_cannot_use(tmp_path, dnsmasq, model_repo, capsys):
    from orchestrator.catalog import Catalog
    from orchestrator.cli import main
    from tests.controlplane_helpers import synthetic_profiles

    cluster = tmp_path / "cluster.toml"
    cluster.write_text(f'model_repository = "{model_repo}"\n[[pool]]\nname = "triton"\ndns = "triton.test"\n'
                       f'class = "cpu-x"\nkind = "cpu"\nmemory_mb = 700\ndns_server = "127.0.0.1:{dnsmasq.port}"\n')
    assert main(["profile", "--cluster", str(cluster)]) == 2
    assert "pool 'triton': 'triton.test' resolves to no address" in capsys.readouterr().err
    synthetic_profiles(Catalog.load(model_repo)).save(tmp_path / "profiles.json")
    assert main(["serve", "--cluster", str(cluster), "--db", str(tmp_path / "state.db")]) == 2
    err = capsys.readouterr().err
    assert "pool 'triton':" in err and "has no profiles for device class 'cpu-x'" in err, err
    assert not (tmp_path / "state.db").exists()  # refused before anything was made


def test_the_system_resolver_path_follows_dns_as_in_a_pod(tmp_path):
    """Without `dns_server` a pool is resolved as every program on the host resolves names
    (getaddrinfo: /etc/resolv.conf, search domains), as in a pod or a Compose container. Here in a
    network namespace of its own whose resolv.conf names a dnsmasq on its loopback, port 53, and
    a search domain, so that the short name resolves as a Service's does in Kubernetes."""
    import os
    import sys
    import uuid

    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("dnsmasq") is None:
        pytest.skip("needs root, iproute2 and dnsmasq (a network namespace with its own resolv.conf)")
    ns = f"disc-{uuid.uuid4().hex[:6]}"
    netns_etc = Path("/etc/netns") / ns
    hosts = tmp_path / "hosts"
    hosts.write_text("10.9.0.7 triton-cpu.orchestrator.svc.test\n10.9.0.8 triton-cpu.orchestrator.svc.test\n")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    dns = None
    try:
        netns_etc.mkdir(parents=True)
        (netns_etc / "resolv.conf").write_text("nameserver 127.0.0.1\nsearch orchestrator.svc.test svc.test\n"
                                               "options ndots:5 timeout:1 attempts:1\n")
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        dns = subprocess.Popen(["ip", "netns", "exec", ns, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
                                "--no-resolv", "--no-hosts", f"--addn-hosts={hosts}", "--listen-address=127.0.0.1",
                                "--bind-interfaces", "--port=53", "--local=/test/", "--local-ttl=0", "--user=root",
                                "--pid-file="], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        script = ("import sys\nfrom orchestrator.cluster import Cluster\n"
                  "from orchestrator.controlplane.discovery import resolve\n"
                  "pool = Cluster.from_dict({'pool': [{'name': 'triton-cpu', 'dns': sys.argv[1], 'class': 'c',"
                  " 'kind': 'cpu', 'memory_mb': 1}]}).pools[0]\n"
                  "print(' '.join(resolve(pool)) or '-')\n")

        def resolved(name: str) -> str:
            out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", script, name], capture_output=True,
                                 text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(ROOT)})
            assert out.returncode == 0, out.stderr
            return out.stdout.strip()

        wait_for("dnsmasq in the namespace", lambda: resolved("triton-cpu") != "-", 10)
        assert resolved("triton-cpu") == "10.9.0.7 10.9.0.8"  # the short name, through the search domain
        assert resolved("gone.orchestrator.svc.test.") == "-"  # NXDOMAIN: no devices
    finally:
        if dns is not None:
            dns.kill()
            dns.wait(10)
        subprocess.run(["ip", "netns", "delete", ns], check=False)
        shutil.rmtree(netns_etc, ignore_errors=True)
