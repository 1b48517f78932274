"""The data plane: what becomes of a request between the plan and a device, with no clock and no
I/O of its own, driven by the shim (threads, Triton) and the simulator (simulated clock).

routes.py builds a plan's routes; routing.py picks one per request (on time by backlog.py);
queue.py holds a route's waiting requests; batching.py decides what to send and what to drop
(with latency.py's predictions); config.py, status.py and transport.py are the vocabulary."""
