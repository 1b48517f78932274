"""A Triton server that runs elsewhere (Docker, Kubernetes, another host): attach by URL."""

from __future__ import annotations

import os
import time
from urllib.parse import urlparse

from orchestrator.errors import UserError
from orchestrator.triton.control import CONTROL_KEY_ENV, ModelControl


class RemoteServer:
    """Attach to `http://host:port` or `grpc://host:port`; the other protocol's port is not assumed."""

    def __init__(self, url: str, name: str = "remote", connect_timeout_s: float = 10.0):
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "grpc") or not parsed.hostname or not parsed.port:
            raise UserError(f"{name}: Triton URL must look like http://host:port or grpc://host:port, not {url!r}")
        self.name = name
        self.url = url
        self.protocol = parsed.scheme
        self.address = f"{parsed.hostname}:{parsed.port}"
        self.connect_timeout_s = connect_timeout_s

    @property
    def grpc_url(self) -> str | None:
        return self.address if self.protocol == "grpc" else None

    @property
    def http_url(self) -> str | None:
        return self.address if self.protocol == "http" else None

    @property
    def control_key(self) -> str | None:
        """The key of the server's restricted model-control API: $ORCHESTRATOR_TRITON_KEY, if set."""
        return os.environ.get(CONTROL_KEY_ENV) or None

    def control(self, model_repository=None, timeout_s: float = 120.0) -> ModelControl:
        return ModelControl(self.address, protocol=self.protocol, model_repository=model_repository, name=self.name,
                            control_key=self.control_key, timeout_s=timeout_s)

    def start(self) -> "RemoteServer":
        """Wait until the server answers as live; a clear error names the device and URL if it never does."""
        ctl = self.control()
        deadline = time.monotonic() + self.connect_timeout_s
        try:
            while time.monotonic() < deadline:
                if ctl.is_live():
                    return self
                time.sleep(0.2)
        finally:
            ctl.close()
        raise UserError(f"{self.name}: Triton at {self.url} does not answer (waited {self.connect_timeout_s:.0f} s)")

    def stop(self) -> None:
        """Nothing to stop: the server is not ours."""

    def is_running(self) -> bool:
        ctl = self.control()
        try:
            return ctl.is_live()
        finally:
            ctl.close()

    def __repr__(self) -> str:
        return f"RemoteServer({self.name!r}, {self.url})"
