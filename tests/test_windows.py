"""benchmarks/windows.py: runs compared window by window, from the requests CSV the bench and the
simulator write."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import windows  # noqa: E402
from orchestrator.evaluation import Outcomes  # noqa: E402


def write_run(folder: Path, policy: str, statuses: list[str], variants: list[str], accuracy: dict[str, float]) -> None:
    """One request every 0.5 s with the given statuses and variants."""
    n = len(statuses)
    o = Outcomes(arrival_s=np.arange(n) * 0.5, family=np.array(["resnet"] * n, dtype=object),
                 deadline_ms=np.full(n, 300.0), status=np.array(statuses, dtype=object),
                 latency_ms=np.where(np.array(statuses) == "ok", 100.0, 400.0),
                 variant=np.array(variants, dtype=object), device=np.array(["cpu0"] * n, dtype=object),
                 accuracy=np.array([accuracy.get(v, 0.0) for v in variants]))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{policy}.requests.csv").write_text(o.to_csv())


ACC = {"resnet50": 76.13, "resnet18": 69.76}


def test_two_runs_side_by_side_per_window(tmp_path, capsys):
    # 40 requests over 20 s: run a serves ResNet-50 and misses two in the second 10-s window;
    # run b serves ResNet-18 and misses nothing
    a_status = ["ok"] * 20 + ["late", "dropped"] + ["ok"] * 18
    write_run(tmp_path / "a", "milp", a_status, ["resnet50"] * 20 + ["resnet50", ""] + ["resnet50"] * 18, ACC)
    write_run(tmp_path / "b", "infaas", ["ok"] * 40, ["resnet18"] * 40, ACC)
    assert windows.main([f"{tmp_path / 'a'}:milp", f"{tmp_path / 'b'}:infaas"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "a:milp" in lines[0] and "b:infaas" in lines[0]
    first, second, whole = lines[2].split(), lines[3].split(), lines[4].split()
    assert first == ["0-10", "20", "0", "76.13", "0", "69.76"]
    assert second == ["10-20", "20", "2", f"{76.13 * 18 / 20:.2f}", "0", "69.76"]
    assert whole[:3] == ["whole", "run", "40"] and whole[3] == "2" and whole[5] == "0"
    # --changed: only the windows where the runs differ (none, for a run against itself)
    assert windows.main([f"{tmp_path / 'a'}:milp", f"{tmp_path / 'b'}:infaas", "--changed"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5
    assert windows.main([f"{tmp_path / 'a'}:milp", f"{tmp_path / 'a'}:milp", "--changed"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3  # header (2 lines) and the whole run
    # --from / --to bound the windows shown
    assert windows.main([f"{tmp_path / 'a'}:milp", "--from", "10", "--window", "5"]) == 0
    shown = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:-1]]
    assert shown == ["10-15", "15-20"]


def test_a_missing_run_or_a_bad_argument_is_one_line_and_exit_2(tmp_path, capsys):
    write_run(tmp_path / "a", "milp", ["ok"], ["resnet50"], ACC)
    for argv, words in (([f"{tmp_path / 'a'}:infaas"], "infaas.requests.csv: no such file"),
                        ([str(tmp_path / "a")], "FOLDER:POLICY"),
                        ([f"{tmp_path / 'a'}:milp", "--window", "0"], "--window must be above 0")):
        assert windows.main(argv) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1
