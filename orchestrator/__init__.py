"""Accuracy-scaling orchestrator for NVIDIA Triton Inference Server."""

from orchestrator import native as _native

_native.select()  # the mypyc build of the per-request modules, where it is current
