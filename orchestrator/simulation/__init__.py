"""The discrete-event simulator's parts (orchestrator/simulator.py is its entry point):
`events.py` the event engine, `devices.py` the model of the hardware, `driver.py` one run over
the data plane's routes, `control.py` the controller's port on the simulated clock."""
