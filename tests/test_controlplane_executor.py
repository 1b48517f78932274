"""The plan executor and restart against real embedded Triton servers: load-new-first order,
rollback of a failed load, idempotency, and a restarted control plane that reloads nothing."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

sys.path.insert(0, str(Path(__file__).parent))
from controlplane_helpers import call, cluster_for, copy_repository, running_control_plane  # noqa: E402

from orchestrator.controlplane.store import Store  # noqa: E402

from orchestrator.controlplane.executor import ApplyFailed, NotRoutesOnly  # noqa: E402
from orchestrator.plan import FamilyPlan, Placement, Plan, Route, SolverInfo  # noqa: E402
from orchestrator.triton.runtime import ClusterRuntime  # noqa: E402


def plan_of(*pairs: tuple[str, str]) -> Plan:
    """A hand-made plan: the executor carries out any plan, whoever made it."""
    n = len(pairs)
    return Plan(version=0, policy="manual",
                placements=tuple(Placement(d, v, batch_cap=4, capacity_rps=10.0, served_rps=10.0 / n) for d, v in pairs),
                families={"resnet": FamilyPlan("resnet", 500.0, 10.0, 10.0, 0.0,
                                               tuple(Route(d, v, 1.0 / n) for d, v in pairs), 70.0)},
                solver=SolverInfo("MANUAL"))


def loaded(runtime: ClusterRuntime) -> dict[str, set[str]]:
    return {d: set(runtime.control(d).loaded()) for d in runtime.servers}


def loads_logged(runtime: ClusterRuntime, device: str, model: str) -> int:
    """How often the device's tritonserver says it loaded `model` (its log, read back)."""
    return runtime.servers[device].log_path.read_text(errors="replace").count(f"successfully loaded '{model}'")


def infer_once(runtime: ClusterRuntime, device: str, model: str) -> None:
    client = grpcclient.InferenceServerClient(runtime.servers[device].grpc_url)
    try:
        inp = grpcclient.InferInput("input", [1, 3, 224, 224], "FP32")
        inp.set_data_from_numpy(np.zeros((1, 3, 224, 224), np.float32))
        client.infer(model, [inp])
    finally:
        client.close()


@pytest.fixture(scope="module")
def runtime(model_repo):
    with ClusterRuntime(cluster_for(model_repo), model_repo) as rt:
        yield rt


@pytest.fixture
def clean(runtime):
    for dev in runtime.servers:
        for model in runtime.control(dev).loaded():
            runtime.unload(dev, model)
    return runtime


def test_loads_new_first_publishes_then_unloads_old(model_repo, clean):
    events: list[str] = []
    with running_control_plane(model_repo, runtime=clean) as s:
        cp = s.cp
        cp.apply(plan_of(("cpu0", "resnet18")), reason="test")
        assert loaded(clean) == {"cpu0": {"resnet18"}, "cpu1": set()}
        publish = cp.executor.publish

        def watching_publish(plan):
            # at the moment the new plan is published, the new model is READY and the old is still there
            events.append(f"publish v{plan.version}: {sorted(loaded(clean)['cpu0'])}")
            publish(plan)

        cp.executor.publish = watching_publish
        cp.executor.log = events.append
        result = cp.apply(plan_of(("cpu0", "resnet34")), reason="test")
        assert [e.split(" (")[0] for e in events] == [
            "load resnet34 on cpu0", "publish v2: ['resnet18', 'resnet34']", "unload resnet18 on cpu0"]
        assert loaded(clean) == {"cpu0": {"resnet34"}, "cpu1": set()}
        assert result.plan.version == 2 and cp.plan.version == 2


def test_failed_load_rolls_back_and_keeps_the_previous_plan(model_repo, tmp_path):
    repo = copy_repository(model_repo, tmp_path / "repo", ["resnet18", "resnet34"])
    broken = repo / "resnet34" / "1" / "model.onnx"
    broken.unlink()
    broken.write_bytes(b"this is not an ONNX model")
    with ClusterRuntime(cluster_for(repo), repo) as rt, running_control_plane(repo, runtime=rt) as s:
        s.cp.apply(plan_of(("cpu0", "resnet18")), reason="test")
        before = s.cp.plan
        with pytest.raises(ApplyFailed) as err:
            s.cp.apply(plan_of(("cpu0", "resnet18"), ("cpu1", "resnet18"), ("cpu1", "resnet34")), reason="test")
        message = str(err.value)
        assert "resnet34" in message and "rolled back" in message and "Traceback" not in message
        assert loaded(rt) == {"cpu0": {"resnet18"}, "cpu1": set()}  # resnet18 on cpu1 was loaded, then undone
        assert s.cp.plan == before
        assert s.cp.store.decisions(1)[0]["kind"] == "rollback"


STUCK_MODEL = """
import time


class TritonPythonModel:
    def initialize(self, args):
        time.sleep(3600)  # a load that never finishes: the model stays LOADING
"""


def test_a_stuck_load_times_out_rolls_back_names_every_device_and_blocks_nothing(model_repo, tmp_path):
    repo = copy_repository(model_repo, tmp_path / "repo", ["resnet18", "resnet34"])
    stuck = repo / "resnet34" / "1" / "model.py"
    stuck.unlink()
    stuck.write_text(STUCK_MODEL)
    db = tmp_path / "state.sqlite"
    # the load timeout, from this machine's speed now: ten times opening ResNet-18's ONNX file (the
    # bulk of a real load), at least 3 s; a real load must finish in it, the stuck one cannot
    import onnxruntime

    opened = time.monotonic()
    onnxruntime.InferenceSession(str(repo / "resnet18" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    timeout = round(max(3.0, 10 * (time.monotonic() - opened)))
    with ClusterRuntime(cluster_for(repo), repo, load_timeout_s=timeout) as rt:
        with running_control_plane(repo, runtime=rt, db_path=db) as s:
            s.cp.apply(plan_of(("cpu0", "resnet18")), reason="test")
            before = s.cp.plan
            started = time.monotonic()
            with pytest.raises(ApplyFailed) as err:
                s.cp.apply(plan_of(("cpu0", "resnet34"), ("cpu1", "resnet34")), reason="test")
            assert time.monotonic() - started < 10 * timeout  # the load timeout, not the hour the model takes
            message = str(err.value)
            assert "cpu0" in message and "cpu1" in message and f"did not answer within {timeout:g} s" in message, message
            assert s.cp.plan == before and not s.cp.busy
            s.cp.apply(plan_of(("cpu0", "resnet18"), ("cpu1", "resnet18")), reason="test")  # not refused (409)
            # a manual load that Triton fails is 502 with its reason, as for a failed apply
            status, body = call(s.url + "/api/v1/devices/cpu1/models/resnet34/load", "POST", {})
            assert status == 502 and "load failed" in body["error"] and "did not answer" in body["error"], body
            # shutting down while an apply waits on a stuck load: the rollback is still recorded
            worker = threading.Thread(target=lambda: pytest.raises(ApplyFailed, s.cp.apply,
                                                                    plan_of(("cpu0", "resnet34")), reason="late"))
            worker.start()
            time.sleep(0.5)
        worker.join(30)
    kinds = [(d["kind"], d["reason"][:40]) for d in Store(str(db)).decisions(3)]
    assert kinds[0][0] == "rollback" and kinds[0][1].startswith("late"), kinds


def test_applying_the_current_plan_changes_nothing(model_repo, clean):
    with running_control_plane(model_repo, runtime=clean) as s:
        first = s.cp.apply(plan_of(("cpu0", "resnet18"), ("cpu1", "resnet18")), reason="test")
        loads = loads_logged(clean, "cpu0", "resnet18")
        assert loads >= 1
        again = s.cp.apply(plan_of(("cpu0", "resnet18"), ("cpu1", "resnet18")), reason="test")
        assert again.changed is False and again.plan.version == first.plan.version
        assert s.cp.store.next_plan_version() == first.plan.version + 1
        assert loads_logged(clean, "cpu0", "resnet18") == loads


def test_restart_resumes_the_plan_and_reloads_nothing(model_repo, clean, tmp_path):
    db = tmp_path / "state.sqlite"
    target = plan_of(("cpu0", "resnet18"), ("cpu1", "resnet34"))
    with running_control_plane(model_repo, db_path=db, runtime=clean) as s:
        version = s.cp.apply(target, reason="test").plan.version
    # the control plane is gone; the Triton servers (like remote ones) keep running
    for dev, model in (("cpu0", "resnet18"), ("cpu1", "resnet34")):
        infer_once(clean, dev, model)
    counts = {m: loads_logged(clean, d, m) for d, m in (("cpu0", "resnet18"), ("cpu1", "resnet34"))}
    assert all(n >= 1 for n in counts.values())  # the log does record loads
    with running_control_plane(model_repo, db_path=db, runtime=clean) as s:
        assert s.cp.plan is not None and s.cp.plan.version == version
        assert s.cp.plan.loaded_pairs() == target.loaded_pairs()
        assert {m: loads_logged(clean, d, m) for d, m in (("cpu0", "resnet18"), ("cpu1", "resnet34"))} == counts
        # statistics survive only when the model was not reloaded
        stats = clean.control("cpu0").statistics("resnet18")
        assert int(stats["model_stats"][0]["inference_count"]) >= 1
        decision = s.cp.store.decisions(1)[0]
        assert decision["kind"] == "reconcile" and "nothing to load" in decision["reason"]


def test_restart_loads_only_what_the_servers_lost(model_repo, clean, tmp_path):
    db = tmp_path / "state.sqlite"
    with running_control_plane(model_repo, db_path=db, runtime=clean) as s:
        s.cp.apply(plan_of(("cpu0", "resnet18"), ("cpu1", "resnet18")), reason="test")
    clean.unload("cpu1", "resnet18")  # e.g. that server restarted meanwhile
    kept = loads_logged(clean, "cpu0", "resnet18")
    with running_control_plane(model_repo, db_path=db, runtime=clean) as s:
        assert loaded(clean) == {"cpu0": {"resnet18"}, "cpu1": {"resnet18"}}
        assert loads_logged(clean, "cpu0", "resnet18") == kept
        assert "load resnet18@cpu1" in s.cp.store.decisions(1)[0]["reason"]


def test_a_routing_revision_for_a_lost_model_loads_and_unloads_nothing(model_repo, clean):
    """What the controller puts in force when a server restarted unseen (`Plan.without`): on real
    servers the apply only moves the routes; the device that still hosts its model keeps it."""
    with running_control_plane(model_repo, runtime=clean) as s:
        s.cp.apply(plan_of(("cpu0", "resnet18"), ("cpu1", "resnet18")), reason="test")
        clean.unload("cpu1", "resnet18")  # as after a restart: cpu1 has nothing loaded
        kept = loads_logged(clean, "cpu0", "resnet18")
        with pytest.raises(NotRoutesOnly, match="load resnet18@cpu1"):  # the plan in force would load it again
            s.cp.apply(s.cp.plan, reason="test: routes only", routes_only=True)
        assert loaded(clean)["cpu1"] == set()
        result = s.cp.apply(s.cp.plan.without({("cpu1", "resnet18")}), reason="test: route around", routes_only=True)
        assert result.changed and not result.diff.changes_models, result.diff.summary()
        assert result.diff.routes_changed and result.diff.keep == [("cpu0", "resnet18")]
        routes = s.cp.plan.families["resnet"].routes
        assert [(r.device_id, r.variant, r.weight) for r in routes] == [("cpu0", "resnet18", 1.0)]
        assert loaded(clean) == {"cpu0": {"resnet18"}, "cpu1": set()}
        assert loads_logged(clean, "cpu0", "resnet18") == kept


class BlockingRuntime:
    """A runtime whose loads on `hung` never return (a node that stopped answering mid-load); the
    executor's logic, not Triton, is under test here (the real node is tests/test_faults.py's)."""

    def __init__(self, hung: str):
        self.hung, self.release = hung, threading.Event()
        self.loaded: set[tuple[str, str]] = set()

    def control(self, device_id):
        runtime = self

        class Control:
            def is_model_ready(self, variant):
                return (device_id, variant) in runtime.loaded

            def loaded(self):
                return {v: "1" for d, v in runtime.loaded if d == device_id}
        return Control()

    def load(self, device_id, variant, instances=1, threads=None, max_batch_size=None):
        if device_id == self.hung:
            self.release.wait(60)
        self.loaded.add((device_id, variant))
        return {}

    def unload(self, device_id, variant):
        self.loaded.discard((device_id, variant))


def test_an_apply_whose_device_goes_down_during_its_load_fails_at_once_and_rolls_back():
    from orchestrator.controlplane.executor import PlanExecutor

    rt = BlockingRuntime(hung="cpu1")
    down_at = time.monotonic() + 0.3
    executor = PlanExecutor(rt, publish=lambda plan: None, managed={"resnet18"}, drain_s=0.0,
                            is_down=lambda d: d == "cpu1" and time.monotonic() >= down_at)
    started = time.monotonic()
    try:
        with pytest.raises(ApplyFailed) as err:
            executor.apply(plan_of(("cpu0", "resnet18"), ("cpu1", "resnet18")), None, ["cpu0", "cpu1"])
        took = time.monotonic() - started
    finally:
        rt.release.set()
    assert took < 10, took  # not the load timeout: the device was seen down
    assert err.value.devices == frozenset({"cpu1"}) and "cpu1: went down while its models loaded" in str(err.value)
    assert ("cpu0", "resnet18") not in rt.loaded and "undid: resnet18@cpu0" in str(err.value)  # rolled back
    assert not executor.busy
