"""Triton python-backend model that runs `model.onnx` (next to this file) with onnxruntime.

The exporter copies this file into every variant as `<variant>/1/model.py`. It runs inside
Triton's python-backend stub, so it imports only numpy, onnxruntime and the backend's own
`triton_python_backend_utils`.

- Instance kind and device come from Triton (`model_instance_kind`, `model_instance_device_id`):
  a GPU instance runs on onnxruntime's CUDAExecutionProvider on that device, and refuses to load
  if that provider is missing (CPU-only onnxruntime) instead of quietly running on the CPU.
- Threads: `parameters { key: "intra_op_threads" ... }` of the model config; inter-op threads 1.
- Triton may hand `execute()` several requests at once (dynamic batching): their inputs are
  concatenated along the batch dimension, run once, and the output is split back per request.
  A request that cannot be served gets its own error response; the others are still answered.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

THREADS_PARAMETER = "intra_op_threads"


def _parameter(config: dict, key: str, default: str) -> str:
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return value or default


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.model_name = args.get("model_name", config.get("name", "model"))
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        threads = int(_parameter(config, THREADS_PARAMETER, "1"))
        kind = args.get("model_instance_kind", "CPU")
        device_id = int(args.get("model_instance_device_id", "0") or 0)

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if kind == "GPU":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise pb_utils.TritonModelException(
                    f"{self.model_name}: a KIND_GPU instance needs onnxruntime with CUDAExecutionProvider "
                    f"(install onnxruntime-gpu); this onnxruntime has {ort.get_available_providers()}")
            providers = [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, sess_options=options, providers=providers)
        if kind == "GPU" and self.session.get_providers()[0] != "CUDAExecutionProvider":
            raise pb_utils.TritonModelException(f"{self.model_name}: onnxruntime could not use GPU {device_id}")
        self.output_dtype = np.float32
        pb_utils.Logger.log_info(f"{self.model_name}: onnxruntime {ort.__version__} on {kind} {device_id}, "
                                 f"{threads} intra-op thread(s), providers {self.session.get_providers()}")

    def execute(self, requests):
        responses = [None] * len(requests)
        batches, owners = [], []
        for i, request in enumerate(requests):
            tensor = pb_utils.get_input_tensor_by_name(request, self.input_name)
            if tensor is None:
                responses[i] = self._error(f"input {self.input_name!r} missing")
                continue
            array = tensor.as_numpy()
            if array.dtype != np.float32:
                array = array.astype(np.float32)
            batches.append(array)
            owners.append(i)
        if batches:
            try:
                x = batches[0] if len(batches) == 1 else np.concatenate(batches, axis=0)
                y = self.session.run([self.output_name], {self.input_name: x})[0]
                start = 0
                for i, array in zip(owners, batches):
                    n = array.shape[0]
                    out = pb_utils.Tensor(self.output_name, np.ascontiguousarray(y[start:start + n], dtype=self.output_dtype))
                    responses[i] = pb_utils.InferenceResponse(output_tensors=[out])
                    start += n
            except Exception as e:  # one failed run fails the requests in it, not the model
                message = f"{self.model_name}: onnxruntime failed: {e}"
                for i in owners:
                    responses[i] = self._error(message)
        return responses

    @staticmethod
    def _error(message: str):
        return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))

    def finalize(self):
        self.session = None
