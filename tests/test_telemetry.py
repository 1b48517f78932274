"""Telemetry counters: per family per second, drain, POST body, Prometheus text."""

import json

import pytest

from orchestrator.dataplane.status import Status
from orchestrator.telemetry import LATENCY_BUCKETS_MS, Telemetry


def fill(t: Telemetry) -> None:
    t.record_arrival("resnet", 100.2)
    t.record_arrival("resnet", 100.5)
    t.record_arrival("resnet", 100.7)
    t.record_arrival("resnet", 100.9)
    t.record_result("resnet", 100.3, Status.OK, latency_ms=15.0, variant="resnet18", device_id="cpu0")
    t.record_result("resnet", 100.8, Status.LATE, latency_ms=120.0, variant="resnet50", device_id="cpu1")
    t.record_result("resnet", 100.9, Status.DROPPED, latency_ms=0.5)
    t.record_retry("resnet", 101.0)
    t.record_result("resnet", 101.1, Status.ERROR, latency_ms=3.0, variant="resnet18", device_id="cpu0")
    t.record_arrival("vit", 101.5)


def test_counts_per_family_per_second_follow_the_rules():
    t = Telemetry()
    fill(t)
    rows = t.snapshot()
    assert [(r["family"], r["second"]) for r in rows] == [("resnet", 100), ("resnet", 101), ("vit", 101)]
    s100 = rows[0]
    assert (s100["arrivals"], s100["completions"], s100["met"], s100["deadline_misses"], s100["drops"],
            s100["errors"]) == (4, 2, 1, 2, 1, 0)
    assert s100["served"] == {"resnet18": 1, "resnet50": 1}
    assert s100["served_met"] == {"resnet18": 1}
    hist = s100["latency_ms_hist"]
    assert len(hist) == len(LATENCY_BUCKETS_MS) + 1 and sum(hist) == 2
    assert hist[LATENCY_BUCKETS_MS.index(20)] == 1 and hist[LATENCY_BUCKETS_MS.index(200)] == 1
    assert s100["latency_ms_sum"] == 135.0
    assert (rows[1]["errors"], rows[1]["retries"], rows[1]["completions"]) == (1, 1, 0)
    assert t.totals()["resnet"]["arrivals"] == 4


def test_drain_returns_finished_seconds_once_and_report_is_json():
    t = Telemetry()
    fill(t)
    body = t.report(now=101.6, client_id="app-1")
    assert json.loads(json.dumps(body)) == body
    assert body["client_id"] == "app-1" and body["latency_buckets_ms"] == list(LATENCY_BUCKETS_MS)
    assert [(r["family"], r["second"]) for r in body["seconds"]] == [("resnet", 100)]
    assert t.drain(101.9) == []  # second 101 is still open
    assert [r["second"] for r in t.drain(102.0)] == [101, 101]
    assert t.snapshot() == []
    assert t.totals()["resnet"]["errors"] == 1  # totals survive draining


def test_old_seconds_are_discarded_beyond_the_window():
    t = Telemetry(keep_s=10)
    for sec in range(100):
        t.record_arrival("resnet", float(sec))
    assert [r["second"] for r in t.snapshot()] == list(range(89, 100))
    assert t.totals()["resnet"]["arrivals"] == 100


def test_prometheus_text_exposition():
    t = Telemetry()
    fill(t)
    text = t.prometheus_text()
    assert '# TYPE orchestrator_shim_requests_total counter' in text
    assert 'orchestrator_shim_requests_total{family="resnet"} 4' in text
    assert 'orchestrator_shim_drops_total{family="resnet"} 1' in text
    assert 'orchestrator_shim_completions_total{family="resnet",device="cpu1",variant="resnet50"} 1' in text
    assert 'orchestrator_shim_latency_seconds_bucket{family="resnet",le="0.01"} 0' in text
    assert 'orchestrator_shim_latency_seconds_bucket{family="resnet",le="0.02"} 1' in text
    assert 'orchestrator_shim_latency_seconds_bucket{family="resnet",le="+Inf"} 2' in text
    assert 'orchestrator_shim_latency_seconds_count{family="resnet"} 2' in text
    for line in text.splitlines():  # every sample line is `name{labels} value`
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            float(value)


def test_unknown_status_is_rejected():
    with pytest.raises(ValueError, match="is not a valid Status"):
        Telemetry().record_result("resnet", 1.0, "deadline_miss", latency_ms=1.0)
