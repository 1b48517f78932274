"""`orchestrator cluster detect`: write a cluster file with this machine's GPUs (from NVML) as devices."""

from __future__ import annotations

import argparse
import os
import tomllib
from pathlib import Path

from orchestrator.cluster import Cluster
from orchestrator.cluster_detect import DetectSettings, cluster_toml, detect_devices
from orchestrator.commands.flags import check_output_file, fraction, non_negative_int, positive_float, positive_int
from orchestrator.errors import UserError
from orchestrator.files import write_atomic
from orchestrator.names import check_name
from orchestrator.triton.gpu import gpu_inventory


def register(sub) -> None:
    p = sub.add_parser("cluster", help="write a cluster file for this machine's GPUs", description=__doc__)
    csub = p.add_subparsers(dest="cluster_command", required=True, metavar="ACTION")
    d = csub.add_parser("detect", help="one embedded device per GPU (NVML), plus CPU devices if asked",
                        description="Write a cluster file with one embedded device per GPU that NVML reports "
                                    "(class from the GPU's model, memory budget from its memory), and "
                                    "--cpu-devices CPU devices pinned to cores of their own. Fails when "
                                    "there is no GPU.")
    d.add_argument("--out", default="cluster-gpu.toml", help="cluster file to write (default cluster-gpu.toml)")
    d.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    d.add_argument("--name", default="local-gpu", help="cluster name (default local-gpu)")
    d.add_argument("--model-repository", default="model_repository",
                   help="model repository, as written into the file (relative paths: to the file's folder)")
    d.add_argument("--cpu-devices", type=non_negative_int, default=0, help="CPU devices beside the GPUs (default 0)")
    d.add_argument("--cpu-threads", type=positive_int, default=1, help="cores per CPU device (default 1)")
    d.add_argument("--cpu-memory-mb", type=positive_float, default=2048.0,
                   help="memory budget per CPU device (default 2048)")
    d.add_argument("--memory-fraction", type=fraction, default=0.9,
                   help="a GPU device's memory budget as a fraction of its memory (default 0.9)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    out = check_output_file(args.out, "--out")
    if out.exists() and not args.force:
        raise UserError(f"--out {out}: exists; give --force to overwrite it")
    name = check_name(args.name, "--name")
    gpus, note = gpu_inventory()
    if not gpus:
        raise UserError(f"no GPU on this machine: {note}")
    settings = DetectSettings(cpu_devices=args.cpu_devices, cpu_threads=args.cpu_threads,
                              cpu_memory_mb=args.cpu_memory_mb, memory_fraction=args.memory_fraction)
    devices = detect_devices(gpus, os.cpu_count() or 1, settings)
    text = cluster_toml(name, args.model_repository, devices)
    Cluster.from_dict(tomllib.loads(text), source=Path(out))  # the file reads back as written
    write_atomic(out, text)
    for d in devices:
        print(f"{d['id']:<6} {d['class']:<24} {d['kind']}  memory_mb {d['memory_mb']:.0f}  cores {d['embedded']['cores']}")
    print(f"wrote {out} ({len(gpus)} GPU device(s), {args.cpu_devices} CPU device(s))")
    return 0
