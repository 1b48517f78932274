"""`Result`: the answer to one request, whatever became of it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from orchestrator.dataplane.status import Status


@dataclass(frozen=True)
class Result:
    """The answer to one request."""

    status: Status  # ok | late | dropped (outputs None) | error | unserved (no route)
    outputs: dict[str, np.ndarray] | None  # per output name, one sample (batch dim kept if the input had one)
    variant: str  # the variant that served it (or would have)
    device_id: str
    latency_ms: float  # from infer() to the answer
    error: str = ""
    request_id: int = 0
    plan_version: int = 0
    batch_size: int = 0  # the batch it was served in (0: not served)
    service_ms: float = 0.0  # that batch's time at Triton, sending to answer (what a profile measures)

    @property
    def deadline_met(self) -> bool:
        return self.status is Status.OK

    @property
    def output(self) -> np.ndarray:
        """The only output of a single-output model."""
        if not self.outputs:
            raise ValueError(f"request {self.request_id} has no outputs ({self.status}: {self.error})")
        if len(self.outputs) != 1:
            raise ValueError(f"the model has outputs {sorted(self.outputs)}: use .outputs[name]")
        return next(iter(self.outputs.values()))
