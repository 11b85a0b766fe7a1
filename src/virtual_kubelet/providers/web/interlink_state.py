"""The pods an interLink plugin runs for this node, kept across agent restarts.

A plugin cannot list its pods, so the provider remembers each pod it created and the plugin's job
id (JID, also on our copy of the pod as annotation `JobID`, as interLink's VK keeps it): a
restarted agent adopts them by JID instead of submitting them again (interLink issue #195).

The journal is a JSON-lines file under the state directory, appended on every change and
compacted when loaded. Env values are blanked before a pod is written (the agent resolved them,
and any may come from a Secret, which must never reach a disk): a reloaded pod carries a stale
spec hash, so the agent sends it again through `update_pod`, which restores the values in memory
without calling the plugin.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import IO, Any

import orjson

from ...sdk import SPEC_HASH_ANNOTATION, Pod, deep_copy, key_of

__all__ = ["ENV_AT_REST", "Journal", "at_rest"]

log = logging.getLogger(__name__)

#: The spec hash a reloaded pod reports while its env values are missing.
ENV_AT_REST = "env-values-not-persisted"


def at_rest(pod: Pod) -> Pod:
    """`pod` as the journal keeps it: env values blanked, status dropped."""
    stored: Pod = deep_copy(pod)
    stored.pop("status", None)
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for container in (stored.get("spec") or {}).get(kind) or []:
            if container.get("env"):
                container["env"] = [
                    {"name": e.get("name", ""), "value": ""} for e in container["env"]
                ]
    return stored


class Journal:
    """`namespace/name` -> (pod at rest, JID), on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None

    def load(self) -> dict[str, tuple[Pod, str]]:
        """What the journal holds (reloaded pods marked as missing their env values), and open it
        for appending after rewriting it compactly."""
        entries: dict[str, tuple[Pod, str]] = {}
        if self.path.exists():
            for number, line in enumerate(self.path.read_bytes().splitlines(), 1):
                try:
                    entry = orjson.loads(line)
                    if entry["op"] == "put":
                        entries[key_of(entry["pod"])] = (entry["pod"], str(entry["jid"]))
                    elif entry["op"] == "del":
                        current = entries.get(entry["key"])
                        if (
                            current is not None
                            and current[0]["metadata"].get("uid") == entry["uid"]
                        ):
                            del entries[entry["key"]]
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    # A line cut short by a crash (the last one) or damaged: skip it.
                    log.warning("%s: line %d is not a journal entry; skipped", self.path, number)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("wb") as out:
            for pod, jid in entries.values():
                out.write(orjson.dumps({"op": "put", "pod": pod, "jid": jid}) + b"\n")
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(self.path)
        self._file = self.path.open("ab", buffering=0)
        for pod, _ in entries.values():
            if any(
                c.get("env")
                for kind in ("initContainers", "containers")
                for c in (pod.get("spec") or {}).get(kind) or []
            ):
                pod["metadata"].setdefault("annotations", {})[SPEC_HASH_ANNOTATION] = ENV_AT_REST
        return entries

    def put(self, pod: Pod, jid: str) -> None:
        self._append({"op": "put", "pod": at_rest(pod), "jid": jid})

    def delete(self, pod: Pod) -> None:
        self._append({"op": "del", "key": key_of(pod), "uid": pod["metadata"].get("uid", "")})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _append(self, entry: dict[str, Any]) -> None:
        if self._file is None:
            raise RuntimeError("Journal.load() was not called")
        # One write per entry: a crash leaves at most the last line cut short.
        self._file.write(orjson.dumps(entry) + b"\n")
