"""deploy/k8s/: the kustomize base, components and overlays, rendered with `kubectl kustomize`.

No Kubernetes API server runs here, so nothing is applied. What is checked on the rendered
objects: each deserialises into the `kubernetes` client's models with no field the models do not
know (a typo, a wrong nesting); the Triton containers run what the runtime expects (explicit
model control, the repository where it is mounted, the ports the cluster file's pools use, the
restricted model-control API with the orchestrator's header); every container has probes and
limits; the GPU overlay requests GPUs and the CPU one does not; the NetworkPolicies select the pods
they mean; each overlay's cluster.toml names the headless Services that exist, with the cores and
memory their pods get; the orchestrator containers' arguments parse with the real CLI.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from orchestrator.cli import build_parser
from orchestrator.cluster import Cluster
from orchestrator.triton.control import CONTROL_KEY_HEADER
from orchestrator.triton.embedded import RESTRICTED_APIS

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ["cpu", "gpu"]
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"  # the release tests/test_deploy.py ties to the wheel


def render(overlay: str) -> list[dict]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (it renders the kustomize overlays offline)")
    out = subprocess.run(["kubectl", "kustomize", str(K8S / "overlays" / overlay)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render(request.param)


def of_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_spec(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def pod_labels(deployment: dict) -> dict:
    return deployment["spec"]["template"]["metadata"]["labels"]


def selects(selector: dict, labels: dict) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against a set of labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        value, op = labels.get(e["key"]), e["operator"]
        if (op == "In" and value not in e["values"]) or (op == "NotIn" and value in e["values"]) \
                or (op == "Exists" and value is None) or (op == "DoesNotExist" and value is not None):
            return False
    return True


def tritons(objects: list[dict]) -> dict[str, dict]:
    return {n: d for n, d in of_kind(objects, "Deployment").items()
            if pod_spec(d)["containers"][0]["image"] == TRITON_IMAGE}


# -- every object is a valid Kubernetes object ----------------------------------------------------
def unknown_fields(data, model_name: str, path: str) -> list[str]:
    """Fields of `data` that the client's model `model_name` does not have, recursively."""
    import kubernetes.client.models as models

    # the client writes container types as List[T] / Dict[str, T] (older releases: list[T] / dict(str, T))
    if model_name[:5].lower() == "list[":
        inner = model_name[5:-1]
        return [u for i, item in enumerate(data) for u in unknown_fields(item, inner, f"{path}[{i}]")]
    if model_name[:5].lower() in ("dict[", "dict("):
        inner = model_name[5:-1].split(",", 1)[1].strip()
        return [u for k, v in data.items() for u in unknown_fields(v, inner, f"{path}.{k}")]
    model = getattr(models, model_name, None)
    if model is None:  # str, int, object, datetime ...: a leaf
        return []
    if not isinstance(data, dict):
        return [f"{path}: expected an object ({model_name}), got {data!r}"]
    by_json = {json_key: attr for attr, json_key in model.attribute_map.items()}
    out = []
    for key, value in data.items():
        if key not in by_json:
            out.append(f"{path}.{key}")
        elif value is not None:
            out += unknown_fields(value, model.openapi_types[by_json[key]], f"{path}.{key}")
    return out


def model_name(obj: dict) -> str:
    version = obj["apiVersion"].split("/")[-1]
    return f"V{version[1:]}{obj['kind']}" if version.startswith("v") else obj["kind"]


def test_every_rendered_object_is_a_kubernetes_object_without_unknown_fields(rendered):
    from kubernetes.client import ApiClient

    overlay, objects = rendered
    client = ApiClient()
    for obj in objects:
        name = model_name(obj)
        where = f"{overlay}: {obj['kind']}/{obj['metadata']['name']}"
        assert unknown_fields(obj, name, where) == []
        typed = client._ApiClient__deserialize(obj, name)  # the client's own deserialiser
        assert typed.metadata.name == obj["metadata"]["name"], where
        assert obj["metadata"].get("namespace") == "orchestrator", f"{where}: not in the overlay's namespace"


def test_the_checker_finds_a_misspelt_field():
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
                  "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i", "livenesProbe": {}}]}}}}
    assert unknown_fields(deployment, model_name(deployment), "d") == ["d.spec.template.spec.containers[0].livenesProbe"]


# -- Triton runs what the runtime expects ------------------------------------------------------------
def test_tritons_run_with_explicit_control_on_the_mounted_repository(rendered):
    overlay, objects = rendered
    found = tritons(objects)
    assert set(found) == ({"triton-cpu", "triton-gpu"} if overlay == "gpu" else {"triton-cpu"})
    for name, deployment in found.items():
        c = pod_spec(deployment)["containers"][0]
        args = dict(a.split("=", 1) for a in c["args"])
        mount = next(m for m in c["volumeMounts"] if m["name"] == "models")
        assert c["command"] == ["tritonserver"] and args["--model-control-mode"] == "explicit"
        assert args["--model-repository"] == mount["mountPath"] == "/models" and mount["readOnly"]
        assert args["--model-config-name"] == ("ort-gpu" if name == "triton-gpu" else "ort-cpu")
        assert args["--strict-readiness"] == "false"
        assert not any(a.startswith("--load-model") for a in c["args"]), "the orchestrator loads, not Triton"
        restricted = f"{RESTRICTED_APIS}:{CONTROL_KEY_HEADER}=$(ORCHESTRATOR_TRITON_KEY)"
        assert args["--http-restricted-api"] == args["--grpc-restricted-protocol"] == restricted
        assert any(e["name"] == "ORCHESTRATOR_TRITON_KEY" and e["valueFrom"]["secretKeyRef"]["key"] == "triton-key"
                   for e in c["env"])
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"http": int(args["--http-port"]), "grpc": int(args["--grpc-port"]),
                         "metrics": int(args["--metrics-port"])} == {"http": 8000, "grpc": 8001, "metrics": 8002}
        assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
        assert volumes["models"]["persistentVolumeClaim"]["claimName"] in of_kind(objects, "PersistentVolumeClaim")


def test_every_container_has_probes_and_limits_and_runs_as_non_root(rendered):
    overlay, objects = rendered
    for name, deployment in of_kind(objects, "Deployment").items():
        spec = pod_spec(deployment)
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        for c in spec.get("initContainers", []) + spec["containers"]:
            where = f"{overlay}: {name}/{c['name']}"
            limits, requests = c["resources"]["limits"], c["resources"]["requests"]
            assert {"cpu", "memory"} <= set(limits) and {"cpu", "memory"} <= set(requests), where
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, where
        for c in spec["containers"]:
            assert "livenessProbe" in c and "readinessProbe" in c, f"{overlay}: {name}/{c['name']} has no probes"


def test_gpus_are_requested_by_the_gpu_overlay_only(rendered):
    overlay, objects = rendered
    gpus = {}
    for name, deployment in of_kind(objects, "Deployment").items():
        for c in pod_spec(deployment)["containers"]:
            limit = c["resources"]["limits"].get("nvidia.com/gpu")
            assert limit == c["resources"]["requests"].get("nvidia.com/gpu"), name
            if limit is not None:
                gpus[name] = limit
    assert gpus == ({"triton-gpu": "1"} if overlay == "gpu" else {})
    if overlay == "gpu":
        cpu_triton = pod_spec(of_kind(objects, "Deployment")["triton-cpu"])["containers"][0]["resources"]
        assert cpu_triton["requests"] == cpu_triton["limits"]  # a CPU device: its cores, whole


# -- the cluster file matches the Services and pods ---------------------------------------------------
def test_each_pool_names_a_headless_service_of_pods_with_its_cores_and_memory(rendered, tmp_path):
    overlay, objects = rendered
    config = next(iter(of_kind(objects, "ConfigMap").values()))
    path = tmp_path / "cluster.toml"
    path.write_text(config["data"]["cluster.toml"])
    cluster = Cluster.load(path)
    services, deployments = of_kind(objects, "Service"), tritons(objects)
    control = pod_spec(of_kind(objects, "Deployment")["control-plane"])
    assert str(cluster.model_repository) == next(m["mountPath"] for m in control["containers"][0]["volumeMounts"]
                                                 if m["name"] == "models")
    assert {p.dns for p in cluster.pools} == set(deployments)
    for pool in cluster.pools:
        service = services[pool.dns]
        assert service["spec"]["clusterIP"] == "None", f"{pool.dns}: not headless (DNS would give one address)"
        assert service["spec"].get("publishNotReadyAddresses") is not True  # only ready pods become devices
        pods = [n for n, d in deployments.items() if selects({"matchLabels": service["spec"]["selector"]}, pod_labels(d))]
        assert pods == [pool.dns]
        c = pod_spec(deployments[pool.dns])["containers"][0]
        grpc = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
        assert pool.scheme == "grpc" and pool.port == grpc["port"] == 8001
        assert int(c["resources"]["limits"]["cpu"]) == pool.cores
        if pool.kind == "cpu":  # a CPU device's models live in the pod's memory (a GPU's in the GPU's)
            memory_mib = int(c["resources"]["limits"]["memory"].removesuffix("Gi")) * 1024
            assert pool.memory_mb < memory_mib, f"{pool.name}: memory_mb must leave room under the pod's limit"
        assert (pool.kind == "gpu") == ("nvidia.com/gpu" in c["resources"]["limits"])
        assert f"--model-config-name={pool.config}" in c["args"]
    volumes = {v["name"]: v for v in control["volumes"]}
    assert volumes["cluster"]["configMap"]["name"] == config["metadata"]["name"]


# -- the orchestrator's own workloads ---------------------------------------------------------------------
def parses(args: list[str]) -> str:
    """The subcommand that `args` runs: they must parse with the real `orchestrator` CLI."""
    return build_parser().parse_args(args).command


def test_control_plane_is_one_replica_on_a_pvc_with_its_token_from_a_secret(rendered):
    overlay, objects = rendered
    deployment = of_kind(objects, "Deployment")["control-plane"]
    spec = pod_spec(deployment)
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    c = spec["containers"][0]
    assert parses(c["args"]) == "serve" and parses(spec["initContainers"][0]["args"]) == "profile"
    assert "--no-gateway" in c["args"]
    assert {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in c["env"]} == {
        "ORCHESTRATOR_TOKEN": "token", "ORCHESTRATOR_TRITON_KEY": "triton-key"}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    state = next(v for v in spec["volumes"] if v["name"] == "state")["persistentVolumeClaim"]["claimName"]
    pvc = of_kind(objects, "PersistentVolumeClaim")[state]
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    db = c["args"][c["args"].index("--db") + 1]
    assert any(db.startswith(m["mountPath"] + "/") for m in c["volumeMounts"] if m["name"] == "state")
    assert spec["automountServiceAccountToken"] is False  # discovery is DNS: no API access


def test_gateway_has_replicas_a_service_and_an_hpa_on_cpu(rendered):
    overlay, objects = rendered
    deployment = of_kind(objects, "Deployment")["gateway"]
    c = pod_spec(deployment)["containers"][0]
    assert parses(c["args"]) == "gateway" and deployment["spec"]["replicas"] >= 2
    assert c["args"][c["args"].index("--control-plane") + 1] == "http://control-plane:8080"
    assert "control-plane" in of_kind(objects, "Service")
    service = of_kind(objects, "Service")["gateway"]
    assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels(deployment))
    assert {p["port"] for p in service["spec"]["ports"]} >= {8000, 8001}
    hpa = of_kind(objects, "HorizontalPodAutoscaler")["gateway"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] >= 2


def test_the_pdb_covers_every_triton_and_nothing_else(rendered):
    overlay, objects = rendered
    pdb = of_kind(objects, "PodDisruptionBudget")["triton"]
    chosen = {n for n, d in of_kind(objects, "Deployment").items() if selects(pdb["spec"]["selector"], pod_labels(d))}
    assert chosen == set(tritons(objects))


def test_network_policies_let_only_the_orchestrator_reach_triton_and_expose_only_the_gateway(rendered):
    overlay, objects = rendered
    deployments = of_kind(objects, "Deployment")
    labels = {n: pod_labels(d) for n, d in deployments.items()}
    policies = list(of_kind(objects, "NetworkPolicy").values())
    assert any(p["spec"]["podSelector"] == {} and p["spec"]["policyTypes"] == ["Ingress"]
               and not p["spec"].get("ingress") for p in policies), "no default deny"

    def allowed(source: str | None, target: str, port: int) -> bool:
        """Whether a pod (a Deployment's, or None: outside the namespace) may connect to `target`:`port`."""
        for p in policies:
            if not selects(p["spec"]["podSelector"], labels[target]):
                continue
            for rule in p["spec"].get("ingress", []):
                if rule.get("ports") and port not in [x["port"] for x in rule["ports"]]:
                    continue
                peers = rule.get("from")
                if peers is None or any(source is not None and "podSelector" in peer and "namespaceSelector" not in peer
                                        and selects(peer["podSelector"], labels[source]) for peer in peers):
                    return True
        return False

    for triton in tritons(objects):
        for port in (8000, 8001):
            assert allowed("control-plane", triton, port) and allowed("gateway", triton, port)
            assert not allowed(None, triton, port), f"{triton}:{port} is open to anyone"
            assert not any(allowed(other, triton, port) for other in tritons(objects))
    assert allowed("gateway", "control-plane", 8080) and not allowed(None, "control-plane", 8080)
    assert not any(allowed(t, "control-plane", 8080) for t in tritons(objects))
    assert allowed(None, "gateway", 8000) and allowed(None, "gateway", 8001)  # the one way in
    assert not allowed(None, "gateway", 8002)


def test_pods_carry_prometheus_scrape_annotations_for_their_metrics_port(rendered):
    overlay, objects = rendered
    for name, deployment in of_kind(objects, "Deployment").items():
        notes = deployment["spec"]["template"]["metadata"]["annotations"]
        ports = [p["containerPort"] for c in pod_spec(deployment)["containers"] for p in c["ports"]]
        assert notes["prometheus.io/scrape"] == "true" and int(notes["prometheus.io/port"]) in ports, name


def test_the_example_volumes_bind_to_the_model_repository_claim(rendered):
    overlay, objects = rendered
    claim = of_kind(objects, "PersistentVolumeClaim")["model-repository"]
    for path in sorted((K8S / "examples").glob("model-repository-*.yaml")):
        pv = yaml.safe_load(path.read_text())
        assert unknown_fields(pv, model_name(pv), path.name) == []
        assert pv["spec"]["claimRef"] == {"namespace": claim["metadata"]["namespace"], "name": "model-repository"}
        assert pv["metadata"]["name"] == claim["spec"]["volumeName"]
        assert pv["spec"]["storageClassName"] == claim["spec"]["storageClassName"] == ""
        assert pv["spec"]["accessModes"] == claim["spec"]["accessModes"] == ["ReadOnlyMany"]
