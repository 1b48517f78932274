"""Triton python-backend model that runs `model.onnx` (next to this file) with onnxruntime.

The exporter copies this file into every variant as `<variant>/1/model.py`. It runs inside
Triton's python-backend stub, so it imports only numpy, onnxruntime and the backend's own
`triton_python_backend_utils` (absent elsewhere: benchmarks/gpu_check.py imports this file for
the same provider choice on raw onnxruntime).

- The execution provider follows the instance kind Triton gives (`model_instance_kind`,
  `model_instance_device_id`): CPU (and KIND_MODEL) instances run on CPUExecutionProvider; GPU
  instances on CUDAExecutionProvider on that device, or, with the config parameter
  `gpu_accelerator` = "tensorrt", on TensorrtExecutionProvider (CUDA for what TensorRT does not
  take), whose engines are cached in the model's directory (`tensorrt_cache_dir`, default
  `tensorrt_cache/`). A GPU instance whose provider onnxruntime lacks (CPU-only onnxruntime:
  install the `gpu` extra) refuses to load with a one-line error; it never runs on the CPU quietly.
- Threads: `parameters { key: "intra_op_threads" ... }` of the model config; inter-op threads 1.
- Triton may hand `execute()` several requests at once (dynamic batching): their inputs are
  concatenated along the batch dimension, run once, and the output is split back per request.
  A request that cannot be served gets its own error response; the others are still answered.
"""

import ctypes
import json
import os
import sys

import numpy as np
import onnxruntime as ort

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # outside Triton: only the provider functions below are of use
    pb_utils = None

THREADS_PARAMETER = "intra_op_threads"
ACCELERATOR_PARAMETER = "gpu_accelerator"  # "cuda" (default) | "tensorrt"; GPU instances only
TENSORRT_CACHE_PARAMETER = "tensorrt_cache_dir"  # relative to the model's directory
TENSORRT_FP16_PARAMETER = "tensorrt_fp16"  # "true" | "false" (default)
ACCELERATORS = ("cuda", "tensorrt")
CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


class ProviderError(Exception):
    """The instance cannot run on the provider its kind and config ask for (a one-line message)."""


def _parameter(config: dict, key: str, default: str) -> str:
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return value or default


def execution_providers(kind: str, device_id: int, accelerator: str, available: list, cache_dir: str = "",
                        fp16: bool = False, shapes: tuple = ()) -> list:
    """onnxruntime's provider list for an instance of `kind` ("CPU", "GPU", "MODEL") on `device_id`.

    `available` is onnxruntime's own list (`get_available_providers()`); `shapes` is (input name,
    per-item dims, max batch) for TensorRT's optimisation profile. Raises ProviderError."""
    if accelerator not in ACCELERATORS:
        raise ProviderError(f"parameter {ACCELERATOR_PARAMETER!r} must be one of {', '.join(ACCELERATORS)}, "
                            f"not {accelerator!r}")
    if kind != "GPU":
        return [CPU]
    if CUDA not in available:
        raise ProviderError(f"a KIND_GPU instance needs onnxruntime's {CUDA}, but this onnxruntime "
                            f"({ort.__version__}) has only {', '.join(available)}: install the gpu extra "
                            f"(onnxruntime-gpu) where GPU instances run")
    cuda = (CUDA, {"device_id": device_id})
    if accelerator == "cuda":
        return [cuda, CPU]
    if TENSORRT not in available:
        raise ProviderError(f"{ACCELERATOR_PARAMETER} 'tensorrt' needs onnxruntime's {TENSORRT}, but this "
                            f"onnxruntime has only {', '.join(available)}")
    # flags as "true"/"false": what every onnxruntime parser of provider options takes
    options = {"device_id": device_id, "trt_fp16_enable": "true" if fp16 else "false",
               "trt_engine_cache_enable": "true", "trt_engine_cache_path": cache_dir,
               "trt_timing_cache_enable": "true", "trt_timing_cache_path": cache_dir}
    if shapes:  # one engine for every batch size up to the config's max, built once
        name, dims, max_batch = shapes
        item = "x".join(str(d) for d in dims)
        options.update(trt_profile_min_shapes=f"{name}:1x{item}", trt_profile_opt_shapes=f"{name}:{max_batch}x{item}",
                       trt_profile_max_shapes=f"{name}:{max_batch}x{item}")
    return [(TENSORRT, options), cuda, CPU]


def _cuda_major() -> str:
    try:
        from onnxruntime.capi import build_and_package_info as info
        return str(getattr(info, "cuda_version", "13")).split(".")[0] or "13"
    except ImportError:
        return "13"


def nvidia_library_folders(major: str, paths: list) -> list:
    """(folder, preload_dlls keywords) of CUDA `major`'s runtime and of cuDNN 9: each from the first
    `nvidia/` folder under `paths` that has it."""
    folders = [os.path.join(p, "nvidia") for p in paths if p]
    wanted = ((os.path.join(f"cu{major}", "lib"), f"libcudart.so.{major}", {"cuda": True, "cudnn": False}),
              (os.path.join("cudnn", "lib"), "libcudnn.so.9", {"cuda": False, "cudnn": True}))
    found = []
    for sub, marker, kinds in wanted:
        folder = next((os.path.join(f, sub) for f in folders if os.path.exists(os.path.join(f, sub, marker))), None)
        if folder is not None:
            found.append((folder, kinds))
    return found


def preload_gpu_libraries(accelerator: str) -> None:
    """Load the CUDA/cuDNN (and TensorRT) libraries of NVIDIA's pip packages, so that onnxruntime's
    provider libraries find them without LD_LIBRARY_PATH: from the first `nvidia/` folder on the
    path that has them (onnxruntime's own site-packages first; another one, such as a system
    torch's, where onnxruntime-gpu was installed elsewhere). Missing ones are left for
    onnxruntime to report."""
    if hasattr(ort, "preload_dlls"):
        own = os.path.dirname(os.path.dirname(os.path.abspath(ort.__file__)))
        for folder, kinds in nvidia_library_folders(_cuda_major(), [own, *sys.path]):
            try:
                ort.preload_dlls(directory=folder, **kinds)
            except Exception:  # noqa: BLE001 - onnxruntime's own error at session creation says more
                pass
    if accelerator == "tensorrt":
        try:
            import tensorrt_libs  # the gpu-tensorrt extra (tensorrt-cu13-libs)
        except ImportError:
            return
        folder = os.path.dirname(tensorrt_libs.__file__)
        for lib in ("libnvinfer.so.10", "libnvinfer_plugin.so.10", "libnvonnxparser.so.10"):
            path = os.path.join(folder, lib)
            if os.path.exists(path):
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)


def one_line(error: Exception) -> str:
    return " ".join(str(error).split())


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.model_name = args.get("model_name", config.get("name", "model"))
        try:
            self._initialize(args, config)
        except ProviderError as e:
            raise pb_utils.TritonModelException(f"{self.model_name}: {e}") from None

    def _initialize(self, args, config):
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        threads = int(_parameter(config, THREADS_PARAMETER, "1"))
        kind = args.get("model_instance_kind", "CPU")
        device_id = int(args.get("model_instance_device_id", "0") or 0)
        accelerator = _parameter(config, ACCELERATOR_PARAMETER, "cuda").lower()
        model_dir = args["model_repository"]
        cache_dir = os.path.join(model_dir, _parameter(config, TENSORRT_CACHE_PARAMETER, "tensorrt_cache"))
        fp16 = _parameter(config, TENSORRT_FP16_PARAMETER, "false").lower() == "true"
        shapes = (self.input_name, config["input"][0]["dims"], int(config.get("max_batch_size", 0)) or 1)

        if kind == "GPU":
            preload_gpu_libraries(accelerator)
        providers = execution_providers(kind, device_id, accelerator, ort.get_available_providers(), cache_dir,
                                        fp16, shapes)
        if providers[0][0] == TENSORRT:
            try:
                os.makedirs(cache_dir, exist_ok=True)
            except OSError as e:
                raise ProviderError(f"cannot create the TensorRT engine cache {cache_dir}: {e.strerror}") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        path = os.path.join(model_dir, args["model_version"], "model.onnx")
        try:
            self.session = ort.InferenceSession(path, sess_options=options, providers=providers)
        except Exception as e:  # noqa: BLE001 - onnxruntime's errors are plain RuntimeErrors and the like
            raise ProviderError(f"onnxruntime could not create a session on {kind} {device_id}: {one_line(e)}") from None
        wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
        used = self.session.get_providers()
        if used[0] != wanted:
            raise ProviderError(f"onnxruntime could not use {wanted} on {kind} {device_id} (session providers: "
                                f"{', '.join(used)}): the GPU, its driver (libcuda.so.1) or the CUDA, cuDNN or "
                                f"TensorRT libraries are missing; onnxruntime's log lines before this say which")
        self.output_dtype = np.float32
        pb_utils.Logger.log_info(f"{self.model_name}: onnxruntime {ort.__version__} on {kind} {device_id}, "
                                 f"{threads} intra-op thread(s), providers {used}")

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
