"""Acceptance 1: a real tritonserver (nvidia-pytriton wheel) serves the exported resnet18.

The server runs the repository's python-backend model (1/model.py -> onnxruntime); its answers
must equal onnxruntime's own on the same input.
"""

from __future__ import annotations

import queue

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from orchestrator.errors import UserError
from orchestrator.triton.control import InstanceConfig
from orchestrator.triton.embedded import EmbeddedServer


@pytest.fixture(scope="module")
def server(resnet18_repo):
    with EmbeddedServer(resnet18_repo, name="export-test", load=["resnet18"]) as srv:
        yield srv


@pytest.fixture(scope="module")
def onnxruntime_session(resnet18_repo):
    return ort.InferenceSession(str(resnet18_repo / "resnet18" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 224, 224), dtype=np.float32)


@pytest.mark.parametrize("batch", [1, 4])
def test_triton_answers_equal_onnxruntime(server, onnxruntime_session, batch):
    x = images(batch, seed=batch)
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        assert client.is_model_ready("resnet18")
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        got = client.infer("resnet18", [inp], outputs=[httpclient.InferRequestedOutput("logits")]).as_numpy("logits")
    finally:
        client.close()
    expected = onnxruntime_session.run(None, {"input": x})[0]
    assert got.shape == (batch, 1000) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3)


def test_default_config_is_the_cpu_one(server, resnet18_repo):
    ctl = server.control(resnet18_repo)
    try:
        config = ctl.model_config("resnet18")
    finally:
        ctl.close()
    assert config["backend"] == "python"
    assert [g["kind"] for g in config["instance_group"]] == ["KIND_CPU"]
    assert config["parameters"]["intra_op_threads"]["string_value"] == "1"


def test_requests_batched_by_triton_are_split_back_per_request(resnet18_repo, onnxruntime_session):
    """Several requests in one execute() call: one onnxruntime run, each request gets its own rows."""
    with EmbeddedServer(resnet18_repo, name="export-batching") as srv:
        ctl = srv.control(resnet18_repo)
        try:
            # a long queue delay makes Triton gather the three requests below into one batch
            ctl.load("resnet18", InstanceConfig(kind="cpu", count=1, threads=1, queue_delay_us=2_000_000))
            before = ctl.statistics("resnet18")["model_stats"][0]  # the load's warmup sample ran once
            batches = [images(n, seed=10 + n) for n in (1, 2, 3)]
            client = grpcclient.InferenceServerClient(srv.grpc_url)
            pending = []
            for x in batches:
                inp = grpcclient.InferInput("input", list(x.shape), "FP32")
                inp.set_data_from_numpy(x)
                done: queue.Queue = queue.Queue()
                client.async_infer("resnet18", [inp], callback=lambda result, error, done=done: done.put((result, error)))
                pending.append(done)
            answers = [done.get(timeout=60) for done in pending]
            client.close()
            for x, (result, error) in zip(batches, answers):
                assert error is None, error
                np.testing.assert_allclose(result.as_numpy("logits"), onnxruntime_session.run(None, {"input": x})[0],
                                           rtol=0, atol=1e-3)
            stats = ctl.statistics("resnet18")["model_stats"][0]
            assert int(stats["inference_count"]) - int(before.get("inference_count", 0)) == 6
            # all three requests ran as one batch of 6
            assert int(stats["execution_count"]) - int(before.get("execution_count", 0)) == 1
        finally:
            ctl.close()


def test_gpu_config_is_refused_where_onnxruntime_has_no_cuda(resnet18_repo):
    """The GPU instance config never silently runs on the CPU: without a GPU Triton refuses KIND_GPU;
    with a GPU but CPU-only onnxruntime, 1/model.py refuses to initialise (no CUDAExecutionProvider)."""
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with EmbeddedServer(resnet18_repo, name="export-gpu") as srv:
        ctl = srv.control(resnet18_repo)
        try:
            with pytest.raises(UserError, match="KIND_GPU"):
                ctl.load("resnet18", InstanceConfig(kind="gpu", config_name="gpu"))
            assert not ctl.is_model_ready("resnet18")
        finally:
            ctl.close()
