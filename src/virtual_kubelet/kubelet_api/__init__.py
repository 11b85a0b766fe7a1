"""The kubelet HTTPS API: logs, exec, attach, port-forward, stats, metrics."""
