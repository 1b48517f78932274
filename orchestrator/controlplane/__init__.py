"""The control plane: REST API, web UI, controller loop, plan executor and persistence.

`ControlPlane` (service.py) holds the state and the operations; `create_app` (app.py) puts the
REST API and the dashboard in front of it; `Controller` (controller.py) re-plans from telemetry.
"""
