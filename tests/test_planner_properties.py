"""Property tests: on small random instances the MILP equals an exhaustive search over concrete
hostings (cold, and against a plan in force with switching costs and the change threshold), never
breaks memory/time/floors, and serves everything servable."""

from __future__ import annotations

import dataclasses
import os
import random

from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from orchestrator.catalog import Catalog
from orchestrator.cluster import Cluster, Device
from orchestrator.plan import Plan
from orchestrator.planner import AccuracyFloor, PlannerOptions, PlanRequest, build_problem, make_plan
from orchestrator.planner.exhaustive import exhaustive_parts, hosting_sets, plan_parts, plan_value
from orchestrator.planner.reference import reference_optimum
from orchestrator.planner.weights import served_floor
from orchestrator.planner.standby import add_standby
from orchestrator.profiles import ProfileRecord, ProfileSet
from orchestrator.scenarios import make_variant

from tests.planner_checks import check_plan

# the MILP alone: standbys and warm spares are a layer on top, outside its objective (standby.py),
# checked by check_standby_layer on the same plans
EXACT = PlannerOptions(relative_gap=1e-9, standby=False)
# PLANNER_EXAMPLES=500 for a longer search (the default keeps the suite quick)
SETTINGS = settings(max_examples=int(os.environ.get("PLANNER_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def instances(draw, floors: bool = False):
    n_fam = draw(st.integers(1, 2))
    n_var = draw(st.integers(2, 4))
    families = [f"f{i}" for i in range(n_fam)]
    catalog = Catalog()
    for i in range(n_var):
        v = make_variant(families[i % n_fam], f"v{i}", draw(st.integers(600, 850)) / 10, 1.0, 1.0)
        memory = draw(st.integers(100, 700))
        catalog.add(dataclasses.replace(v, onnx_bytes=int((memory - 64) / 1.5 * 2**20)))
    classes = [(f"c{j}", draw(st.integers(400, 1500)), draw(st.sampled_from([0.0, 0.5, 2.0])))
               for j in range(draw(st.integers(1, 2)))]
    devices = [Device(id=f"d{k}", device_class=classes[k % len(classes)][0], kind="cpu",
                      memory_mb=float(classes[k % len(classes)][1]), cost_per_hour=classes[k % len(classes)][2],
                      url=f"grpc://d{k}:8001")
               for k in range(draw(st.integers(2, 4)))]
    records = []
    for v in catalog.variants.values():
        for cls, _, _ in classes:
            if draw(st.integers(0, 5)) == 0:
                continue  # a missing pair
            base = draw(st.integers(5, 80))
            configs = [(1, 1, 1.0, 1.0)] + ([(2, 1, 1.8, 1.1)] if draw(st.booleans()) else [])
            for inst, thr, slow, more in configs:
                for b in (1, 2, 4):
                    lat = base * (0.3 + 0.7 * b) * slow
                    records.append(ProfileRecord(v.name, cls, b, inst, thr, lat, lat, lat * 1.1,
                                                 b * 1000.0 / lat * more, 10))
    slo = {f: float(draw(st.integers(60, 600))) for f in families}
    demand = {f: float(draw(st.integers(0 if f != "f0" else 1, 300))) for f in families}
    floor = {}
    if floors and draw(st.booleans()):
        f = families[0]
        floor[f] = AccuracyFloor(draw(st.integers(600, 800)) / 10, draw(st.sampled_from(["variant", "average"])))
    options = draw(st.sampled_from([EXACT, dataclasses.replace(EXACT, objective="cost"),
                                    dataclasses.replace(EXACT, device_cost_weight=0.5)]))
    return PlanRequest(catalog=catalog, cluster=Cluster("random", devices), profiles=ProfileSet(records),
                       slo_ms=slo, demand_rps=demand, accuracy_floor=floor, options=options)


def same_served(served: float, most: float) -> bool:
    """Served at the most any plan serves: up to the later stages' floor (solver tolerances)."""
    return served_floor(most) - 1e-9 <= served <= most + 1e-6 * max(1.0, most)


def _tol(objective: float) -> float:
    """Objectives agree to 1e-5 relative (0.001 effective-accuracy points): the solvers' feasibility
    tolerances (1e-6) let flows overshoot a row by that much."""
    return 1e-5 * max(1.0, abs(objective))


def check_exact(prob, plan) -> None:
    """The plan serves the most any hosting serves and, at that, is worth the exhaustive optimum;
    the solver's own figure is the plan's value."""
    most, best, _ = exhaustive_parts(prob)
    served, rest = plan_parts(prob, plan)
    assert plan.solver.status == "OPTIMAL"
    assert not any("retried" in n for n in plan.notes)  # no solve needed SoPlex's stability checks off
    assert same_served(served, most), (served, most)
    assert abs(rest - best) <= _tol(best), (rest, best)
    assert abs(plan.solver.objective - plan_value(prob, plan)) <= _tol(plan_value(prob, plan))


def check_standby_layer(prob, plan: Plan) -> None:
    """The standby layer over the MILP's `plan` adds placements that serve nothing and routes of
    weight 0, and changes nothing else; the result is still a valid plan (memory included)."""
    layered = add_standby(plan, prob)
    assert set(plan.placements) <= set(layered.placements)
    assert all(p.served_rps == 0.0 for p in set(layered.placements) - set(plan.placements))
    for fam, fp in plan.families.items():
        lp = layered.families[fam]
        assert (lp.served_rps, lp.unserved_rps, lp.effective_accuracy) == (fp.served_rps, fp.unserved_rps, fp.effective_accuracy)
        assert [r for r in lp.routes if r.weight > 0] == [r for r in fp.routes if r.weight > 0]
        assert all(r.weight == 0.0 for r in lp.routes[len(fp.routes):])
    check_plan(prob, layered)
    if prob.request.current is None:  # (with one, a standby's load is charged: the layer's price)
        # no device the objective charges for is put to use by a spare
        assert abs(plan_value(prob, layered) - plan_value(prob, plan)) <= _tol(plan_value(prob, plan))


def _search_size(req: PlanRequest) -> int:
    prob = build_problem(req)
    size = 1
    for g in prob.groups:
        size *= len(hosting_sets(g)) ** len(g.devices)
    return size


@SETTINGS
@given(instances(floors=True))
def test_milp_objective_equals_exhaustive_search(req):
    assume(req.profiles.device_classes() >= {d.device_class for d in req.cluster.devices})
    assume(_search_size(req) <= 5000)
    plan = make_plan(req)
    prob = build_problem(req)
    event(f"placements: {min(len(plan.placements), 4)}; multi-variant device: "
          f"{any(len(plan.placements_on(d.id)) > 1 for d in req.cluster.devices)}; "
          f"unserved: {any(f.unserved_rps > 1e-6 for f in plan.families.values())}")
    check_exact(prob, plan)
    check_plan(prob, plan)
    check_standby_layer(prob, plan)


@SETTINGS
@given(instances(floors=True), st.sampled_from([1.0, 30.0]))
def test_the_balance_term_is_exact_too(req, balance_weight):
    """With the default weight the balance term is below the comparison's tolerance; weighted up
    until it is not, the MILP (pool devices priced by the perspective n h(time / n)) still equals
    the exhaustive search over named devices, and the plan is worth what the solver said."""
    assume(req.profiles.device_classes() >= {d.device_class for d in req.cluster.devices})
    assume(_search_size(req) <= 5000)
    req = dataclasses.replace(req, options=dataclasses.replace(req.options, balance_weight=balance_weight))
    plan = make_plan(req)
    prob = build_problem(req)
    check_exact(prob, plan)
    check_plan(prob, plan)


@SETTINGS
@given(instances(floors=True), st.data())
def test_with_a_current_plan_the_milp_equals_the_exhaustive_search(req, data):
    """Re-planning against a plan in force (as served, standbys included): loads are charged per
    named device against what it hosts now, and the change threshold once if anything loads. The
    plan equals the exhaustive search over named hostings, whichever path decided it (kept: the
    bound proof; changed: the MILP over kinds)."""
    assume(req.profiles.device_classes() >= {d.device_class for d in req.cluster.devices})
    assume(_search_size(req) <= 3000)
    first = make_plan(dataclasses.replace(req, options=dataclasses.replace(req.options, standby=True)))  # as served
    factor = data.draw(st.sampled_from([0.5, 0.95, 1.05, 2.0, 3.0]))
    threshold = data.draw(st.sampled_from([0.0, 0.5]))
    req2 = dataclasses.replace(req, current=first, demand_rps={f: d * factor for f, d in req.demand_rps.items()},
                               options=dataclasses.replace(req.options, change_threshold=threshold))
    plan = make_plan(req2)
    prob = build_problem(req2)
    event("kept" if any(n.startswith("kept") for n in plan.notes) else "changed")
    check_exact(prob, plan)
    check_plan(prob, plan)
    check_standby_layer(prob, plan)


@SETTINGS
@given(instances())
def test_infeasible_demand_serves_everything_servable(req):
    """With far more demand than capacity, a single family is served at the cluster's full usable
    capacity (each device on its highest-capacity option) and the rest is unserved, with a reason."""
    assume(req.profiles.device_classes() >= {d.device_class for d in req.cluster.devices})
    fam = sorted(req.slo_ms)[0]
    req = dataclasses.replace(req, demand_rps={fam: 1e6})
    prob = build_problem(req)
    plan = make_plan(req)
    u = req.options.utilisation_cap
    servable = sum(len(g.devices) * u * max((o.capacity_rps for o in g.options if o.family == fam), default=0.0)
                   for g in prob.groups)
    fp = plan.families[fam]
    assert same_served(fp.served_rps, servable)
    assert fp.unserved_rps > 0 and fp.reason
    check_plan(prob, plan)


@SETTINGS
@given(instances(floors=True), st.sampled_from(["model-switching", "clipper-ha", "clipper-ht", "infaas"]))
def test_baselines_give_valid_full_plans(req, policy):
    assume(req.profiles.device_classes() >= {d.device_class for d in req.cluster.devices})
    plan = make_plan(req, policy=policy)
    assert isinstance(plan, Plan) and plan.policy == policy
    check_plan(build_problem(req), plan)
    # and never better than the exact planner on its own (lexicographic) objective: it serves no
    # more, and where it serves as much, its rest is no better
    milp = make_plan(req)
    prob = build_problem(req)
    (served, rest), (best_served, best_rest) = plan_parts(prob, plan), plan_parts(prob, milp)
    assert served <= best_served + 1e-6 * max(1.0, best_served)
    if served >= served_floor(best_served):
        assert rest <= best_rest + _tol(best_rest)


def medium(seed: int):
    """6-10 devices of 2-3 classes, 5-8 variants of 2-3 families, two instance configs, memory for a
    few variants per device, costs and floors sometimes: too large for the exhaustive search."""
    rng = random.Random(seed)
    fams = [f"f{i}" for i in range(rng.randint(2, 3))]
    catalog = Catalog()
    for i in range(rng.randint(5, 8)):
        v = make_variant(fams[i % len(fams)], f"v{i}", rng.randint(600, 850) / 10, 1.0, 1.0)
        catalog.add(dataclasses.replace(v, onnx_bytes=int((rng.randint(100, 700) - 64) / 1.5 * 2**20)))
    classes = [(f"c{j}", rng.randint(600, 2000), rng.choice([0.0, 0.5, 2.0])) for j in range(rng.randint(2, 3))]
    devices = [Device(id=f"d{k}", device_class=classes[k % len(classes)][0], kind="cpu",
                      memory_mb=float(classes[k % len(classes)][1]), cost_per_hour=classes[k % len(classes)][2],
                      url=f"grpc://d{k}:8001") for k in range(rng.randint(6, 10))]
    records = []
    for v in catalog.variants.values():
        for cls, _, _ in classes:
            base = rng.randint(5, 80)
            for inst, slow, more in [(1, 1.0, 1.0)] + ([(2, 1.8, 1.1)] if rng.random() < 0.5 else []):
                for b in (1, 2, 4):
                    lat = base * (0.3 + 0.7 * b) * slow
                    records.append(ProfileRecord(v.name, cls, b, inst, 1, lat, lat, lat * 1.1, b * 1000.0 / lat * more, 10))
    floor = {}
    if rng.random() < 0.3:
        floor[fams[0]] = AccuracyFloor(rng.randint(600, 800) / 10, rng.choice(["variant", "average"]))
    options = rng.choice([EXACT, dataclasses.replace(EXACT, objective="cost"),
                          dataclasses.replace(EXACT, device_cost_weight=0.5)])
    req = PlanRequest(catalog=catalog, cluster=Cluster("medium", devices), profiles=ProfileSet(records),
                      slo_ms={f: float(rng.randint(100, 600)) for f in fams},
                      demand_rps={f: float(rng.randint(1, 400)) for f in fams}, accuracy_floor=floor,
                      options=dataclasses.replace(options, time_limit_s=120.0))
    if rng.random() < 0.5:  # a re-plan from the plan for other demand, as served
        first = make_plan(dataclasses.replace(req, demand_rps={f: float(rng.randint(1, 400)) for f in fams},
                                              options=dataclasses.replace(req.options, standby=True)))
        req = dataclasses.replace(req, current=first, options=dataclasses.replace(
            req.options, change_threshold=rng.choice([0.0, 0.5])))
    return req


@settings(max_examples=max(1, int(os.environ.get("PLANNER_EXAMPLES", "60")) // 6), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10**6))
def test_medium_instances_equal_the_per_device_reference_milp(seed):
    """Where the exhaustive search is out of reach: the plain per-device MILP (planner/reference.py,
    SCIP to 1e-9, nothing aggregated) agrees with the planner on served and on the rest."""
    req = medium(seed)
    event("re-plan" if req.current is not None else "cold")
    prob, plan = check_against_reference(req, time_limit_s=120.0)
    check_plan(prob, plan)


def check_against_reference(req: PlanRequest, time_limit_s: float):
    """The planner's plan for `req` is OPTIMAL and equals the per-device reference MILP's optimum,
    served first, then the rest (instances the reference does not prove are assumed away)."""
    assume(req.profiles.device_classes() >= {d.device_class for d in req.cluster.devices})
    prob = build_problem(req)
    ref = reference_optimum(prob, time_limit_s=time_limit_s)
    assume(ref.status == "OPTIMAL")
    plan = make_plan(req)
    served, rest = plan_parts(prob, plan)
    assert plan.solver.status == "OPTIMAL"
    assert same_served(served, ref.served), (served, ref.served)
    assert abs(rest - ref.rest) <= _tol(ref.rest), (rest, ref.rest)
    return prob, plan
