"""Container environment resolution, done the way the kubelet does it before starting a container.

Turns a container's `env` and `envFrom` (ConfigMap and Secret references, the downward API,
resource fields, `$(VAR)` references and service links) into the ordered list of plain
`{"name", "value"}` pairs a provider receives. Pure logic: objects are read only through
`EnvSources`; no I/O, no asyncio. No secret value may ever appear in an event or an error.
The resolved pod names (never holds the values of) the env variables filled from Secrets, in the
SDK's `SECRET_ENV_ANNOTATION`, so providers can keep them secret without reading the API again.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..expansion import expand, expand_command
from ..sdk.secret_env import SECRET_ENV_ANNOTATION, encode_secret_env
from .config_data import ConfigKind, InvalidBase64, decoded_values, lookup
from .downward import DownwardError, metadata_field, resource_field

_Json = dict[str, Any]

# expand and expand_command live in the leaf module virtual_kubelet.expansion (providers use them
# too); the names stay importable from here.
__all__ = [
    "EnvError",
    "EnvEvent",
    "EnvSources",
    "PodNetwork",
    "expand",
    "expand_command",
    "resolve_container_env",
    "resolve_pod_env",
]

_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
# The kubelet saturates resource values at the largest int64 rather than overflowing.


@dataclass(frozen=True)
class EnvEvent:
    """A Kubernetes Event the caller should record on the pod."""

    type: str
    reason: str
    message: str


class EnvError(Exception):
    """A mandatory reference cannot be satisfied: the pod must not be started."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class EnvSources(Protocol):
    """Read access to the objects an environment may reference (normally informer caches)."""

    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The ConfigMap, or None if it does not exist."""
        ...

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Secret (values in `data` base64-encoded), or None if it does not exist."""
        ...

    def services(self, namespace: str) -> list[dict[str, Any]]:
        """The Services of a namespace."""
        ...


@dataclass(frozen=True)
class PodNetwork:
    """Addresses the downward API exposes as status.hostIP(s) and status.podIP(s)."""

    host_ips: list[str]
    pod_ips: list[str]


def resolve_container_env(
    pod: dict[str, Any],
    container: dict[str, Any],
    sources: EnvSources,
    network: PodNetwork,
    *,
    node_allocatable: dict[str, str],
) -> tuple[list[dict[str, str]], list[EnvEvent]]:
    """The final environment of one container of `pod`, and the events to record.

    Raises EnvError when a mandatory ConfigMap, Secret or key is missing or a reference
    cannot be resolved.
    """
    resolver = _Resolver(pod, _CachedSources(sources), network, node_allocatable)
    return resolver.container_env(container), resolver.events


def resolve_pod_env(
    pod: dict[str, Any],
    sources: EnvSources,
    network: PodNetwork,
    *,
    node_allocatable: dict[str, str],
) -> tuple[dict[str, Any], list[EnvEvent]]:
    """A deep copy of `pod` whose containers carry their resolved `env` and no `envFrom`.

    The copy's `SECRET_ENV_ANNOTATION` names the variables whose values came from Secrets (it
    replaces any such annotation the pod had, so a user cannot unmark a Secret). Every container of the pod sees the same snapshot of ConfigMaps, Secrets and Services.
    Raises EnvError on the first reference that cannot be satisfied.
    """
    resolver = _Resolver(pod, _CachedSources(sources), network, node_allocatable)
    resolved = copy.deepcopy(pod)
    spec = resolved.get("spec")
    if isinstance(spec, dict):
        for key in _CONTAINER_LISTS:
            for container in _list(spec.get(key)):
                if isinstance(container, dict):
                    container["env"] = resolver.container_env(container)
                    container.pop("envFrom", None)
        # Only on the copy: it is handed to the provider and never written back to the API.
        meta = resolved.setdefault("metadata", {})
        annotations = meta.get("annotations")
        if not isinstance(annotations, dict):
            annotations = meta["annotations"] = {}
        annotations[SECRET_ENV_ANNOTATION] = encode_secret_env(resolver.secret_names)
    events: list[EnvEvent] = []
    for event in resolver.events:
        if event not in events:
            events.append(event)
    return resolved, events


class _CachedSources:
    """Memoises lookups so that one resolution sees one consistent view of each object."""

    def __init__(self, sources: EnvSources) -> None:
        self._sources = sources
        self._config_maps: dict[tuple[str, str], _Json | None] = {}
        self._secrets: dict[tuple[str, str], _Json | None] = {}
        self._services: dict[str, list[_Json]] = {}

    def config_map(self, namespace: str, name: str) -> _Json | None:
        key = (namespace, name)
        if key not in self._config_maps:
            self._config_maps[key] = self._sources.config_map(namespace, name)
        return self._config_maps[key]

    def secret(self, namespace: str, name: str) -> _Json | None:
        key = (namespace, name)
        if key not in self._secrets:
            self._secrets[key] = self._sources.secret(namespace, name)
        return self._secrets[key]

    def services(self, namespace: str) -> list[_Json]:
        if namespace not in self._services:
            self._services[namespace] = list(self._sources.services(namespace))
        return self._services[namespace]


class _Resolver:
    """Resolution state shared by the containers of one pod."""

    def __init__(
        self,
        pod: _Json,
        sources: _CachedSources,
        network: PodNetwork,
        node_allocatable: Mapping[str, str],
    ) -> None:
        self.pod = pod
        self.sources = sources
        self.network = network
        self.node_allocatable = node_allocatable
        self.namespace = str(_map(pod.get("metadata")).get("namespace") or "default")
        self.events: list[EnvEvent] = []
        #: Container name -> env names whose final value came from a Secret.
        self.secret_names: dict[str, set[str]] = {}
        self._service_env: dict[str, str] | None = None

    def container_env(self, container: _Json) -> list[dict[str, str]]:
        # One dict keeps both the first position of each name and its latest value, and it is
        # also the expansion scope: service links, envFrom and the env entries seen so far.
        env = dict(self.service_env())
        cname = str(container.get("name") or "")
        # Names whose current value came from a Secret: a later source of the same name decides.
        secret: set[str] = set()
        for source in _list(container.get("envFrom")):
            if isinstance(source, dict):
                values, from_secret = self._env_from(source, cname)
                env.update(values)
                if from_secret:
                    secret.update(values)
                else:
                    secret.difference_update(values)
        for entry in _list(container.get("env")):
            if not isinstance(entry, dict) or not entry.get("name"):
                continue
            name = str(entry["name"])
            resolved = self._env_value(entry, name, container, env, secret)
            if resolved is not None:
                value, from_secret = resolved
                env[name] = value
                if from_secret:
                    secret.add(name)
                else:
                    secret.discard(name)
        self.secret_names[cname] = secret
        return [{"name": name, "value": value} for name, value in env.items()]

    def service_env(self) -> dict[str, str]:
        if self._service_env is None:
            self._service_env = self._make_service_env()
        return self._service_env

    def _make_service_env(self) -> dict[str, str]:
        links = _map(self.pod.get("spec")).get("enableServiceLinks") is not False
        chosen: dict[str, _Json] = {}
        # The API server's own Service is always visible, as in-cluster clients depend on
        # KUBERNETES_SERVICE_HOST; a same-namespace Service of that name shadows it.
        for service in self.sources.services("default"):
            if _service_name(service) == "kubernetes" and _has_cluster_ip(service):
                chosen.setdefault("kubernetes", service)
        if links:
            for service in self.sources.services(self.namespace):
                if _has_cluster_ip(service):
                    chosen[_service_name(service)] = service
        variables: dict[str, str] = {}
        for service in chosen.values():
            variables.update(_service_link_vars(service))
        return dict(sorted(variables.items()))

    def _warn(self, reason: str, message: str) -> None:
        self.events.append(EnvEvent("Warning", reason, message))

    def _env_from(self, source: _Json, cname: str) -> tuple[dict[str, str], bool]:
        """The variables of one envFrom source, and whether they come from a Secret."""
        prefix = str(source.get("prefix") or "")
        kind: ConfigKind
        if isinstance(source.get("configMapRef"), dict):
            ref, kind = source["configMapRef"], "ConfigMap"
        elif isinstance(source.get("secretRef"), dict):
            ref, kind = source["secretRef"], "Secret"
        else:
            return {}, False
        from_secret = kind == "Secret"
        name = str(ref.get("name") or "")
        obj = f"{kind} {self.namespace}/{name}"
        origin = f'envFrom of container "{cname}"'
        data = self._data(kind, name)
        if data is None:
            if ref.get("optional") is True:
                self._warn(f"Optional{kind}NotFound", f"Skipped optional {origin}: {obj} not found")
                return {}, from_secret
            raise EnvError(f"Mandatory{kind}NotFound", f"{obj} not found (referenced by {origin})")
        values: dict[str, str] = {}
        invalid: list[str] = []
        for key in sorted(data):
            var = prefix + key
            if _is_env_var_name(var):
                values[var] = data[key]
            else:
                invalid.append(var)
        if invalid:
            label = "configMap" if kind == "ConfigMap" else "secret"
            self._warn(
                "InvalidEnvironmentVariableNames",
                f"Keys [{', '.join(invalid)}] from the EnvFrom {label} {self.namespace}/{name}"
                " were skipped since they are considered invalid environment variable names.",
            )
        return values, from_secret

    def _data(self, kind: ConfigKind, name: str, key: str | None = None) -> dict[str, str] | None:
        """The string values of a ConfigMap or Secret, or None when it does not exist.

        Only `key` is read when given: decoding only what is used keeps one malformed key from
        breaking unrelated references.
        """
        obj = lookup(self.sources, kind, self.namespace, name)
        if obj is None:
            return None
        try:
            # Like the kubelet, binaryData never reaches the environment.
            values = decoded_values(kind, obj, only=key, binary_data=False)
        except InvalidBase64 as bad:
            raise EnvError(
                "InvalidSecretData",
                f'Key "{bad.key}" of Secret {self.namespace}/{name} is not valid base64',
            ) from None
        return {k: v.decode("utf-8", errors="replace") for k, v in values.items()}

    def _env_value(
        self, entry: _Json, name: str, container: _Json, scope: dict[str, str], secret: set[str]
    ) -> tuple[str, bool] | None:
        """The value of one `env` entry and whether it holds (part of) a Secret's value, or None
        when an optional reference skips it. `secret`: the names in `scope` from Secrets."""
        value = entry.get("value")
        # As in the kubelet, a non-empty literal value wins over valueFrom.
        if value:
            used_secret = False

            def lookup(var: str) -> str | None:
                nonlocal used_secret
                hit = scope.get(var)
                # "url: https://u:$(PASSWORD)@host" carries the Secret's value too.
                used_secret = used_secret or (hit is not None and var in secret)
                return hit

            expanded = expand(str(value), lookup)
            return expanded, used_secret
        source = _map(entry.get("valueFrom"))
        if not source:
            return "", False
        cname = str(container.get("name") or "")
        where = f'env var "{name}" of container "{cname}"'
        found: str | None
        if isinstance(source.get("configMapKeyRef"), dict):
            found = self._key_ref("ConfigMap", source["configMapKeyRef"], where)
            return None if found is None else (found, False)
        if isinstance(source.get("secretKeyRef"), dict):
            found = self._key_ref("Secret", source["secretKeyRef"], where)
            return None if found is None else (found, True)
        if isinstance(source.get("fieldRef"), dict):
            return self._field_ref(source["fieldRef"], where), False
        if isinstance(source.get("resourceFieldRef"), dict):
            return self._resource_field_ref(source["resourceFieldRef"], container, where), False
        kinds = ", ".join(sorted(source))
        # fileKeyRef needs the volume's files, which only exist on the provider's side.
        raise EnvError("UnsupportedValueFrom", f"{where}: valueFrom {kinds} is not supported")

    def _key_ref(self, kind: ConfigKind, ref: _Json, where: str) -> str | None:
        name = str(ref.get("name") or "")
        key = str(ref.get("key") or "")
        optional = ref.get("optional") is True
        data = self._data(kind, name, key)
        if data is None:
            if optional:
                self._warn(
                    f"Optional{kind}NotFound",
                    f"Skipped optional {where}: {kind} {self.namespace}/{name} not found",
                )
                return None
            raise EnvError(
                f"Mandatory{kind}NotFound",
                f"{kind} {self.namespace}/{name} not found (referenced by {where})",
            )
        if key not in data:
            if optional:
                self._warn(
                    f"Optional{kind}KeyNotFound",
                    f'Skipped optional {where}: key "{key}" not found in {kind} '
                    f"{self.namespace}/{name}",
                )
                return None
            raise EnvError(
                f"Mandatory{kind}KeyNotFound",
                f'Key "{key}" not found in {kind} {self.namespace}/{name} (referenced by {where})',
            )
        return data[key]

    def _field_ref(self, ref: _Json, where: str) -> str:
        path = str(ref.get("fieldPath") or "")
        api_version = str(ref.get("apiVersion") or "v1")
        spec = _map(self.pod.get("spec"))
        if api_version == "v1":
            try:
                value = metadata_field(self.pod, path)
            except DownwardError:
                value = None  # a subscript on another field: unsupported, as below
            if value is not None:
                return value
            if path in ("spec.nodeName", "spec.host"):
                return str(spec.get("nodeName") or "")
            if path == "spec.serviceAccountName":
                return str(spec.get("serviceAccountName") or "")
            if path == "status.hostIP":
                return self.network.host_ips[0] if self.network.host_ips else ""
            if path == "status.hostIPs":
                return ",".join(self.network.host_ips)
            if path == "status.podIP":
                return self.network.pod_ips[0] if self.network.pod_ips else ""
            if path == "status.podIPs":
                return ",".join(self.network.pod_ips)
        raise EnvError(
            "UnsupportedFieldPath",
            f"{where}: fieldRef {api_version} {path!r} is not supported for environment variables",
        )

    def _resource_field_ref(self, ref: _Json, container: _Json, where: str) -> str:
        try:
            return resource_field(self.pod, ref, self.node_allocatable, default_container=container)
        except DownwardError as error:
            raise EnvError("InvalidResourceFieldRef", f"{where}: {error}") from None


def _map(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _is_env_var_name(name: str) -> bool:
    # The kubelet's relaxed rule: any printable ASCII except "=", so names like "my.var" work.
    return bool(name) and all(" " <= char <= "~" and char != "=" for char in name)


def _service_name(service: _Json) -> str:
    return str(_map(service.get("metadata")).get("name") or "")


def _has_cluster_ip(service: _Json) -> bool:
    return _map(service.get("spec")).get("clusterIP") not in (None, "", "None")


def _env_name(name: str) -> str:
    return name.upper().replace("-", "_")


def _service_link_vars(service: _Json) -> dict[str, str]:
    spec = _map(service.get("spec"))
    ports = [port for port in _list(spec.get("ports")) if isinstance(port, dict)]
    if not ports:
        return {}
    ip = str(spec["clusterIP"])
    prefix = _env_name(_service_name(service))
    variables = {
        f"{prefix}_SERVICE_HOST": ip,
        f"{prefix}_SERVICE_PORT": str(ports[0].get("port")),
    }
    for port in ports:
        if port.get("name"):
            variables[f"{prefix}_SERVICE_PORT_{_env_name(str(port['name']))}"] = str(port["port"])
    # Docker-link style variables, which older images still read.
    for index, port in enumerate(ports):
        protocol = str(port.get("protocol") or "TCP")
        number = str(port.get("port"))
        url = f"{protocol.lower()}://{ip}:{number}"
        if index == 0:
            variables[f"{prefix}_PORT"] = url
        base = f"{prefix}_PORT_{number}_{protocol.upper()}"
        variables[base] = url
        variables[f"{base}_PROTO"] = protocol.lower()
        variables[f"{base}_PORT"] = number
        variables[f"{base}_ADDR"] = ip
    return variables
