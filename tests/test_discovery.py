"""Node discovery: [[pool]] parsing, the join/leave logic, and a real DNS server (Debian's dnsmasq,
started here on a loopback address with a hosts file the test rewrites) in front of real
tritonservers: a device that appears is reconciled and gets traffic, one that disappears is
planned around, and no request is lost meanwhile."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from benchmarks.discovery_bench import wait_for
from orchestrator.cluster import Cluster
from orchestrator.controlplane.discovery import Discovery, ResolveFailed, resolve
from orchestrator.errors import UserError
from tests.controlplane_helpers import DEVICE_CLASS

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
@pytest.fixture
def dnsmasq(tmp_path):
    from benchmarks.discovery_bench import Dnsmasq

    if shutil.which("dnsmasq") is None:
        pytest.fail("dnsmasq is not installed (make system-deps installs Debian's dnsmasq-base)")
    server = Dnsmasq(tmp_path)
    yield server
    server.stop()


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


@pytest.mark.slow
def test_devices_join_and_leave_by_dns_under_load_without_losing_a_request(model_repo):
    """benchmarks/discovery_bench.py, one cycle: B, C join; A leaves, joins; C, B leave."""
    from benchmarks.discovery_bench import ADDRESSES, CYCLE, run

    report = run(model_repo, cycles=1, rate_rps=8.0)
    devices = [f"triton-{a}" for a in ADDRESSES]
    assert [(e.kind, e.device) for e in report.events] == [(k, devices[i]) for k, i in CYCLE]
    first = report.events[0]  # B joined with ResNet-18 already loaded: reconciled, not loaded again
    seen = [(x["device_id"], x["variant"]) for part in ("keep", "reload", "unload") for x in first.diff[part]]
    assert (devices[1], "resnet18") in seen and f"resnet18@{devices[1]}" not in first.loads, first
    assert report.statuses.get("error", 0) == 0 and report.statuses.get("unanswered", 0) == 0, report.statuses
    assert report.statuses.get("ok", 0) >= 0.9 * report.requests, report.statuses
    body = report.cluster  # only A is left, found through the pool
    assert [d["id"] for d in body["devices"]] == [devices[0]] and body["devices"][0]["pool"] == "triton", body
    assert body["pools"][0]["addresses"] == [ADDRESSES[0]] and body["pools"][0]["error"] is None, body
    print("discovery: " + "; ".join(f"{e.kind} {e.device} {e.seconds:.2f} s" for e in report.events)
          + f"; requests {report.requests}: {report.statuses}")


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


def test_a_device_joining_a_monitor_started_with_none_is_probed_and_one_that_leaves_is_not():
    """A pool that resolves to nothing when the control plane starts (the Tritons come up later)."""
    from orchestrator.controlplane.health import LEFT, HealthMonitor

    probed, changes = [], []

    def probe(device_id, timeout_s):
        probed.append(device_id)
        return [{"name": "resnet18", "state": "READY"}]

    monitor = HealthMonitor([], probe, on_change=lambda d, h: changes.append((d, h.live)), period_s=0.02).start()
    try:
        monitor.add("triton-10.0.0.1")
        # the monitor publishes the new state, then calls on_change outside its lock: wait for the call
        wait_for("the joined device probed, up and reported", lambda: changes, 5)
        assert changes == [("triton-10.0.0.1", True)] and monitor.state("triton-10.0.0.1").ups == 1
        monitor.remove("triton-10.0.0.1")
        count = len(probed)
        time.sleep(0.2)
        assert len(probed) <= count + 1 and monitor.state("triton-10.0.0.1") is LEFT
    finally:
        monitor.stop()
