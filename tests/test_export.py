"""`orchestrator export`: the repository it writes, its catalog, idempotency and clean failures.

The five ResNets are exported once per session by the `model_repo` fixture (tests/conftest.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torchvision
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from exporters import onnx_export, repository
from orchestrator import cli
from orchestrator.catalog import Catalog

FIVE = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
MODEL_PY = Path(repository.__file__).with_name("triton_python_model.py")


def orchestrator(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real console command in a subprocess (exit code and stderr exactly as a user sees them)."""
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def files_with_mtimes(root: Path) -> dict[str, int]:
    """Every file the export wrote, with its mtime, and every folder (0: its mtime moves when
    `__pycache__` appears in it). Not `__pycache__`: Triton's Python backend compiles a variant's
    model.py there when it loads it, and the suite's workers share one export
    (tests/conftest.py), so a live test on the other worker may load a variant between two looks."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns if p.is_file() else 0 for p in sorted(root.rglob("*"))
            if "__pycache__" not in p.parts}


def read_config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def assert_no_leftovers(folder: Path) -> None:
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")] if folder.exists() else []
    assert leftovers == [], f"temporary folders left behind: {leftovers}"


# -- acceptance 2: all five export and verify ------------------------------------------------------

def test_five_resnets_export_and_verify(model_repo_export):
    run = model_repo_export
    assert [r.name for r in run.results] == FIVE
    for r in run.results:
        assert r.status == "exported"
        v = r.verification
        assert v.batch == repository.ExportSettings().verify_batch != repository.ExportSettings().trace_batch
        assert v.ok and v.max_abs_diff <= v.bound, r.name
        assert v.top1_agree == v.batch
        assert set(r.seconds) == {"export", "check", "verify", "write"}
        model_dir = run.path / r.name
        for rel in ("config.pbtxt", "configs/gpu.pbtxt", "configs/gpu-trt.pbtxt", "configs/ort-cpu.pbtxt",
                    "configs/ort-gpu.pbtxt",
                    "1/model.onnx", "1/model.py", "export.json"):
            assert (model_dir / rel).is_file(), f"{r.name}/{rel}"
        assert (model_dir / "1" / "model.py").read_text() == MODEL_PY.read_text()
    # one progress line per step and variant, each with its timing
    for name in FIVE:
        for step in ("export", "check", "verify", "write"):
            assert any(line.startswith(f"{name}: {step} ") and " s " in line for line in run.log), (name, step)
    assert any("random(seed=0)" in line and "nominal" in line for line in run.log)
    assert_no_leftovers(run.path)


def test_onnx_has_dynamic_batch_and_the_promised_interface(model_repo):
    session = ort.InferenceSession(str(model_repo / "resnet18" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape[1:]) == ("input", "tensor(float)", [3, 224, 224])
    assert (out.name, out.type, out.shape[1:]) == ("logits", "tensor(float)", [1000])
    assert isinstance(inp.shape[0], str) and isinstance(out.shape[0], str)  # symbolic batch dimension
    rng = np.random.default_rng(0)
    for n in (1, 5):
        y = session.run(None, {"input": rng.standard_normal((n, 3, 224, 224), dtype=np.float32)})[0]
        assert y.shape == (n, 1000) and np.all(np.isfinite(y))


def test_configs_cpu_by_default_gpu_and_onnxruntime_under_configs(model_repo):
    for name in FIVE:
        d = model_repo / name
        cpu = read_config(d / "config.pbtxt")
        assert (cpu.name, cpu.backend, cpu.max_batch_size) == (name, "python", 64)
        assert [g.kind for g in cpu.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
        assert cpu.parameters["intra_op_threads"].string_value == "1"
        assert cpu.dynamic_batching.max_queue_delay_microseconds == 0
        assert [(t.name, t.data_type, list(t.dims)) for t in cpu.input] == [("input", model_config_pb2.TYPE_FP32, [3, 224, 224])]
        assert [(t.name, t.data_type, list(t.dims)) for t in cpu.output] == [("logits", model_config_pb2.TYPE_FP32, [1000])]
        gpu = read_config(d / "configs" / "gpu.pbtxt")
        assert (gpu.backend, gpu.max_batch_size) == ("python", 64)
        assert [g.kind for g in gpu.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]
        assert "gpu_accelerator" not in gpu.parameters  # model.py's default: CUDA
        trt = read_config(d / "configs" / "gpu-trt.pbtxt")
        assert [g.kind for g in trt.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]
        assert trt.parameters["gpu_accelerator"].string_value == "tensorrt"
        for config_name, kind in (("ort-cpu", "KIND_CPU"), ("ort-gpu", "KIND_GPU")):
            ort_cfg = read_config(d / "configs" / f"{config_name}.pbtxt")
            assert (ort_cfg.backend, ort_cfg.platform, ort_cfg.default_model_filename) == \
                ("onnxruntime", "onnxruntime_onnx", "model.onnx")
            assert [g.kind for g in ort_cfg.instance_group] == [model_config_pb2.ModelInstanceGroup.Kind.Value(kind)]
            assert ort_cfg.parameters["intra_op_thread_count"].string_value == "1"
            assert [t.name for t in ort_cfg.input] == ["input"] and [t.name for t in ort_cfg.output] == ["logits"]


# -- acceptance 3: the catalog ---------------------------------------------------------------------

def test_catalog_lists_five_variants_with_accuracy_increasing_with_depth(model_repo):
    catalog = Catalog.load(model_repo)
    assert sorted(catalog.variants) == sorted(FIVE)
    variants = [catalog.get(n) for n in FIVE]  # in order of depth
    accuracies = [v.accuracy for v in variants]
    assert accuracies == sorted(accuracies) and len(set(accuracies)) == 5
    assert accuracies == [69.758, 73.314, 76.130, 77.374, 78.312]
    assert [v.name for v in catalog.families()["resnet"]] == FIVE
    for v in variants:
        meta = torchvision.models.get_model_weights(v.name).IMAGENET1K_V1.meta
        assert v.family == "resnet"
        assert v.accuracy_source == "torchvision IMAGENET1K_V1 acc@1"
        assert v.accuracy_nominal and v.weights == "random(seed=0)"
        assert v.params == meta["num_params"]
        assert abs(v.flops - 2e9 * meta["_ops"]) < 0.01 * v.flops  # torchvision's _ops are GMACs
        onnx_file = model_repo / v.name / "1" / "model.onnx"
        assert v.onnx_bytes == onnx_file.stat().st_size
        assert v.onnx_sha256 == repository.models.file_sha256(onnx_file)
        assert v.max_batch_size == 64 and v.exported_at
        assert [(t.name, t.dtype, t.shape) for t in v.inputs] == [("input", "FP32", (3, 224, 224))]
        assert [(t.name, t.dtype, t.shape) for t in v.outputs] == [("logits", "FP32", (1000,))]
    assert [v.flops for v in variants] == sorted(v.flops for v in variants)


def test_catalog_merges_with_existing_entries(resnet18_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(resnet18_repo, repo)
    catalog = Catalog.load(repo)
    other = catalog.get("resnet18")
    catalog.add(dataclasses.replace(other, name="hand_made", family="other"))
    catalog.save(repo)
    assert cli.main(["export", "--variants", "squeezenet1_1", "--out", str(repo)]) == 0
    merged = Catalog.load(repo)
    assert sorted(merged.variants) == ["hand_made", "resnet18", "squeezenet1_1"]
    squeeze = merged.get("squeezenet1_1")
    assert squeeze.family == "squeezenet" and squeeze.accuracy == 58.178


# -- idempotency -----------------------------------------------------------------------------------

def test_second_export_changes_nothing(model_repo, capsys):
    before = files_with_mtimes(model_repo)
    assert cli.main(["export", "--out", str(model_repo)]) == 0
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("resnet")][:5] == [f"{n}: up to date" for n in FIVE]
    assert "0 exported, 5 up to date" in out
    assert files_with_mtimes(model_repo) == before


def test_force_and_a_damaged_variant_are_re_exported(resnet18_repo, tmp_path, capsys):
    repo = tmp_path / "repo"
    shutil.copytree(resnet18_repo, repo)
    onnx_file = repo / "resnet18" / "1" / "model.onnx"
    original = onnx_file.read_bytes()
    with open(onnx_file, "ab") as f:
        f.write(b"\0")  # no longer the file the catalog describes
    assert cli.main(["export", "--variants", "resnet18", "--out", str(repo)]) == 0
    assert "resnet18: re-exporting (model.onnx does not match its catalog entry)" in capsys.readouterr().out
    assert onnx_file.read_bytes() == original  # deterministic: same seed, same ONNX

    before = onnx_file.stat()
    assert cli.main(["export", "--variants", "resnet18", "--out", str(repo), "--force"]) == 0
    assert "resnet18: export " in capsys.readouterr().out
    after = onnx_file.stat()
    assert (after.st_ino, after.st_mtime_ns) != (before.st_ino, before.st_mtime_ns)
    assert_no_leftovers(repo)


# -- weights ---------------------------------------------------------------------------------------

def test_weights_folder_is_loaded_and_exported(tmp_path, capsys):
    torch.manual_seed(123)
    model = torchvision.models.resnet18().eval()
    weights = tmp_path / "weights"
    weights.mkdir()
    torch.save(model.state_dict(), weights / "resnet18.pth")
    repo = tmp_path / "repo"
    assert cli.main(["export", "--variants", "resnet18", "--weights", str(weights), "--out", str(repo)]) == 0
    v = Catalog.load(repo).get("resnet18")
    assert v.weights == "resnet18.pth"
    assert v.accuracy_nominal and "assumed" in v.accuracy_source  # not torchvision's checkpoint (sha256)
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224), dtype=np.float32)
    session = ort.InferenceSession(str(repo / "resnet18" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, atol=1e-4)
    # the same files again: up to date; without --weights it is a different export
    assert cli.main(["export", "--variants", "resnet18", "--weights", str(weights), "--out", str(repo)]) == 0
    assert "resnet18: up to date" in capsys.readouterr().out
    assert cli.main(["export", "--variants", "resnet18", "--out", str(repo)]) == 0
    assert "re-exporting (export settings changed:" in capsys.readouterr().out
    assert Catalog.load(repo).get("resnet18").weights == "random(seed=0)"


# -- acceptance 4: bad input fails cleanly ---------------------------------------------------------

def assert_one_line_error(returncode: int, stderr: str, *needles: str) -> None:
    lines = stderr.strip().splitlines()
    assert returncode == 2, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def export_fails(capsys, *args: str) -> str:
    """Run `orchestrator export ARGS` in-process (as the console script does); returns its stderr."""
    capsys.readouterr()
    code = cli.main(["export", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    return err


def test_unknown_model_fails_cleanly_in_a_real_process(tmp_path):
    out = tmp_path / "repo"
    result = orchestrator("export", "--variants", "resnet18,resnet181", "--out", str(out))
    assert_one_line_error(result.returncode, result.stderr, "resnet181", "did you mean resnet18")
    assert not out.exists()  # checked before anything is written, resnet18 included


def test_weights_that_do_not_match_the_architecture_fail_cleanly(tmp_path, resnet18_repo, capsys):
    weights = tmp_path / "weights"
    weights.mkdir()
    torch.save(torchvision.models.resnet18().state_dict(), weights / "resnet34-b627a593.pth")  # torchvision's name
    # into a new folder: nothing is left
    out = tmp_path / "new"
    err = export_fails(capsys, "--variants", "resnet34", "--weights", str(weights), "--out", str(out))
    assert_one_line_error(2, err, str(weights / "resnet34-b627a593.pth"), "does not match resnet34")
    assert not out.exists()
    # into an existing repository: what was there stays as it was, no half-written resnet34
    repo = tmp_path / "repo"
    shutil.copytree(resnet18_repo, repo)
    before = files_with_mtimes(repo)
    err = export_fails(capsys, "--variants", "resnet34", "--weights", str(weights), "--out", str(repo))
    assert_one_line_error(2, err, "resnet34-b627a593.pth")
    assert files_with_mtimes(repo) == before
    assert_no_leftovers(repo)


def test_missing_or_unreadable_weights_fail_cleanly(tmp_path, capsys):
    weights = tmp_path / "weights"
    weights.mkdir()
    err = export_fails(capsys, "--variants", "resnet50", "--weights", str(weights), "--out", str(tmp_path / "o"))
    assert_one_line_error(2, err, "no weights for resnet50", "resnet50-0676ba61.pth", "resnet50.pth")
    (weights / "resnet50.pth").write_text("not a checkpoint")
    err = export_fails(capsys, "--variants", "resnet50", "--weights", str(weights), "--out", str(tmp_path / "o"))
    assert_one_line_error(2, err, str(weights / "resnet50.pth"), "not a loadable PyTorch state_dict")
    assert not (tmp_path / "o").exists()


def test_unwritable_output_folder_fails_cleanly(tmp_path, capsys):
    # Tests run as root, which ignores permission bits; a folder *inside a regular file* cannot be
    # created by anyone, root included.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    out = blocker / "repo"
    err = export_fails(capsys, "--variants", "resnet18", "--out", str(out))
    assert_one_line_error(2, err, str(out), "not writable")
    assert blocker.read_text() == "not a folder\n" and sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
    err = export_fails(capsys, "--variants", "resnet18", "--out", str(blocker))
    assert_one_line_error(2, err, str(blocker), "not a folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_read_only_output_folder_fails_cleanly(tmp_path, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        err = export_fails(capsys, "--variants", "resnet18", "--out", str(out))
        assert_one_line_error(2, err, str(out), "not writable")
        assert list(out.iterdir()) == []
    finally:
        out.chmod(0o700)


def test_interrupted_export_leaves_the_old_variant_and_no_temporary_folder(resnet18_repo, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    shutil.copytree(resnet18_repo, repo)
    before = files_with_mtimes(repo)

    def interrupted_while_writing(model, path, *args, **kwargs):
        Path(path).write_bytes(b"half an onnx file")
        raise KeyboardInterrupt  # Ctrl-C in the middle of a variant

    monkeypatch.setattr(onnx_export, "export", interrupted_while_writing)
    assert cli.main(["export", "--variants", "resnet18", "--out", str(repo), "--force"]) == 130
    assert files_with_mtimes(repo) == before
    assert_no_leftovers(repo)
    fresh = tmp_path / "fresh"
    assert cli.main(["export", "--variants", "resnet18", "--out", str(fresh)]) == 130
    assert not fresh.exists()


def test_export_json_records_the_settings(resnet18_repo):
    recorded = json.loads((resnet18_repo / "resnet18" / "export.json").read_text())
    assert recorded["settings"]["weights"] == "random(seed=0)" and recorded["settings"]["opset"] == 17
    assert recorded["tools"]["onnxruntime"] == ort.__version__
