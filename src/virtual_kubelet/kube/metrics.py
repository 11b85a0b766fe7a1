"""Prometheus metrics of the `kube` layer: API requests, work queues and dropped Events.

They live here, not in the agent's `metrics` module, so that `kube/` depends on nothing above it.
They register in prometheus_client's default registry, which the agent's /metrics endpoint serves.
Every metric is prefixed `virtual_kubelet_`; labels never carry object names.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

API_REQUESTS = Counter(
    "virtual_kubelet_api_requests_total",
    "Requests to the Kubernetes API server, by client, verb and HTTP status code.",
    ["client", "verb", "code"],
)
API_REQUEST_SECONDS = Histogram(
    "virtual_kubelet_api_request_duration_seconds",
    "Latency of requests to the Kubernetes API server (watches excluded).",
    ["client", "verb"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
QUEUE_DEPTH = Gauge("virtual_kubelet_workqueue_depth", "Keys waiting in a work queue.", ["queue"])
QUEUE_ADDS = Counter(
    "virtual_kubelet_workqueue_adds_total", "Keys added to a work queue.", ["queue"]
)
QUEUE_RETRIES = Counter(
    "virtual_kubelet_workqueue_retries_total", "Keys re-queued after a failure.", ["queue"]
)
SYNC_SECONDS = Histogram(
    "virtual_kubelet_sync_duration_seconds",
    "Time to handle one key of a work queue.",
    ["queue", "result"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
EVENTS_DROPPED = Counter(
    "virtual_kubelet_events_dropped_total",
    "Kubernetes Events not sent: over --event-qps/--event-burst, or the API server lagged.",
)
