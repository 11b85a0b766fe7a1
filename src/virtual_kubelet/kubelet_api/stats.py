"""`/metrics/resource` from a stats summary: the kubelet's resource metrics, in Prometheus text.

metrics-server (and so `kubectl top`) reads exactly these names and labels, and drops a pod whose
container reports 0 CPU or 0 memory; live containers are therefore never reported below 1 ns of CPU
or 1 byte of memory. Samples carry the timestamps of the stats they come from.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..kube.timefmt import parse

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _ts(stats: dict[str, Any] | None) -> float | None:
    when = (stats or {}).get("time")
    return parse(when).timestamp() if when else None


def _cpu_seconds(cpu: dict[str, Any] | None) -> float:
    return max(1, int((cpu or {}).get("usageCoreNanoSeconds") or 0)) / 1e9


def _memory(memory: dict[str, Any] | None) -> float:
    return float(max(1, int((memory or {}).get("workingSetBytes") or 0)))


class _SummaryCollector(Collector):
    def __init__(self, summary: dict[str, Any]) -> None:
        self.summary = summary

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        node = self.summary.get("node", {})
        node_cpu = CounterMetricFamily(
            "node_cpu_usage_seconds", "Cumulative cpu time consumed by the node in core-seconds"
        )
        node_memory = GaugeMetricFamily(
            "node_memory_working_set_bytes", "Current working set of the node in bytes"
        )
        if node.get("cpu"):
            node_cpu.add_metric([], _cpu_seconds(node["cpu"]), timestamp=_ts(node["cpu"]))
        if node.get("memory"):
            node_memory.add_metric([], _memory(node["memory"]), timestamp=_ts(node["memory"]))
        labels = ["container", "pod", "namespace"]
        container_cpu = CounterMetricFamily(
            "container_cpu_usage_seconds",
            "Cumulative cpu time consumed by the container in core-seconds",
            labels=labels,
        )
        container_memory = GaugeMetricFamily(
            "container_memory_working_set_bytes",
            "Current working set of the container in bytes",
            labels=labels,
        )
        container_start = GaugeMetricFamily(
            "container_start_time_seconds",
            "Start time of the container since unix epoch in seconds",
            labels=labels,
        )
        pod_cpu = CounterMetricFamily(
            "pod_cpu_usage_seconds",
            "Cumulative cpu time consumed by the pod in core-seconds",
            labels=["pod", "namespace"],
        )
        pod_memory = GaugeMetricFamily(
            "pod_memory_working_set_bytes",
            "Current working set of the pod in bytes",
            labels=["pod", "namespace"],
        )
        for pod in self.summary.get("pods", []):
            ref = pod.get("podRef", {})
            name, namespace = ref.get("name", ""), ref.get("namespace", "")
            for c in pod.get("containers", []):
                values = [c.get("name", ""), name, namespace]
                container_cpu.add_metric(
                    values, _cpu_seconds(c.get("cpu")), timestamp=_ts(c.get("cpu"))
                )
                container_memory.add_metric(
                    values, _memory(c.get("memory")), timestamp=_ts(c.get("memory"))
                )
                if c.get("startTime"):
                    container_start.add_metric(values, parse(c["startTime"]).timestamp())
            if pod.get("cpu"):
                pod_cpu.add_metric(
                    [name, namespace], _cpu_seconds(pod["cpu"]), timestamp=_ts(pod["cpu"])
                )
            if pod.get("memory"):
                pod_memory.add_metric(
                    [name, namespace], _memory(pod["memory"]), timestamp=_ts(pod["memory"])
                )
        scrape_error = GaugeMetricFamily(
            "resource_scrape_error",
            "1 if there was an error while getting container metrics, 0 otherwise",
        )
        scrape_error.add_metric([], 0)
        yield from (
            node_cpu,
            node_memory,
            container_cpu,
            container_memory,
            container_start,
            pod_cpu,
            pod_memory,
            scrape_error,
        )


def resource_metrics(summary: dict[str, Any]) -> bytes:
    """Prometheus text of the kubelet's `/metrics/resource` for a stats/v1alpha1 summary."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SummaryCollector(summary))
    return generate_latest(registry)


def error_metrics() -> bytes:
    """What `/metrics/resource` says when the provider's stats failed."""
    registry = CollectorRegistry(auto_describe=False)

    class _Error(Collector):
        def collect(self) -> Iterator[GaugeMetricFamily]:
            family = GaugeMetricFamily(
                "resource_scrape_error",
                "1 if there was an error while getting container metrics, 0 otherwise",
            )
            family.add_metric([], 1)
            yield family

    registry.register(_Error())
    return generate_latest(registry)
