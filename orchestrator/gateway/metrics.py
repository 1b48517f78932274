"""The gateway's Prometheus metrics: what its clients asked for and got, per model name.

Named as Triton names them where the meaning is the same, so dashboards made for Triton read
the gateway too (tests/test_gateway.py checks each name and type against a real tritonserver):

  nv_inference_request_success{model,version}          counter  requests answered with outputs
  nv_inference_request_failure{model,version,reason}   counter  requests answered with an error;
                                                                reason: the gRPC status name
                                                                (Triton says REJECTED/BACKEND/OTHER)
  nv_inference_count{model,version}                    counter  inferences (samples) answered
  nv_inference_request_duration_us{model,version}      counter  time from request to answer
  nv_inference_queue_duration_us{model,version}        counter  time before the batch was sent
  nv_inference_compute_infer_duration_us{model,version} counter time at Triton
  nv_inference_pending_request_count{model,version}    gauge    requests being answered now

and the orchestrator's own: a latency histogram per model and protocol, answers per (variant,
device, deadline met), and readiness. The data plane's metrics (shim/metrics_http.py: route
queue depths, plan version, control plane up) follow on the same page.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from orchestrator.prometheus import histogram_lines, metric_lines

if TYPE_CHECKING:
    from orchestrator.gateway.core import Answer

PREFIX = "orchestrator_gateway"
LATENCY_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


@dataclass
class _Model:
    """Totals of one (model name, version)."""

    success: int = 0
    failure: dict[str, int] = field(default_factory=dict)  # reason -> requests
    inferences: int = 0
    request_us: float = 0.0
    queue_us: float = 0.0
    compute_us: float = 0.0


@dataclass
class Outcome:
    """Filled in by the protocol endpoint while it answers one request (see GatewayMetrics.request)."""

    answer: "Answer | None" = None


class GatewayMetrics:
    """Counters of the gateway's inference requests. Thread-safe. `known(name, version)` says
    whether the gateway serves a model name: a failed request for a name it does not serve is
    not counted, so that clients cannot make up series."""

    def __init__(self, known: Callable[[str, str], bool]):
        self._known = known
        self._lock = threading.Lock()
        self._models: dict[tuple[str, str], _Model] = {}
        self._pending: dict[tuple[str, str], int] = {}
        self._latency: dict[tuple[str, str], tuple[list[int], list[float]]] = {}  # (model, protocol) -> counts, [sum]
        self._answers: dict[tuple[str, str, str, bool], int] = {}  # (model, variant, device, deadline met)

    @contextmanager
    def request(self, model: str, version: str, protocol: str) -> Iterator[Outcome]:
        """Count one inference request: the endpoint sets `.answer`, or raises (a GatewayError's
        code is its reason; anything else is INTERNAL)."""
        key = (model, version or "1")
        outcome = Outcome()
        started = time.perf_counter()
        with self._lock:
            self._pending[key] = self._pending.get(key, 0) + 1
        reason = ""
        try:
            yield outcome
        except BaseException as e:
            code = getattr(e, "code", None)
            reason = getattr(code, "grpc", "INTERNAL")
            raise
        finally:
            self._record(key, protocol, outcome.answer, reason, time.perf_counter() - started)

    def _record(self, key: tuple[str, str], protocol: str, answer: "Answer | None", reason: str,
                seconds: float) -> None:
        counted = answer is not None or key in self._models or self._known(*key)
        with self._lock:
            left = self._pending[key] - 1
            if left:
                self._pending[key] = left
            else:
                del self._pending[key]
            if not counted:
                return
            m = self._models.get(key)
            if m is None:
                m = self._models[key] = _Model()
            m.request_us += seconds * 1e6
            if answer is None:
                reason = reason or "INTERNAL"
                m.failure[reason] = m.failure.get(reason, 0) + 1
                return
            m.success += 1
            m.inferences += answer.batch
            m.queue_us += answer.queue_ms * 1000.0
            m.compute_us += answer.service_ms * 1000.0
            counts, total = self._latency.setdefault((key[0], protocol), ([0] * (len(LATENCY_BUCKETS_S) + 1), [0.0]))
            counts[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
            total[0] += seconds
            route = (key[0], answer.variant, answer.device, not answer.late)
            self._answers[route] = self._answers.get(route, 0) + 1

    def prometheus_text(self, ready: bool) -> str:
        with self._lock:
            models = sorted((k, replace(m, failure=dict(m.failure))) for k, m in self._models.items())
            pending = dict(self._pending)
            latency = sorted((k, (list(counts), list(total))) for k, (counts, total) in self._latency.items())
            answers = sorted(self._answers.items())

        def per_model(attr: str, scale: float = 1.0) -> list[tuple[dict, float]]:
            return [({"model": m, "version": v}, round(getattr(t, attr) * scale, 3)) for (m, v), t in models]

        lines = metric_lines("nv_inference_request_success", "counter",
                             "Number of successful inference requests, all batch sizes", per_model("success"))
        lines += metric_lines("nv_inference_request_failure", "counter",
                              "Number of failed inference requests, all batch sizes",
                              [({"model": m, "version": v, "reason": r}, n) for (m, v), t in models
                               for r, n in sorted(t.failure.items())])
        lines += metric_lines("nv_inference_count", "counter",
                              "Number of inferences performed (does not include cached requests)",
                              per_model("inferences"))
        lines += metric_lines("nv_inference_request_duration_us", "counter",
                              "Cumulative inference request duration in microseconds (includes cached requests)",
                              per_model("request_us"))
        lines += metric_lines("nv_inference_queue_duration_us", "counter",
                              "Cumulative inference queuing duration in microseconds (includes cached requests)",
                              per_model("queue_us"))
        lines += metric_lines("nv_inference_compute_infer_duration_us", "counter",
                              "Cumulative compute inference duration in microseconds (does not include cached "
                              "requests)", per_model("compute_us"))
        lines += metric_lines("nv_inference_pending_request_count", "gauge",
                              "Instantaneous number of pending requests awaiting execution per-model.",
                              [({"model": m, "version": v}, pending.get((m, v), 0)) for (m, v), _ in models])
        lines += histogram_lines(f"{PREFIX}_request_duration_seconds",
                                 "Time from a request's arrival at the gateway to its answer (answered with outputs).",
                                 LATENCY_BUCKETS_S,
                                 [({"model": m, "protocol": p}, counts, total[0]) for (m, p), (counts, total) in latency])
        lines += metric_lines(f"{PREFIX}_answers_total", "counter",
                              "Requests answered with outputs, by the variant and device that answered.",
                              [({"model": m, "variant": var, "device": dev, "deadline_met": str(met).lower()}, n)
                               for (m, var, dev, met), n in answers])
        lines += metric_lines(f"{PREFIX}_ready", "gauge", "1 while a plan is in force.", [({}, int(ready))])
        return "\n".join(lines) + "\n"
