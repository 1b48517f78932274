"""Node discovery: a [[pool]]'s devices are the addresses its DNS name resolves to.

`Discovery` resolves every pool each `refresh_s` on one thread and hands the control plane the
devices that appeared (`join`) and those that went away (`leave`). They take the same path as a
device that comes back or goes down: a joined device is probed, reconciled with what its Triton
has loaded and planned for at once; a device that left is planned around at once. No Kubernetes
API is used: a headless Service's name lists its ready pods, a Compose service's name its
containers, and any DNS server that answers A/AAAA queries (Consul, dnsmasq) works the same.

A name that does not exist or has no addresses (NXDOMAIN, no records: the last pod went away)
means no devices. A resolver that does not answer (timeout, SERVFAIL) changes nothing: the devices
of the last answer stay and the error is shown (`status()`), so a DNS outage never empties a
cluster.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from orchestrator.cluster import Cluster, Device, DevicePool
from orchestrator.errors import UserError

log = logging.getLogger(__name__)

RESOLVE_TIMEOUT_S = 2.0


class ResolveFailed(Exception):
    """The resolver did not answer (the pool keeps its devices)."""


def resolve(pool: DevicePool) -> list[str]:
    """The pool name's addresses, sorted; [] when the name has none; ResolveFailed when the
    resolver does not answer. The system's resolver (what every client on the host uses: search
    domains, /etc/hosts) unless the pool names a `dns_server`."""
    if pool.dns_server is not None:
        return _ask_server(pool.dns, pool.dns_server)
    try:
        infos = socket.getaddrinfo(pool.dns, pool.port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        if e.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            return []
        raise ResolveFailed(f"cannot resolve {pool.dns!r}: {e.strerror}") from None
    return _sorted({info[4][0] for info in infos})


def _ask_server(name: str, server: tuple[str, int]) -> list[str]:
    import dns.exception
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server[0]]
    resolver.port = server[1]
    resolver.lifetime = RESOLVE_TIMEOUT_S
    addresses: set[str] = set()
    for rdtype in ("A", "AAAA"):
        try:
            answer = resolver.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as e:
            raise ResolveFailed(f"DNS server {server[0]}:{server[1]} gave no answer for {name!r}: "
                                f"{type(e).__name__}") from None
        addresses.update(r.address for r in answer)
    return _sorted(addresses)


def _sorted(addresses: set[str]) -> list[str]:
    return sorted(addresses, key=lambda a: (ipaddress.ip_address(a).version, ipaddress.ip_address(a)))


@dataclass
class PoolStatus:
    """What the last resolutions of one pool gave (the API and the dashboard show it)."""

    pool: str
    dns: str
    addresses: list[str] = field(default_factory=list)
    error: str | None = None  # the last resolution's failure, None when it answered
    last_answer: float | None = None  # wall time of the last resolution that answered
    resolutions: int = 0

    def to_dict(self) -> dict:
        return {"pool": self.pool, "dns": self.dns, "addresses": list(self.addresses), "error": self.error,
                "last_answer": self.last_answer, "resolutions": self.resolutions}


class Discovery:
    """Resolves `pools` and calls `join(device)` / `leave(device_id)` as their addresses change."""

    def __init__(self, pools: list[DevicePool], join: Callable[[Device], None], leave: Callable[[str], None],
                 resolve: Callable[[DevicePool], list[str]] = resolve, taken: Callable[[str], bool] = lambda i: False,
                 clock: Callable[[], float] = time.time):
        self.pools = list(pools)
        self.join, self.leave, self.resolve, self.taken, self.clock = join, leave, resolve, taken, clock
        self._status = {p.name: PoolStatus(p.name, p.dns) for p in self.pools}
        self._lock = threading.Lock()  # one poll at a time (the thread's, or a caller's)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self, pool: DevicePool) -> tuple[list[str], list[str]]:
        """Resolve one pool now; returns the device ids that (joined, left)."""
        with self._lock:
            status = self._status[pool.name]
            status.resolutions += 1
            try:
                addresses = self.resolve(pool)
            except ResolveFailed as e:
                if status.error != str(e):
                    log.warning("pool %s: %s; its %d device(s) stay", pool.name, e, len(status.addresses))
                status.error = str(e)
                return [], []
            status.error, status.last_answer = None, self.clock()
            before, now = set(status.addresses), set(addresses)
            joined, left = [], []
            for address in addresses:
                if address in before:
                    continue
                device = pool.device(address)
                if self.taken(device.id):  # a [[device]] of the cluster file already has this id
                    log.warning("pool %s: address %s gives device id %s, which is taken", pool.name, address, device.id)
                    now.discard(address)
                    continue
                self.join(device)
                joined.append(device.id)
            for address in sorted(before - now):
                device_id = pool.device(address).id
                self.leave(device_id)
                left.append(device_id)
            status.addresses = [a for a in addresses if a in now]
            return joined, left

    def poll_all(self) -> None:
        for pool in self.pools:
            self.poll(pool)

    def start(self) -> "Discovery":
        """Resolve every pool once now (the first plan sees the devices there are), then keep resolving."""
        self.poll_all()
        self._thread = threading.Thread(target=self._run, name="discovery", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(RESOLVE_TIMEOUT_S * 2 + 1.0)

    def _run(self) -> None:
        due = {p.name: time.monotonic() + p.refresh_s for p in self.pools}
        while not self._stop.is_set():
            for pool in self.pools:
                if time.monotonic() >= due[pool.name] and not self._stop.is_set():
                    due[pool.name] = time.monotonic() + pool.refresh_s
                    try:
                        self.poll(pool)
                    except Exception:  # noqa: BLE001 - the loop must survive; the log has it
                        log.exception("discovery of pool %s failed", pool.name)
            self._stop.wait(max(0.05, min(due.values()) - time.monotonic()))

    def status(self) -> list[dict]:
        with self._lock:
            return [s.to_dict() for s in self._status.values()]


def with_pool_devices(cluster: Cluster) -> Cluster:
    """The cluster with each pool's devices as its name resolves now, for commands that run once
    (`profile`); a pool that resolves to nothing is an error naming it."""
    where = str(cluster.source or "cluster")
    devices = list(cluster.devices)
    for pool in cluster.pools:
        try:
            addresses = resolve(pool)
        except ResolveFailed as e:
            raise UserError(f"{where}: pool {pool.name!r}: {e}") from None
        if not addresses:
            raise UserError(f"{where}: pool {pool.name!r}: {pool.dns!r} resolves to no address (is any Triton up?)")
        devices += [pool.device(a) for a in addresses]
    return replace(cluster, devices=devices)
