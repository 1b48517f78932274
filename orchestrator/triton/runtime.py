"""The Triton servers of a cluster: one per device, embedded or remote, started and stopped together.

`server_for_device` is the factory (embedded spec -> EmbeddedServer, url -> RemoteServer);
`ClusterRuntime` holds the servers of a whole cluster file and hands out `ModelControl`s and the
endpoints that shims route to.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from orchestrator.cluster import Cluster, Device
from orchestrator.errors import UserError
from orchestrator.triton.control import InstanceConfig, ModelControl
from orchestrator.triton.embedded import EmbeddedServer, cpu_seconds_between, group_activity
from orchestrator.triton.remote import RemoteServer

Server = EmbeddedServer | RemoteServer

BUSY_SHARE = 0.25  # an embedded server whose processes used this share of a core since the last look is working
BUSY_LOOK_S = 3.0  # ... where that look is at most this old (an older one starts the measure over)
HANG_RESTART_S = 10.0  # an embedded server silent this long (alive but not answering) is restarted
RESTART_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)  # the least time between restarts, growing per restart
BACKOFF_RESET_S = 300.0  # restarts further apart than this start the backoff over


def server_for_device(device: Device, model_repository: str | os.PathLike, run_dir: str | os.PathLike | None = None,
                      outlive_owner: bool = False) -> Server:
    """The (not yet started) server of one device."""
    if device.url is not None:
        return RemoteServer(device.url, name=device.id)
    spec = device.embedded
    return EmbeddedServer(model_repository, http_port=spec.http_port, cores=spec.cores, threads=spec.threads,
                          gpu=spec.gpu, host=spec.host, name=device.id, run_dir=run_dir, outlive_owner=outlive_owner)


def instance_config_for(device: Device, instances: int = 1, threads: int | None = None,
                        max_batch_size: int | None = None) -> InstanceConfig:
    """The InstanceConfig that loads a variant on `device` (kind, GPU and base config follow the device).

    An embedded GPU device's server sees only its own GPU (CUDA_VISIBLE_DEVICES = its index), where
    CUDA numbers it 0: the instance group names GPU 0 of that server, whatever the machine's index."""
    if threads is None:
        threads = device.embedded.threads if device.embedded else device.threads
    gpus = (0,) if device.kind == "gpu" and device.embedded is not None else ()
    config_name = device.config or ("gpu" if device.kind == "gpu" else None)
    return InstanceConfig(kind=device.kind, count=instances, threads=threads, gpus=gpus,
                          max_batch_size=max_batch_size, config_name=config_name)


class ClusterRuntime:
    """Servers for every device of a cluster. Use as a context manager; stop() stops only what it
    started. With `outlive_owner` the embedded servers keep running if this process dies
    unexpectedly, and `start(adopt=records)` takes over those a previous run left (`records()`)."""

    def __init__(self, cluster: Cluster, model_repository: str | os.PathLike | None = None,
                 run_dir: str | os.PathLike | None = None, load_timeout_s: float = 120.0,
                 outlive_owner: bool = False):
        repo = model_repository or cluster.model_repository
        if repo is None:
            raise UserError(f"{cluster.source or 'cluster'}: no model_repository given")
        self.cluster = cluster
        self.model_repository = Path(repo)
        self.load_timeout_s = load_timeout_s  # a load or unload Triton has not finished by then fails (and rolls back)
        self.servers: dict[str, Server] = {
            d.id: server_for_device(d, self.model_repository, Path(run_dir) / d.id if run_dir else None, outlive_owner)
            for d in cluster.devices
        }
        self.adopted: list[str] = []  # devices whose running server `start` took over
        self._controls: dict[str, ModelControl] = {}
        self._lock = threading.Lock()
        # device -> (when, CPU seconds of each member of its server's process group) at the last `busy` look
        self._activity: dict[str, tuple[float, dict[tuple[int, int], float]]] = {}
        self._restarts: dict[str, tuple[int, float]] = {}  # device -> (restarts in a row, when the last began)
        # restarts run on this runtime's own thread: an embedded server gets SIGTERM when the thread
        # that started it ends (embedded.py), and the thread asking for a restart (a control plane's
        # health probe) may end before the runtime does (the live bench runs one control plane per policy)
        self._launcher: ThreadPoolExecutor | None = None

    def start(self, device_ids: list[str] | None = None, adopt: dict[str, dict] | None = None) -> "ClusterRuntime":
        """Start (or attach to) the servers, taking over the embedded runs in `adopt` (device ->
        `EmbeddedServer.record()`) that are still there; on a failure the ones started here are
        stopped again."""
        started = []
        try:
            for dev_id in device_ids or list(self.servers):
                server = self.servers[dev_id]
                record = (adopt or {}).get(dev_id)
                if isinstance(server, EmbeddedServer) and isinstance(record, dict) and server.adopt(record):
                    self.adopted.append(dev_id)
                elif not server.is_running():
                    server.start()
                    started.append(server)
        except BaseException:
            for s in started:
                s.stop()
            raise
        return self

    def stop(self) -> None:
        with self._lock:
            for ctl in self._controls.values():
                ctl.close()
            self._controls.clear()
            launcher, self._launcher = self._launcher, None
        for server in self.servers.values():
            server.stop()
        if launcher is not None:
            launcher.shutdown(wait=False)

    def __enter__(self) -> "ClusterRuntime":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def control(self, device_id: str) -> ModelControl:
        """A ModelControl for the device's server (cached; ModelControl is safe to share)."""
        with self._lock:
            if device_id not in self._controls:
                server = self.servers.get(device_id)
                if server is None:
                    raise UserError(f"unknown device {device_id!r}; the cluster has {sorted(self.servers)}")
                self._controls[device_id] = server.control(self.model_repository, timeout_s=self.load_timeout_s)
            return self._controls[device_id]

    def busy(self, device_id: str) -> bool:
        """Whether a device's embedded server is working: not stopped, and its process group
        (server and python-backend stubs) used at least `BUSY_SHARE` of a core since the last look
        (the health monitor asks after each unanswered probe: a server saturated by inference
        answers late but is not down; a stopped or idle silent one is). Remote servers: False."""
        server = self.servers.get(device_id)
        pid = server.pid if isinstance(server, EmbeddedServer) else None
        activity = group_activity(pid) if pid is not None else None
        now = time.monotonic()
        if activity is None:
            self._activity.pop(device_id, None)
            return False
        stopped, members = activity
        last = self._activity.get(device_id)
        self._activity[device_id] = (now, members)
        if stopped or last is None or now - last[0] > BUSY_LOOK_S or now <= last[0]:
            return False
        return cpu_seconds_between(last[1], members) >= BUSY_SHARE * (now - last[0])

    def recover(self, device_id: str, silent_s: float, now: float | None = None) -> str | None:
        """Supervise one device that does not answer: restart its embedded server when it has
        died, or has hung for `HANG_RESTART_S`, no sooner than the backoff allows. Returns what was
        done (for the decision log), or None. Remote servers are not ours to restart."""
        server = self.servers.get(device_id)
        if not isinstance(server, EmbeddedServer) or server.pid is None:
            return None
        now = time.monotonic() if now is None else now
        code = server.exit_code
        if code is None and silent_s < HANG_RESTART_S:
            return None
        count, last = self._restarts.get(device_id, (0, -1e18))
        if now - last > BACKOFF_RESET_S:
            count = 0
        elif count and now - last < RESTART_BACKOFF_S[min(count, len(RESTART_BACKOFF_S)) - 1]:
            return None
        why = (f"exited with code {code}" if code is not None
               else f"did not answer for {silent_s:.1f} s (hung)")
        self._restarts[device_id] = (count + 1, now)
        with self._lock:
            if self._launcher is None:
                self._launcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="triton-restart")
            launcher = self._launcher
        try:
            launcher.submit(server.restart).result()
        except UserError as e:
            return f"{device_id}: embedded Triton {why}; restart {count + 1} failed: {e}"
        finally:
            # the cached control has the old run's key and maybe its ports (also one another thread
            # made while the restart ran): the next `control()` makes one for the new run
            with self._lock:
                ctl = self._controls.pop(device_id, None)
            if ctl is not None:
                ctl.close()
        return f"{device_id}: embedded Triton {why}; restarted (restart {count + 1}, pid {server.pid})"

    def add_device(self, device: Device) -> None:
        """A remote device found after start (node discovery); nothing is started or waited for:
        the health monitor sees when it answers."""
        if device.url is None:
            raise UserError(f"{device.id}: only remote devices can join a running cluster")
        with self._lock:
            self.servers = {**self.servers, device.id: server_for_device(device, self.model_repository)}
            self.cluster.devices = [*(d for d in self.cluster.devices if d.id != device.id), device]

    def remove_device(self, device_id: str) -> None:
        """Forget a remote device that left (its Triton is not ours to stop)."""
        with self._lock:
            ctl = self._controls.pop(device_id, None)
            self.servers = {d: s for d, s in self.servers.items() if d != device_id}
            self.cluster.devices = [d for d in self.cluster.devices if d.id != device_id]
        if ctl is not None:
            ctl.close()

    def records(self) -> dict[str, dict]:
        """The running embedded servers' records, for a later run to adopt (`start(adopt=...)`)."""
        return {d: s.record() for d, s in self.servers.items() if isinstance(s, EmbeddedServer) and s.is_running()}

    def endpoints(self) -> dict[str, dict[str, str | None]]:
        """Where shims send requests: {device_id: {"grpc": "host:port" | None, "http": ... | None}}."""
        return {dev_id: {"grpc": s.grpc_url, "http": s.http_url} for dev_id, s in self.servers.items()}

    def load(self, device_id: str, variant: str, instances: int = 1, threads: int | None = None,
             max_batch_size: int | None = None) -> dict:
        inst = instance_config_for(self.cluster.device(device_id), instances, threads, max_batch_size)
        return self.control(device_id).load(variant, inst)

    def unload(self, device_id: str, variant: str) -> None:
        self.control(device_id).unload(variant)
