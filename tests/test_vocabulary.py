"""One vocabulary for every driver: the outcome statuses of the shim's results, telemetry, the bench
and the simulator; config names checked where the config is built."""

import json

import pytest

from orchestrator.simulation import driver as simulator
from orchestrator.dataplane.status import ANSWERED, STATUS_NAMES, Status


def test_the_simulators_codes_name_the_statuses_in_order():
    codes = {"ok": simulator.OK, "late": simulator.LATE, "dropped": simulator.DROPPED, "error": simulator.ERROR,
             "unserved": simulator.UNSERVED}
    assert {name: STATUS_NAMES[code] for name, code in codes.items()} == {name: name for name in codes}
    assert len(STATUS_NAMES) == len(codes)


def test_a_status_reads_and_writes_as_its_plain_value():
    assert Status.LATE == "late" and str(Status.LATE) == "late" and f"{Status.DROPPED}" == "dropped"
    assert Status("unserved") is Status.UNSERVED
    assert json.dumps({"s": Status.OK}) == '{"s": "ok"}'
    assert ANSWERED == ("ok", "late")
    assert [s.value for s in Status if s.missed_deadline] == ["late", "dropped"]


def test_a_misspelt_name_is_refused_where_the_config_is_built():
    from orchestrator.controlplane.service import ControlPlaneConfig
    from orchestrator.shim.client import ShimConfig

    with pytest.raises(ValueError, match="ShimConfig.routing must be one of accuracy-first, weighted, not 'wieghted'"):
        ShimConfig(routing="wieghted")
    with pytest.raises(ValueError, match="ShimConfig.policy must be one of proteus, aimd, none"):
        ShimConfig(policy="protues")
    with pytest.raises(ValueError, match="ShimConfig.percentile must be one of p50, p95, p99, not 'p90'"):
        ShimConfig(percentile="p90")
    with pytest.raises(ValueError, match="ControlPlaneConfig.estimator must be one of window, ewma, forecast, peak, "
                                         "not 'peek'"):
        ControlPlaneConfig(estimator="peek")


def test_names_become_enums_that_read_as_their_plain_values():
    from orchestrator.controlplane.demand import Estimator
    from orchestrator.controlplane.service import ControlPlaneConfig
    from orchestrator.dataplane.config import Batching, Percentile, Routing, ShimConfig

    from orchestrator.dataplane.latency import PERCENTILES

    assert Percentile.choices() == PERCENTILES  # the compiled latency model's own list of them
    config = ShimConfig(policy="aimd", routing="weighted", percentile="p99")
    assert config.policy is Batching.AIMD and config.routing is Routing.WEIGHTED and config.percentile is Percentile.P99
    assert config.routing == "weighted" and f"{config.policy}" == "aimd"
    control = ControlPlaneConfig(estimator="ewma")
    assert control.estimator is Estimator.EWMA and json.dumps({"e": control.estimator}) == '{"e": "ewma"}'
