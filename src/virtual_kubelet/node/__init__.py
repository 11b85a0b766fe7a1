"""The Node object of this virtual kubelet: registration, status and the heartbeat Lease."""
