"""Materialise a pod's configMap, secret, downwardAPI, projected and emptyDir volumes as files.

Each volume becomes `<pods_dir>/<pod uid>/volumes/<volume name>/`, laid out and updated the way the
kubelet's atomic writer does it, so a provider that wants plain files (e.g. one running local
processes) can hand the directory to its workload and readers never see a half-updated volume.

`PodVolumes` plans each volume's files (`payloads`, `tokens`) and writes them (`atomic_writer`).
This package must not talk to the API server itself (the caller supplies objects and tokens through
`VolumeSources`), must not handle volume types that need a provider (hostPath, PVCs, CSI, ...), and
must never put secret or token values into messages, events, logs or exceptions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic_writer import File, Payload, atomic_write, ensure_dir, remove_tree
from .payloads import (
    DEFAULT_MODE,
    as_dict,
    clean_payload,
    downward_files,
    file_mode,
    is_plain_name,
    key_files,
    namespace_of,
    pod_uid,
    volumes_of,
)
from .sources import ServiceAccountToken, VolumeError, VolumeEvent, VolumeSources
from .tokens import TokenCache

__all__ = [
    "MaterialiseResult",
    "PodVolumes",
    "ServiceAccountToken",
    "VolumeError",
    "VolumeEvent",
    "VolumeSources",
]

log = logging.getLogger(__name__)

EMPTY_DIR_MODE = 0o777
PODS_DIR_MODE = 0o700
POD_DIR_MODE = 0o750

_UNSUPPORTED_PROJECTIONS = ("clusterTrustBundle", "podCertificate")


@dataclass
class MaterialiseResult:
    events: list[VolumeEvent]
    #: `time.time()` at which service-account tokens must be refreshed (call `materialise` again).
    refresh_at: float | None
    #: Whether any file content changed on disk.
    changed: bool


class PodVolumes:
    """Writes and refreshes the file-backed volumes of pods under `pods_dir`.

    Not safe to call concurrently for the same pod; different pods are independent.
    """

    def __init__(
        self,
        pods_dir: Path,
        sources: VolumeSources,
        *,
        node_allocatable: dict[str, str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pods_dir = Path(pods_dir)
        self.sources = sources
        self.node_allocatable = dict(node_allocatable)
        self._tokens = TokenCache(sources, clock)
        #: pod uid -> projected volumes already warned about (unsupported projections)
        self._warned: dict[str, set[str]] = {}

    def pod_dir(self, pod_uid: str) -> Path:
        if not is_plain_name(pod_uid):
            raise ValueError(f"invalid pod uid {pod_uid!r}")
        return self.pods_dir / pod_uid

    async def remove(self, pod_uid: str) -> None:
        """Delete everything materialised for the pod (no error if there is nothing).

        In a thread: an emptyDir holds whatever the workload wrote, and on a disk-backed volumes
        directory deleting it can take long enough to stall every other pod."""
        pod_dir = self.pod_dir(pod_uid)
        self._tokens.forget(pod_uid)
        self._warned.pop(pod_uid, None)
        await asyncio.to_thread(remove_tree, pod_dir)

    def references(self, pod: dict[str, Any]) -> set[tuple[str, str, str]]:
        """The ConfigMaps and Secrets the pod's volumes read: {(kind, namespace, name)}."""
        namespace = namespace_of(pod)
        refs: set[tuple[str, str, str]] = set()
        for volume in volumes_of(pod):
            cm = as_dict(volume.get("configMap"))
            secret = as_dict(volume.get("secret"))
            if cm is not None and cm.get("name"):
                refs.add(("ConfigMap", namespace, cm["name"]))
            if secret is not None and secret.get("secretName"):
                refs.add(("Secret", namespace, secret["secretName"]))
            projected = as_dict(volume.get("projected"))
            for source in (projected or {}).get("sources") or []:
                cm = as_dict(source.get("configMap"))
                secret = as_dict(source.get("secret"))
                if cm is not None and cm.get("name"):
                    refs.add(("ConfigMap", namespace, cm["name"]))
                if secret is not None and secret.get("name"):
                    refs.add(("Secret", namespace, secret["name"]))
        return refs

    async def materialise(self, pod: dict[str, Any]) -> MaterialiseResult:
        """(Re)write every supported volume of `pod`; unchanged volumes are left alone.

        All contents are gathered before anything is written, so a `VolumeError` leaves the
        volumes on disk as they were.
        """
        uid = pod_uid(pod)
        pod_dir = self.pod_dir(uid)
        already_warned = self._warned.setdefault(uid, set())
        events: list[VolumeEvent] = []
        warned: set[str] = set()
        refresh: list[float] = []
        plans: list[tuple[str, Payload | None]] = []  # None: an emptyDir
        namespace = namespace_of(pod)
        for volume in volumes_of(pod):
            name = volume.get("name")
            if not isinstance(name, str) or not is_plain_name(name) or name.startswith(".."):
                raise VolumeError("InvalidPath", f"invalid volume name {name!r}")
            try:
                if as_dict(volume.get("emptyDir")) is not None:
                    plans.append((name, None))
                elif (source := as_dict(volume.get("configMap"))) is not None:
                    mode = file_mode(source.get("defaultMode"), DEFAULT_MODE)
                    files = key_files(
                        self.sources, "ConfigMap", namespace, source.get("name") or "", source, mode
                    )
                    plans.append((name, clean_payload(files)))
                elif (source := as_dict(volume.get("secret"))) is not None:
                    mode = file_mode(source.get("defaultMode"), DEFAULT_MODE)
                    secret = source.get("secretName") or ""
                    files = key_files(self.sources, "Secret", namespace, secret, source, mode)
                    plans.append((name, clean_payload(files)))
                elif (source := as_dict(volume.get("downwardAPI"))) is not None:
                    mode = file_mode(source.get("defaultMode"), DEFAULT_MODE)
                    files = downward_files(
                        pod, source.get("items") or [], mode, self.node_allocatable
                    )
                    plans.append((name, clean_payload(files)))
                elif (source := as_dict(volume.get("projected"))) is not None:
                    payload = await self._projected_volume(
                        pod, name, source, already_warned, events, warned, refresh
                    )
                    plans.append((name, payload))
            except VolumeError as err:
                raise VolumeError(
                    err.reason, f'MountVolume.SetUp failed for volume "{name}" : {err.message}'
                ) from err

        # Written inline: on the memory-backed volumes directory the agent uses by default this
        # is microseconds per file, cheaper than handing it to a thread.
        changed = self._write_plans(uid, pod_dir, plans) if plans else False
        already_warned |= warned
        return MaterialiseResult(
            events=events, refresh_at=min(refresh) if refresh else None, changed=changed
        )

    def _write_plans(
        self, uid: str, pod_dir: Path, plans: list[tuple[str, Payload | None]]
    ) -> bool:
        changed = False
        ensure_dir(self.pods_dir, PODS_DIR_MODE, parents=True)
        ensure_dir(pod_dir, POD_DIR_MODE)
        ensure_dir(pod_dir / "volumes", POD_DIR_MODE)
        for name, files in plans:
            target = pod_dir / "volumes" / name
            if files is None:
                ensure_dir(target, EMPTY_DIR_MODE)
            elif atomic_write(target, files):
                log.debug("pod %s: wrote volume %s", uid, name)
                changed = True
        return changed

    async def _projected_volume(
        self,
        pod: dict[str, Any],
        volume: str,
        source: dict[str, Any],
        skip_warning: set[str],
        events: list[VolumeEvent],
        warned: set[str],
        refresh: list[float],
    ) -> Payload:
        mode = file_mode(source.get("defaultMode"), DEFAULT_MODE)
        namespace = namespace_of(pod)
        payload: Payload = {}
        for projection in source.get("sources") or []:
            # Later sources win on equal paths, as in the kubelet's merged payload.
            if (cm := as_dict(projection.get("configMap"))) is not None:
                files = key_files(
                    self.sources, "ConfigMap", namespace, cm.get("name") or "", cm, mode
                )
                payload.update(clean_payload(files))
            elif (secret := as_dict(projection.get("secret"))) is not None:
                name = secret.get("name") or ""
                files = key_files(self.sources, "Secret", namespace, name, secret, mode)
                payload.update(clean_payload(files))
            elif (downward := as_dict(projection.get("downwardAPI"))) is not None:
                items = downward.get("items") or []
                payload.update(
                    clean_payload(downward_files(pod, items, mode, self.node_allocatable))
                )
            elif (token_source := as_dict(projection.get("serviceAccountToken"))) is not None:
                path, token = await self._tokens.token(pod, volume, token_source, events, refresh)
                # Without fsGroup/fsUser support (we do not chown) the kubelet uses defaultMode.
                payload.update(clean_payload({path: File(token.encode(), mode)}))
            else:
                kind = next(iter(projection), "unknown")
                if volume not in skip_warning and volume not in warned:
                    warned.add(volume)
                    what = kind if kind in _UNSUPPORTED_PROJECTIONS else f"{kind!r}"
                    events.append(
                        VolumeEvent(
                            "Warning",
                            "FailedMount",
                            f'volume "{volume}": {what} projections are not supported by '
                            "virtual-kubelet; that part of the volume is left out",
                        )
                    )
        return clean_payload(payload)
