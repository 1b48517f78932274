"""A non-editable install carries every file the code reads beside itself: the dashboard's
static files and template, and the scenarios' data (Proteus's table). Built as a user would
(`pip wheel .`), from this tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_carries_every_tracked_data_file_of_the_packages(tmp_path):
    tracked = subprocess.run(["git", "ls-files", "orchestrator", "exporters"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    data = {f for f in tracked if not f.endswith(".py")}
    assert {"orchestrator/controlplane/templates/dashboard.html", "orchestrator/data/proteus_profiling.csv"} <= data
    # from a copy of the tracked files (as a clean clone has them): an in-tree build reuses build/
    source = tmp_path / "source"
    for f in subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split():
        if (ROOT / f).is_file():
            (source / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, source / f)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(source)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert data <= names, sorted(data - names)
