"""`orchestrator serve` as a user runs it (a subprocess, its own embedded Triton): the gateway it
starts answers stock tritonclient http, grpc and grpc.aio clients, with no orchestrator import
on their side, and the logits equal onnxruntime's on the ONNX file of the variant the response
names; SIGTERM (what `docker stop` and Kubernetes send) stops it cleanly. (Not SIGINT: a
process started in the background by a non-interactive shell, as CI may be, inherits SIGINT
ignored, and Python then leaves it so.)"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient

sys.path.insert(0, str(Path(__file__).parent))
from controlplane_helpers import DEVICE_CLASS, TOKEN, call, read_lines, synthetic_profiles, wait_for_line  # noqa: E402

from orchestrator.catalog import Catalog  # noqa: E402

pytestmark = pytest.mark.slow

ATOL = 1e-3  # as tests/test_export_triton.py compares Triton's logits with onnxruntime's
ADDRESSES = re.compile(r"^gateway: http://(\S+) \(KServe v2 HTTP\), (\S+) \(gRPC\), http://(\S+)/metrics$")


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{url}/v2/health/ready", timeout=10) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def test_stock_clients_through_the_gateway_of_orchestrator_serve(model_repo, tmp_path):
    cluster = tmp_path / "cluster.toml"
    cluster.write_text(f'name = "serve-test"\nmodel_repository = "{model_repo}"\n\n[[device]]\nid = "cpu0"\n'
                       f'class = "{DEVICE_CLASS}"\nkind = "cpu"\nmemory_mb = 700\n\n[device.embedded]\nthreads = 1\n')
    catalog = Catalog.load(model_repo)
    synthetic_profiles(catalog).save(tmp_path / "profiles.json")
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "serve", "--cluster", str(cluster),
                             "--profiles", str(tmp_path / "profiles.json"), "--db", ":memory:", "--port", "0",
                             "--token", TOKEN, "--manual", "--gateway-http-port", "0", "--gateway-grpc-port", "0",
                             "--gateway-metrics-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    threading.Thread(target=read_lines, args=(proc, lines), daemon=True).start()
    try:
        control = wait_for_line(lines, re.compile(r"^control plane: (http://\S+?)/? "), proc, 120).group(1)
        http_url, grpc_url, _ = wait_for_line(lines, ADDRESSES, proc, 30).groups()
        assert not _ready(http_url)  # no plan yet
        status, body = call(control + "/api/v1/solve", "POST", {"demand": {"resnet": 2.0}, "dry_run": False})
        assert status == 200 and body["applied"], body
        end = time.monotonic() + 30
        while not _ready(http_url) and time.monotonic() < end:
            time.sleep(0.2)
        assert _ready(http_url), "\n".join(lines)

        x = np.random.default_rng(11).standard_normal((1, 3, 224, 224)).astype(np.float32)
        answers = []
        hc = httpclient.InferenceServerClient(http_url)
        hi = httpclient.InferInput("input", list(x.shape), "FP32")
        hi.set_data_from_numpy(x)
        r = hc.infer("resnet", [hi])
        answers.append((r.get_response()["parameters"]["variant"], r.as_numpy("logits")))
        hc.close()
        gc = grpcclient.InferenceServerClient(grpc_url)
        gi = grpcclient.InferInput("input", list(x.shape), "FP32")
        gi.set_data_from_numpy(x)
        r = gc.infer("resnet", [gi])
        answers.append((r.get_response().parameters["variant"].string_param, r.as_numpy("logits")))
        gc.close()

        async def aio():
            client = grpcaio.InferenceServerClient(grpc_url)
            inp = grpcaio.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            result = await client.infer("resnet", [inp])
            await client.close()
            return result.get_response().parameters["variant"].string_param, result.as_numpy("logits")
        answers.append(asyncio.run(aio()))

        planned = {route["variant"] for route in body["plan"]["families"]["resnet"]["routes"]}
        for variant, logits in answers:
            assert variant in planned, (variant, planned)
            session = ort.InferenceSession(str(model_repo / variant / "1" / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
            np.testing.assert_allclose(logits, session.run(None, {"input": x})[0], rtol=0, atol=ATOL)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(10)
    assert code == 0, "\n".join(lines)
    assert "stopping ..." in lines
