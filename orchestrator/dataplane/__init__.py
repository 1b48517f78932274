"""The data plane: what becomes of a request between the plan and a device, with no clock and no
I/O of its own, driven by the shim (threads, Triton) and the simulator (simulated clock)."""
