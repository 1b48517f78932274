"""An embedded Triton server: a `tritonserver` process this orchestrator starts and owns.

It runs in explicit model-control mode (the orchestrator decides what is loaded), on chosen or
free ports, optionally pinned to CPU cores, with a shared-memory prefix of its own so that several
servers can share one machine. It listens on one address only (loopback unless the cluster file
names another), and its model-repository, logging, trace and shared-memory APIs are restricted
to a key that only its owner holds (`control_key`): anyone who can reach the ports may run
inference and read metadata, but only the control plane loads and unloads models. The server runs in its own process
group (stopped as a whole, python-backend stubs included) and every live server is stopped at a
normal exit. By default it also gets SIGTERM if the owning thread dies (PR_SET_PDEATHSIG: start
servers from a long-lived thread); with `outlive_owner` it does not, so that a crashed owner (a
control plane killed with SIGKILL) leaves it serving, and the owner's next run takes it over
(`record` / `adopt`) instead of starting it anew.
"""

from __future__ import annotations

import atexit
import json
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable
from pathlib import Path

from orchestrator.errors import UserError
from orchestrator.names import check_name
from orchestrator.triton.binary import find_triton
from orchestrator.triton.control import CONTROL_KEY_HEADER, ModelControl, control_headers
# The APIs only the key holder may call: model load/unload/index, and the three that write files
# or map memory on the server's host (log file, trace file, shared-memory registration).
RESTRICTED_APIS = "model-repository,logging,trace,shared-memory"

_LIVE: set["EmbeddedServer"] = set()
_LIVE_LOCK = threading.Lock()


def _stop_all_at_exit() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for s in servers:
        s.stop()


atexit.register(_stop_all_at_exit)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on host:port now (SO_REUSEADDR, as tritonserver binds: a
    port whose old connections sit in TIME_WAIT after a crash counts as free)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def group_processes(pgids: Iterable[int]) -> dict[int, dict[tuple[int, int], float]]:
    """Per process group in `pgids`, the CPU seconds (user + system) of each live member, keyed
    by (pid, start time): tritonserver and its python-backend stubs, from one scan of /proc. A
    member that exits (a model unloaded: its stub) takes its seconds with it."""
    found: dict[int, dict[tuple[int, int], float]] = {pgid: {} for pgid in pgids}
    hz = os.sysconf("SC_CLK_TCK")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _proc_stat(int(entry.name))
        if fields is not None and len(fields) > 19 and int(fields[2]) in found:
            # utime, stime, starttime: stat fields 14, 15 and 22
            found[int(fields[2])][(int(entry.name), int(fields[19]))] = (int(fields[11]) + int(fields[12])) / hz
    return found


def cpu_seconds_between(before: dict[tuple[int, int], float], after: dict[tuple[int, int], float]) -> float:
    """CPU seconds a process group used between two looks (`group_processes`), member by member:
    one that started since the first look counts from zero; one that exited in between (an
    unloaded model's stub) is left out, its last moments lost, rather than counted as negative."""
    return sum(cpu - before.get(member, 0.0) for member, cpu in after.items())


def group_activity(pgid: int) -> tuple[bool, dict[tuple[int, int], float]] | None:
    """(stopped, members) of process group `pgid`: whether its leader is stopped (SIGSTOP, a
    debugger), and the CPU seconds of each live member (`group_processes`). None when the leader
    is gone."""
    leader = _proc_stat(pgid)
    if leader is None:
        return None
    return leader[0] in ("T", "t"), group_processes([pgid])[pgid]


def _alive(pid: int) -> bool:
    fields = _proc_stat(pid)
    return fields is not None and fields[0] != "Z"


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports on `host` that are free right now (the OS picks them)."""
    socks, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket(_family(host), socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _launch_prefix(cores: tuple[int, ...], die_with_owner: bool = True) -> list[str]:
    """util-linux wrappers that set the child up and exec tritonserver.

    They replace a ``preexec_fn``: Python code run between fork and exec in a process with
    threads (grpc, gevent, torch) can crash or deadlock the child, and it did (a segfault in CI).
    """
    prefix: list[str] = []
    if die_with_owner:
        prefix += [_util_linux("setpriv"), "--pdeathsig", "TERM"]  # PR_SET_PDEATHSIG survives exec
    if cores:
        prefix += [_util_linux("taskset"), "--cpu-list", ",".join(map(str, cores))]
    return prefix


def _util_linux(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise UserError(f"'{tool}' not found on PATH: install util-linux (it starts tritonserver pinned and "
                        "tied to its owner)")
    return path


class EmbeddedServer:
    """A tritonserver process over a model repository."""

    def __init__(
        self,
        model_repository: str | os.PathLike,
        *,
        http_port: int | None = None,
        cores: Iterable[int] = (),
        threads: int = 1,
        gpu: int | None = None,
        host: str = "127.0.0.1",
        name: str = "triton",
        load: Iterable[str] = (),
        run_dir: str | os.PathLike | None = None,
        startup_timeout_s: float = 60.0,
        binary: str | None = None,
        outlive_owner: bool = False,
        control_key: str | None = None,
    ):
        self.name = check_name(name, "embedded Triton server name")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise UserError(f"{name}: the address to listen on must be an IP address, not {host!r}") from None
        self.host = host
        self.model_repository = Path(model_repository).resolve()
        self.requested_http_port = http_port
        self.cores = tuple(cores)
        self.threads = threads
        self.gpu = gpu
        self.load_at_start = tuple(load)
        self.startup_timeout_s = startup_timeout_s
        self._binary = binary
        self._run_dir = Path(run_dir) if run_dir else None
        self.outlive_owner = outlive_owner
        self._fixed_key = control_key  # a key its owner chose (a node whose control plane holds it), else one per run
        self._proc: subprocess.Popen | None = None
        self._adopted: int | None = None  # the pid of a run a previous owner started (see `adopt`)
        self._log_file = None
        self.log_path: Path | None = None
        self.http_port = self.grpc_port = self.metrics_port = 0
        self.shm_prefix = ""
        self._control_key = ""

    # -- addresses -------------------------------------------------------------------------
    @property
    def _connect_host(self) -> str:
        """Where a client on this machine reaches the server (a wildcard bind is reached on loopback)."""
        ip = ipaddress.ip_address(self.host)
        if ip.is_unspecified:
            return "127.0.0.1" if ip.version == 4 else "[::1]"
        return f"[{self.host}]" if ip.version == 6 else self.host

    @property
    def http_url(self) -> str:
        return f"{self._connect_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self._connect_host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"{self._connect_host}:{self.metrics_port}"

    @property
    def control_key(self) -> str:
        """The key that opens this server run's restricted APIs (model control); made at each start."""
        return self._control_key

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else self._adopted

    def control(self, model_repository: str | os.PathLike | None = None, timeout_s: float = 120.0) -> ModelControl:
        """Model control of this server run (gRPC, with its key; loads bounded by `timeout_s`); close it when done."""
        return ModelControl(self.grpc_url, "grpc", model_repository, name=self.name, control_key=self._control_key,
                            timeout_s=timeout_s)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "EmbeddedServer":
        if self.is_running():
            return self
        if not self.model_repository.is_dir():
            raise UserError(f"{self.name}: model repository {self.model_repository} does not exist")
        install = find_triton(self._binary)
        if self.requested_http_port is not None:
            ports = [self.requested_http_port + i for i in range(3)]
            busy = [p for p in ports if not port_is_free(p, self.host)]
            if busy:
                raise UserError(f"{self.name}: port {busy[0]} is already in use (http/grpc/metrics need {ports})")
        elif self.http_port and all(port_is_free(p, self.host) for p in (self.http_port, self.grpc_port,
                                                                          self.metrics_port)):
            ports = [self.http_port, self.grpc_port, self.metrics_port]  # a restart keeps its addresses
        else:
            ports = free_ports(3, self.host)
        self.http_port, self.grpc_port, self.metrics_port = ports
        self.shm_prefix = f"orch_{self.name}_{uuid.uuid4().hex[:8]}_"
        self._control_key = self._fixed_key or secrets.token_urlsafe(24)
        restricted = f"{RESTRICTED_APIS}:{CONTROL_KEY_HEADER}={self._control_key}"
        run_dir = self._run_dir or Path(tempfile.mkdtemp(prefix=f"triton-{self.name}-"))
        run_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = run_dir / f"{self.name}.log"
        args = [
            str(install.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={install.backend_dir}",
            "--model-control-mode=explicit",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            f"--http-restricted-api={restricted}",
            f"--grpc-restricted-protocol={restricted}",
            "--exit-on-error=false",
            "--strict-readiness=false",
            "--exit-timeout-secs=5",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            "--log-verbose=0",
        ]
        if self.gpu is not None:
            args.append("--model-config-name=gpu")
        args += [f"--load-model={m}" for m in self.load_at_start]
        env = self.device_environment(install.environment())
        self._log_file = open(self.log_path, "ab")
        args = _launch_prefix(self.cores, die_with_owner=not self.outlive_owner) + args
        self._proc = subprocess.Popen(args, stdout=self._log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      env=env, start_new_session=True)
        with _LIVE_LOCK:
            _LIVE.add(self)
        try:
            self._wait_live()
        except BaseException:
            self.stop()
            raise
        return self

    def device_environment(self, env: dict[str, str]) -> dict[str, str]:
        """`env` with this server's threads and GPU visibility: a CPU server sees no GPU, a GPU
        server only its own (which CUDA inside it then numbers 0). GPUs are counted in PCI bus
        order, as NVML (`orchestrator cluster detect`) counts them, not CUDA's fastest-first."""
        env = dict(env)
        env["OMP_NUM_THREADS"] = str(self.threads)
        env["CUDA_VISIBLE_DEVICES"] = "" if self.gpu is None else str(self.gpu)
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        return env

    def _wait_live(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        url = f"http://{self.http_url}/v2/health/live"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise UserError(f"{self.name}: tritonserver exited with code {self._proc.returncode} during start-up; "
                                f"log tail: {self.log_tail(8, one_line=True)}")
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200 and self._models_settled() and self._metrics_up():
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        raise UserError(f"{self.name}: tritonserver not live after {self.startup_timeout_s:.0f} s; "
                        f"log tail: {self.log_tail(8, one_line=True)}")

    def _metrics_up(self) -> bool:
        """True once the metrics endpoint answers: tritonserver opens it after HTTP and gRPC, so
        a server live over HTTP may still refuse its metrics port for a moment."""
        with urllib.request.urlopen(f"http://{self.metrics_url}/metrics", timeout=2) as r:
            return r.status == 200

    def _models_settled(self) -> bool:
        """True once the models asked for at start-up are no longer loading."""
        if not self.load_at_start:
            return True
        req = urllib.request.Request(f"http://{self.http_url}/v2/repository/index", data=b"{}", method="POST",
                                     headers=control_headers(self._control_key, "http"))
        with urllib.request.urlopen(req, timeout=2) as r:
            states = {m["name"]: m.get("state", "") for m in json.loads(r.read())}
        return all(states.get(m) not in ("LOADING", "") for m in self.load_at_start if m in states)

    def is_running(self) -> bool:
        if self._adopted is not None:
            return _alive(self._adopted)
        return self._proc is not None and self._proc.poll() is None

    @property
    def exit_code(self) -> int | None:
        """The server's exit status once it has died (None while it runs, or before a start; -1
        for an adopted run, whose status went to its first owner's parent)."""
        if self._adopted is not None:
            return None if _alive(self._adopted) else -1
        return self._proc.poll() if self._proc is not None else None

    # -- a run that outlives its owner ---------------------------------------------------------
    def record(self) -> dict:
        """What the owner's next run needs to take this run over (`adopt`). It holds the control
        key: keep it where the owner's other secrets are."""
        fields = _proc_stat(self.pid) if self.pid else None
        return {"pid": self.pid, "start_ticks": fields[19] if fields else None, "host": self.host,
                "http_port": self.http_port, "grpc_port": self.grpc_port, "metrics_port": self.metrics_port,
                "control_key": self._control_key, "shm_prefix": self.shm_prefix,
                "log_path": str(self.log_path) if self.log_path else "", "model_repository": str(self.model_repository)}

    def adopt(self, record: dict) -> bool:
        """Take over the run `record` describes, if it is still that run: the same process (pid
        and start time), a tritonserver on this repository and these ports, answering to its
        key. Returns whether it did; on False nothing changed (start a new run)."""
        try:
            pid, ticks = int(record["pid"]), str(record["start_ticks"])
            ports = [int(record[k]) for k in ("http_port", "grpc_port", "metrics_port")]
            key = str(record["control_key"])
        except (KeyError, TypeError, ValueError):
            return False
        fields = _proc_stat(pid)
        if self.is_running() or fields is None or fields[0] == "Z" or fields[19] != ticks \
                or record.get("model_repository") != str(self.model_repository) or record.get("host") != self.host:
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        wanted = [f"--model-repository={self.model_repository}", f"--http-port={ports[0]}", f"--grpc-port={ports[1]}"]
        if not all(w.encode() in cmdline for w in wanted):
            return False
        old = (self.http_port, self.grpc_port, self.metrics_port, self._control_key)
        self.http_port, self.grpc_port, self.metrics_port = ports
        self._control_key = key
        control = self.control()
        try:
            control.probe(2.0)  # the index is a restricted call: it answers only to this key
        except UserError:
            self.http_port, self.grpc_port, self.metrics_port, self._control_key = old
            return False
        finally:
            control.close()
        self._adopted = pid
        self.shm_prefix = str(record.get("shm_prefix", ""))
        self.log_path = Path(record["log_path"]) if record.get("log_path") else None
        with _LIVE_LOCK:
            _LIVE.add(self)
        return True

    def restart(self) -> "EmbeddedServer":
        """A new run in place of this one: the old one stopped as a whole (its python-backend stubs
        killed, the dead server reaped), the new one on the same ports where they are free, with
        a new control key and nothing loaded but the start-up models."""
        self.stop()
        return self.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server and everything it started; idempotent."""
        if self._adopted is not None:  # not our child: signal its group and watch it go
            pid, self._adopted = self._adopted, None
            for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(pid, sig)
                except (ProcessLookupError, PermissionError):
                    break
                end = time.monotonic() + wait_s
                while _alive(pid) and time.monotonic() < end:
                    time.sleep(0.05)
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    pass
            try:  # stubs may linger after tritonserver itself exits
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def __enter__(self) -> "EmbeddedServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}, http {self.http_url}" if self.is_running() else "stopped"
        return f"EmbeddedServer({self.name!r}, {state})"

    # -- diagnostics -----------------------------------------------------------------------
    def log_tail(self, lines: int = 40, one_line: bool = False) -> str:
        if not self.log_path or not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return " | ".join(t.strip() for t in text if t.strip()) if one_line else "\n".join(text)
