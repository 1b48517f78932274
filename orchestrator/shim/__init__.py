"""The client shim an application embeds: weighted routing, deadline-aware batching, telemetry.

`Client` (client.py) is the entry point; docs/shim.md describes the layers.
"""

from orchestrator.dataplane.status import Status
from orchestrator.shim.client import Client, Result, ShimConfig

__all__ = ["Client", "Result", "ShimConfig", "Status"]
