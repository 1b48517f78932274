"""`orchestrator profile`: measure variants on live Triton servers, import perf_analyzer CSV, or show the table."""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.catalog import Catalog
from orchestrator.cluster import Cluster
from orchestrator.controlplane.discovery import with_pool_devices
from orchestrator.commands.flags import check_output_file, fraction, positive_float, positive_int
from orchestrator.errors import UserError
from orchestrator.profiler import (DEFAULT_BATCH_SIZES, ProfileSettings, best_batch_under_slo,
                                   import_perf_analyzer_csv, profile_cluster)
from orchestrator.profiles import ProfileSet
from orchestrator.triton.runtime import ClusterRuntime


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _names(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def _configs(text: str) -> tuple[tuple[int, int], ...]:
    out = []
    for item in text.split(","):
        try:
            inst, thr = (int(x) for x in item.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected INSTANCESxTHREADS items like 1x2,2x1, got {item!r}") from None
        if inst < 1 or thr < 1:
            raise argparse.ArgumentTypeError(f"instances and threads must be >= 1, got {item!r}")
        out.append((inst, thr))
    return tuple(out)


def register(sub) -> None:
    p = sub.add_parser("profile", help="measure latency/throughput per variant x device class x batch size",
                       description=__doc__)
    p.add_argument("--cluster", help="cluster.toml (devices to measure on; one device per class unless --all-devices)")
    p.add_argument("--repository", help="model repository (default: the cluster file's, else model_repository/)")
    p.add_argument("--variants", help="comma-separated variants (default: all in the catalog)")
    p.add_argument("--batch-sizes", type=_int_list, default=DEFAULT_BATCH_SIZES,
                   help="default 1,2,4,8,16; up to the repository's max_batch_size (64); on a GPU a batch size "
                        "that runs out of memory ends the larger ones")
    p.add_argument("--configs", type=_configs, default=None,
                   help="instance configs INSTANCESxTHREADS, e.g. 1x1,2x1 (default: 1 x the device's threads)")
    p.add_argument("--samples", type=positive_int, default=100, help="timed requests per record (default 100)")
    p.add_argument("--max-seconds", type=positive_float, default=20.0, help="time budget per record (default 20)")
    p.add_argument("--force", action="store_true", help="re-measure records that already exist")
    p.add_argument("--device-classes", type=_names, default=(),
                   help="comma-separated device classes to profile (default: every class of the cluster)")
    p.add_argument("--all-devices", action="store_true",
                   help="measure on every device of a class at once, under the cluster's own load "
                        "(what a fully loaded cluster sees when devices share a host)")
    p.add_argument("--out", default="profiles.json", help="profiles file (a CSV is written beside it)")
    p.add_argument("--show", action="store_true", help="print the table of the profiles file and exit")
    p.add_argument("--slo", type=positive_float, default=300.0, help="with --show: deadline in ms (default 300)")
    p.add_argument("--latency-fraction", type=fraction, default=0.5,
                   help="with --show: the p99 must fit in slo x this (room for queueing; default 0.5)")
    p.add_argument("--import-perf-analyzer", metavar="CSV", help="import a `perf_analyzer -f` CSV instead")
    p.add_argument("--variant", help="with --import-perf-analyzer")
    p.add_argument("--device-class", help="with --import-perf-analyzer")
    p.add_argument("--batch-size", type=positive_int, default=1, help="with --import-perf-analyzer")
    p.add_argument("--concurrency", type=positive_int, help="with --import-perf-analyzer: the row to take")
    p.set_defaults(run=run)


def run(args) -> int:
    if args.show:
        show(ProfileSet.load(args.out), args.slo, args.latency_fraction)
        return 0
    check_output_file(args.out, "--out")
    if args.import_perf_analyzer:
        if not args.variant or not args.device_class:
            raise UserError("--import-perf-analyzer needs --variant and --device-class")
        rec = import_perf_analyzer_csv(args.import_perf_analyzer, args.variant, args.device_class, args.batch_size,
                                       concurrency=args.concurrency)
        profiles = ProfileSet.load_or_empty(args.out)
        profiles.add(rec)
        profiles.save(args.out)
        print(f"imported {rec.variant} on {rec.device_class} batch {rec.batch_size}: p99 {rec.p99_ms:.1f} ms, "
              f"{rec.throughput_rps:.1f} inf/s -> {args.out}")
        return 0
    if not args.cluster:
        raise UserError("profile needs --cluster FILE (or --show / --import-perf-analyzer)")
    cluster = with_pool_devices(Cluster.load(args.cluster))
    repo = Path(args.repository) if args.repository else (cluster.model_repository or Path("model_repository"))
    catalog = Catalog.load(repo)
    variants = args.variants.split(",") if args.variants else sorted(catalog.variants, key=lambda v: catalog.variants[v].accuracy)
    threads = {d.embedded.threads if d.embedded else d.threads for d in cluster.devices} or {1}
    configs = args.configs or tuple((1, t) for t in sorted(threads))
    settings = ProfileSettings(batch_sizes=args.batch_sizes, configs=configs, min_samples=args.samples,
                               max_seconds=args.max_seconds, force=args.force,
                               all_devices=args.all_devices, device_classes=args.device_classes)
    runtime = ClusterRuntime(cluster, repo)
    try:
        profiles = profile_cluster(runtime, catalog, variants, args.out, settings)
    finally:
        runtime.stop()
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.csv')} ({len(profiles.records)} records)")
    show(profiles, args.slo, args.latency_fraction)
    return 0


def show(profiles: ProfileSet, slo_ms: float, latency_fraction: float) -> None:
    """Per variant and device class: the largest batch that meets the SLO and the throughput it gives."""
    budget = slo_ms * latency_fraction
    print(f"SLO {slo_ms:g} ms; a batch fits when its p99 <= {budget:g} ms ({latency_fraction:g} x SLO)")
    header = f"{'variant':<14}{'device class':<14}{'inst x thr':<11}{'best batch':>10}{'p99 ms':>9}{'inf/s':>9}  batches (p50/p99 ms)"
    print(header)
    print("-" * len(header))
    groups: dict[tuple, list] = {}
    for r in profiles.sorted():
        groups.setdefault((r.variant, r.device_class, r.instances, r.threads), []).append(r)
    for (variant, dclass, inst, thr), recs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        best = best_batch_under_slo(recs, slo_ms, latency_fraction)
        detail = " ".join(f"{r.batch_size}:{r.p50_ms:.0f}/{r.p99_ms:.0f}" for r in sorted(recs, key=lambda r: r.batch_size))
        if best is None:
            print(f"{variant:<14}{dclass:<14}{f'{inst}x{thr}':<11}{'none':>10}{'-':>9}{'-':>9}  {detail}")
        else:
            print(f"{variant:<14}{dclass:<14}{f'{inst}x{thr}':<11}{best.batch_size:>10}{best.p99_ms:>9.1f}"
                  f"{best.throughput_rps:>9.1f}  {detail}")
