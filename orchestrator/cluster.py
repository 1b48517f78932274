"""The cluster description (`cluster.toml`): which devices exist and how to reach their Triton.

Example::

    name = "local"
    model_repository = "model_repository"      # relative to this file

    [[device]]
    id = "cpu0"
    class = "cpu-1t"          # device class: profiles are measured per class
    kind = "cpu"              # cpu | gpu
    memory_mb = 4096
    cost_per_hour = 0.05      # optional
    [device.embedded]         # an embedded tritonserver started by the orchestrator ...
    cores = [0]               # optional CPU pinning (taskset)
    threads = 1               # onnxruntime intra-op threads per instance
    http_port = 8100          # optional; grpc = http+1, metrics = http+2
    # host = "127.0.0.1"   # address the embedded Triton binds (default loopback)
    # gpu = 0                 # GPU index, for kind = "gpu"

    [[device]]
    id = "gpu0"
    class = "gpu-h100"
    kind = "gpu"
    memory_mb = 80000
    url = "grpc://triton-gpu:8001"   # ... or a Triton that runs elsewhere (http:// or grpc://)
    config = "ort-gpu"               # the model config to load there (see exporters/triton_repo.py)

    [[pool]]                  # devices found by DNS: one per address the name resolves to
    name = "triton-cpu"       # device ids are <name>-<address>, e.g. triton-cpu-10.0.3.7
    dns = "triton-cpu.orchestrator.svc.cluster.local"   # a headless Service, a Compose service
    port = 8001               # gRPC port of each Triton (scheme = "http" for its HTTP port)
    class = "cpu-4c"
    kind = "cpu"
    memory_mb = 8192          # per device
    cores = 4                 # per device (its CPU limit): variants load with this many threads
    config = "ort-cpu"
    refresh_s = 5             # how often the name is resolved
    # dns_server = "127.0.0.1:8600"   # ask this DNS server instead of the system's resolver

A cluster file has at least one [[device]] or [[pool]]. The control plane resolves each pool
(controlplane/discovery.py) and adds and removes its devices as addresses come and go.

The cluster `name` and each device `id` are held to the safe set of orchestrator/names.py (they
reach tritonserver arguments and file names).
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from orchestrator.errors import UserError
from orchestrator.names import check_name, is_safe_name

DEVICE_KINDS = ("cpu", "gpu")
DNS_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")


@dataclass(frozen=True)
class EmbeddedSpec:
    """How to start an embedded tritonserver for a device."""

    cores: tuple[int, ...] = ()
    threads: int = 1
    http_port: int | None = None
    gpu: int | None = None
    host: str = "127.0.0.1"  # the address the embedded tritonserver binds


@dataclass(frozen=True)
class Device:
    id: str
    device_class: str
    kind: str  # "cpu" | "gpu"
    memory_mb: float
    cost_per_hour: float = 0.0
    embedded: EmbeddedSpec | None = None
    url: str | None = None  # remote Triton: http://host:port or grpc://host:port
    config: str | None = None  # model config name to load with (None: the repository's default for the kind)
    threads: int = 1  # a remote device's intra-op threads per instance (embedded ones: embedded.threads)
    pool: str | None = None  # the [[pool]] it was discovered through

    @property
    def is_remote(self) -> bool:
        return self.url is not None


POOL_NAME_MAX = 24  # leaves room for "-<IPv6 address>" in a 64-character device id


@dataclass(frozen=True)
class DevicePool:
    """Devices found by resolving a DNS name: one remote Triton per address (see the module docstring)."""

    name: str
    dns: str
    device_class: str
    kind: str
    memory_mb: float
    port: int = 8001
    scheme: str = "grpc"
    cores: int = 1
    cost_per_hour: float = 0.0
    config: str | None = None
    refresh_s: float = 5.0
    dns_server: tuple[str, int] | None = None  # (ip, port); None: the system's resolver

    def device(self, address: str) -> Device:
        """The device behind one address the name resolved to."""
        host = f"[{address}]" if ":" in address else address
        return Device(id=f"{self.name}-{address.replace(':', '-')}", device_class=self.device_class, kind=self.kind,
                      memory_mb=self.memory_mb, cost_per_hour=self.cost_per_hour, url=f"{self.scheme}://{host}:{self.port}",
                      config=self.config, threads=self.cores, pool=self.name)


@dataclass
class Cluster:
    name: str
    devices: list[Device]  # with a pool: those discovered so far (the control plane replaces the list)
    model_repository: Path | None = None
    source: Path | None = None
    pools: list[DevicePool] = field(default_factory=list)

    def device(self, device_id: str) -> Device:
        for d in self.devices:
            if d.id == device_id:
                return d
        raise UserError(f"unknown device {device_id!r}; the cluster has {[d.id for d in self.devices]}")

    def device_classes(self) -> dict[str, list[Device]]:
        out: dict[str, list[Device]] = {}
        for d in self.devices:
            out.setdefault(d.device_class, []).append(d)
        return out

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Cluster":
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"{p}: cluster file not found") from None
        except IsADirectoryError:
            raise UserError(f"{p}: is a directory, not a cluster file") from None
        except UnicodeDecodeError as e:
            raise UserError(f"{p}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
        except OSError as e:
            raise UserError(f"{p}: cannot read the cluster file ({e.strerror})") from None
        except tomllib.TOMLDecodeError as e:
            raise UserError(f"{p}: not valid TOML ({e})") from None
        return cls.from_dict(raw, source=p)

    @classmethod
    def from_dict(cls, raw: dict, source: Path | None = None) -> "Cluster":
        where = str(source) if source else "cluster"
        devices_raw, pools_raw = raw.get("device", []), raw.get("pool", [])
        if not isinstance(devices_raw, list) or not isinstance(pools_raw, list) or not (devices_raw or pools_raw):
            raise UserError(f"{where}: no [[device]] or [[pool]] entries")
        devices = [_parse_device(d, i, where) for i, d in enumerate(devices_raw)]
        pools = [_parse_pool(p, i, where) for i, p in enumerate(pools_raw)]
        if len({p.name for p in pools}) < len(pools):
            raise UserError(f"{where}: two pools have the name {_first_repeat([p.name for p in pools])!r}")
        seen: set[str] = set()
        ports: dict[int, str] = {}
        for d in devices:
            if d.id in seen:
                raise UserError(f"{where}: device {d.id!r}: duplicate id")
            seen.add(d.id)
            if d.embedded and d.embedded.http_port is not None:
                for port in range(d.embedded.http_port, d.embedded.http_port + 3):
                    if port in ports:
                        raise UserError(f"{where}: device {d.id!r}: field 'http_port': ports overlap device {ports[port]!r}")
                    ports[port] = d.id
        repo = raw.get("model_repository")
        repo_path = None
        if repo is not None:
            if not isinstance(repo, str) or not repo:
                raise UserError(f"{where}: field 'model_repository' must be a path (a string), not {repo!r}")
            repo_path = Path(repo)
            if not repo_path.is_absolute() and source is not None:
                repo_path = (source.parent / repo_path).resolve()
        if "name" in raw:
            name = check_name(raw["name"], f"{where}: field 'name'")
        else:  # the file's stem, when that is a safe name
            name = source.stem if source is not None and is_safe_name(source.stem) else "cluster"
        return cls(name=name, devices=devices, model_repository=repo_path, source=source, pools=pools)


def _default(value, default):
    return default if value is None else value


def _first_repeat(names: list[str]) -> str:
    return next(n for i, n in enumerate(names) if n in names[:i])


def _fields(d: dict, name: str):
    """A reader of table `d`'s fields: need(key, type, required) -> value, with errors naming `name`."""
    def need(key: str, typ, required: bool = True):
        if key not in d:
            if required:
                raise UserError(f"{name}: field {key!r} is missing")
            return None
        value = d[key]
        if not isinstance(value, typ) or isinstance(value, bool):
            raise UserError(f"{name}: field {key!r} has a bad value {value!r}")
        return value
    return need


def _device_basics(need, name: str) -> tuple[str, str, float, float, str | None]:
    """class, kind, memory_mb, cost_per_hour and config: what devices and pools both say."""
    device_class = check_name(need("class", str), f"{name}: field 'class'")
    kind = need("kind", str)
    if kind not in DEVICE_KINDS:
        raise UserError(f"{name}: field 'kind' must be one of {DEVICE_KINDS}, not {kind!r}")
    memory_mb = need("memory_mb", (int, float))
    if not (math.isfinite(memory_mb) and memory_mb > 0):
        raise UserError(f"{name}: field 'memory_mb' must be a positive finite number, not {memory_mb!r}")
    cost = need("cost_per_hour", (int, float), required=False) or 0.0
    if not (math.isfinite(cost) and cost >= 0):
        raise UserError(f"{name}: field 'cost_per_hour' must be a finite number >= 0, not {cost!r}")
    config = need("config", str, required=False)
    if config is not None:  # names configs/<config>.pbtxt in each model's folder
        check_name(config, f"{name}: field 'config'")
    return device_class, kind, float(memory_mb), float(cost), config


def _table_name(d, index: int, where: str, table: str, key: str) -> str:
    """The safe name in field `key` of the `index`-th [[table]] entry `d`; errors say which entry."""
    if not isinstance(d, dict):
        raise UserError(f"{where}: {table} #{index + 1}: not a table")
    if key not in d:
        raise UserError(f"{where}: {table} #{index + 1}: field {key!r} is missing")
    return check_name(d[key], f"{where}: {table} #{index + 1}: field {key!r}")


def _parse_pool(d: dict, index: int, where: str) -> DevicePool:
    pool_name = _table_name(d, index, where, "pool", "name")
    name = f"{where}: pool {pool_name!r}"
    if len(pool_name) > POOL_NAME_MAX:
        raise UserError(f"{name}: field 'name' must be at most {POOL_NAME_MAX} characters (device ids add the address)")
    allowed = {"name", "dns", "port", "scheme", "class", "kind", "memory_mb", "cores", "cost_per_hour", "config",
               "refresh_s", "dns_server"}
    unknown = set(d) - allowed
    if unknown:
        raise UserError(f"{name}: unknown field {sorted(unknown)[0]!r} (allowed: {sorted(allowed)})")
    need = _fields(d, name)
    device_class, kind, memory_mb, cost, config = _device_basics(need, name)
    dns = need("dns", str)
    if not DNS_NAME.fullmatch(dns):
        raise UserError(f"{name}: field 'dns' must be a DNS name such as \"triton-cpu\" or "
                        f"\"triton.ns.svc.cluster.local\", not {dns!r}")
    scheme = need("scheme", str, required=False) or "grpc"
    if scheme not in ("grpc", "http"):
        raise UserError(f"{name}: field 'scheme' must be \"grpc\" or \"http\", not {scheme!r}")
    port = _default(need("port", int, required=False), 8001 if scheme == "grpc" else 8000)
    if not 1 <= port <= 65535:
        raise UserError(f"{name}: field 'port' must be in 1..65535, not {port!r}")
    cores = _default(need("cores", int, required=False), 1)
    if not 1 <= cores <= 1024:
        raise UserError(f"{name}: field 'cores' must be an integer in 1..1024, not {cores!r}")
    refresh_s = _default(need("refresh_s", (int, float), required=False), 5.0)
    if not (math.isfinite(refresh_s) and 0.1 <= refresh_s <= 3600):
        raise UserError(f"{name}: field 'refresh_s' must be in 0.1..3600 seconds, not {refresh_s!r}")
    server = need("dns_server", str, required=False)
    dns_server = None
    if server is not None:
        host, _, port_text = server.rpartition(":")
        host = host.strip("[]")
        if not (_is_ip_address(host) and port_text.isdigit() and 1 <= int(port_text) <= 65535):
            raise UserError(f"{name}: field 'dns_server' must be IP:PORT such as \"127.0.0.1:8600\", not {server!r}")
        dns_server = (host, int(port_text))
    return DevicePool(name=pool_name, dns=dns, device_class=device_class, kind=kind, memory_mb=memory_mb, port=port,
                      scheme=scheme, cores=cores, cost_per_hour=cost, config=config, refresh_s=float(refresh_s),
                      dns_server=dns_server)


def _parse_device(d: dict, index: int, where: str) -> Device:
    dev_id = _table_name(d, index, where, "device", "id")
    name = f"{where}: device {dev_id!r}"

    allowed = {"id", "class", "kind", "memory_mb", "cost_per_hour", "embedded", "url", "config"}
    unknown = set(d) - allowed
    if unknown:
        raise UserError(f"{name}: unknown field {sorted(unknown)[0]!r} (allowed: {sorted(allowed)})")
    need = _fields(d, name)
    device_class, kind, memory_mb, cost, config = _device_basics(need, name)
    url = need("url", str, required=False)
    emb_raw = d.get("embedded")
    if (url is None) == (emb_raw is None):
        raise UserError(f"{name}: give exactly one of 'url' (a remote Triton) or [device.embedded]")
    embedded = None
    if url is not None:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "grpc") or not parsed.hostname or not parsed.port:
            raise UserError(f"{name}: field 'url' must look like http://host:port or grpc://host:port, not {url!r}")
    else:
        embedded = _parse_embedded(emb_raw, name, kind)
    return Device(id=dev_id, device_class=device_class, kind=kind, memory_mb=memory_mb,
                  cost_per_hour=cost, embedded=embedded, url=url, config=config)


def _parse_embedded(e, name: str, kind: str) -> EmbeddedSpec:
    if not isinstance(e, dict):
        raise UserError(f"{name}: field 'embedded' must be a table")
    unknown = set(e) - {"cores", "threads", "http_port", "gpu", "host"}
    if unknown:
        raise UserError(f"{name}: unknown field 'embedded.{sorted(unknown)[0]}'")
    cores = e.get("cores", [])
    if not isinstance(cores, list) or not all(_is_count(c) for c in cores):
        raise UserError(f"{name}: field 'embedded.cores' must be a list of core numbers, not {cores!r}")
    ncpu = os.cpu_count() or 1
    bad = [c for c in cores if c >= ncpu]
    if bad:
        raise UserError(f"{name}: field 'embedded.cores' names core {bad[0]}, but this machine has {ncpu}")
    threads = e.get("threads", 1)
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise UserError(f"{name}: field 'embedded.threads' must be a positive integer, not {threads!r}")
    port = e.get("http_port")
    if port is not None and (not _is_count(port) or not 1024 <= port <= 65533):
        raise UserError(f"{name}: field 'embedded.http_port' must be an integer in 1024..65533, not {port!r}")
    gpu = e.get("gpu")
    if gpu is not None and kind != "gpu":
        raise UserError(f"{name}: field 'embedded.gpu' is only for kind = \"gpu\"")
    if gpu is not None and not _is_count(gpu):
        raise UserError(f"{name}: field 'embedded.gpu' must be a GPU index (an integer >= 0), not {gpu!r}")
    if kind == "gpu" and gpu is None:
        gpu = 0
    host = e.get("host", "127.0.0.1")
    if not _is_ip_address(host):
        raise UserError(f"{name}: field 'embedded.host' must be an IP address such as \"127.0.0.1\", not {host!r}")
    return EmbeddedSpec(cores=tuple(cores), threads=threads, http_port=port, gpu=gpu, host=host)


def _is_count(value) -> bool:
    """An integer >= 0 (TOML booleans are not numbers here)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0



def _is_ip_address(value) -> bool:
    if not isinstance(value, str):
        return False  # ip_address() would take an integer
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
