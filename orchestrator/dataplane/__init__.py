"""The data plane: what becomes of a request between the plan and a device, with no clock and no
I/O of its own, driven by the shim (threads, Triton) and the simulator (simulated clock).

routes.py builds a plan's routes; routing.py picks one per request (on time by backlog.py);
route_state.py is one route's state (queue.py's queue, batching.py's policy, which decides what
to send and what to drop with latency.py's predictions, the batches in flight, calibration); config.py, status.py and transport.py are the vocabulary."""
