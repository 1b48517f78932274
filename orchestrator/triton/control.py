"""Model control on one Triton server through `tritonclient`: load with a config override, unload, inspect.

A load-time config override *replaces* the model's whole configuration, so the override is built
from the repository's own config (`config.pbtxt`, or `configs/<name>.pbtxt`), with only the
instance group, thread parameter and batching changed. Where the repository is not readable from
here (a remote server's own disk), the model is loaded once with its default config, which is then
read back from the server and used as the base. The override also asks Triton to warm the model
up (`model_warmup`: one request of random data, run before the model is marked ready), unless the
config has warmup samples of its own: a model's first inference after a load pays onnxruntime's
lazy set-up, and a standby model's first request is a burst's overflow (docs/control-plane.md).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format, text_format

from orchestrator.errors import UserError

# The header that carries the key of a server's restricted APIs (model control). Triton expects
# it as this name over HTTP and as `triton-grpc-protocol-<name>` in gRPC metadata (lower case).
CONTROL_KEY_HEADER = "orchestrator-control-key"
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"
# A remote Triton started with `--http-restricted-api=model-repository:orchestrator-control-key=K`
# (and the gRPC equivalent) is controlled with K taken from this variable (docs/deploy.md).
CONTROL_KEY_ENV = "ORCHESTRATOR_TRITON_KEY"

THREADS_PARAMETER = "intra_op_threads"  # read by our python-backend model.py
ORT_BACKEND_THREADS_PARAMETER = "intra_op_thread_count"  # read by Triton's onnxruntime backend


# a probe's own TCP connection (not the process-wide pool's, shared with the model-control calls),
# reconnecting within a second after a failure
PROBE_CHANNEL_ARGS = [("grpc.use_local_subchannel_pool", 1), ("grpc.initial_reconnect_backoff_ms", 100),
                      ("grpc.min_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000),
                      ("grpc.max_receive_message_length", 64 * 2**20)]


@dataclass(frozen=True)
class InstanceConfig:
    """How a variant is instantiated on a device."""

    kind: str = "cpu"  # cpu | gpu
    count: int = 1  # Triton instances
    threads: int = 1  # onnxruntime intra-op threads per instance
    gpus: tuple[int, ...] = ()  # GPU indices, for kind "gpu"
    max_batch_size: int | None = None  # cap below the repository's max_batch_size
    queue_delay_us: int | None = None  # Triton dynamic-batcher delay; None keeps the repository's
    config_name: str | None = None  # base config: configs/<name>.pbtxt (None: config.pbtxt)

    def __post_init__(self) -> None:
        if self.kind not in ("cpu", "gpu"):
            raise UserError(f"instance kind must be 'cpu' or 'gpu', not {self.kind!r}")
        if self.count < 1 or self.threads < 1:
            raise UserError(f"instance count and threads must be >= 1 (got {self.count} x {self.threads})")


def read_repository_config(model_repository: str | os.PathLike, model: str, config_name: str | None = None) -> dict:
    """The model's config from the repository as Triton's JSON form (model_config.proto field names)."""
    from tritonclient.grpc import model_config_pb2

    model_dir = Path(model_repository) / model
    path = model_dir / "configs" / f"{config_name}.pbtxt" if config_name else model_dir / "config.pbtxt"
    if config_name and not path.is_file():
        path = model_dir / "config.pbtxt"  # Triton's own fallback for --model-config-name
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"model {model!r}: no config at {path}") from None
    try:
        msg = text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as e:
        raise UserError(f"{path}: not a valid Triton model config ({e})") from None
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def apply_instance_config(base: dict, inst: InstanceConfig) -> dict:
    """A full model config: `base` with the instance group, threads and batching set from `inst`."""
    cfg = json.loads(json.dumps(base))  # deep copy
    group: dict = {"kind": "KIND_GPU" if inst.kind == "gpu" else "KIND_CPU", "count": inst.count}
    if inst.kind == "gpu" and inst.gpus:
        group["gpus"] = list(inst.gpus)
    cfg["instance_group"] = [group]
    params = cfg.setdefault("parameters", {})
    if cfg.get("backend") == "onnxruntime" or cfg.get("platform") == "onnxruntime_onnx":
        params[ORT_BACKEND_THREADS_PARAMETER] = {"string_value": str(inst.threads)}
    else:
        params[THREADS_PARAMETER] = {"string_value": str(inst.threads)}
    if inst.max_batch_size is not None:
        repo_max = int(cfg.get("max_batch_size", 0))
        if repo_max and inst.max_batch_size > repo_max:
            raise UserError(f"model {cfg.get('name')!r}: batch cap {inst.max_batch_size} exceeds the "
                            f"repository's max_batch_size {repo_max}")
        cfg["max_batch_size"] = inst.max_batch_size
    if inst.queue_delay_us is not None:
        cfg.setdefault("dynamic_batching", {})["max_queue_delay_microseconds"] = str(inst.queue_delay_us)
    if "model_warmup" not in cfg:
        warmup = warmup_sample(cfg)
        if warmup is not None:
            cfg["model_warmup"] = [warmup]
    return cfg


def warmup_sample(cfg: dict) -> dict | None:
    """One `model_warmup` sample for `cfg` (Triton's JSON form): a batch of 1 of random data for
    every input; None where an input's shape is not fixed (a dim of -1) or its type is not numeric."""
    inputs = {}
    for spec in cfg.get("input", []):
        dims = [str(d) for d in spec.get("dims", [])]
        data_type = spec.get("data_type", "")
        if not dims or any(int(d) < 1 for d in dims) or data_type in ("", "TYPE_STRING", "TYPE_INVALID"):
            return None
        inputs[spec["name"]] = {"data_type": data_type, "dims": dims, "random_data": True}
    if not inputs:
        return None
    return {"name": "orchestrator-warmup", "batch_size": 1, "inputs": inputs}


def one_line(message: str) -> str:
    """Triton's message without the python-backend traceback it may carry ("At: <stack>")."""
    head = message.split("\nAt:")[0]
    return " ".join(head.split())


def control_headers(control_key: str | None, protocol: str) -> dict[str, str]:
    """The header that opens a server's restricted APIs with `control_key`, for `protocol`."""
    if not control_key:
        return {}
    return {(GRPC_HEADER_PREFIX if protocol == "grpc" else "") + CONTROL_KEY_HEADER: control_key}


class Unreachable(UserError):
    """The server refused the connection or is not there (not merely slow)."""


class TimedOut(UserError):
    """The server did not answer within the call's timeout: hung, cut off, or only busy."""


def _is_timeout(e: BaseException) -> bool:
    """A transport's timeout (HTTP: a socket timeout, which is an OSError, or gevent's)."""
    return isinstance(e, TimeoutError) or "timeout" in type(e).__name__.lower()


class ModelControl:
    """Load/unload/inspect models on one Triton server (gRPC by default).

    Every call is bounded: a load or unload by `timeout_s`, anything else by `call_timeout_s`,
    `probe` by the timeout it is given; a server that does not answer in time is an error, never
    a wait without end. `control_key` goes with every call, as the header Triton checks on a
    server whose model-repository API is restricted (`--http-restricted-api` /
    `--grpc-restricted-protocol`; embedded servers always are).
    """

    def __init__(self, url: str, protocol: str = "grpc", model_repository: str | os.PathLike | None = None,
                 name: str | None = None, timeout_s: float = 120.0, control_key: str | None = None,
                 call_timeout_s: float = 10.0):
        if protocol not in ("grpc", "http"):
            raise UserError(f"protocol must be 'grpc' or 'http', not {protocol!r}")
        self.url = url
        self.protocol = protocol
        self.model_repository = Path(model_repository) if model_repository else None
        self.name = name or url
        self.timeout_s = timeout_s
        self.call_timeout_s = call_timeout_s
        self.headers = control_headers(control_key, protocol)
        if protocol == "grpc":
            import tritonclient.grpc as client_module
            self._client = client_module.InferenceServerClient(url=url)
        else:  # tritonclient.http has no per-call timeout: the client's own bounds every call
            import tritonclient.http as client_module
            self._client = client_module.InferenceServerClient(url=url, connection_timeout=call_timeout_s,
                                                               network_timeout=timeout_s)
        self._module = client_module
        self._errors = client_module.InferenceServerException
        # probes have clients of their own (HTTP: one per probe timeout; gRPC: one channel), made
        # anew after a failed probe, so that a channel that broke while the server hung does not
        # carry its reconnect backoff into the next probe (a Triton that answered again stayed down)
        self._probe_clients: dict[float, object] = {}

    def _call(self, what: str, fn, *args, timeout_s: float | None = None, **kwargs):
        timeout_s = timeout_s or self.call_timeout_s
        silence = f"{self.name}: {what} failed: Triton at {self.url} did not answer within {timeout_s:g} s"
        if self.protocol == "grpc":
            kwargs["client_timeout"] = timeout_s
        try:
            return fn(*args, headers=self.headers, **kwargs)
        except self._errors as e:
            message, status = one_line(e.message() or str(e)), str(e.status() or "")
            silent = "timed out" in message.lower() or "timeout occurred" in message.lower()
            if status == "StatusCode.UNAVAILABLE" and not silent:  # refused, reset: nobody there
                raise Unreachable(f"{self.name}: {what} failed: Triton at {self.url} does not answer ({message})") \
                    from None
            if status == "StatusCode.DEADLINE_EXCEEDED" or silent:  # a hung server or a cut link: silence
                raise TimedOut(silence) from None
            raise UserError(f"{self.name}: {what} failed: {message}") from None
        except Exception as e:  # HTTP: refused, reset, no route (OSError), or a timeout
            if _is_timeout(e):
                raise TimedOut(silence) from None
            if isinstance(e, (ConnectionError, OSError)):
                raise Unreachable(f"{self.name}: {what} failed: Triton at {self.url} does not answer ({e})") from None
            raise UserError(f"{self.name}: {what} failed: Triton at {self.url} does not answer ({e})") from None

    def _json(self, fn, *args, **kwargs):
        if self.protocol == "grpc":
            return fn(*args, as_json=True, **kwargs)
        return fn(*args, **kwargs)

    # -- health ----------------------------------------------------------------------------
    def is_live(self, timeout_s: float | None = None) -> bool:
        try:
            self.probe(timeout_s or self.call_timeout_s, index=False)
            return True
        except UserError:
            return False

    def probe(self, timeout_s: float, index: bool = True) -> list[dict]:
        """Liveness and (with `index`) the repository index, each call within `timeout_s`;
        `Unreachable` when the server is not there, `TimedOut` when it does not answer in time,
        UserError for any other failure (it says it is not live, the index fails).
        Over gRPC the probe has a channel of its own, made anew after a failed probe, with its own
        connection (PROBE_CHANNEL_ARGS): a channel that broke while the server hung keeps
        reconnecting with a growing backoff, and gRPC shares a process's connections to one
        address between channels, so without that the server answered again and still looked down.
        A channel that had answered before and finds nobody (a server restarted on the same port
        closed its connection: "Socket closed") is replaced and asked once more at once."""
        key = 0.0 if self.protocol == "grpc" else timeout_s
        for attempt in range(2):
            client = self._probe_clients.get(key)
            fresh = client is None
            if client is None:
                client = self._probe_clients[key] = (
                    self._module.InferenceServerClient(url=self.url, channel_args=PROBE_CHANNEL_ARGS)
                    if self.protocol == "grpc" else
                    self._module.InferenceServerClient(url=self.url, connection_timeout=timeout_s,
                                                       network_timeout=timeout_s))
            try:
                if not self._call("liveness probe", client.is_server_live, timeout_s=timeout_s):
                    raise UserError(f"{self.name}: Triton at {self.url} says it is not live")
                if not index:
                    return []
                idx = self._call("repository index", self._json, client.get_model_repository_index,
                                 timeout_s=timeout_s)
                return list(idx.get("models", [])) if isinstance(idx, dict) else list(idx)
            except UserError as e:
                if self._probe_clients.pop(key, None) is client:
                    try:
                        client.close()
                    except Exception:  # noqa: BLE001 - a broken channel may fail to close; it is dropped anyway
                        pass
                # a channel whose connection the server closed (it restarted on the same port) fails
                # its next call at once ("Socket closed"): asked once more on a new channel
                if fresh or attempt or not isinstance(e, Unreachable):
                    raise
        raise AssertionError("probe: the second attempt neither returned nor raised")

    def server_version(self) -> str:
        meta = self._call("server metadata", self._json, self._client.get_server_metadata)
        return str(meta.get("version", ""))

    # -- model control ---------------------------------------------------------------------
    def base_config(self, model: str, config_name: str | None = None) -> dict:
        if self.model_repository is not None and (self.model_repository / model).is_dir():
            return read_repository_config(self.model_repository, model, config_name)
        if not self.is_model_ready(model):
            self._call(f"load of {model!r}", self._client.load_model, model, timeout_s=self.timeout_s)
        return self.model_config(model)

    def load(self, model: str, inst: InstanceConfig | None = None) -> dict:
        """Load (or reload) `model` with `inst`; returns the config Triton now runs."""
        if inst is None:
            self._call(f"load of {model!r}", self._client.load_model, model, timeout_s=self.timeout_s)
        else:
            config = apply_instance_config(self.base_config(model, inst.config_name), inst)
            self._call(f"load of {model!r}", self._client.load_model, model, config=json.dumps(config),
                       timeout_s=self.timeout_s)
        return self.model_config(model)

    def unload(self, model: str, wait_s: float = 30.0) -> None:
        """Unload `model`; Triton unloads in the background, so wait (up to `wait_s`) until it is gone."""
        self._call(f"unload of {model!r}", self._client.unload_model, model, timeout_s=self.timeout_s)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            state = next((m.get("state") for m in self.index() if m.get("name") == model), None)
            if state not in ("READY", "UNLOADING"):
                return
            time.sleep(0.05)
        raise UserError(f"{self.name}: unload of {model!r} did not finish within {wait_s:.0f} s")

    def index(self) -> list[dict]:
        """The repository index: every model the server knows, with its state and reason."""
        idx = self._call("repository index", self._json, self._client.get_model_repository_index)
        return list(idx.get("models", [])) if isinstance(idx, dict) else list(idx)

    def loaded(self) -> dict[str, str]:
        """Models that are loaded and ready, with their version."""
        return {m["name"]: m.get("version", "") for m in self.index() if m.get("state") == "READY"}

    def is_model_ready(self, model: str) -> bool:
        try:
            return bool(self._call(f"readiness of {model!r}", self._client.is_model_ready, model))
        except UserError:
            return False

    def model_config(self, model: str) -> dict:
        cfg = self._call(f"config of {model!r}", self._json, self._client.get_model_config, model)
        return cfg.get("config", cfg)

    def statistics(self, model: str = "", timeout_s: float | None = None) -> dict:
        """Triton's inference statistics of `model` (every model when empty)."""
        return self._call("statistics", self._json, self._client.get_inference_statistics, model, timeout_s=timeout_s)

    def close(self) -> None:
        self._client.close()
        for client in self._probe_clients.values():
            client.close()
