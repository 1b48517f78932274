"""The profiler on a live embedded Triton, the perf_analyzer import and the `profile` command."""

from __future__ import annotations

import json

import pytest

from orchestrator.catalog import Catalog
from orchestrator.cli import main
from orchestrator.errors import UserError
from orchestrator.profiler import ProfileSettings, import_perf_analyzer_csv, percentile, profile_cluster
from orchestrator.profiles import ProfileSet
from orchestrator.triton.runtime import ClusterRuntime
from tests.triton_helpers import one_cpu_cluster


@pytest.fixture
def cluster(model_repo, tmp_path):
    return one_cpu_cluster(model_repo, tmp_path)


def test_profile_resnet18_batches_then_resume_after_interruption(cluster, model_repo, tmp_path):
    out = tmp_path / "profiles.json"
    catalog = Catalog.load(model_repo)
    settings = ProfileSettings(batch_sizes=(1, 2, 4), min_samples=20, max_seconds=10)
    lines: list[str] = []

    def stop_after_first(line: str) -> None:
        lines.append(line)
        if len(lines) == 1:
            raise KeyboardInterrupt  # a user's Ctrl-C in the middle of the run

    runtime = ClusterRuntime(cluster)
    try:
        with pytest.raises(KeyboardInterrupt):
            profile_cluster(runtime, catalog, ["resnet18"], out, settings, progress=stop_after_first)
        partial = ProfileSet.load(out)  # the file is whole: valid JSON with the one finished record
        assert [r.batch_size for r in partial.records] == [1]
        first = partial.records[0]

        lines.clear()
        profiles = profile_cluster(runtime, catalog, ["resnet18"], out, settings, progress=lines.append)
    finally:
        runtime.stop()
    assert len(lines) == 2  # only batches 2 and 4 were measured on the second run
    recs = sorted(profiles.records, key=lambda r: r.batch_size)
    assert [r.batch_size for r in recs] == [1, 2, 4]
    assert recs[0] == first  # the resumed run kept the finished record as it was
    for r in recs:
        assert 0 < r.p50_ms <= r.p95_ms <= r.p99_ms
        assert r.samples >= 20 and r.throughput_rps > 0
        assert r.triton_version == "2.51.0" and r.measured_at and (r.instances, r.threads) == (1, 1)
    # Latency grows with batch size (a batch of 4 does four images' work on one thread).
    assert recs[0].p50_ms < recs[1].p50_ms < recs[2].p50_ms
    reloaded = ProfileSet.load(out)
    assert sorted(reloaded.records, key=lambda r: r.batch_size) == recs
    csv_lines = out.with_suffix(".csv").read_text().splitlines()
    assert csv_lines[0].startswith("variant,device_class,batch_size") and len(csv_lines) == 4


def test_profile_all_devices_of_a_class_at_once(model_repo, tmp_path):
    """--all-devices: the variant is loaded and measured on both devices of the class together,
    the latencies pooled into one record per batch size, and unloaded from both afterwards."""
    from orchestrator.cluster import Cluster

    cluster = Cluster.from_dict({"name": "two", "model_repository": str(model_repo), "device": [
        {"id": f"cpu{i}", "class": "cpu-1t", "kind": "cpu", "memory_mb": 1200,
         "embedded": {"cores": [i % 2], "threads": 1}} for i in range(2)]})
    loaded_while_measuring: list[list[bool]] = []
    with ClusterRuntime(cluster, model_repo, run_dir=tmp_path / "triton") as runtime:
        def progress(line: str) -> None:
            loaded_while_measuring.append(["resnet18" in runtime.control(d).loaded() for d in ("cpu0", "cpu1")])

        settings = ProfileSettings(batch_sizes=(1,), min_samples=15, max_seconds=10, all_devices=True)
        profiles = profile_cluster(runtime, Catalog.load(model_repo), ["resnet18"], tmp_path / "p.json", settings,
                                   progress=progress)
        after = [runtime.control(d).loaded() for d in ("cpu0", "cpu1")]
    assert loaded_while_measuring == [[True, True]]
    assert all("resnet18" not in names for names in after)
    [rec] = profiles.records
    assert rec.samples >= 30  # at least min_samples from each device, pooled
    assert "measured on 2 devices at once" in rec.note
    assert rec.throughput_rps > 0 and 0 < rec.p50_ms <= rec.p99_ms


def test_profile_command_and_show(cluster, tmp_path, capsys):
    out = tmp_path / "p.json"
    code = main(["profile", "--cluster", str(cluster.source), "--variants", "resnet18", "--batch-sizes", "1,2",
                 "--samples", "10", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "[2/2] resnet18 on cpu-1t (1x1) batch 2" in text
    assert main(["profile", "--show", "--out", str(out), "--slo", "10000"]) == 0
    table = capsys.readouterr().out
    records = {r.batch_size: r for r in ProfileSet.load(out).records}
    best = max(records.values(), key=lambda r: r.throughput_rps)  # with a huge SLO every batch fits
    row = next(line for line in table.splitlines() if line.startswith("resnet18"))
    assert row.split()[:4] == ["resnet18", "cpu-1t", "1x1", str(best.batch_size)]
    # An SLO that batch 2's p99 does not fit in (latency fraction 1) leaves batch 1 as the best.
    tight = (records[1].p99_ms + records[2].p99_ms) / 2
    assert records[1].p99_ms < records[2].p99_ms
    assert main(["profile", "--show", "--out", str(out), "--slo", str(tight), "--latency-fraction", "1"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("resnet18"))
    assert row.split()[3] == "1"
    assert main(["profile", "--show", "--out", str(out), "--slo", "1"]) == 0
    assert "none" in capsys.readouterr().out  # nothing meets a 1 ms SLO


def test_profile_rejects_batch_above_max_batch_size(cluster, model_repo, tmp_path):
    with pytest.raises(UserError, match="batch size 128 exceeds resnet18's max_batch_size"):
        profile_cluster(ClusterRuntime(cluster), Catalog.load(model_repo), ["resnet18"], tmp_path / "p.json",
                        ProfileSettings(batch_sizes=(128,)))
    assert not (tmp_path / "p.json").exists()


PA_CSV = """Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency
1,69.6,10,200,50,30,13000,20,5,13936,18682,19673,21859
2,120.5,10,220,900,30,13100,20,5,16000,19000,21000,25000
"""


def test_import_perf_analyzer_csv(tmp_path, capsys):
    src = tmp_path / "pa.csv"
    src.write_text(PA_CSV)
    rec = import_perf_analyzer_csv(src, "resnet50", "gpu-h100", batch_size=4, concurrency=2)
    assert (rec.p50_ms, rec.p95_ms, rec.p99_ms, rec.throughput_rps) == (16.0, 21.0, 25.0, 120.5)
    assert rec.source == "perf_analyzer" and "concurrency 2" in rec.note
    out = tmp_path / "profiles.json"
    assert main(["profile", "--import-perf-analyzer", str(src), "--variant", "resnet50", "--device-class", "gpu-h100",
                 "--batch-size", "4", "--out", str(out)]) == 0
    records = json.loads(out.read_text())["records"]
    assert len(records) == 1 and records[0]["p99_ms"] == pytest.approx(21.859)


def test_import_perf_analyzer_bad_files(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("Concurrency,Inferences/Second\n1,5\n")
    with pytest.raises(UserError, match="missing column 'p50 latency'"):
        import_perf_analyzer_csv(bad, "v", "c", 1)
    with pytest.raises(UserError, match="not found"):
        import_perf_analyzer_csv(tmp_path / "nope.csv", "v", "c", 1)
    good = tmp_path / "good.csv"
    good.write_text(PA_CSV)
    with pytest.raises(UserError, match="no row with Concurrency 7"):
        import_perf_analyzer_csv(good, "v", "c", 1, concurrency=7)


def test_profile_command_errors_are_one_line(tmp_path, capsys):
    assert main(["profile", "--show", "--out", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "profiles file not found" in err and err.count("\n") == 1


def test_percentile_nearest_rank():
    values = list(range(1, 101))
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50, 99, 100)
    assert percentile([7.0], 99) == 7.0


@pytest.mark.parametrize("column, value", [("p50 latency", "nan"), ("p99 latency", "inf"),
                                           ("Inferences/Second", "-5"), ("p95 latency", "")])
def test_import_perf_analyzer_refuses_numbers_a_profile_cannot_hold(tmp_path, column, value):
    header, row = PA_CSV.strip().splitlines()[:2]
    cells = dict(zip(header.split(","), row.split(",")))
    cells[column] = value
    src = tmp_path / "pa.csv"
    src.write_text(header + "\n" + ",".join(cells[c] for c in header.split(",")) + "\n")
    with pytest.raises(UserError, match=f"{src}: line 2: column '{column}' "):
        import_perf_analyzer_csv(src, "resnet50", "gpu-h100", batch_size=1)


def test_profile_instance_counts_with_tritons_own_compute_times(cluster, model_repo, tmp_path, capsys):
    """The GPU profile's options on a CPU device at small sizes: one and two instances, a device
    class filter, and Triton's statistics (backend time per batch, queueing) in every record."""
    out = tmp_path / "p.json"
    assert main(["profile", "--cluster", str(cluster.source), "--variants", "resnet18", "--batch-sizes", "1,2",
                 "--configs", "1x1,2x1", "--device-classes", "cpu-1t", "--samples", "12", "--max-seconds", "8",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "resnet18 on cpu-1t (2x1) batch 2" in text and "Triton: compute " in text
    records = {(r.instances, r.batch_size): r for r in ProfileSet.load(out).records}
    assert sorted(records) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    for r in records.values():
        assert r.triton_compute_ms is not None and r.triton_queue_ms is not None
        assert 0 < r.triton_compute_ms < r.p99_ms  # a mean of the backend's share of what clients waited
        assert r.triton_queue_ms >= 0
    # one instance, one client: the batch of 2 costs the backend more than the batch of 1
    assert records[(1, 1)].triton_compute_ms < records[(1, 2)].triton_compute_ms
    header = out.with_suffix(".csv").read_text().splitlines()[0]
    assert header.endswith("note,triton_compute_ms,triton_queue_ms")
    assert main(["profile", "--cluster", str(cluster.source), "--device-classes", "gpu-h100", "--out",
                 str(tmp_path / "q.json")]) == 2
    assert "device class 'gpu-h100' is not in the cluster (classes: cpu-1t)" in capsys.readouterr().err


def test_a_batch_out_of_memory_ends_the_larger_ones(cluster, model_repo, tmp_path, monkeypatch):
    """Out of GPU memory is what a GPU says; here measure_devices is made to say it at batch 4 (a
    CPU device does not run out at these sizes): batch 4 and 8 are skipped, the run goes on."""
    import orchestrator.profiler as profiler

    real = profiler.measure_devices

    def measure_devices(urls, variant, batch_size, *args, **kwargs):
        if batch_size >= 4:
            raise UserError(f"{variant.name} at batch {batch_size}: inference failed: [StatusCode.INTERNAL] "
                            "onnxruntime failed: CUDA failure 2: out of memory")
        return real(urls, variant, batch_size, *args, **kwargs)

    monkeypatch.setattr(profiler, "measure_devices", measure_devices)
    lines: list[str] = []
    runtime = ClusterRuntime(cluster)
    try:
        profiles = profile_cluster(runtime, Catalog.load(model_repo), ["resnet18"], tmp_path / "p.json",
                                   ProfileSettings(batch_sizes=(1, 4, 8), min_samples=5, max_seconds=5),
                                   progress=lines.append)
    finally:
        runtime.stop()
    assert [r.batch_size for r in profiles.records] == [1]
    assert lines[-1].startswith("[3/3] resnet18 on cpu-1t (1x1) batch 4: out of memory; batch sizes from 4 up "
                                "not profiled")
    assert profiler.is_out_of_memory("BFCArena::AllocateRawInternal Failed to allocate memory")
    assert not profiler.is_out_of_memory("inference failed: connection refused")


def test_server_times_from_statistics_snapshots():
    from orchestrator.profiler import server_times

    def stats(batches: dict[int, tuple[int, int]], requests: int, queue_ns: int) -> dict:
        return {"model_stats": [{"batch_stats": [
            {"batch_size": str(b), "compute_infer": {"count": str(c), "ns": str(ns)}} for b, (c, ns) in batches.items()],
            "inference_stats": {"queue": {"count": str(requests), "ns": str(queue_ns)}}}]}

    before = stats({4: (3, 30_000_000)}, 3, 300_000)
    after = stats({4: (13, 130_000_000), 8: (1, 15_000_000)}, 15, 1_500_000)
    t = server_times([before], [after], 4)
    assert (t.compute_ms, t.queue_ms, t.other_batch_sizes) == (10.0, 0.1, (8,))
    assert server_times([{}], [stats({}, 0, 0)], 4).compute_ms is None
