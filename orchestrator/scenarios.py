"""Synthetic planning scenarios built in memory (no files): a catalog, a cluster and profiles.

Used by the planner's tests and benchmark, and by the simulator. `proteus_table` is built from
Proteus's *published* profiling table and trace (orchestrator/data/, see its docstring); the other
scenarios' **profiles are synthetic**:
accuracies, parameter counts and FLOPs are the published torchvision figures (ImageNet-1k top-1 of
the V1 weights, and the "GFLOPS"/params columns of torchvision's model tables); latencies are
*derived*, not measured:

    latency(b) = class.fixed_ms + class.per_gflop_fixed_ms * gflops
                 + b * gflops * 1000 / class.gflops_per_s          (then x a seeded jitter of +-5 %)
    p50 = latency, p95 = 1.08 x, p99 = 1.15 x, throughput = b / latency

so a class's speed and its batching benefit (the fixed part amortised over a batch) are explicit.
The small ResNet scenario uses this machine's onnxruntime figures (docs: shared design card:
batch-1 latency with 2 threads; one thread ~1.9x slower; batching roughly linear on CPU).
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field, replace
from pathlib import Path

from orchestrator.catalog import Catalog, TensorSpec, Variant
from orchestrator.cluster import Cluster, Device
from orchestrator.files import write_atomic
from orchestrator.planner import PlanRequest
from orchestrator.profiles import ProfileRecord, ProfileSet

# (family, variant, top-1 %, GFLOPS, params in millions) -- torchvision ImageNet-1k V1 weights
PUBLISHED = [
    ("resnet", "resnet18", 69.758, 1.81, 11.69), ("resnet", "resnet34", 73.314, 3.66, 21.80),
    ("resnet", "resnet50", 76.130, 4.09, 25.56), ("resnet", "resnet101", 77.374, 7.80, 44.55),
    ("resnet", "resnet152", 78.312, 11.51, 60.19),
    ("efficientnet", "efficientnet_b0", 77.692, 0.39, 5.29), ("efficientnet", "efficientnet_b1", 78.642, 0.69, 7.79),
    ("efficientnet", "efficientnet_b2", 80.608, 1.09, 9.11), ("efficientnet", "efficientnet_b3", 82.008, 1.83, 12.23),
    ("efficientnet", "efficientnet_b4", 83.384, 4.39, 19.34), ("efficientnet", "efficientnet_b5", 83.444, 10.27, 30.39),
    ("efficientnet", "efficientnet_b6", 84.008, 19.07, 43.04),
    ("mobilenet", "mobilenet_v3_small", 67.668, 0.06, 2.54), ("mobilenet", "mobilenet_v2", 71.878, 0.30, 3.50),
    ("mobilenet", "mobilenet_v3_large", 74.042, 0.22, 5.48),
    ("densenet", "densenet121", 74.434, 2.83, 7.98), ("densenet", "densenet169", 75.600, 3.36, 14.15),
    ("densenet", "densenet201", 76.896, 4.29, 20.01), ("densenet", "densenet161", 77.138, 7.73, 28.68),
    ("vgg", "vgg11", 69.020, 7.61, 132.86), ("vgg", "vgg11_bn", 70.370, 7.61, 132.87),
    ("vgg", "vgg13", 69.928, 11.31, 133.05), ("vgg", "vgg13_bn", 71.586, 11.31, 133.05),
    ("vgg", "vgg16", 71.592, 15.47, 138.36), ("vgg", "vgg16_bn", 73.360, 15.47, 138.37),
    ("vgg", "vgg19", 72.376, 19.63, 143.67), ("vgg", "vgg19_bn", 74.218, 19.63, 143.68),
    ("regnet", "regnet_y_400mf", 74.046, 0.40, 4.34), ("regnet", "regnet_y_800mf", 76.420, 0.83, 6.43),
    ("regnet", "regnet_y_1_6gf", 77.950, 1.61, 11.20), ("regnet", "regnet_y_3_2gf", 78.948, 3.18, 19.44),
    ("regnet", "regnet_y_8gf", 80.032, 8.47, 39.38), ("regnet", "regnet_y_16gf", 80.424, 15.91, 83.59),
    ("regnet", "regnet_y_32gf", 80.878, 32.28, 145.05),
    ("shufflenet", "shufflenet_v2_x0_5", 60.552, 0.04, 1.37), ("shufflenet", "shufflenet_v2_x1_0", 69.362, 0.14, 2.28),
    ("shufflenet", "shufflenet_v2_x1_5", 72.996, 0.30, 3.50), ("shufflenet", "shufflenet_v2_x2_0", 76.230, 0.58, 7.39),
    ("mnasnet", "mnasnet0_5", 67.734, 0.10, 2.22), ("mnasnet", "mnasnet0_75", 71.180, 0.21, 3.17),
    ("mnasnet", "mnasnet1_0", 73.456, 0.31, 4.38), ("mnasnet", "mnasnet1_3", 76.506, 0.53, 6.28),
    ("resnext", "resnext50_32x4d", 77.618, 4.23, 25.03), ("resnext", "wide_resnet50_2", 78.468, 11.40, 68.88),
    ("resnext", "wide_resnet101_2", 78.848, 22.75, 126.89), ("resnext", "resnext101_32x8d", 79.312, 16.41, 88.79),
]
SOURCE = "torchvision ImageNet-1k V1 weights (published metadata)"
BATCHES = (1, 2, 4, 8, 16, 32)


@dataclass(frozen=True)
class DeviceClass:
    name: str
    kind: str
    memory_mb: float
    cost_per_hour: float
    fixed_ms: float  # per-batch overhead (launch, copy)
    per_gflop_fixed_ms: float  # per-batch overhead growing with model depth
    gflops_per_s: float  # sustained compute per image


PROTEUS_CLASSES = (
    DeviceClass("cpu-16c", "cpu", 32000, 0.80, 1.0, 0.2, 150.0),
    DeviceClass("gpu-t4", "gpu", 15000, 0.53, 3.0, 0.6, 1500.0),
    DeviceClass("gpu-v100", "gpu", 16000, 2.48, 2.0, 0.35, 4000.0),
    DeviceClass("gpu-a100", "gpu", 40000, 3.67, 1.5, 0.2, 9000.0),
)


@dataclass
class Scenario:
    """A planning instance: what the planner reads, plus the SLO and demand to plan for."""

    name: str
    catalog: Catalog
    cluster: Cluster
    profiles: ProfileSet
    slo_ms: dict[str, float]
    demand_rps: dict[str, float]
    notes: list[str] = field(default_factory=list)

    def write(self, directory) -> dict[str, Path]:
        """Write cluster.toml, profiles.json (+ csv) and variants.json into `directory` (for the CLI)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        lines = [f'name = "{self.cluster.name}"', 'model_repository = "."', ""]
        for dev in self.cluster.devices:
            lines += ["[[device]]", f'id = "{dev.id}"', f'class = "{dev.device_class}"', f'kind = "{dev.kind}"',
                      f"memory_mb = {dev.memory_mb:g}", f"cost_per_hour = {dev.cost_per_hour:g}",
                      f'url = "{dev.url}"', ""]
        write_atomic(d / "cluster.toml", "\n".join(lines))
        self.profiles.save(d / "profiles.json")
        self.catalog.save(d)
        return {"cluster": d / "cluster.toml", "profiles": d / "profiles.json", "catalog": d / "variants.json"}

    def request(self, **overrides):
        """A `PlanRequest` for this scenario; keyword arguments replace its fields."""
        base = PlanRequest(catalog=self.catalog, cluster=self.cluster, profiles=self.profiles,
                           slo_ms=dict(self.slo_ms), demand_rps=dict(self.demand_rps))
        return replace(base, **overrides)


def make_variant(family: str, name: str, accuracy: float, gflops: float, params_m: float) -> Variant:
    params = int(params_m * 1e6)
    return Variant(family=family, name=name, accuracy=accuracy, accuracy_source=SOURCE, accuracy_nominal=True,
                   weights="synthetic", params=params, flops=int(2 * gflops * 1e9), onnx_bytes=params * 4,
                   max_batch_size=32, inputs=(TensorSpec("input", "FP32", (3, 224, 224)),),
                   outputs=(TensorSpec("output", "FP32", (1000,)),))


def synthetic_records(v: Variant, gflops: float, c: DeviceClass, rng: random.Random, instances: int = 1,
                      threads: int = 1, speedup: float = 1.0, contention: float = 1.0) -> list[ProfileRecord]:
    """Derived records for one (variant, class, config); see the module docstring for the rule."""
    out = []
    for b in BATCHES:
        lat = (c.fixed_ms + c.per_gflop_fixed_ms * gflops + b * gflops * 1000.0 / c.gflops_per_s) / speedup
        lat *= contention * (1 + rng.uniform(-0.05, 0.05))
        out.append(ProfileRecord(variant=v.name, device_class=c.name, batch_size=b, instances=instances,
                                 threads=threads, p50_ms=round(lat, 3), p95_ms=round(lat * 1.08, 3),
                                 p99_ms=round(lat * 1.15, 3),
                                 throughput_rps=round(b * 1000.0 / lat * instances / contention, 3),
                                 samples=0, source="synthetic", note="derived from published GFLOPS"))
    return out


def proteus_scale(devices: int = 40, seed: int = 0, load: float = 0.8) -> Scenario:
    """~Proteus's scale: `devices` split over 4 classes, 46 variants in 9 families (torchvision
    figures), SLO per family = 4 x the batch-1 latency of its most accurate variant on a T4, and
    demand per family = `load` x a seeded share of what the cluster serves with median variants."""
    rng = random.Random(seed)
    catalog = Catalog()
    gfl = {}
    for fam, name, acc, g, p in PUBLISHED:
        catalog.add(make_variant(fam, name, acc, g, p))
        gfl[name] = g
    records = []
    for c in PROTEUS_CLASSES:
        for v in catalog.variants.values():
            records += synthetic_records(v, gfl[v.name], c, rng)
    profiles = ProfileSet(records)
    devs = []
    for i in range(devices):
        c = PROTEUS_CLASSES[i % len(PROTEUS_CLASSES)]
        devs.append(Device(id=f"{c.name}-{i:04d}", device_class=c.name, kind=c.kind, memory_mb=c.memory_mb,
                           cost_per_hour=c.cost_per_hour, url=f"grpc://{c.name}-{i:04d}:8001"))
    cluster = Cluster(name=f"proteus-{devices}", devices=devs)
    t4 = PROTEUS_CLASSES[1]
    slo, demand = {}, {}
    families = catalog.families()
    for fam, vs in families.items():
        top = vs[-1]
        g = gfl[top.name]
        slo[fam] = round(4 * (t4.fixed_ms + t4.per_gflop_fixed_ms * g + g * 1000 / t4.gflops_per_s), 1)
        mid = vs[len(vs) // 2]
        gm = gfl[mid.name]
        per_device = [16 * 1000 / (c.fixed_ms + c.per_gflop_fixed_ms * gm + 16 * gm * 1000 / c.gflops_per_s)
                      for c in PROTEUS_CLASSES]
        capacity = devices * sum(per_device) / len(per_device) * 0.85
        demand[fam] = round(load * capacity / len(families) * rng.uniform(0.5, 1.5), 1)
    return Scenario(f"proteus-{devices}", catalog, cluster, profiles, slo, demand,
                    notes=["synthetic profiles derived from published GFLOPS; see orchestrator/scenarios.py"])


def thousand_devices(seed: int = 0, load: float = 0.8) -> Scenario:
    """The Proteus catalog on 1,000 devices (250 per class)."""
    return proteus_scale(devices=1000, seed=seed, load=load)


# ResNet on this machine: batch-1 latency (ms) with 2 onnxruntime threads (design card figures).
RESNET_2T_MS = {"resnet18": 20.0, "resnet34": 46.0, "resnet50": 45.0, "resnet101": 90.0, "resnet152": 118.0}


def small_resnet(devices: int = 2, seed: int = 0, demand_rps: float = 10.0, slo_ms: float = 1000.0,
                 memory_mb: float = 2048.0) -> Scenario:
    """ResNet-18..152 on `devices` one-core CPU devices (class cpu-1t) like this machine's.

    Two instance configs per variant: 1 instance x 1 thread, and 2 instances x 1 thread (a little
    more throughput from overlapping, about twice the latency from sharing one core)."""
    rng = random.Random(seed)
    catalog = Catalog()
    for fam, name, acc, g, p in PUBLISHED:
        if fam == "resnet":
            catalog.add(make_variant(fam, name, acc, g, p))
    cls = DeviceClass("cpu-1t", "cpu", memory_mb, 0.05, 0.0, 0.0, 1.0)
    records = []
    for v in catalog.variants.values():
        one_thread_ms = RESNET_2T_MS[v.name] * 1.9
        for inst, contention in ((1, 1.0), (2, 1.9)):
            for b in BATCHES:
                lat = one_thread_ms * (0.1 + 0.9 * b) * contention * (1 + rng.uniform(-0.03, 0.03))
                thr = b * 1000.0 / lat * inst * (1.1 if inst == 2 else 1.0)
                records.append(ProfileRecord(variant=v.name, device_class=cls.name, batch_size=b, instances=inst,
                                             threads=1, p50_ms=round(lat, 3), p95_ms=round(lat * 1.05, 3),
                                             p99_ms=round(lat * 1.1, 3), throughput_rps=round(thr, 3),
                                             samples=0, source="synthetic",
                                             note="scaled from measured batch-1 onnxruntime latency"))
    devs = [Device(id=f"cpu{i}", device_class=cls.name, kind="cpu", memory_mb=memory_mb, cost_per_hour=0.05,
                   url=f"grpc://localhost:{8101 + 3 * i}") for i in range(devices)]
    return Scenario("small-resnet", catalog, Cluster(name="small-resnet", devices=devs), ProfileSet(records),
                    {"resnet": slo_ms}, {"resnet": demand_rps},
                    notes=["synthetic profiles scaled from this machine's onnxruntime batch-1 latencies"])


DATA = Path(__file__).parent / "data"
PROTEUS_CLASSES_TABLE = {"cpu": "cpu", "vpu": "cpu", "gpu-pascal": "gpu_pascal", "gpu-ampere": "gpu_ampere"}
PROTEUS_BATCHES = (1, 2, 4, 8)  # Proteus's simulator (core/simulator.py allowed_batch_sizes)


def _rows(name: str) -> list[dict[str, str]]:
    with open(DATA / name, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def proteus_table(load: float = 1.0, devices_per_class: int = 10, slo_ms: float = 300.0) -> Scenario:
    """Proteus's own setting, from its published artifact (github.com/UMass-LIDS/Proteus):

    * profiles: data/proteus_profiling.csv, the artifact's measured table (46 variants of 9
      families on CPU, Pascal and Ampere GPUs, batch 1-16). Proteus plans with the *median*
      latency (a batch fits when its median < SLO / 2; throughput = batch x 1000 / median), so the
      median is entered as p50, p95 and p99: the capacity rule here (p99 <= SLO x 0.5) is then
      Proteus's, and 42 of the 46 variants qualify at 300 ms. Batches 1-8, as its simulator.
    * cluster: its 40 devices, 10 per accelerator type (CPU, VPU, Pascal, Ampere); like Proteus's
      simulator, a VPU has the CPU's latencies. Each Proteus device hosts one variant: every
      variant gets a nominal 1 GB footprint and every device 1.5 GB (the table has no sizes).
    * accuracy: the table's accuracy normalised to the family's most accurate variant (what Proteus
      maximises; the families' raw metrics differ: top-1, BLEU, mAP).
    * demand: `load` x each family's peak arrival rate in its medium-normal_load trace with a
      300-ms deadline (data/proteus_trace_peaks.csv: the most arrivals in one second); SLO 300 ms.
    Variant names with a "/" (prajjwal1/bert-tiny) use "_" instead."""
    rows = _rows("proteus_profiling.csv")
    catalog = Catalog()
    for r in rows:
        name = r["variant"].replace("/", "_")
        if name not in catalog.variants:
            v = make_variant(r["family"], name, float(r["normalized_accuracy"]), 1.0, 1.0)
            catalog.add(replace(v, accuracy_source="Proteus profiling table, normalised to the family's best",
                                accuracy_nominal=True, params=0, flops=0, onnx_bytes=int((1000.0 - 64.0) / 1.5 * 2**20),
                                max_batch_size=max(PROTEUS_BATCHES)))
    records = []
    for cls, accel in PROTEUS_CLASSES_TABLE.items():
        for r in rows:
            b = int(r["batch"])
            if r["accelerator"] != accel or b not in PROTEUS_BATCHES:
                continue
            p50 = float(r["p50_ms"])
            records.append(ProfileRecord(variant=r["variant"].replace("/", "_"), device_class=cls, batch_size=b,
                                         instances=1, threads=1, p50_ms=p50, p95_ms=p50, p99_ms=p50,
                                         throughput_rps=round(b * 1000.0 / p50, 3), samples=0, source="published",
                                         note="Proteus profiling table (median latency)"))
    devs = [Device(id=f"{cls}-{i:02d}", device_class=cls, kind="cpu" if cls in ("cpu", "vpu") else "gpu",
                   memory_mb=1500.0, url=f"grpc://{cls}-{i:02d}:8001")
            for cls in PROTEUS_CLASSES_TABLE for i in range(devices_per_class)]
    peaks = {r["family"]: float(r["peak_rps"]) for r in _rows("proteus_trace_peaks.csv")}
    families = catalog.families()
    return Scenario(f"proteus-table-x{load:g}", catalog, Cluster(name="proteus-table", devices=devs), ProfileSet(records),
                    {f: slo_ms for f in families}, {f: round(load * peaks[f], 3) for f in families},
                    notes=["Proteus's published profiling table and trace peaks (orchestrator/data)"])
