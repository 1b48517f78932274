"""Where a client gets its plan: in process, or from the control plane over HTTP
(`ControlPlaneClient`), followed by a background thread (`PlanFollower`).

The control plane serves ``GET {url}/api/v1/plan`` as::

    {"plan": Plan.to_dict(),
     "endpoints": {device_id: {"grpc": "host:port", "http": "host:port", "device_class": "cpu-1t"}},
     "catalog": {"variants": [...]}}      # optional, same shape as variants.json

and takes the client's telemetry at ``POST {url}/api/v1/telemetry`` (body: Telemetry.report()).
docs/shim.md describes both.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from orchestrator.catalog import Catalog, Variant
from orchestrator.plan import Plan
from orchestrator.telemetry import Telemetry

log = logging.getLogger(__name__)

PLAN_PATH = "/api/v1/plan"
TELEMETRY_PATH = "/api/v1/telemetry"


@dataclass(frozen=True)
class Endpoint:
    """How to reach one device's Triton."""

    grpc: str  # host:port
    http: str = ""
    device_class: str = ""  # selects the device's profiles, when known


def _strip_scheme(address: str) -> str:
    for scheme in ("grpc://", "http://", "https://"):
        if address.startswith(scheme):
            return address[len(scheme):]
    return address


def parse_endpoints(raw: Mapping[str, str | Mapping]) -> dict[str, Endpoint]:
    """{device_id: "host:port"} (gRPC) or {device_id: {"grpc": ..., "http": ..., "device_class": ...}}."""
    out = {}
    for device_id, value in raw.items():
        if isinstance(value, str):
            out[device_id] = Endpoint(grpc=_strip_scheme(value))
        elif isinstance(value, Mapping) and isinstance(value.get("grpc"), str):
            # "http" and "device_class" may be null (a device given as grpc://host:port has no HTTP address)
            out[device_id] = Endpoint(grpc=_strip_scheme(value["grpc"]), http=_strip_scheme(value.get("http") or ""),
                                      device_class=str(value.get("device_class") or ""))
        else:
            raise ValueError(f"endpoint of device {device_id!r}: expected 'host:port' or "
                             f"{{'grpc': 'host:port', ...}}, got {value!r}")
    return out


@dataclass(frozen=True)
class PublishedPlan:
    plan: Plan
    endpoints: dict[str, Endpoint]
    catalog: Catalog | None = None


@dataclass(frozen=True)
class Contact:
    """A client's view of its control plane: reachable or since when not, and why."""

    url: str
    reachable: bool  # the last plan fetch worked
    since_ok_s: float | None  # seconds since the last fetch that worked (None: none has)
    failing_s: float  # seconds the fetches have been failing (0 when reachable)
    error: str  # the last failure ("" when reachable)

    def describe(self) -> str:
        if self.reachable:
            return f"following the control plane at {self.url}"
        return f"the control plane at {self.url} has not answered for {self.failing_s:.0f} s ({self.error})"


class NoPlanYet(ConnectionError):
    """The control plane answers but has no plan in force yet (a fresh one, before its first)."""


def _error_of(e: "urllib.error.HTTPError") -> str:
    """The `error` of a control plane's JSON error body, else the status's phrase."""
    try:
        return str(json.loads(e.read())["error"])
    except (ValueError, KeyError, TypeError, OSError):
        return str(e.reason)


class ControlPlaneClient:
    """An HTTP client of the control plane's plan and telemetry endpoints (the control plane itself is
    controlplane/service.py `ControlPlane`)."""

    def __init__(self, url: str, timeout_s: float = 5.0):
        self.url = (url if "://" in url else f"http://{url}").rstrip("/")
        self.timeout_s = timeout_s

    def fetch_plan(self) -> PublishedPlan:
        """GET the current plan; ConnectionError when unreachable, ValueError when malformed."""
        where = self.url + PLAN_PATH
        try:
            with urllib.request.urlopen(where, timeout=self.timeout_s) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as e:  # the control plane answered, with its reason
            raise (NoPlanYet if e.code == 503 else ConnectionError)(
                f"control plane {where}: {e.code} {_error_of(e)}") from None
        except (urllib.error.URLError, OSError) as e:
            raise ConnectionError(f"control plane {where}: {getattr(e, 'reason', e)}") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"control plane {where}: not JSON ({e})") from None
        try:
            plan = Plan.from_dict(body["plan"])
            endpoints = parse_endpoints(body["endpoints"])
            catalog = None
            if body.get("catalog"):
                catalog = Catalog({d["name"]: Variant.from_dict(d) for d in body["catalog"]["variants"]})
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"control plane {where}: malformed plan response (missing or bad field {e})") from None
        return PublishedPlan(plan, endpoints, catalog)

    def post_telemetry(self, body: dict) -> None:
        """POST one telemetry report; ConnectionError when it does not go through."""
        where = self.url + TELEMETRY_PATH
        req = urllib.request.Request(where, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                resp.read()
        except (urllib.error.URLError, OSError) as e:
            raise ConnectionError(f"control plane {where}: {getattr(e, 'reason', e)}") from None


class PlanFollower:
    """Keeps a client on the control plane's plan: fetches it every `poll_s` seconds and hands it
    to `install` (which installs it unless the client already runs that version on those
    endpoints), and posts the client's telemetry every `telemetry_s` seconds, on one background
    thread. Failures are counted (`count`) and logged; the client keeps the plan it has, and
    `contact()` says since when the control plane has not answered."""

    def __init__(self, url: str, install: Callable[[PublishedPlan], None], telemetry: Telemetry, client_id: str,
                 count: Callable[[str], None], poll_s: float, telemetry_s: float, client_kind: str = "shim"):
        self.source = ControlPlaneClient(url)
        self._client_kind = client_kind
        self._install = install
        self._telemetry = telemetry
        self.collect: Callable[[], None] | None = None  # called before each report (the routes' batch times)
        self._client_id = client_id
        self._count = count
        self._poll_s = poll_s
        self._telemetry_s = telemetry_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shim-control", daemon=True)
        self._last_ok = 0.0  # Unix time of the last plan fetch that worked
        self._failing_since: float | None = None  # Unix time of the first failed fetch since then
        self._last_error = ""

    def start(self, wait_s: float = 0.0) -> None:
        """Fetch and install the first plan, then follow. A control plane that has no plan yet
        (or does not answer) is asked again every `poll_s` for up to `wait_s` seconds; then
        ConnectionError (NoPlanYet: it answers, without a plan) / ValueError."""
        end, said = time.monotonic() + wait_s, ""
        while True:
            try:
                self.refresh()
                break
            except ConnectionError as e:
                if time.monotonic() + self._poll_s > end:
                    raise
                if self._last_error != said:
                    log.info("waiting up to %.0f s for a plan: %s", wait_s, e)
                    said = self._last_error
                time.sleep(self._poll_s)
        self._thread.start()

    def refresh(self) -> None:
        try:
            published = self.source.fetch_plan()
        except (ConnectionError, ValueError) as e:
            if self._failing_since is None:
                self._failing_since = time.time()
            self._last_error = str(e)
            raise
        self._last_ok, self._failing_since, self._last_error = time.time(), None, ""
        self._install(published)

    def contact(self, now: float) -> "Contact":
        """How the last plan fetches went, as of `now` (Unix seconds)."""
        failing = self._failing_since
        return Contact(self.source.url, failing is None, now - self._last_ok if self._last_ok else None,
                       now - failing if failing is not None else 0.0, self._last_error)

    def post_telemetry(self, now: float) -> None:
        if self.collect is not None:
            self.collect()
        body = self._telemetry.report(now, self._client_id, self._client_kind)
        if not body["seconds"]:
            return
        try:
            self.source.post_telemetry(body)
        except ConnectionError as e:
            self._count("telemetry_failures")
            log.warning("shim %s: telemetry not delivered: %s", self._client_id, e)

    def stop(self, timeout_s: float | None = None) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        next_poll = next_post = time.monotonic()
        while not self._stop.wait(max(0.0, min(next_poll, next_post) - time.monotonic())):
            now = time.monotonic()
            if now >= next_poll:
                next_poll = now + self._poll_s
                try:
                    self.refresh()
                except (ConnectionError, ValueError) as e:
                    self._count("plan_fetch_failures")
                    log.warning("shim %s: keeping the plan in force: %s", self._client_id, e)
            if now >= next_post:
                next_post = now + self._telemetry_s
                self.post_telemetry(time.time())
