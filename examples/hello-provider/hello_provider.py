"""A complete virtual-kubelet provider in about fifty lines: pods "run" as records in memory.

Install it (`pip install -e examples/hello-provider`) and run
`virtual-kubelet --provider hello --nodename hello-node`. See docs/providers.md.
"""

from __future__ import annotations

import copy
import datetime

from virtual_kubelet.sdk import NotFound, Pod, PodCallback, Provider


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class HelloProvider(Provider):
    description = "Tutorial provider: every pod runs at once, in memory."

    def __init__(self, context):  # type: ignore[no-untyped-def]
        super().__init__(context)
        self.pods: dict[str, Pod] = {}
        self.notify: PodCallback = lambda pod: None

    def notify_pods(self, callback: PodCallback) -> None:
        self.notify = callback  # push mode: we report status changes ourselves

    async def create_pod(self, pod: Pod) -> None:
        pod = copy.deepcopy(pod)
        started = _now()
        pod["status"] = {
            "phase": "Running",
            "startTime": started,
            "podIP": self.context.internal_ip,  # the pods "run" on the node: they have its address
            "conditions": [
                {"type": t, "status": "True"} for t in ("Initialized", "Ready", "ContainersReady")
            ],
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": "",
                    "ready": True,
                    "restartCount": 0,
                    "started": True,
                    "state": {"running": {"startedAt": started}},
                }
                for c in pod["spec"]["containers"]
            ],
        }
        self.pods[_key(pod)] = pod
        self.notify(pod)

    async def update_pod(self, pod: Pod) -> None:
        self.pods[_key(pod)]["spec"] = copy.deepcopy(pod["spec"])

    async def delete_pod(self, pod: Pod) -> None:
        if self.pods.pop(_key(pod), None) is None:
            raise NotFound(_key(pod))

    async def get_pod(self, namespace: str, name: str) -> Pod | None:
        return copy.deepcopy(self.pods.get(f"{namespace}/{name}"))

    async def list_pods(self) -> list[Pod]:
        return [copy.deepcopy(p) for p in self.pods.values()]

    async def configure_node(self, node: dict) -> None:  # type: ignore[type-arg]
        node["status"]["capacity"] = node["status"]["allocatable"] = {
            "cpu": "4",
            "memory": "8Gi",
            "pods": "50",
        }


def _key(pod: Pod) -> str:
    return f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
