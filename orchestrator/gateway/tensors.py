"""KServe v2 tensors in and out: the HTTP JSON body with its binary tensor data extension (what
tritonclient.http sends), and the gRPC `ModelInferRequest` / `ModelInferResponse` (raw and typed
contents). Bad tensors raise a `GatewayError` naming the tensor, of the kind Triton answers the
same request with: INVALID_ARGUMENT (400) for tensors that do not fit, and INTERNAL (500) for a
JSON body or `data` field that does not parse, as Triton's HTTP endpoint does.
"""

from __future__ import annotations

import json
import math

import numpy as np

from orchestrator.catalog import TRITON_TO_NUMPY
from orchestrator.gateway.core import Answer, Code, GatewayError

HEADER_LENGTH = "Inference-Header-Content-Length"  # the binary extension's HTTP header
# ModelInferRequest's typed contents field per datatype (gRPC)
CONTENTS_FIELD = {"FP32": "fp32_contents", "FP64": "fp64_contents", "INT64": "int64_contents",
                  "INT32": "int_contents", "INT8": "int_contents", "UINT8": "uint_contents", "BOOL": "bool_contents",
                  "FP16": ""}  # FP16 has no typed field: raw contents only
MAX_ELEMENTS = 1 << 28


def numpy_dtype(datatype: object, tensor: str) -> np.dtype:
    if not isinstance(datatype, str) or datatype not in TRITON_TO_NUMPY:
        raise GatewayError(Code.INVALID_ARGUMENT, f"tensor '{tensor}': unsupported datatype {datatype!r} "
                                                  f"(supported: {', '.join(TRITON_TO_NUMPY)})")
    return np.dtype(TRITON_TO_NUMPY[datatype])


def _shape(shape: object, tensor: str) -> list[int]:
    if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                         for d in shape):
        raise GatewayError(Code.INVALID_ARGUMENT, f"tensor '{tensor}': shape must be a list of sizes >= 0, "
                                                  f"not {shape!r}")
    if math.prod(shape) > MAX_ELEMENTS:
        raise GatewayError(Code.INVALID_ARGUMENT, f"tensor '{tensor}': shape {list(shape)} is too large")
    return list(shape)


def _from_bytes(raw: bytes, dtype: np.dtype, shape: list[int], tensor: str) -> np.ndarray:
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise GatewayError(Code.INVALID_ARGUMENT, f"tensor '{tensor}': expected {expected} bytes of data for shape "
                                                  f"{shape}, got {len(raw)}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


# --- HTTP ---------------------------------------------------------------------------------------


def parse_http(body: bytes, header_length: str | None) -> tuple[dict, dict[str, np.ndarray]]:
    """An HTTP infer body -> (its JSON header, inputs by name)."""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            n = -1
        if not 0 <= n <= len(body):
            raise GatewayError(Code.INVALID_ARGUMENT, f"{HEADER_LENGTH} {header_length!r} is not a length within "
                                                      f"the body ({len(body)} bytes)")
        head, binary = body[:n], body[n:]
    else:
        head, binary = body, b""
    try:
        request = json.loads(head)
    except (ValueError, UnicodeDecodeError) as e:
        raise GatewayError(Code.INTERNAL, f"failed to parse the request JSON buffer: {e}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise GatewayError(Code.INVALID_ARGUMENT, "the request JSON must be an object with an 'inputs' list")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for i, t in enumerate(request["inputs"]):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise GatewayError(Code.INVALID_ARGUMENT, f"input {i}: must be an object with a 'name'")
        name = t["name"]
        dtype = numpy_dtype(t.get("datatype"), name)
        shape = _shape(t.get("shape"), name)
        size = (t.get("parameters") or {}).get("binary_data_size") if isinstance(t.get("parameters"), dict) else None
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
                raise GatewayError(Code.INVALID_ARGUMENT, f"tensor '{name}': binary_data_size {size!r} exceeds the "
                                                          f"binary data sent ({len(binary) - offset} bytes left)")
            arr = _from_bytes(binary[offset:offset + size], dtype, shape, name)
            offset += size
        elif "data" in t:
            arr = _json_data(t["data"], dtype, name)
            if arr.size != math.prod(shape):
                raise GatewayError(Code.INTERNAL, f"Unable to parse 'data' of '{name}': shape {shape} does not match "
                                                  f"the {arr.size} values given")
            arr = arr.reshape(shape)
        else:
            raise GatewayError(Code.INVALID_ARGUMENT, f"tensor '{name}': no 'data' and no binary_data_size")
        if name in inputs:
            raise GatewayError(Code.INVALID_ARGUMENT, f"input '{name}' is given twice")
        inputs[name] = arr
    return request, inputs


def _json_data(data: object, dtype: np.dtype, tensor: str) -> np.ndarray:
    """A JSON `data` field as an array of `dtype`; numbers of another kind (a float where an
    integer is declared) do not parse, as in Triton."""
    try:
        values = np.asarray(data)
        if values.dtype == object or (dtype.kind in "iub" and values.size and values.dtype.kind not in "iub") \
                or (dtype.kind == "b" and values.size and values.dtype.kind != "b"):
            raise ValueError
        return values.astype(dtype)
    except (TypeError, ValueError, OverflowError):
        raise GatewayError(Code.INTERNAL, f"Unable to parse 'data' of '{tensor}': not a list of "
                                          f"{np.dtype(dtype).name} values") from None


def requested_outputs(request: dict) -> tuple[list[str] | None, set[str], dict[str, int]]:
    """(the outputs asked for, None: all; those to send as binary data; those asked as the top
    `classification` classes, with how many)."""
    outputs = request.get("outputs")
    if outputs is None:
        binary_all = bool((request.get("parameters") or {}).get("binary_data_output", False))
        return None, {"*"} if binary_all else set(), {}
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                for o in outputs):
        raise GatewayError(Code.INVALID_ARGUMENT, "'outputs' must be a list of objects with a 'name'")
    params = {o["name"]: o["parameters"] for o in outputs if isinstance(o.get("parameters"), dict)}
    binary = {name for name, p in params.items() if p.get("binary_data")}
    classes = {name: p["classification"] for name, p in params.items() if "classification" in p}
    return [o["name"] for o in outputs], binary, classes


def http_response(answer: Answer, request_id: object, binary: set[str]) -> tuple[bytes, dict[str, str]]:
    """The HTTP body and headers of an answer (binary extension for the outputs in `binary`)."""
    outputs, blobs = [], []
    for name, arr in answer.outputs.items():
        datatype = _datatype(arr)
        entry: dict = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if "*" in binary or name in binary:
            data = _raw(arr)
            entry["parameters"] = {"binary_data_size": len(data)}
            blobs.append(data)
        else:
            flat = arr.reshape(-1).tolist()
            entry["data"] = [b.decode() for b in flat] if datatype == "BYTES" else flat
        outputs.append(entry)
    head = {"model_name": answer.model, "model_version": "1", "outputs": outputs, "parameters": answer.parameters()}
    if request_id is not None:
        head["id"] = request_id
    text = json.dumps(head, separators=(",", ":")).encode()
    if not blobs:
        return text, {"Content-Type": "application/json"}
    return text + b"".join(blobs), {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(text))}


def _raw(arr: np.ndarray) -> bytes:
    """A tensor's raw contents: BYTES elements each after its 4-byte little-endian length."""
    if arr.dtype == object:
        return b"".join(len(b).to_bytes(4, "little") + b for b in arr.reshape(-1).tolist())
    return np.ascontiguousarray(arr).tobytes()


def _datatype(arr: np.ndarray) -> str:
    if arr.dtype == object:
        return "BYTES"
    for t, n in TRITON_TO_NUMPY.items():
        if arr.dtype == np.dtype(n):
            return t
    raise GatewayError(Code.INTERNAL, f"output of dtype {arr.dtype} has no KServe datatype")


# --- gRPC ---------------------------------------------------------------------------------------


def parse_grpc(request) -> dict[str, np.ndarray]:
    """A `ModelInferRequest`'s inputs by name (raw contents, or the typed contents field)."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise GatewayError(Code.INVALID_ARGUMENT, f"expected {len(request.inputs)} raw input contents, got {len(raw)}")
    inputs: dict[str, np.ndarray] = {}
    for i, t in enumerate(request.inputs):
        dtype = numpy_dtype(t.datatype, t.name)
        shape = _shape(list(t.shape), t.name)
        if raw:
            arr = _from_bytes(raw[i], dtype, shape, t.name)
        else:
            field = CONTENTS_FIELD.get(t.datatype, "")
            values = getattr(t.contents, field) if field else []
            if len(values) != math.prod(shape):
                raise GatewayError(Code.INVALID_ARGUMENT, f"tensor '{t.name}': {len(values)} values in contents for "
                                                          f"shape {shape}")
            arr = np.asarray(values, dtype=dtype).reshape(shape)
        if t.name in inputs:
            raise GatewayError(Code.INVALID_ARGUMENT, f"input '{t.name}' is given twice")
        inputs[t.name] = arr
    return inputs


def grpc_response(answer: Answer, request_id: str, service_pb2):
    """The `ModelInferResponse` of an answer (raw output contents, as Triton sends them)."""
    response = service_pb2.ModelInferResponse(model_name=answer.model, model_version="1", id=request_id)
    for name, arr in answer.outputs.items():
        out = response.outputs.add()
        out.name, out.datatype = name, _datatype(arr)
        out.shape.extend(arr.shape)
        response.raw_output_contents.append(_raw(arr))
    for key, value in answer.parameters().items():
        p = response.parameters[key]
        if isinstance(value, bool):
            p.bool_param = value
        elif isinstance(value, int):
            p.int64_param = value
        elif isinstance(value, float):
            p.double_param = value
        else:
            p.string_param = str(value)
    return response


def grpc_parameter(request, key: str) -> float | None:
    """A numeric request parameter (e.g. deadline_ms), or None when absent."""
    if key not in request.parameters:
        return None
    p = request.parameters[key]
    kind = p.WhichOneof("parameter_choice")
    if kind in ("int64_param", "double_param", "uint64_param"):
        return float(getattr(p, kind))
    if kind == "string_param":
        try:
            return float(p.string_param)
        except ValueError:
            pass
    raise GatewayError(Code.INVALID_ARGUMENT, f"parameter '{key}' must be a number")
