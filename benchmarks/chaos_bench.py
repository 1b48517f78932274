"""Chaos benchmark: Triton nodes on a real network fail and come back while an open-loop load
runs through a gateway (stock tritonclient) and an embedded shim. Needs root (network namespaces).

    .venv/bin/python benchmarks/chaos_bench.py --repo model_repository [--quick] [--rate 8]

The network: a namespace `hub` with a bridge, and one namespace per host, each on a veth link to
the bridge (10.201.0.0/24): two nodes `n1`, `n2` (a tritonserver each, with ResNet-18 in a
repository of its own, under a small node process that outlives any control plane and, as a
container runtime's restart policy, restarts a tritonserver that died 3 s later), the
control plane `cp` (`orchestrator serve`, the nodes as remote `grpc://` devices), and the client
host `cl` (`orchestrator gateway`, the load and this benchmark's own observer). Nothing is
addressed outside the namespaces made here; they are deleted at the end, and every process
started is stopped by its PID.

The faults, in turn, under the load: a node's tritonserver `kill -9` (its node restarts it),
`SIGSTOP`/`SIGCONT` of the other (the python backend may abort the server once it resumes: its
stub's IPC lock timed out; the node restarts it then too, and the last lines list such restarts), its link down (partition) and up, a slow link (`tc
netem` delay and loss; where the kernel has no netem, as on the machines this project's CI runs
on, a `tc tbf` bandwidth cap and nftables dropping packets at random), a node restarted with a
corrupt ResNet-18 (its load fails) and one whose load never finishes (a model that sleeps in
`initialize`), each mended later, and the control plane `kill -9` and restarted on its state
file. Each node serves a repository of its own, so a broken model hits one node. Per fault: the
requests sent from its start until 5 s after its end, by outcome (ok, late, explicit error,
unanswered), the time until the control plane showed the node down (detect), until a plan
without it was in force (re-plan), and from the fault's end until the node was live and in the
plan again (recover). The last line:
`faults F, requests R, unanswered U, max detect D s, max re-plan P s` (D and P over kill, hang and
partition), then how soon each broken model was planned around. Goals: U = 0; D <= 1 s and P <= 2 s
for kill, hang and partition; the control-plane crash costs no request.

`--soak [MINUTES]` runs no faults: MINUTES (default 10) at 80 % of the profiled capacity, with the
memory and open fds of every process group sampled every 30 s (goal: flat).

One file of about 680 lines on purpose: it runs itself again inside the namespaces (`--node` on
each node, `--inside` on the client host), so the set-up, the node process and the measured run
stay in one script that is copied and started as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HOSTS = {"n1": "10.201.0.11", "n2": "10.201.0.12", "cp": "10.201.0.10", "cl": "10.201.0.20"}
CP_PORT, NODE_HTTP = 8080, 8000
TOKEN = "chaos-bench"
VARIANT = "resnet18"
RESTART_DELAY_S = 3.0  # a node restarts a dead tritonserver this long after it died (its restart policy)
LOAD_TIMEOUT_S = 5.0  # the control plane's --load-timeout here: a stuck load fails after this
STUCK_MODEL = """
import time


class TritonPythonModel:
    def initialize(self, args):
        time.sleep(3600)  # a load that never finishes: the model stays LOADING
"""


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True)


class Network:
    """The namespaces and links (`tag` keeps names apart from anything else on the machine)."""

    def __init__(self, tag: str):
        self.tag = tag

    def ns(self, host: str) -> str:
        return f"{self.tag}{host}"

    def link(self, host: str) -> str:
        return f"{self.tag}{host}"  # the hub's end of a host's veth pair

    def create(self) -> None:
        hub = self.ns("hub")
        run("ip", "netns", "add", hub)
        run("ip", "-n", hub, "link", "add", "br0", "type", "bridge")
        for dev in ("br0", "lo"):
            run("ip", "-n", hub, "link", "set", dev, "up")
        for host, addr in HOSTS.items():
            ns = self.ns(host)
            run("ip", "netns", "add", ns)
            run("ip", "-n", hub, "link", "add", self.link(host), "type", "veth", "peer", "name", "eth0", "netns", ns)
            run("ip", "-n", hub, "link", "set", self.link(host), "master", "br0", "up")
            run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            for dev in ("eth0", "lo"):
                run("ip", "-n", ns, "link", "set", dev, "up")

    def destroy(self) -> None:
        for host in [*HOSTS, "hub"]:
            ns = self.ns(host)
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def set_link(self, host: str, up: bool) -> None:
        run("ip", "-n", self.ns("hub"), "link", "set", self.link(host), "up" if up else "down")

    def shape(self, host: str, netem: str | None, fallback: str = "", loss_pct: int = 0) -> str:
        """Slow a host's link both ways: `tc netem` (delay, loss), or where the kernel has no netem
        the token-bucket `fallback` (a bandwidth cap, which delays a 602-KB tensor) and nftables
        dropping `loss_pct` % of the host's packets in and out at random; None clears. Returns
        what was applied."""
        applied = ""
        nft = ["ip", "netns", "exec", self.ns(host), "nft"]
        for ns, dev in ((self.ns("hub"), self.link(host)), (self.ns(host), "eth0")):
            tc = ["ip", "netns", "exec", ns, "tc", "qdisc"]
            if netem is None:
                subprocess.run([*tc, "del", "dev", dev, "root"], capture_output=True)
                continue
            done = subprocess.run([*tc, "add", "dev", dev, "root", "netem", *netem.split()], capture_output=True,
                                  text=True)
            if done.returncode == 0:
                applied = f"netem {netem}"
            else:  # "Specified qdisc kind is unknown": no sch_netem in this kernel
                run(*tc, "add", "dev", dev, "root", "tbf", *fallback.split())
                applied = f"tbf {fallback}"
        if netem is None:
            subprocess.run([*nft, "delete", "table", "inet", "chaos"], capture_output=True)
        elif applied.startswith("tbf") and loss_pct and shutil.which("nft"):
            run(*nft, "add", "table", "inet", "chaos")
            for hook in ("input", "output"):
                run(*nft, "add", "chain", "inet", "chaos", hook, f"{{ type filter hook {hook} priority 0 ; }}")
                run(*nft, "add", "rule", "inet", "chaos", hook, "numgen", "random", "mod", "100", "<", str(loss_pct),
                    "drop")
            applied += f", nft {loss_pct} % loss (no netem in this kernel)"
        elif applied.startswith("tbf"):
            applied += " (no netem in this kernel)"
        return applied


# --- the processes ------------------------------------------------------------------------------

def node_main(repo: str, host: str, name: str, key: str, run_dir: str) -> None:
    """A node (run inside its namespace): one tritonserver under a restart policy, as a container
    runtime keeps one: a server that dies (kill -9, or a crash) is restarted RESTART_DELAY_S later.
    Commands on stdin: "restart" (stop it, start a new run), "crash-restart" (kill -9 it and start a
    new run at once, for a model the harness just broke or mended); EOF stops it. Every new run
    prints {"pid": ...}, with "exited": its exit status when it died on its own."""
    from orchestrator.triton.embedded import EmbeddedServer
    server = EmbeddedServer(repo, http_port=NODE_HTTP, host=host, name=name, control_key=key, run_dir=run_dir).start()
    print(json.dumps({"pid": server.pid}), flush=True)
    commands: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=lambda: ([commands.put(line.strip()) for line in sys.stdin], commands.put(None)),
                     daemon=True).start()
    died_at: float | None = None
    while True:
        try:
            command = commands.get(timeout=0.1)
        except queue.Empty:
            command = ""
        if command is None:
            break
        if command == "crash-restart":
            os.kill(server.pid, signal.SIGKILL)
            command = "restart"
        if command == "restart":
            server.restart()
            died_at = None
            print(json.dumps({"pid": server.pid}), flush=True)
        elif server.exit_code is not None:  # died on its own (or killed from outside)
            died_at = died_at or time.monotonic()
            if time.monotonic() - died_at >= RESTART_DELAY_S:
                code = server.exit_code
                server.restart()
                died_at = None
                print(json.dumps({"pid": server.pid, "exited": code}), flush=True)
    server.stop()


class Node:
    """The harness's handle on a node process: its tritonserver's pid, kept current by a reader of
    the node's output (the node restarts a dead server by itself), and the runs that died."""

    def __init__(self, net: Network, name: str, repo: Path, key: str, work: Path):
        self.name, self.addr = name, HOSTS[name]
        self.repo = work / f"repo-{name}"  # its own copy: a broken model breaks this node only
        shutil.copytree(repo, self.repo)
        self.model_dir = self.repo / VARIANT / "1"
        self._saved: dict[str, bytes] = {}
        self.proc = subprocess.Popen(["ip", "netns", "exec", net.ns(name), sys.executable, __file__, "--node", str(self.repo),
                                      self.addr, name, key, str(work / name)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.runs: queue.Queue[dict] = queue.Queue()
        self.exits: list[tuple[float, int]] = []  # (monotonic time it was restarted, exit status) of runs that died
        threading.Thread(target=self._read, daemon=True).start()
        self.triton_pid = self._next_run()

    def _read(self) -> None:
        for line in self.proc.stdout:
            run = json.loads(line)
            if "exited" in run:
                self.exits.append((time.monotonic(), run["exited"]))
            self.triton_pid = run["pid"]
            self.runs.put(run)

    def _next_run(self, timeout_s: float = 120.0) -> int:
        try:
            return self.runs.get(timeout=timeout_s)["pid"]
        except queue.Empty:
            raise SystemExit(f"node {self.name}: no tritonserver run within {timeout_s:.0f} s") from None

    def command(self, what: str) -> None:
        """Send a command and wait for the run it starts."""
        while not self.runs.empty():
            self.runs.get_nowait()
        self.proc.stdin.write(what + "\n")
        self.proc.stdin.flush()
        self._next_run()

    def break_model(self, file: str, content: bytes) -> None:
        """Replace one of the model's files (kept, for `mend`) and restart the tritonserver, which
        comes back empty: the control plane's next plan loads the broken model there."""
        path = self.model_dir / file
        self._saved[file] = path.read_bytes()
        path.write_bytes(content)
        self.command("crash-restart")

    def mend(self, restart: bool = False) -> None:
        """Put the model's files back (and restart the tritonserver: a stuck load holds it)."""
        for file, content in self._saved.items():
            (self.model_dir / file).write_bytes(content)
        self._saved.clear()
        if restart:
            self.command("crash-restart")

    def stop(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


def start_in(net: Network, host: str, args: list[str], env: dict | None = None, log: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", net.ns(host), sys.executable, "-m", "orchestrator.cli", *args],
                            stdout=open(log, "ab") if log else subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"})


def get_json(url: str, timeout_s: float = 1.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def wait_until(what: str, condition, timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.1)
    raise SystemExit(f"{what}: not within {timeout_s:.0f} s")


# --- observation and load ----------------------------------------------------------------------

@dataclass
class Sample:
    t: float
    live: dict[str, bool] | None  # None: the control plane did not answer
    placed: set[str]  # devices the plan in force places a model on
    version: int | None


class Observer(threading.Thread):
    """Polls the control plane's cluster and plan every 0.1 s from the client host."""

    def __init__(self, cp_url: str, t0: float):
        super().__init__(daemon=True)
        self.cp_url, self.t0 = cp_url, t0
        self.samples: list[Sample] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            cluster = get_json(self.cp_url + "/api/v1/cluster", 0.5)
            plan = get_json(self.cp_url + "/api/v1/plan", 0.5)
            live = {d["id"]: d["live"] for d in cluster["devices"]} if cluster else None
            placed = {p["device_id"] for p in plan["plan"]["placements"]} if plan and plan.get("plan") else set()
            version = plan["plan"]["version"] if plan and plan.get("plan") else None
            self.samples.append(Sample(time.monotonic() - self.t0, live, placed, version))

    def first(self, after: float, condition) -> float | None:
        return next((s.t for s in self.samples if s.t >= after and condition(s)), None)


@dataclass
class Sent:
    """One request: its outcome is kept when it is answered, the answer itself (logits) is not,
    so that a long soak measures the system's memory, not the harness's."""

    t: float
    path: str  # gateway | shim
    future: object | None  # None once answered
    outcome: str = "unanswered"
    why: str = ""  # the error or deadline message, for an error or a drop

    def answered(self, future) -> None:
        error = future.exception()
        if error is not None:
            self.why = str(error)
            self.outcome = "dropped" if self.why.startswith("Deadline Exceeded") else "error"
        else:
            result = future.result()
            status = str(getattr(result.status, "value", result.status))
            self.outcome = {"ok": "ok", "late": "late", "dropped": "dropped"}.get(status, "error")
            self.why = str(result.error or "") if self.outcome in ("error", "dropped") else ""
        self.future = None


def wait_answered(sent: list[Sent], timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    while any(s.future is not None for s in sent) and time.monotonic() < end:
        time.sleep(0.1)


@dataclass
class Fault:
    name: str
    target: str | None  # the node it hits (None: the control plane)
    kind: str = "down"  # down (kill, hang, partition: the goals' faults) | slow | model | control plane
    start: float = 0.0
    end: float = 0.0
    detect_s: float | None = None
    replan_s: float | None = None
    recover_s: float | None = None
    counts: dict[str, int] = field(default_factory=dict)


def process_usage(pid: int, group: bool) -> tuple[float, int] | None:
    """(RSS in MB, open fds) of a process, with `group` of every process in its process group (a
    tritonserver and its python-backend stubs), or None when gone."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return None
    rss_kb, fds = 0, 0
    for entry in (os.listdir("/proc") if group else [str(pid)]):
        if not entry.isdigit():
            continue
        try:
            if group and os.getpgid(int(entry)) != pgid:
                continue
            status = Path(f"/proc/{entry}/status").read_text()
            rss_kb += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
            fds += len(os.listdir(f"/proc/{entry}/fd"))
        except (OSError, StopIteration, ValueError):
            continue
    return rss_kb / 1024, fds


def soak_rate(profiles_path: Path, deadline_ms: float, nodes: int, share: float = 0.8) -> float:
    """`share` of the cluster's capacity: per node the best profiled throughput whose p99 fits in
    half the deadline (the planner's SLO rule), times the nodes."""
    from orchestrator.profiles import ProfileSet
    fits = [r.throughput_rps for r in ProfileSet.load(profiles_path).records if r.p99_ms <= deadline_ms * 0.5]
    if not fits:
        raise SystemExit(f"no profiled batch of {VARIANT} answers within half of {deadline_ms:g} ms")
    return share * nodes * max(fits)


def soak(watched: dict[str, tuple[int, bool]], minutes: float, t0: float, sent: list[Sent]) -> None:
    """Sample memory and fds of the `watched` processes (name -> (pid, with its process group))
    every 30 s for `minutes`; print the first sample after a minute's warm-up and the last."""
    samples: dict[str, list[tuple[float, float, int]]] = {name: [] for name in watched}
    end = t0 + minutes * 60
    while time.monotonic() < end:
        for name, (pid, group) in watched.items():
            usage = process_usage(pid, group)
            if usage is not None:
                samples[name].append((time.monotonic() - t0, *usage))
        print(f"{time.monotonic() - t0:6.0f} s  sent {len(sent)}  " + "  ".join(
            f"{n} {v[-1][1]:.0f} MB/{v[-1][2]} fds" for n, v in samples.items() if v), flush=True)
        time.sleep(max(0.0, min(30.0, end - time.monotonic())))
    print("\n| process | RSS MB at 1 min | RSS MB at end | RSS min..max | MB/min (fit) | fds at 1 min | fds at end |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, rows in samples.items():
        warm = [r for r in rows if r[0] >= 60.0] or rows
        if len(warm) < 2:
            print(f"| {name} | - | - | - | - | - | - |")
            continue
        ts, rss = [r[0] / 60 for r in warm], [r[1] for r in warm]
        mt, mr = sum(ts) / len(ts), sum(rss) / len(rss)
        slope = sum((t - mt) * (r - mr) for t, r in zip(ts, rss)) / max(sum((t - mt) ** 2 for t in ts), 1e-9)
        print(f"| {name} | {rss[0]:.0f} | {rss[-1]:.0f} | {min(rss):.0f}..{max(rss):.0f} | {slope:+.2f} | "
              f"{warm[0][2]} | {warm[-1][2]} |")


def load(gateway, shim, rate: float, deadline_ms: float, t0: float, stop: threading.Event, sent: list[Sent]) -> None:
    """Open loop, Poisson arrivals, alternating between the gateway and the shim."""
    import numpy as np
    image = np.zeros((3, 224, 224), np.float32)
    rng, t = random.Random(7), 0.0
    while not stop.is_set():
        t += rng.expovariate(rate)
        delay = t0 + t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        path = "gateway" if len(sent) % 2 == 0 else "shim"
        try:
            future = (gateway.infer_async("resnet", image, deadline_ms=deadline_ms) if path == "gateway"
                      else shim.infer_async("resnet", image, deadline_ms=deadline_ms))
        except Exception as e:  # noqa: BLE001 - an explicit refusal is an answer too
            from concurrent.futures import Future
            future = Future()
            future.set_exception(e)
        record = Sent(time.monotonic() - t0, path, future)
        sent.append(record)
        future.add_done_callback(record.answered)


def outcome(s: Sent) -> str:
    """ok, late, dropped (a deadline miss the data plane said: the shim's `dropped` status, or the
    gateway's DEADLINE_EXCEEDED answer, which is how it says the same), error (an explicit error:
    the call failed, or no route), unanswered."""
    return s.outcome


def inside_main(args) -> int:
    """Everything but the network's set-up, run on the client host."""
    from orchestrator.catalog import Catalog
    from orchestrator.cluster import Cluster
    from orchestrator.gateway.remote import RemoteGateway
    from orchestrator.profiler import ProfileSettings, profile_cluster
    from orchestrator.shim import Client
    from orchestrator.triton.runtime import ClusterRuntime

    net, work = Network(args.tag), Path(args.work)
    key = secrets.token_urlsafe(16)
    os.environ["ORCHESTRATOR_TRITON_KEY"] = key
    repo = work / "repo"  # ResNet-18 only: the faults, not the accuracy choice, are measured here
    (repo / VARIANT).mkdir(parents=True)
    shutil.copytree(Path(args.repo) / VARIANT, repo / VARIANT, dirs_exist_ok=True)
    catalog = Catalog.load(args.repo)
    Catalog({VARIANT: catalog.variants[VARIANT]}).save(repo)
    nodes = {n: Node(net, n, repo, key, work) for n in ("n1", "n2")}
    devices = [{"id": n, "class": "cpu-1t", "kind": "cpu", "memory_mb": 1200, "url": f"grpc://{HOSTS[n]}:{NODE_HTTP + 1}"}
               for n in nodes]
    cluster_file = work / "cluster.toml"
    cluster_file.write_text(f'name = "chaos"\nmodel_repository = "{repo}"\n' + "".join(
        f'\n[[device]]\nid = "{d["id"]}"\nclass = "cpu-1t"\nkind = "cpu"\nmemory_mb = 1200\nurl = "{d["url"]}"\n'
        for d in devices))
    procs: list[subprocess.Popen] = []
    try:
        print("profiling ResNet-18 on n1 ...", flush=True)
        cluster = Cluster.from_dict({"name": "chaos", "model_repository": str(repo), "device": devices[:1]})
        with ClusterRuntime(cluster, repo) as rt:
            profile_cluster(rt, Catalog.load(repo), [VARIANT], work / "profiles.json",
                            ProfileSettings(batch_sizes=(1, 2, 4), min_samples=20, max_seconds=3.0), progress=lambda m: None)
        if args.soak:
            args.rate = soak_rate(work / "profiles.json", args.deadline_ms, len(nodes))
            print(f"soak: {args.soak:g} min at {args.rate:.1f} req/s (80 % of the profiled capacity), no faults",
                  flush=True)
        cp_url = f"http://{HOSTS['cp']}:{CP_PORT}"
        serve = ["serve", "--cluster", str(cluster_file), "--profiles", str(work / "profiles.json"), "--db",
                 str(work / "state.sqlite"), "--host", HOSTS["cp"], "--port", str(CP_PORT), "--token", TOKEN,
                 "--no-gateway", "--tick", "0.5", "--load-timeout", str(LOAD_TIMEOUT_S), "--initial-demand", str(args.rate), "--slo",
                 f"resnet={args.deadline_ms:g}"]
        cp = start_in(net, "cp", serve, log=work / "serve.log")
        procs.append(cp)
        wait_until("the control plane's first plan", lambda: (get_json(cp_url + "/api/v1/plan") or {}).get("plan"), 90)
        gw = start_in(net, "cl", ["gateway", "--control-plane", cp_url, "--host", HOSTS["cl"], "--http-port", "8000",
                                  "--grpc-port", "8001", "--metrics-port", "8002"], log=work / "gateway.log")
        procs.append(gw)
        wait_until("the gateway ready", lambda: get_json(f"http://{HOSTS['cl']}:8000/v2/health/ready") is not None, 60)
        gateway = RemoteGateway(f"{HOSTS['cl']}:8001")
        shim = Client(cp_url, poll_s=0.5)
        t0 = time.monotonic()
        observer = Observer(cp_url, t0)
        observer.start()
        stop, sent = threading.Event(), []
        loader = threading.Thread(target=load, args=(gateway, shim, args.rate, args.deadline_ms, t0, stop, sent),
                                  daemon=True)
        loader.start()
        if args.soak:
            watched = {"control plane": (cp.pid, False), "gateway": (gw.pid, False),
                       "client (shim, load, observer)": (os.getpid(), False),
                       **{f"{n} tritonserver (with its stubs)": (node.triton_pid, True) for n, node in nodes.items()}}
            soak(watched, args.soak, t0, sent)
            stop.set()
            loader.join(10)
            wait_answered(sent, args.deadline_ms / 1000 + 40)
            totals: dict[str, int] = {}
            for kind in map(outcome, sent):
                totals[kind] = totals.get(kind, 0) + 1
            print(f"\nsoak: requests {len(sent)} ({', '.join(f'{k} {v}' for k, v in sorted(totals.items()))})")
            observer.stop.set()
            gateway.close()
            shim.close(timeout_s=10)
            return 0
        hold = 6.0 if args.quick else 20.0  # how long each fault lasts
        settle = 6.0 if args.quick else 15.0  # calm between faults

        def at(t: float) -> None:
            time.sleep(max(0.0, t0 + t - time.monotonic()))

        faults: list[Fault] = []
        clock = settle

        def fault(name: str, target: str | None, begin, finish, kind: str = "down") -> None:
            nonlocal clock
            f = Fault(name, target, kind)
            at(clock)
            f.start = time.monotonic() - t0
            print(f"{f.start:6.1f} s  {name} ...", flush=True)
            begin()
            at(clock + hold)
            finish()
            f.end = time.monotonic() - t0
            faults.append(f)
            clock = f.end + settle

        n1, n2 = nodes["n1"], nodes["n2"]
        fault(f"node n1: tritonserver kill -9 (its node restarts it {RESTART_DELAY_S:g} s later)", "n1",
              lambda: os.kill(n1.triton_pid, signal.SIGKILL), lambda: None)
        fault("node n2: SIGSTOP, then SIGCONT", "n2", lambda: os.killpg(n2.triton_pid, signal.SIGSTOP),
              lambda: os.killpg(n2.triton_pid, signal.SIGCONT))
        fault("node n1: link down (partition), then up", "n1", lambda: net.set_link("n1", False),
              lambda: net.set_link("n1", True))
        shaped: list[str] = []
        fault("node n2: slow link", "n2", lambda: shaped.append(net.shape("n2", "delay 100ms loss 5%",
                                                                           "rate 40mbit burst 64kb latency 400ms", 5)),
              lambda: net.shape("n2", None), kind="slow")
        faults[-1].name += f" ({shaped[0]})" if shaped else ""
        fault("node n1: restarted with a corrupt model (its load fails), then mended", "n1",
              lambda: n1.break_model("model.onnx", b"this is not an onnx file"), n1.mend, kind="model")
        fault(f"node n2: restarted with a model whose load never ends ({LOAD_TIMEOUT_S:g}-s load timeout), then mended"
              " and restarted", "n2", lambda: n2.break_model("model.py", STUCK_MODEL.encode()),
              lambda: n2.mend(restart=True), kind="model")
        restarted: list[subprocess.Popen] = []
        fault("control plane: kill -9, restarted on its state file", None, cp.kill,
              lambda: restarted.append(start_in(net, "cp", serve, log=work / "serve.log")), kind="control plane")
        procs += restarted
        at(clock)
        stop.set()
        loader.join(10)
        wait_answered(sent, args.deadline_ms / 1000 + 40)
        observer.stop.set()
        report(faults, sent, observer)
        restarts = [f"{n} at {t - t0:.1f} s (exit status {code})" for n, node in nodes.items() for t, code in node.exits]
        print("tritonservers restarted by their node after dying: " + ("; ".join(restarts) or "none"), flush=True)
        gateway.close()
        shim.close(timeout_s=10)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        for n in nodes.values():
            n.stop()
    return 0


def report(faults: list[Fault], sent: list[Sent], observer: Observer) -> None:
    print("\n| fault | sent | ok | late | dropped | error | unanswered | detect s | re-plan s | recover s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for f in faults:
        window = [s for s in sent if f.start <= s.t < f.end + 5.0]
        for kind in map(outcome, window):
            f.counts[kind] = f.counts.get(kind, 0) + 1
        if f.target is not None:
            target = f.target
            down = observer.first(f.start, lambda s: s.live is not None and not s.live.get(target, True))
            f.detect_s = None if down is None or down > f.end + 5 else down - f.start
            replan = observer.first(f.start, lambda s: s.version is not None and target not in s.placed)
            f.replan_s = None if replan is None or replan > f.end + 5 else replan - f.start
            back = observer.first(f.end, lambda s: s.live is not None and s.live.get(target, False)
                                  and target in s.placed)
            f.recover_s = None if back is None else back - f.end
        else:
            back = observer.first(f.end, lambda s: s.live is not None)
            f.recover_s = None if back is None else back - f.end

        def fmt(v):
            return "-" if v is None else f"{v:.2f}"
        c = f.counts
        print(f"| {f.name} | {len(window)} | {c.get('ok', 0)} | {c.get('late', 0)} | {c.get('dropped', 0)} | "
              f"{c.get('error', 0)} | "
              f"{c.get('unanswered', 0)} | {fmt(f.detect_s)} | {fmt(f.replan_s)} | {fmt(f.recover_s)} |")
    totals: dict[str, int] = {}
    for kind in map(outcome, sent):
        totals[kind] = totals.get(kind, 0) + 1
    by_path = {p: sum(1 for s in sent if s.path == p and outcome(s) == "ok") for p in ("gateway", "shim")}
    causes: dict[tuple[str, str, str], int] = {}  # (outcome, during which fault, why) -> requests
    for s in sent:
        kind = outcome(s)
        if kind in ("error", "dropped"):
            why = s.why
            why = why if len(why) <= 100 else why[:60] + " ... " + why[-40:]
            during = next((f.name.split(":")[0] + ": " + f.name.split(":")[1].split(",")[0].split("(")[0].strip()
                           for f in faults if f.start <= s.t < f.end + 5.0), "between faults")
            causes[(kind, during, why)] = causes.get((kind, during, why), 0) + 1
    for (kind, during, why), n in sorted(causes.items(), key=lambda kv: (kv[0][0] != "error", -kv[1]))[:8]:
        print(f"  {n} {kind} during {during}: {why}")
    print(f"\nall requests: {len(sent)} ({', '.join(f'{k} {v}' for k, v in sorted(totals.items()))}); ok through "
          f"the gateway {by_path['gateway']}, through the shim {by_path['shim']}")
    hard = [f for f in faults if f.kind == "down"]  # kill, hang, partition: the goals' faults
    detects = [f.detect_s for f in hard if f.detect_s is not None]
    replans = [f.replan_s for f in hard if f.replan_s is not None]
    missed = [f.name for f in hard if f.detect_s is None]
    around = [f.replan_s for f in faults if f.kind == "model"]
    print(f"faults {len(faults)}, requests {len(sent)}, unanswered {totals.get('unanswered', 0)}, max detect "
          f"{max(detects, default=float('nan')):.2f} s, max re-plan {max(replans, default=float('nan')):.2f} s"
          + (f" (not detected: {'; '.join(missed)})" if missed else "")
          + "; broken models planned around in " + ", ".join("-" if v is None else f"{v:.2f} s" for v in around),
          flush=True)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--node":
        node_main(*sys.argv[2:7])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", default="model_repository", help="exported model repository (with resnet18)")
    ap.add_argument("--quick", action="store_true", help="6-s faults, 6 s apart (about a minute and a half)")
    ap.add_argument("--soak", type=float, nargs="?", const=10.0, default=0.0, metavar="MINUTES",
                    help="no faults: MINUTES (default 10) at 80 %% of the profiled capacity, memory and fds sampled")
    ap.add_argument("--rate", type=float, default=6.0, help="requests/s, half through the gateway, half the shim")
    ap.add_argument("--deadline-ms", type=float, default=1000.0)
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, state file) and say where")
    ap.add_argument("--inside", nargs=2, metavar=("TAG", "WORK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        args.tag, args.work = args.inside
        return inside_main(args)
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
        print("error: the chaos benchmark needs root and iproute2's ip and tc (network namespaces)", file=sys.stderr)
        return 2
    if not (Path(args.repo) / VARIANT / "1" / "model.onnx").is_file():
        print(f"error: {args.repo}: no exported {VARIANT} (run `orchestrator export --out {args.repo}`)", file=sys.stderr)
        return 2
    net = Network(f"oc{os.getpid() % 100000}")
    work = Path(tempfile.mkdtemp(prefix="chaos-"))
    try:
        net.create()
        cmd = ["ip", "netns", "exec", net.ns("cl"), sys.executable, __file__, "--repo", str(Path(args.repo).resolve()),
               "--rate", str(args.rate), "--deadline-ms", str(args.deadline_ms), "--inside", net.tag, str(work)]
        cmd += ["--quick"] if args.quick else []
        cmd += ["--soak", str(args.soak)] if args.soak else []
        return subprocess.run(cmd).returncode
    finally:
        net.destroy()
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
