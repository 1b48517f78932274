"""One vocabulary for every driver: the outcome statuses of the shim's results, telemetry, the bench
and the simulator; config names checked where the config is built."""

import json

import pytest

from orchestrator import simulator
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
    from orchestrator.simulator import SimConfig

    with pytest.raises(ValueError, match="ShimConfig.routing must be one of accuracy-first, weighted, not 'wieghted'"):
        ShimConfig(routing="wieghted")
    with pytest.raises(ValueError, match="ShimConfig.policy must be one of proteus, aimd, none"):
        ShimConfig(policy="protues")
    with pytest.raises(ValueError, match="unknown demand estimator 'peek'"):
        SimConfig(control=ControlPlaneConfig(estimator="peek"))
