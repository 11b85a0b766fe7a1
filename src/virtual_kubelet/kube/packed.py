"""API objects packed small for caches that hold many of them for long (`PackedStore`).

A pod parsed from JSON is ~200 dicts, lists and strings: ~15-20 KB of Python objects for ~2.5 KB
of JSON. Held for every pod of a big node, that is most of the agent's memory (issue 18). Packed,
it is its JSON (orjson) deflated with a preset dictionary, a pod of the API server's shape written
out once (`POD_PRESET`): what every pod repeats (field names, defaulted values, the
kube-api-access volume, the standard conditions) then costs a few bytes, and a held pod ~150-400
bytes. Packing is ~10 µs, unpacking ~20 µs; a store unpacks on every read and never keeps the
decoded object, so readers get a private copy each time.

Raw deflate with a 4 KB window, so that the primed compressor is cheap to copy for each object; a
larger object still packs, with less benefit from the preset.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, MutableMapping, ValuesView
from typing import Any, Generic, TypeVar

import orjson

from .objects import Obj

__all__ = ["POD_PRESET", "PackedStore", "Packer"]

T = TypeVar("T")

_WBITS = -12  # raw deflate (no header or checksum), 4 KB window
_LEVEL = 1
_MEMORY_LEVEL = 6  # a 16 KB hash table: enough for a 4 KB window, and quick to copy


def _preset_pod() -> Obj:
    """A pod as the API server returns it (defaults filled in, status written by a kubelet)."""
    stamp = "2026-01-01T00:00:00Z"
    conditions = [
        {"type": kind, "status": "True", "lastProbeTime": None, "lastTransitionTime": stamp}
        for kind in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady")
    ]
    conditions.append(
        {
            "type": "PodScheduled",
            "status": "True",
            "lastProbeTime": None,
            "lastTransitionTime": stamp,
        }
    )
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": "app-7d4b9c8f6d-x2x9z",
            "generateName": "app-7d4b9c8f6d-",
            "namespace": "default",
            "uid": "00000000-0000-0000-0000-000000000000",
            "resourceVersion": "1",
            "generation": 1,
            "creationTimestamp": stamp,
            "deletionTimestamp": stamp,
            "deletionGracePeriodSeconds": 30,
            "labels": {"app": "app", "pod-template-hash": "7d4b9c8f6d"},
            "annotations": {"virtual-kubelet.io/spec-hash": "0000000000000000"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "app-7d4b9c8f6d",
                    "uid": "00000000-0000-0000-0000-000000000000",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "volumes": [
                {
                    "name": "kube-api-access-xxxxx",
                    "projected": {
                        "sources": [
                            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                            {
                                "configMap": {
                                    "name": "kube-root-ca.crt",
                                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                                }
                            },
                            {
                                "downwardAPI": {
                                    "items": [
                                        {
                                            "path": "namespace",
                                            "fieldRef": {
                                                "apiVersion": "v1",
                                                "fieldPath": "metadata.namespace",
                                            },
                                        }
                                    ]
                                }
                            },
                        ],
                        "defaultMode": 420,
                    },
                }
            ],
            "containers": [
                {
                    "name": "main",
                    "image": "registry.example/app:1",
                    "env": [{"name": "NAME", "value": "value"}],
                    "resources": {},
                    "volumeMounts": [
                        {
                            "name": "kube-api-access-xxxxx",
                            "readOnly": True,
                            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                        }
                    ],
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "imagePullPolicy": "IfNotPresent",
                }
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "serviceAccount": "default",
            "nodeName": "virtual-kubelet",
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {
                    "key": "virtual-kubelet.io/provider",
                    "operator": "Exists",
                    "effect": "NoSchedule",
                },
                {
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
                {
                    "key": "node.kubernetes.io/unreachable",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
            ],
            "priority": 0,
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
        },
        "status": {
            "phase": "Running",
            "conditions": conditions,
            "hostIP": "10.0.0.1",
            "hostIPs": [{"ip": "10.0.0.1"}],
            "podIP": "10.244.0.1",
            "podIPs": [{"ip": "10.244.0.1"}],
            "startTime": stamp,
            "containerStatuses": [
                {
                    "name": "main",
                    "state": {"running": {"startedAt": stamp}},
                    "lastState": {},
                    "ready": True,
                    "restartCount": 0,
                    "image": "registry.example/app:1",
                    "imageID": "registry.example/app@sha256:",
                    "containerID": "containerd://",
                    "started": True,
                }
            ],
            "qosClass": "BestEffort",
        },
    }


#: What the packer is primed with: every pod it packs shares this text.
POD_PRESET: bytes = orjson.dumps(_preset_pod())


class Packer:
    """Packs JSON data to bytes and back (`unpack(pack(x)) == x` for anything orjson writes)."""

    def __init__(self, preset: bytes = POD_PRESET) -> None:
        self._compress = zlib.compressobj(
            _LEVEL, zlib.DEFLATED, _WBITS, _MEMORY_LEVEL, zlib.Z_DEFAULT_STRATEGY, preset
        )
        self._decompress = zlib.decompressobj(_WBITS, preset)

    def pack(self, obj: Any) -> bytes:
        compress = self._compress.copy()
        return compress.compress(orjson.dumps(obj)) + compress.flush()

    def unpack(self, data: bytes) -> Any:
        return orjson.loads(self._decompress.copy().decompress(data))


class PackedStore(MutableMapping[str, Obj], Generic[T]):
    """A dict of API objects kept packed. Each read unpacks a fresh copy: changing what a read
    returned changes nothing here. `summary`, if given, is computed from each object when it is
    stored and kept unpacked (`summaries()`), for what must be read from every object often
    (e.g. pod phases for a metric)."""

    def __init__(self, packer: Packer, summary: Callable[[Obj], T] | None = None) -> None:
        self._packer = packer
        self._summary = summary
        self._packed: dict[str, bytes] = {}
        self._summaries: dict[str, T] = {}

    def __getitem__(self, key: str) -> Obj:
        obj: Obj = self._packer.unpack(self._packed[key])
        return obj

    def get(self, key: str, default: Any = None) -> Any:
        data = self._packed.get(key)
        return default if data is None else self._packer.unpack(data)

    def __setitem__(self, key: str, obj: Obj) -> None:
        self._packed[key] = self._packer.pack(obj)
        if self._summary is not None:
            self._summaries[key] = self._summary(obj)

    def __delitem__(self, key: str) -> None:
        del self._packed[key]
        self._summaries.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._packed

    def __iter__(self) -> Iterator[str]:
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)

    def summaries(self) -> ValuesView[T]:
        return self._summaries.values()

    def packed_size(self) -> int:
        """Bytes of packed data held (not counting the dict itself)."""
        return sum(len(data) for data in self._packed.values())
