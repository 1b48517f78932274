"""What the gateway answers, whatever the protocol: health, model metadata, and inference through
the data plane (a `shim.Client`, the same routing, batching and telemetry as an embedded shim).

A model name is a family (`resnet`: the plan chooses the variant and device) or one of its
variants (`resnet50`: pinned to that variant where the plan routes to it). A request of batch
N is N requests to the data plane, each routed on its own, answered together. Errors carry the
KServe v2 / Triton kind (`Code`) that http_server.py and grpc_server.py turn into a status.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace

import numpy as np

from orchestrator.catalog import TRITON_TO_NUMPY, TensorSpec, Variant
from orchestrator.dataplane.status import Status
from orchestrator.gateway.metrics import GatewayMetrics
from orchestrator.shim.client import Client, Result

log = logging.getLogger(__name__)

NUMPY_TO_TRITON = {np.dtype(n).str: t for t, n in TRITON_TO_NUMPY.items()}

VERSION = "1"  # the one model version the gateway serves per name
ANSWER_GRACE_S = 5.0  # beyond a request's deadline and the call timeout, how long to wait for its answer


class Code(enum.Enum):
    """The error kinds the gateway answers with: (HTTP status, gRPC status name), as Triton maps them."""

    INVALID_ARGUMENT = (400, "INVALID_ARGUMENT")
    NOT_FOUND = (404, "NOT_FOUND")
    INTERNAL = (500, "INTERNAL")
    UNAVAILABLE = (503, "UNAVAILABLE")
    DEADLINE_EXCEEDED = (504, "DEADLINE_EXCEEDED")

    @property
    def http(self) -> int:
        return self.value[0]

    @property
    def grpc(self) -> str:
        return self.value[1]


class GatewayError(Exception):
    """A request the gateway answers with an error: `code` and a one-line message."""

    def __init__(self, code: Code, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Answer:
    """An inference answer: outputs with their batch dimension, and who answered."""

    model: str  # the name asked for
    batch: int
    outputs: dict[str, np.ndarray]
    variant: str  # the variant that answered (several, comma-separated, when a batch was split)
    device: str
    queue_ms: float  # the slowest sample's time before its batch was sent
    service_ms: float  # and its batch's time at Triton
    served_batch: int  # the size of that batch at Triton
    late: bool  # some sample was answered after its deadline (asked to be served late)
    plan_version: int

    def parameters(self) -> dict[str, object]:
        return {"variant": self.variant, "device": self.device, "queue_ms": round(self.queue_ms, 3),
                "service_ms": round(self.service_ms, 3), "batch_size": self.served_batch,
                "deadline_met": not self.late,
                "plan_version": self.plan_version}


class Gateway:
    """The data plane behind the protocol servers. `client` is an in-process `Client`; or
    `follow(url)` makes one that follows the control plane, retrying until it publishes a plan
    (the gateway is live, not ready, meanwhile). The endpoints count their requests in `metrics`."""

    def __init__(self, client: Client | None = None):
        self._client = client
        self.metrics = GatewayMetrics(known=self.model_ready)
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None
        self.last_error = ""  # why there is no client yet (the control plane's answer)

    @classmethod
    def follow(cls, url: str, retry_s: float = 1.0, **settings) -> "Gateway":
        gateway = cls()

        def connect() -> None:
            while not gateway._stop.is_set():
                try:
                    gateway._client = Client(url, **{"client_kind": "gateway", **settings, "plan_wait_s": 0.0})
                    log.info("gateway: following the control plane at %s (plan version %s)", url,
                             gateway._client.plan.version if gateway._client.plan else None)
                    return
                except (ConnectionError, ValueError) as e:
                    gateway.last_error = str(e)
                    gateway._stop.wait(retry_s)

        gateway._follower = threading.Thread(target=connect, name="gateway-connect", daemon=True)
        gateway._follower.start()
        return gateway

    @property
    def client(self) -> Client | None:
        return self._client

    def close(self) -> None:
        self._stop.set()
        if self._follower is not None:
            self._follower.join(5.0)
        if self._client is not None:
            self._client.close()

    # --- health and metadata --------------------------------------------------------------

    def ready(self) -> bool:
        """Ready once a plan is in force."""
        return self._client is not None and self._client.plan is not None

    def readiness(self) -> str:
        """Why the gateway is not ready ("" when it is)."""
        if self.ready():
            return ""
        return f"no plan yet: {self.last_error}" if self.last_error else "no plan yet"

    def health(self) -> dict:
        """The readiness detail: the plan in force, and whether the control plane answers (a
        gateway keeps serving its last plan while it does not)."""
        client = self._client
        plan = client.plan if client is not None else None
        contact = client.contact() if client is not None else None
        detail: dict[str, object] = {"ready": self.ready(), "plan_version": plan.version if plan else None}
        if not self.ready():
            detail["error"] = self.readiness()
        if contact is not None:
            detail["control_plane"] = {"url": contact.url, "up": contact.reachable,
                                       "failing_s": round(contact.failing_s, 3), "detail": contact.describe()}
        return detail

    def prometheus_text(self) -> str:
        """The gateway's metrics, then its data plane's (route queues, plan, control plane)."""
        client = self._client
        return self.metrics.prometheus_text(self.ready()) + (client.prometheus_text() if client is not None else "")

    def resolve(self, name: str, version: str = "") -> tuple[str, str | None, Variant]:
        """A model name -> (family, pinned variant or None, the variant whose tensors it shows)."""
        client = self._ready_client()
        plan, catalog = client.plan, client.catalog
        assert plan is not None and catalog is not None
        if version not in ("", VERSION):
            raise GatewayError(Code.NOT_FOUND, f"Request for unknown model: '{name}' version {version} is not found")
        if name in plan.families:
            routes = client.routes_of(name)
            if not routes:
                raise GatewayError(Code.UNAVAILABLE, f"{Status.UNSERVED.value}: model '{name}' has no route in plan "
                                                     f"version {plan.version}")
            return name, None, catalog.variants[routes[0]]
        v = catalog.variants.get(name)
        if v is not None and v.family in plan.families and name in client.routes_of(v.family):
            return v.family, name, v
        where = " (not routed to by the plan in force)" if v is not None else ""
        raise GatewayError(Code.NOT_FOUND, f"Request for unknown model: '{name}' is not found{where}")

    def model_ready(self, name: str, version: str = "") -> bool:
        try:
            self.resolve(name, version)
            return True
        except GatewayError:
            return False

    def metadata(self, name: str, version: str = "") -> dict:
        """KServe v2 model metadata: the family's (or variant's) tensors, batch dimension -1."""
        _, _, variant = self.resolve(name, version)
        return {"name": name, "versions": [VERSION], "platform": "orchestrator",
                "inputs": [_tensor_metadata(t) for t in variant.inputs],
                "outputs": [_tensor_metadata(t) for t in variant.outputs]}

    def config(self, name: str, version: str = "") -> dict:
        """The model's configuration as Triton shows it (the subset a client reads)."""
        _, _, variant = self.resolve(name, version)
        return {"name": name, "platform": "orchestrator", "max_batch_size": variant.max_batch_size,
                "input": [{"name": t.name, "data_type": "TYPE_" + t.dtype, "dims": list(t.shape)} for t in variant.inputs],
                "output": [{"name": t.name, "data_type": "TYPE_" + t.dtype, "dims": list(t.shape)}
                           for t in variant.outputs]}

    # --- inference --------------------------------------------------------------------------

    def infer(self, name: str, inputs: dict[str, np.ndarray], outputs: list[str] | None = None,
              deadline_ms: float | None = None, version: str = "", serve_late: bool = False,
              classification: dict[str, object] | None = None) -> Answer:
        """Answer one KServe v2 request: `inputs` name -> array with a leading batch dimension.
        `classification`: outputs to answer as their top N classes (Triton's extension)."""
        family, pinned, variant = self.resolve(name, version)
        client = self._client
        assert client is not None
        batch = _check(name, variant, inputs, outputs)
        for o, n in (classification or {}).items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise GatewayError(Code.INVALID_ARGUMENT, f"output '{o}': 'classification' must be a positive "
                                                          f"integer, not {n!r}")
        if deadline_ms is not None and not (isinstance(deadline_ms, (int, float)) and 0 < deadline_ms < 3.6e6):
            raise GatewayError(Code.INVALID_ARGUMENT, f"parameter 'deadline_ms' must be a number in (0, 3600000), "
                                                      f"not {deadline_ms!r}")
        futures: list[Future] = []
        try:
            if batch == 1:  # the caller's thread may send the batch itself: one thread hop fewer (shim worker.py)
                results = [client.infer(family, inputs, deadline_ms=deadline_ms, serve_late=serve_late,
                                        variant=pinned)]
            else:
                for i in range(batch):
                    futures.append(client.infer_async(family, {k: a[i:i + 1] for k, a in inputs.items()},
                                                      deadline_ms=deadline_ms, serve_late=serve_late, variant=pinned))
        except ValueError as e:  # the catalog's check of the inputs
            raise GatewayError(Code.INVALID_ARGUMENT, str(e)) from None
        except RuntimeError as e:  # the client is closing
            raise GatewayError(Code.UNAVAILABLE, str(e)) from None
        if futures:  # every request is answered by the data plane; the wait is the gateway's own bound
            wait_s = (deadline_ms or 0.0) / 1000.0 + client.config.call_timeout_s + ANSWER_GRACE_S
            results = [_result(f, wait_s) for f in futures]
        answer = _answer(name, results, outputs or [t.name for t in variant.outputs])
        if classification:
            answer = replace(answer, outputs={o: classify(a, classification[o]) if o in classification else a
                                              for o, a in answer.outputs.items()})
        return answer

    def _ready_client(self) -> Client:
        client = self._client
        if client is None or client.plan is None or client.catalog is None:
            raise GatewayError(Code.UNAVAILABLE, f"the gateway is not ready: {self.readiness()}")
        return client


def classify(scores: np.ndarray, n: int) -> np.ndarray:
    """Triton's classification extension: per sample the top `n` classes, highest first, each
    b"score:index" (BYTES, shape [batch, n])."""
    flat = scores.reshape(scores.shape[0], -1)
    top = np.argsort(-flat, axis=1, kind="stable")[:, :n]
    return np.array([[f"{row[i]:f}:{i}".encode() for i in idx] for row, idx in zip(flat, top)], dtype=object)


def _tensor_metadata(t: TensorSpec) -> dict:
    return {"name": t.name, "datatype": t.dtype, "shape": [-1, *t.shape]}


def _check(name: str, variant: Variant, inputs: dict[str, np.ndarray], outputs: list[str] | None) -> int:
    """The request's batch size, after checking its tensors against the model's, as Triton does."""
    expected = {t.name: t for t in variant.inputs}
    for given in inputs:
        if given not in expected:
            raise GatewayError(Code.INVALID_ARGUMENT, f"unexpected inference input '{given}' for model '{name}'")
    for want in expected:
        if want not in inputs:
            raise GatewayError(Code.INVALID_ARGUMENT, f"expected {len(expected)} inputs but got {len(inputs)} "
                                                      f"inputs for model '{name}' (missing '{want}')")
    sizes = set()
    for tname, arr in inputs.items():
        spec = expected[tname]
        if arr.dtype != np.dtype(spec.numpy_dtype):
            raise GatewayError(Code.INVALID_ARGUMENT, f"inference input '{tname}' data-type is "
                                                      f"'{NUMPY_TO_TRITON.get(arr.dtype.str, arr.dtype.name)}', but "
                                                      f"model '{name}' expects '{spec.dtype}'")
        if arr.ndim != len(spec.shape) + 1 or any(d != s for d, s in zip(arr.shape[1:], spec.shape) if s > 0):
            raise GatewayError(Code.INVALID_ARGUMENT, f"unexpected shape for input '{tname}' for model '{name}'. "
                                                      f"Expected [-1,{','.join(map(str, spec.shape))}], got "
                                                      f"[{','.join(map(str, arr.shape))}]")
        sizes.add(arr.shape[0])
    if len(sizes) != 1 or 0 in sizes:
        raise GatewayError(Code.INVALID_ARGUMENT, f"inputs of model '{name}' must share one batch size of at least "
                                                  f"1, got {sorted(sizes)}")
    batch = sizes.pop()
    if batch > variant.max_batch_size > 0:
        raise GatewayError(Code.INVALID_ARGUMENT, f"inference request batch-size must be <= {variant.max_batch_size} "
                                                  f"for '{name}'")
    known = {t.name for t in variant.outputs}
    for o in outputs or []:
        if o not in known:
            raise GatewayError(Code.INVALID_ARGUMENT, f"unexpected inference output '{o}' for model '{name}'")
    return batch


def _result(future: Future, wait_s: float) -> Result:
    try:
        return future.result(timeout=wait_s)
    except FutureTimeout:  # the data plane answers every request; this is the gateway's own bound
        raise GatewayError(Code.DEADLINE_EXCEEDED, f"no answer within {wait_s:.1f} s") from None


def _answer(name: str, results: list[Result], wanted: list[str]) -> Answer:
    for status, code in ((Status.UNSERVED, Code.UNAVAILABLE), (Status.DROPPED, Code.DEADLINE_EXCEEDED),
                         (Status.ERROR, Code.UNAVAILABLE)):
        failed = next((r for r in results if r.status is status), None)
        if failed is not None:
            raise GatewayError(code, f"{status.value}: {failed.error}")
    outputs = {o: np.concatenate([r.outputs[o] for r in results if r.outputs is not None]) for o in wanted}
    slowest = max(results, key=lambda r: r.latency_ms)
    return Answer(model=name, batch=len(results), outputs=outputs, variant=",".join(sorted({r.variant for r in results})),
                  device=",".join(sorted({r.device_id for r in results})),
                  queue_ms=max(0.0, slowest.latency_ms - slowest.service_ms), service_ms=slowest.service_ms,
                  served_batch=slowest.batch_size,
                  late=any(r.status is Status.LATE for r in results), plan_version=slowest.plan_version)


def wait_ready(gateway: Gateway, timeout_s: float) -> bool:
    """Wait until the gateway has a plan (for commands and tests)."""
    end = time.monotonic() + timeout_s
    while not gateway.ready():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True
