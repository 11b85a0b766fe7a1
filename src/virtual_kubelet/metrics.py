"""The agent's own Prometheus metrics, defined in one place so names stay consistent.

Every metric is prefixed `virtual_kubelet_`. Labels never carry pod names (unbounded cardinality).
The API client's, work queues' and event recorder's metrics live in `kube/metrics.py` (the `kube`
layer must not import the agent); both register in the default registry the agent serves.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .errors import NotFound

PROVIDER_CALLS = Counter(
    "virtual_kubelet_provider_calls_total",
    "Calls into the provider, by method and result (ok, not_found, timeout, error).",
    ["method", "result"],
)
PROVIDER_CALL_DURATION = Histogram(
    "virtual_kubelet_provider_call_duration_seconds",
    "How long calls into the provider took, by method; failed and timed-out calls included.",
    ["method"],
    # From a local process's fork to a cloud API's slow create, up to the 60 s call timeout.
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
LEASE_RENEWAL_AGE = Gauge(
    "virtual_kubelet_lease_renewal_age_seconds",
    "Seconds since the node Lease was last renewed successfully.",
)
LEASE_RENEWALS = Counter(
    "virtual_kubelet_lease_renewals_total", "Lease renewal attempts, by result.", ["result"]
)
LEADER = Gauge(
    "virtual_kubelet_leader",
    "1 while this agent leads its node (always 1 without --leader-elect), 0 while standing by.",
)
KUBELET_API_CONNECTIONS = Gauge(
    "virtual_kubelet_kubelet_api_connections", "Open connections to the kubelet API port."
)
KUBELET_API_REQUESTS = Counter(
    "virtual_kubelet_kubelet_api_requests_total",
    "Requests to the kubelet API, by route kind and HTTP status.",
    ["route", "code"],
)
GC_PAUSE_SECONDS = Histogram(
    "virtual_kubelet_gc_pause_seconds",
    "Time the event loop stood still in Python's cyclic garbage collector, by generation.",
    ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)


@contextlib.contextmanager
def provider_call(method: str) -> Iterator[None]:
    """Count one call into the provider by its result and time it: `not_found` for NotFound,
    `timeout` for TimeoutError, `error` for any other exception, else `ok`. A cancelled call
    (the agent stopping, a client hanging up) did not finish and is not recorded."""
    started = time.perf_counter()
    result: str | None = None
    try:
        yield
        result = "ok"
    except NotFound:
        result = "not_found"
        raise
    except TimeoutError:
        result = "timeout"
        raise
    except Exception:
        result = "error"
        raise
    finally:
        if result is not None:
            PROVIDER_CALLS.labels(method, result).inc()
            PROVIDER_CALL_DURATION.labels(method).observe(time.perf_counter() - started)


def watch_gc_pauses() -> None:
    """Time every garbage collection (idempotent): with thousands of cached pods a full
    collection walks every object, and that pause delays every pod sync behind it."""
    if _gc_timer in gc.callbacks:
        return
    gc.callbacks.append(_gc_timer)


_gc_started = 0.0


def _gc_timer(phase: str, info: dict[str, int]) -> None:
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
    elif _gc_started:
        GC_PAUSE_SECONDS.labels(str(info.get("generation", "?"))).observe(
            time.perf_counter() - _gc_started
        )


class _PodsByPhase(Collector):
    """`virtual_kubelet_pods{phase}`, counted from the pod cache when scraped (always current,
    nothing to keep in step)."""

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[str | None]] = lambda: ()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "virtual_kubelet_pods",
            "Pods bound to this node, by phase as the API server has them.",
            labels=["phase"],
        )
        phases = Tally(phase or "Pending" for phase in self.source())
        for phase in ("Pending", "Running", "Succeeded", "Failed", "Unknown"):
            family.add_metric([phase], phases.pop(phase, 0))
        for phase, count in sorted(phases.items()):
            family.add_metric([phase], count)
        yield family


_PODS = _PodsByPhase()
REGISTRY.register(_PODS)


def count_pods_from(source: Callable[[], Iterable[str | None]]) -> None:
    """Where `virtual_kubelet_pods` counts pods: `status.phase` of each pod in the agent's pod
    cache (None: no phase yet, counted as Pending)."""
    _PODS.source = source
