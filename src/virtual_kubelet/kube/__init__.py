"""Talking to the Kubernetes API server: configuration, client, reflector, work queue, events.

No business logic lives here; `node/` and `pods/` build on it.
"""
