"""Materialise a pod's configMap, secret, downwardAPI, projected and emptyDir volumes as files.

Each volume becomes `<pods_dir>/<pod uid>/volumes/<volume name>/`, laid out and updated the way the
kubelet's atomic writer does it, so a provider that wants plain files (e.g. one running local
processes) can hand the directory to its workload and readers never see a half-updated volume.

This module must not talk to the API server itself (the caller supplies objects and tokens through
`VolumeSources`), must not handle volume types that need a provider (hostPath, PVCs, CSI, ...), and
must never put secret or token values into messages, events, logs or exceptions.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .downward import DownwardError, metadata_field, resource_field

__all__ = [
    "MaterialiseResult",
    "PodVolumes",
    "ServiceAccountToken",
    "VolumeError",
    "VolumeEvent",
    "VolumeSources",
]

log = logging.getLogger(__name__)

DEFAULT_MODE = 0o644
EMPTY_DIR_MODE = 0o777
PODS_DIR_MODE = 0o700
POD_DIR_MODE = 0o750
#: Volume directories and the hidden data dirs must be traversable by the workload's user.
VOLUME_DIR_MODE = 0o755

TOKEN_DEFAULT_EXPIRATION = 3600
TOKEN_MIN_EXPIRATION = 600
#: The kubelet refreshes a token once it is this old, whatever its expiry.
TOKEN_MAX_AGE = 24 * 3600.0
#: ... or once this fraction of its lifetime has passed.
TOKEN_REFRESH_FRACTION = 0.8
#: After a failed refresh of a still-valid token, when to try again.
TOKEN_RETRY_SECONDS = 30.0

_DATA_DIR = "..data"
_DATA_TMP = "..data_tmp"
_MAX_PATH = 4096
_MAX_NAME = 255
_UNSUPPORTED_PROJECTIONS = ("clusterTrustBundle", "podCertificate")


@dataclass(frozen=True)
class VolumeEvent:
    """A Kubernetes Event for the caller to emit on the pod."""

    type: str
    reason: str
    message: str


class VolumeError(Exception):
    """A volume cannot be set up (e.g. a mandatory source is missing): the pod must not start yet;
    the caller retries. The message is safe to show: it never contains secret data."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ServiceAccountToken:
    token: str
    #: Aware, UTC.
    expires_at: datetime.datetime

    def __repr__(self) -> str:
        return f"ServiceAccountToken(token=<redacted>, expires_at={self.expires_at!r})"


class VolumeSources(Protocol):
    """Where the objects behind a pod's volumes come from (informer caches, TokenRequest)."""

    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def service_account_token(
        self,
        namespace: str,
        service_account: str,
        *,
        audience: str | None,
        expiration_seconds: int,
        pod_name: str,
        pod_uid: str,
    ) -> ServiceAccountToken:
        """A token from the TokenRequest API, bound to the pod. May raise any Exception."""
        ...


@dataclass
class MaterialiseResult:
    events: list[VolumeEvent]
    #: `time.time()` at which service-account tokens must be refreshed (call `materialise` again).
    refresh_at: float | None
    #: Whether any file content changed on disk.
    changed: bool


@dataclass(frozen=True)
class _File:
    data: bytes
    mode: int

    def __repr__(self) -> str:
        return f"_File(<{len(self.data)} bytes>, mode={self.mode:o})"


_Payload = dict[str, _File]


@dataclass
class _CachedToken:
    params: tuple[str, str | None, int]
    token: str
    expires_at: float
    refresh_at: float


@dataclass
class _PodState:
    tokens: dict[tuple[str, str], _CachedToken] = field(default_factory=dict)
    warned: set[str] = field(default_factory=set)


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
        self._clock = clock
        self._pods: dict[str, _PodState] = {}

    def pod_dir(self, pod_uid: str) -> Path:
        if not _is_plain_name(pod_uid):
            raise ValueError(f"invalid pod uid {pod_uid!r}")
        return self.pods_dir / pod_uid

    def remove(self, pod_uid: str) -> None:
        """Delete everything materialised for the pod (no error if there is nothing)."""
        self._pods.pop(pod_uid, None)
        _remove_tree(self.pod_dir(pod_uid))

    def references(self, pod: dict[str, Any]) -> set[tuple[str, str, str]]:
        """The ConfigMaps and Secrets the pod's volumes read: {(kind, namespace, name)}."""
        namespace = _namespace(pod)
        refs: set[tuple[str, str, str]] = set()
        for volume in _volumes(pod):
            cm = _dict(volume.get("configMap"))
            secret = _dict(volume.get("secret"))
            if cm is not None and cm.get("name"):
                refs.add(("ConfigMap", namespace, cm["name"]))
            if secret is not None and secret.get("secretName"):
                refs.add(("Secret", namespace, secret["secretName"]))
            projected = _dict(volume.get("projected"))
            for source in (projected or {}).get("sources") or []:
                cm = _dict(source.get("configMap"))
                secret = _dict(source.get("secret"))
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
        uid = _pod_uid(pod)
        pod_dir = self.pod_dir(uid)
        state = self._pods.setdefault(uid, _PodState())
        events: list[VolumeEvent] = []
        warned: set[str] = set()
        refresh: list[float] = []
        plans: list[tuple[str, _Payload | None]] = []  # None: an emptyDir
        for volume in _volumes(pod):
            name = volume.get("name")
            if not isinstance(name, str) or not _is_plain_name(name) or name.startswith(".."):
                raise VolumeError("InvalidPath", f"invalid volume name {name!r}")
            try:
                if _dict(volume.get("emptyDir")) is not None:
                    plans.append((name, None))
                elif (source := _dict(volume.get("configMap"))) is not None:
                    plans.append((name, self._config_map_volume(pod, source)))
                elif (source := _dict(volume.get("secret"))) is not None:
                    plans.append((name, self._secret_volume(pod, source)))
                elif (source := _dict(volume.get("downwardAPI"))) is not None:
                    mode = _mode(source.get("defaultMode"), DEFAULT_MODE)
                    payload = self._downward_api(pod, source.get("items") or [], mode)
                    plans.append((name, _clean_payload(payload)))
                elif (source := _dict(volume.get("projected"))) is not None:
                    payload = await self._projected_volume(
                        pod, name, source, state, events, warned, refresh
                    )
                    plans.append((name, payload))
            except VolumeError as err:
                raise VolumeError(
                    err.reason, f'MountVolume.SetUp failed for volume "{name}" : {err.message}'
                ) from err

        # Written inline: on the memory-backed volumes directory the agent uses by default this
        # is microseconds per file, cheaper than handing it to a thread.
        changed = self._write_plans(uid, pod_dir, plans) if plans else False
        state.warned |= warned
        return MaterialiseResult(
            events=events, refresh_at=min(refresh) if refresh else None, changed=changed
        )

    def _write_plans(
        self, uid: str, pod_dir: Path, plans: list[tuple[str, _Payload | None]]
    ) -> bool:
        changed = False
        _ensure_dir(self.pods_dir, PODS_DIR_MODE, parents=True)
        _ensure_dir(pod_dir, POD_DIR_MODE)
        _ensure_dir(pod_dir / "volumes", POD_DIR_MODE)
        for name, files in plans:
            target = pod_dir / "volumes" / name
            if files is None:
                _ensure_dir(target, EMPTY_DIR_MODE)
            elif _atomic_write(target, files):
                log.debug("pod %s: wrote volume %s", uid, name)
                changed = True
        return changed

    # --- one payload per volume type ------------------------------------------------------------

    def _config_map_volume(self, pod: dict[str, Any], source: dict[str, Any]) -> _Payload:
        mode = _mode(source.get("defaultMode"), DEFAULT_MODE)
        return _clean_payload(self._config_map(pod, source, mode))

    def _secret_volume(self, pod: dict[str, Any], source: dict[str, Any]) -> _Payload:
        mode = _mode(source.get("defaultMode"), DEFAULT_MODE)
        name = source.get("secretName") or ""
        return _clean_payload(self._secret(pod, name, source, mode))

    def _config_map(self, pod: dict[str, Any], source: dict[str, Any], mode: int) -> _Payload:
        name = source.get("name") or ""
        optional = bool(source.get("optional"))
        obj = self.sources.config_map(_namespace(pod), name)
        if obj is None:
            if optional:
                return {}
            raise VolumeError("FailedMount", f'configmap "{name}" not found')
        values: dict[str, bytes] = {}
        for key, text in (obj.get("binaryData") or {}).items():
            try:
                values[key] = base64.b64decode(text, validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise VolumeError(
                    "FailedMount", f'configmap "{name}" key "{key}" is not valid base64'
                ) from None
        for key, text in (obj.get("data") or {}).items():
            values[key] = str(text).encode()
        return _key_payload(
            values,
            source.get("items"),
            mode,
            optional,
            f'configmap "{name}" references non-existent config key',
        )

    def _secret(
        self, pod: dict[str, Any], name: str, source: dict[str, Any], mode: int
    ) -> _Payload:
        optional = bool(source.get("optional"))
        obj = self.sources.secret(_namespace(pod), name)
        if obj is None:
            if optional:
                return {}
            raise VolumeError("FailedMount", f'secret "{name}" not found')
        values: dict[str, bytes] = {}
        for key, text in (obj.get("data") or {}).items():
            try:
                values[key] = base64.b64decode(text, validate=True)
            except (binascii.Error, TypeError, ValueError):
                # The decoder's own message could quote part of the value: leave it out.
                raise VolumeError(
                    "FailedMount", f'secret "{name}" key "{key}" is not valid base64'
                ) from None
        return _key_payload(
            values,
            source.get("items"),
            mode,
            optional,
            f'secret "{name}" references non-existent secret key',
        )

    def _downward_api(self, pod: dict[str, Any], items: list[Any], mode: int) -> _Payload:
        payload: _Payload = {}
        for item in items:
            path = item.get("path") or ""
            field_ref = _dict(item.get("fieldRef"))
            resource_ref = _dict(item.get("resourceFieldRef"))
            if field_ref is not None:
                value = _field_value(pod, field_ref.get("fieldPath") or "")
            elif resource_ref is not None:
                value = _resource_value(pod, resource_ref, self.node_allocatable)
            else:
                raise VolumeError("FailedMount", f"downwardAPI item {path!r} has no source")
            payload[path] = _File(value.encode(), _mode(item.get("mode"), mode))
        return payload

    async def _projected_volume(
        self,
        pod: dict[str, Any],
        volume: str,
        source: dict[str, Any],
        state: _PodState,
        events: list[VolumeEvent],
        warned: set[str],
        refresh: list[float],
    ) -> _Payload:
        mode = _mode(source.get("defaultMode"), DEFAULT_MODE)
        payload: _Payload = {}
        for projection in source.get("sources") or []:
            # Later sources win on equal paths, as in the kubelet's merged payload.
            if (cm := _dict(projection.get("configMap"))) is not None:
                payload.update(_clean_payload(self._config_map(pod, cm, mode)))
            elif (secret := _dict(projection.get("secret"))) is not None:
                name = secret.get("name") or ""
                payload.update(_clean_payload(self._secret(pod, name, secret, mode)))
            elif (downward := _dict(projection.get("downwardAPI"))) is not None:
                items = downward.get("items") or []
                payload.update(_clean_payload(self._downward_api(pod, items, mode)))
            elif (token_source := _dict(projection.get("serviceAccountToken"))) is not None:
                path, token = await self._token(pod, volume, token_source, state, events, refresh)
                # Without fsGroup/fsUser support (we do not chown) the kubelet uses defaultMode.
                payload.update(_clean_payload({path: _File(token.encode(), mode)}))
            else:
                kind = next(iter(projection), "unknown")
                if volume not in state.warned and volume not in warned:
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
        return _clean_payload(payload)

    async def _token(
        self,
        pod: dict[str, Any],
        volume: str,
        source: dict[str, Any],
        state: _PodState,
        events: list[VolumeEvent],
        refresh: list[float],
    ) -> tuple[str, str]:
        path = source.get("path") or ""
        audience = source.get("audience") or None
        expiration = max(
            int(source.get("expirationSeconds") or TOKEN_DEFAULT_EXPIRATION), TOKEN_MIN_EXPIRATION
        )
        spec = pod.get("spec") or {}
        account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        params = (account, audience, expiration)
        key = (volume, path)
        cached = state.tokens.get(key)
        if cached is not None and cached.params != params:
            cached = None
        now = self._clock()
        if cached is not None and now < cached.refresh_at:
            refresh.append(cached.refresh_at)
            return path, cached.token
        try:
            fresh = await self.sources.service_account_token(
                _namespace(pod),
                account,
                audience=audience,
                expiration_seconds=expiration,
                pod_name=(pod.get("metadata") or {}).get("name") or "",
                pod_uid=_pod_uid(pod),
            )
        except Exception as exc:
            reason = _redact(str(exc) or type(exc).__name__, cached)
            if cached is not None and now < cached.expires_at:
                # Like the kubelet: keep serving a still-valid token and try again soon.
                cached.refresh_at = min(now + TOKEN_RETRY_SECONDS, cached.expires_at)
                refresh.append(cached.refresh_at)
                log.warning("pod %s: could not refresh token for volume %s", _pod_uid(pod), volume)
                events.append(
                    VolumeEvent(
                        "Warning",
                        "FailedMount",
                        f'volume "{volume}": could not refresh the service account token '
                        f"(the current one stays until it expires): {reason}",
                    )
                )
                return path, cached.token
            raise VolumeError("FailedMount", f"failed to fetch token: {reason}") from exc
        expires_at = _timestamp(fresh.expires_at)
        lifetime = max(expires_at - now, 0.0)
        refresh_at = now + min(lifetime * TOKEN_REFRESH_FRACTION, TOKEN_MAX_AGE)
        state.tokens[key] = _CachedToken(params, fresh.token, expires_at, refresh_at)
        refresh.append(refresh_at)
        return path, fresh.token


# --- pod helpers ----------------------------------------------------------------------------------


def _dict(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _volumes(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = pod.get("spec") or {}
    return [v for v in spec.get("volumes") or [] if isinstance(v, dict)]


def _namespace(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("namespace") or "default")


def _pod_uid(pod: Mapping[str, Any]) -> str:
    uid = (pod.get("metadata") or {}).get("uid")
    if not isinstance(uid, str) or not uid:
        raise ValueError("pod has no metadata.uid")
    return uid


def _is_plain_name(name: str) -> bool:
    """Usable as one path component that stays inside its parent directory."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


def _mode(value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0o777:
        raise VolumeError("FailedMount", f"invalid file mode {value!r} (must be 0-0777)")
    return value


def _timestamp(moment: datetime.datetime) -> float:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _redact(text: str, cached: _CachedToken | None) -> str:
    if cached is not None and cached.token:
        text = text.replace(cached.token, "<redacted>")
    return text[:500]


def _key_payload(
    values: dict[str, bytes], items: Any, mode: int, optional: bool, missing: str
) -> _Payload:
    """The files of a configMap/secret: every key, or just the listed `items`."""
    if not items:
        return {key: _File(data, mode) for key, data in values.items()}
    payload: _Payload = {}
    for item in items:
        key = item.get("key") or ""
        if key not in values:
            if optional:
                continue
            raise VolumeError("FailedMount", f"{missing}: {key}")
        payload[item.get("path") or ""] = _File(values[key], _mode(item.get("mode"), mode))
    return payload


# --- downward API ---------------------------------------------------------------------------------


def _field_value(pod: Mapping[str, Any], field_path: str) -> str:
    try:
        value = metadata_field(pod, field_path)
    except DownwardError as err:
        raise VolumeError("FailedMount", str(err)) from None
    if value is None:
        raise VolumeError("FailedMount", f"unsupported fieldPath: {field_path}")
    return value


def _resource_value(
    pod: Mapping[str, Any], ref: Mapping[str, Any], allocatable: Mapping[str, str]
) -> str:
    try:
        return resource_field(pod, ref, allocatable)
    except DownwardError as err:
        raise VolumeError("FailedMount", str(err)) from None


# --- paths and the atomic writer -------------------------------------------------------------------


def _clean_path(path: str) -> str:
    """Validate an item path like the kubelet's atomic writer and return it cleaned."""
    if not path:
        raise VolumeError("InvalidPath", "invalid path: must not be empty")
    if path.startswith("/"):
        raise VolumeError("InvalidPath", f"invalid path: must be relative path: {path}")
    if len(path) > _MAX_PATH:
        raise VolumeError("InvalidPath", f"invalid path: longer than {_MAX_PATH} characters")
    if "\0" in path:
        raise VolumeError("InvalidPath", "invalid path: must not contain NUL")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    for part in parts:
        if part == "..":
            raise VolumeError("InvalidPath", f"invalid path: must not contain '..': {path}")
        if len(part) > _MAX_NAME:
            raise VolumeError("InvalidPath", f"invalid path: a name is over {_MAX_NAME} characters")
    if not parts:
        raise VolumeError("InvalidPath", f"invalid path: names no file: {path}")
    if parts[0].startswith(".."):
        raise VolumeError("InvalidPath", f"invalid path: must not start with '..': {path}")
    return "/".join(parts)


def _clean_payload(payload: _Payload) -> _Payload:
    clean: _Payload = {}
    for path, file in payload.items():
        clean[_clean_path(path)] = file
    for path in clean:
        parts = path.split("/")
        for end in range(1, len(parts)):
            if "/".join(parts[:end]) in clean:
                raise VolumeError("InvalidPath", f"invalid path: {path} is inside another file")
    return clean


def _ensure_dir(path: Path, mode: int, *, parents: bool = False) -> None:
    """Create `path` with exactly `mode` (whatever the umask) unless it exists; never empty it."""
    if path.is_dir():
        return
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=mode)
    except FileExistsError:
        return
    os.chmod(path, mode)


def _remove_tree(path: Path) -> None:
    def retry_writable(function: Callable[..., Any], failed: str, exc_info: Any) -> None:
        if isinstance(exc_info[1], FileNotFoundError):
            return
        # A workload may have left read-only directories in an emptyDir.
        os.chmod(os.path.dirname(failed), 0o700)
        function(failed)

    shutil.rmtree(path, onerror=retry_writable)


def _top(path: str) -> str:
    return path.split("/", 1)[0]


def _is_current(target: Path, payload: _Payload) -> bool:
    """Whether the volume already shows exactly `payload` (contents, modes and links)."""
    try:
        data_dir = target / os.readlink(target / _DATA_DIR)
        found: set[str] = set()
        for root, _dirs, files in os.walk(data_dir):
            for name in files:
                found.add(os.path.relpath(os.path.join(root, name), data_dir).replace(os.sep, "/"))
        if found != set(payload):
            return False
        for path, file in payload.items():
            full = data_dir / path
            info = full.lstat()
            if not stat.S_ISREG(info.st_mode) or stat.S_IMODE(info.st_mode) != file.mode:
                return False
            if full.read_bytes() != file.data:
                return False
        return all(
            os.readlink(target / top) == f"{_DATA_DIR}/{top}" for top in {_top(p) for p in payload}
        )
    except OSError:
        return False


def _write_file(path: Path, file: _File) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created owner-only so secret data is never readable under a looser mode, even briefly.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(file.data)
    os.chmod(path, file.mode)


def _symlink(target: str, link: Path) -> None:
    """Point `link` at `target`, replacing whatever non-directory is there atomically."""
    try:
        if os.readlink(link) == target:
            return
    except OSError:
        pass
    temporary = link.with_name(f"{_DATA_TMP}.{link.name}")
    if temporary.is_symlink():
        temporary.unlink()
    os.symlink(target, temporary)
    os.replace(temporary, link)


def _atomic_write(target: Path, payload: _Payload) -> bool:
    """Show `payload` in `target` the atomic-writer way; False if it was already shown."""
    _ensure_dir(target, VOLUME_DIR_MODE)
    if _is_current(target, payload):
        return False
    stamp = datetime.datetime.now(datetime.UTC).strftime("..%Y_%m_%d_%H_%M_%S.")
    new_dir = Path(tempfile.mkdtemp(prefix=stamp, dir=target))
    try:
        os.chmod(new_dir, VOLUME_DIR_MODE)
        for path, file in sorted(payload.items()):
            _write_file(new_dir / path, file)
        temporary = target / _DATA_TMP
        if temporary.is_symlink():
            temporary.unlink()
        os.symlink(new_dir.name, temporary)
        os.replace(temporary, target / _DATA_DIR)
    except BaseException:
        shutil.rmtree(new_dir, ignore_errors=True)
        raise
    wanted = {_top(path) for path in payload}
    for top in sorted(wanted):
        _symlink(f"{_DATA_DIR}/{top}", target / top)
    with os.scandir(target) as scan:
        entries = list(scan)
    for entry in entries:
        if entry.name.startswith(".."):
            # Old data dirs, including any a crash left behind, go once `..data` moved on.
            if entry.name not in (_DATA_DIR, new_dir.name) and not entry.is_symlink():
                shutil.rmtree(entry.path, ignore_errors=True)
            continue
        stale = entry.name not in wanted and entry.is_symlink()
        if stale and os.readlink(entry.path).startswith(f"{_DATA_DIR}/"):
            os.unlink(entry.path)
    return True
