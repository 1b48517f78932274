"""Node discovery benchmark: Tritons join and leave a cluster through DNS while an open-loop load runs.

    .venv/bin/python benchmarks/discovery_bench.py --repo model_repository [--cycles 3] [--rate 8]

A dnsmasq (Debian's dnsmasq-base) answers for `triton.test` from a hosts file this script
rewrites (SIGHUP, TTL 0); three tritonservers listen on 127.0.0.2, .3 and .4, on the same ports,
as pods of one headless Service would. A control plane in this process resolves the name every
0.2 s (a [[pool]] with `dns_server`), its controller planning for a demand that more than one
device serves; a shim that follows the plan sends requests at `--rate` (deadline 2 s) from the
first plan to the end. Each cycle: B joins, C joins, A leaves, A joins, C leaves, B leaves. Per
event: the time from the DNS change to the plan in force with (join) or without (leave) that
device, and what the plan change loaded. The device that joins first already has ResNet-18
loaded: it must be reconciled with that (kept, not loaded again). Last line:
`events E, requests R, dropped D, errors X, unanswered U, max join J s, max leave L s`; dropped
requests are answered too (explicitly, as deadline misses: the loads a join needs share the CPUs
with the serving), errors and unanswered ones are the failures (exit status 1).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.catalog import Catalog  # noqa: E402
from orchestrator.cluster import Cluster  # noqa: E402
from orchestrator.controlplane.server import ControlPlaneServer  # noqa: E402
from orchestrator.controlplane.service import ControlPlaneConfig  # noqa: E402
from orchestrator.shim import Client  # noqa: E402
from orchestrator.triton.control import CONTROL_KEY_ENV, InstanceConfig  # noqa: E402
from orchestrator.triton.embedded import EmbeddedServer, free_ports, port_is_free  # noqa: E402

NAME = "triton.test"
ADDRESSES = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
CYCLE = [("join", 1), ("join", 2), ("leave", 0), ("join", 0), ("leave", 2), ("leave", 1)]


class Dnsmasq:
    """dnsmasq answering for *.test from a hosts file only (NXDOMAIN for a name it lacks), on a
    free port of 127.0.0.1, TTL 0; `set` rewrites the file and makes it reread (SIGHUP)."""

    def __init__(self, directory: Path):
        if shutil.which("dnsmasq") is None:
            raise SystemExit("dnsmasq is not installed (make system-deps installs Debian's dnsmasq-base)")
        self.hosts = directory / "hosts"
        self.hosts.write_text("")
        self.port = free_ports(1, "127.0.0.1")[0]
        self.proc = subprocess.Popen(
            ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
             f"--addn-hosts={self.hosts}", "--listen-address=127.0.0.1", "--bind-interfaces", f"--port={self.port}",
             "--local=/test/", "--local-ttl=0", "--user=root", "--pid-file=", f"--log-facility={directory / 'dns.log'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not self._listening():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dnsmasq did not start (exit code {self.proc.poll()})")
            time.sleep(0.05)

    def _listening(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def set(self, name: str, addresses: list[str]) -> float:
        """Rewrite the hosts file and make dnsmasq read it; returns when (monotonic)."""
        self.hosts.write_text("".join(f"{a} {name}\n" for a in addresses))
        self.proc.send_signal(signal.SIGHUP)
        return time.monotonic()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@dataclass
class Event:
    kind: str  # join | leave
    device: str
    seconds: float  # DNS change -> the plan in force with (join) / without (leave) the device
    loads: list[str]  # what that plan change loaded, "variant@device"
    diff: dict = field(default_factory=dict)


@dataclass
class Report:
    events: list[Event]
    statuses: dict[str, int]  # requests by outcome
    requests: int
    cluster: dict = field(default_factory=dict)  # GET /api/v1/cluster at the end


def wait_for(what: str, condition, timeout_s: float):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")


def device_id(address: str) -> str:
    return f"triton-{address}"


def shared_port() -> int:
    """An HTTP port whose three ports (http, grpc, metrics) are free on every address."""
    while True:
        port = free_ports(1, "127.0.0.1")[0]
        if port < 65000 and all(port_is_free(p, a) for p in (port, port + 1, port + 2) for a in ADDRESSES):
            return port


def send(url: str, results: list, stop: threading.Event, rate_rps: float) -> None:
    """Open-loop requests through a shim that follows the control plane (deadline 2 s)."""
    image = np.zeros((3, 224, 224), np.float32)
    with Client(url, poll_s=0.1) as client:
        futures, next_at = [], time.monotonic()
        while not stop.is_set():
            futures.append(client.infer_async("resnet", image, deadline_ms=2000))
            next_at += 1.0 / rate_rps
            time.sleep(max(0.0, next_at - time.monotonic()))
            while futures and futures[0].done():
                results.append(futures.pop(0).result())
        for f in futures:
            try:
                results.append(f.result(timeout=30))
            except TimeoutError:
                results.append(None)  # unanswered: the shim's promise is that this never happens


def run(repo: Path, cycles: int = 1, rate_rps: float = 8.0, profiles=None, log=print) -> Report:
    """The benchmark (see the module docstring); `profiles` default to ones shaped like this
    project's CPU machines (tests/controlplane_helpers.py)."""
    from tests.controlplane_helpers import DEVICE_CLASS, synthetic_profiles

    key = os.environ.setdefault(CONTROL_KEY_ENV, "discovery-bench-key")
    work = Path(tempfile.mkdtemp(prefix="discovery-bench-"))
    dns = Dnsmasq(work)
    port = shared_port()
    servers = [EmbeddedServer(repo, host=a, http_port=port, name=f"node{i}", control_key=key)
               for i, a in enumerate(ADDRESSES)]
    results: list = []
    stop = threading.Event()
    sender = None
    try:
        for s in servers:
            s.start()
        servers[1].control(repo).load("resnet18", InstanceConfig(kind="cpu", count=1, threads=1))
        members = [ADDRESSES[0]]
        dns.set(NAME, members)
        cluster = Cluster.from_dict({"name": "discovery-bench", "model_repository": str(repo), "pool": [{
            "name": "triton", "dns": NAME, "port": port + 1, "class": DEVICE_CLASS, "kind": "cpu", "memory_mb": 700,
            "dns_server": f"127.0.0.1:{dns.port}", "refresh_s": 0.2}]})
        config = ControlPlaneConfig(token="bench", tick_s=0.2, dwell_s=0.5, drain_s=0.2)
        with ControlPlaneServer(cluster, profiles or synthetic_profiles(Catalog.load(repo)), config,
                                model_repository=repo, port=0) as server:
            cp = server.cp
            cp.update_family("resnet", {"demand_override": 40.0})  # more than one device's worth
            wait_for("a first plan", lambda: cp.plan is not None and cp.plan.placements_on(device_id(members[0])), 60)
            sender = threading.Thread(target=send, args=(server.url, results, stop, rate_rps), daemon=True)
            sender.start()
            wait_for("the first answers", lambda: len(results) >= 5, 60)
            events = []
            for _ in range(cycles):
                for kind, index in CYCLE:
                    address, dev = ADDRESSES[index], device_id(ADDRESSES[index])
                    members = members + [address] if kind == "join" else [m for m in members if m != address]
                    before = cp.plan.version
                    changed = dns.set(NAME, members)
                    if kind == "join":
                        plan = wait_for(f"a plan with {dev}", lambda: cp.plan if cp.plan.placements_on(dev) else None, 60)
                    else:
                        plan = wait_for(f"a plan without {dev}", lambda: cp.plan if not cp.plan.placements_on(dev)
                                        and dev not in cp.device_ids() else None, 60)
                    seconds = time.monotonic() - changed
                    decision = next((d for d in cp.store.decisions(100) if d["plan_version"] == plan.version
                                     and d["kind"] in ("replan", "apply") and plan.version != before), None)
                    diff = (decision or {}).get("detail", {}).get("diff", {})
                    loads = [f"{x['variant']}@{x['device_id']}" for x in diff.get("load", []) + diff.get("reload", [])]
                    events.append(Event(kind, dev, seconds, loads, diff))
                    log(f"  {kind:5} {dev:18} {seconds:6.2f} s   loads: {', '.join(loads) or 'none'}")
                    time.sleep(2.0)  # traffic on the new plan before the next change
            stop.set()
            sender.join(120)
            with urllib.request.urlopen(server.url + "/api/v1/cluster", timeout=10) as response:
                cluster_view = json.load(response)
    finally:
        stop.set()
        for s in servers:
            s.stop()
        dns.stop()
        shutil.rmtree(work, ignore_errors=True)
    statuses: dict[str, int] = {}
    for r in results:
        status = "unanswered" if r is None else str(r.status)
        statuses[status] = statuses.get(status, 0) + 1
    return Report(events, statuses, len(results), cluster_view)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", default="model_repository", help="model repository with resnet18 and resnet50")
    ap.add_argument("--cycles", type=int, default=3, help="join/leave cycles (6 DNS changes each)")
    ap.add_argument("--rate", type=float, default=8.0, help="requests/s sent through the shim")
    args = ap.parse_args()
    print(f"discovery bench: {args.cycles} cycle(s) of {len(CYCLE)} DNS changes, {args.rate:g} req/s")
    report = run(Path(args.repo), args.cycles, args.rate)
    joins = [e.seconds for e in report.events if e.kind == "join"]
    leaves = [e.seconds for e in report.events if e.kind == "leave"]
    print(f"requests by outcome: {report.statuses}")
    for kind, values in (("join", joins), ("leave", leaves)):
        ordered = sorted(values)
        print(f"{kind}: DNS change -> plan in force p50 {ordered[len(ordered) // 2]:.2f} s, max {ordered[-1]:.2f} s "
              f"({len(values)} events)")
    lost = report.statuses.get("unanswered", 0) + report.statuses.get("error", 0)
    print(f"events {len(report.events)}, requests {report.requests}, dropped {report.statuses.get('dropped', 0)}, "
          f"errors {report.statuses.get('error', 0)}, unanswered {report.statuses.get('unanswered', 0)}, "
          f"max join {max(joins):.2f} s, max leave {max(leaves):.2f} s")
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
