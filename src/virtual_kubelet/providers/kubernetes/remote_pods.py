"""The pods this node runs in the target cluster, kept by ONE list-and-watch of the target's pods
carrying our owner label (not a poll per pod), indexed by their source `namespace/name`.

Every change is pushed to the agent as the source pod's status. A remote pod that disappears
without us deleting it (evicted, deleted by hand in the target) is reported Failed, so its
controller in the source replaces it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ...sdk import Pod, PodCallback, rfc3339
from ...sdk.kube_api import CallbackHandler, KubeClient, Reflector, path
from .naming import OWNER_LABEL, SOURCE_NAME, SOURCE_NAMESPACE
from .rewrite import source_view

__all__ = ["RemotePods"]

log = logging.getLogger(__name__)


def source_key(remote: Pod) -> str:
    meta = remote["metadata"]
    annotations = meta.get("annotations") or {}
    namespace = annotations.get(SOURCE_NAMESPACE, meta["namespace"])
    return f"{namespace}/{annotations.get(SOURCE_NAME, meta['name'])}"


class RemotePods:
    """The target's pods owned by this node; `on_gone(source_key)` runs when one leaves."""

    def __init__(
        self, target: KubeClient, owner: str, host_ip: str, on_gone: Callable[[str], None]
    ) -> None:
        self._host_ip = host_ip
        self._on_gone = on_gone
        self._notify: PodCallback = lambda pod: None
        self._by_source: dict[str, Pod] = {}
        #: remote pod UID -> source key.
        self._by_uid: dict[str, str] = {}
        #: source keys we asked the target to delete (their disappearance is expected).
        self.deleting: set[str] = set()
        self._reflector = Reflector(
            target,
            path("v1", "pods"),
            name="target pods",
            label_selector=f"{OWNER_LABEL}={owner}",
            handler=CallbackHandler(
                on_add=self._seen, on_update=lambda _old, new: self._seen(new), on_delete=self._gone
            ),
        )
        self._task: asyncio.Task[None] | None = None

    @property
    def synced(self) -> asyncio.Event:
        return self._reflector.synced

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._reflector.run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def notify(self, callback: PodCallback) -> None:
        self._notify = callback

    def get(self, key: str) -> Pod | None:
        """The remote pod of source pod `key` (namespace/name), as the target has it."""
        return self._by_source.get(key)

    def view(self, key: str) -> Pod | None:
        """The source pod's view of it (source names, remote status)."""
        remote = self._by_source.get(key)
        return None if remote is None else source_view(remote, self._host_ip)

    def by_remote_uid(self, uid: str) -> Pod | None:
        """The source view of our remote pod with UID `uid` (for its Events), or None."""
        key = self._by_uid.get(uid)
        remote = self._by_source.get(key) if key is not None else None
        return None if remote is None else source_view(remote, self._host_ip)

    def view_of(self, remote: Pod) -> Pod:
        return source_view(remote, self._host_ip)

    def all(self) -> list[Pod]:
        return list(self._by_source.values())

    def _seen(self, remote: Pod) -> None:
        key = source_key(remote)
        self._by_source[key] = remote
        self._by_uid[str(remote["metadata"].get("uid"))] = key
        self._notify(source_view(remote, self._host_ip))

    def _gone(self, remote: Pod) -> None:
        key = source_key(remote)
        self._by_uid.pop(str(remote["metadata"].get("uid")), None)
        current = self._by_source.get(key)
        if current is not None and current["metadata"].get("uid") != remote["metadata"].get("uid"):
            return  # an older incarnation left; the current one stays
        self._by_source.pop(key, None)
        self._on_gone(key)
        if key in self.deleting:
            self.deleting.discard(key)
            # Our own deletion finished: tell the agent to look again (a pod without `status`
            # writes nothing), so the source pod goes now rather than at the end of its grace
            # period when the remote pod left after the agent's last look.
            gone = source_view(remote, self._host_ip)
            gone.pop("status", None)
            self._notify(gone)
            return
        view = source_view(remote, self._host_ip)
        log.warning("pod %s disappeared from the target cluster without being deleted by us", key)
        view["status"].update(_lost_status(view["status"]))
        self._notify(view)


def _lost_status(status: dict[str, Any]) -> dict[str, Any]:
    now = rfc3339()
    statuses = []
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        if "terminated" not in state:
            container = dict(container)
            container["ready"] = False
            container["state"] = {
                "terminated": {
                    "exitCode": 137,
                    "reason": "RemotePodDeleted",
                    "startedAt": (state.get("running") or {}).get("startedAt"),
                    "finishedAt": now,
                }
            }
        statuses.append(container)
    return {
        "phase": "Failed",
        "reason": "RemotePodDeleted",
        "message": "the pod was deleted from the target cluster by someone else",
        "containerStatuses": statuses,
    }
