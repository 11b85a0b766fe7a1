"""A pod as an ACI container group (pure: everything read from the cluster or the volume files is
passed in). One group per pod; its containers, init containers, env (Secret-sourced values as
`secureValue`, which ACI never shows back), resources, ports, probes, restart policy, registry
credentials and volumes. What ACI cannot express is refused with `InvalidInput`."""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from azure.mgmt.containerinstance import models as m

from ...sdk import InvalidInput, Pod, QuantityError, parse_quantity
from . import naming
from .config import ANNOTATION_PREFIX, AzureConfig

__all__ = ["GPU_SKU_ANNOTATIONS", "Inputs", "container_group", "registry_of"]

#: The GPU SKU (K80, P100, V100) of a pod asking for nvidia.com/gpu; the second is the original's.
GPU_SKU_ANNOTATIONS = (ANNOTATION_PREFIX + "gpu-sku", "virtual-kubelet.io/gpu-type")
DNS_LABEL_ANNOTATIONS = (ANNOTATION_PREFIX + "dns-name-label", "virtualkubelet.io/dnsnamelabel")
#: A user-assigned managed identity (its ARM id) the group runs as.
IDENTITY_ANNOTATION = ANNOTATION_PREFIX + "managed-identity"
GPU = "nvidia.com/gpu"
_GIB = 2**30
# ACI's defaults for a container asking for nothing (the original provider's too).
_DEFAULT_CPU, _DEFAULT_MEMORY_GB = 1.0, 1.5
_DOCKER_HUB = "index.docker.io"


@dataclass
class Inputs:
    """What the provider read for one pod before translating it."""

    #: Env names whose values came from Secrets, by container name (None: all are secure).
    secure_env: Mapping[str, Set[str]] | None = None
    #: File name -> content of each secret-like volume (secret, configMap, projected, downwardAPI).
    volume_files: Mapping[str, Mapping[str, bytes]] = field(default_factory=dict)
    #: Registry host -> (username, password), from the pod's imagePullSecrets.
    registry_auth: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    #: Volume name -> (storage account, key) of azureFile volumes.
    azure_file_keys: Mapping[str, tuple[str, str]] = field(default_factory=dict)


def registry_of(image: str) -> str:
    """The registry host of an image reference, as docker resolves it."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first
    return _DOCKER_HUB


def _annotation(pod: Pod, keys: tuple[str, ...]) -> str | None:
    annotations = pod["metadata"].get("annotations") or {}
    for key in keys:
        if annotations.get(key):
            return str(annotations[key])
    return None


def _quantity(where: str, value: Any) -> float:
    try:
        return float(parse_quantity(str(value)))
    except (QuantityError, ValueError) as exc:
        raise InvalidInput(f"{where}: {exc}") from None


def _resources(pod: Pod, container: dict[str, Any], where: str) -> m.ResourceRequirements:
    spec = container.get("resources") or {}
    requests, limits = spec.get("requests") or {}, spec.get("limits") or {}

    def cpu(value: Any) -> float:
        # ACI takes hundredths of a core; round up so a request is never cut.
        return max(0.01, math.ceil(_quantity(f"{where} cpu", value) * 100) / 100)

    def memory(value: Any) -> float:
        return max(0.1, math.ceil(_quantity(f"{where} memory", value) / _GIB * 10) / 10)

    gpu: m.GpuResource | None = None
    count = limits.get(GPU, requests.get(GPU))
    if count is not None and int(_quantity(f"{where} {GPU}", count)) > 0:
        sku = _annotation(pod, GPU_SKU_ANNOTATIONS)
        if sku is None:
            raise InvalidInput(
                f"{where} asks for {GPU}: set the annotation {GPU_SKU_ANNOTATIONS[0]} to the "
                "ACI GPU SKU (K80, P100 or V100)"
            )
        gpu = m.GpuResource(count=int(_quantity(f"{where} {GPU}", count)), sku=sku)
    # Like a kubelet, a limit alone is also the request.
    cpu_request = requests.get("cpu", limits.get("cpu"))
    memory_request = requests.get("memory", limits.get("memory"))
    result = m.ResourceRequirements(
        requests=m.ResourceRequests(
            cpu=cpu(cpu_request) if cpu_request is not None else _DEFAULT_CPU,
            memory_in_gb=memory(memory_request)
            if memory_request is not None
            else _DEFAULT_MEMORY_GB,
            gpu=gpu,
        )
    )
    if "cpu" in limits or "memory" in limits:
        result.limits = m.ResourceLimits(
            cpu=cpu(limits["cpu"]) if "cpu" in limits else None,
            memory_in_gb=memory(limits["memory"]) if "memory" in limits else None,
            gpu=gpu,
        )
    return result


def _command(container: dict[str, Any], where: str) -> list[str] | None:
    command, args = container.get("command") or [], container.get("args") or []
    if args and not command:
        # ACI has one command line, no separate arguments to the image's entrypoint.
        raise InvalidInput(f"{where}: ACI cannot pass args without a command; give command too")
    return [*command, *args] or None


def _env(container: dict[str, Any], secure: Set[str] | None) -> list[m.EnvironmentVariable]:
    result = []
    for entry in container.get("env") or []:
        name, value = str(entry["name"]), str(entry.get("value") or "")
        if secure is None or name in secure:
            result.append(m.EnvironmentVariable(name=name, secure_value=value))
        else:
            result.append(m.EnvironmentVariable(name=name, value=value))
    return result


def _probe(probe: dict[str, Any] | None, where: str) -> m.ContainerProbe | None:
    if not probe:
        return None
    result = m.ContainerProbe(
        initial_delay_seconds=probe.get("initialDelaySeconds"),
        period_seconds=probe.get("periodSeconds"),
        failure_threshold=probe.get("failureThreshold"),
        success_threshold=probe.get("successThreshold"),
        timeout_seconds=probe.get("timeoutSeconds"),
    )
    if "exec" in probe:
        result.exec_property = m.ContainerExec(command=list(probe["exec"].get("command") or []))
    elif "httpGet" in probe:
        http = probe["httpGet"]
        if not isinstance(http.get("port"), int):
            raise InvalidInput(f"{where}: ACI probes need a numeric httpGet port")
        result.http_get = m.ContainerHttpGet(
            path=http.get("path"), port=http["port"], scheme=str(http.get("scheme", "HTTP")).lower()
        )
    else:
        raise InvalidInput(f"{where}: ACI runs exec and httpGet probes only")
    return result


def _mounts(container: dict[str, Any]) -> list[m.VolumeMount] | None:
    mounts = [
        m.VolumeMount(
            name=str(mount["name"]),
            mount_path=str(mount["mountPath"]),
            read_only=bool(mount.get("readOnly", False)),
        )
        for mount in container.get("volumeMounts") or []
    ]
    return mounts or None


def _volumes(pod: Pod, inputs: Inputs) -> list[m.Volume]:
    result = []
    for volume in pod["spec"].get("volumes") or []:
        name = str(volume["name"])
        if "emptyDir" in volume:
            result.append(m.Volume(name=name, empty_dir={}))
        elif any(k in volume for k in ("secret", "configMap", "projected", "downwardAPI")):
            files = inputs.volume_files.get(name, {})
            result.append(
                m.Volume(
                    name=name,
                    secret={f: base64.b64encode(data).decode() for f, data in files.items()},
                )
            )
        elif "azureFile" in volume:
            spec = volume["azureFile"]
            account, key = inputs.azure_file_keys.get(name, ("", ""))
            result.append(
                m.Volume(
                    name=name,
                    azure_file=m.AzureFileVolume(
                        share_name=str(spec["shareName"]),
                        read_only=bool(spec.get("readOnly", False)),
                        storage_account_name=account,
                        storage_account_key=key,
                    ),
                )
            )
        else:
            kinds = ", ".join(k for k in volume if k != "name")
            raise InvalidInput(
                f"volume {name}: ACI mounts emptyDir, secret, configMap, projected, downwardAPI "
                f"and azureFile volumes, not {kinds}"
            )
    return result


def _ports(container: dict[str, Any]) -> list[m.ContainerPort]:
    return [
        m.ContainerPort(port=int(p["containerPort"]), protocol=str(p.get("protocol", "TCP")))
        for p in container.get("ports") or []
    ]


def container_group(
    pod: Pod, config: AzureConfig, node_name: str, inputs: Inputs
) -> m.ContainerGroup:
    """The container group running `pod`."""
    spec = pod["spec"]
    key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
    unsupported = [
        f"{c['name']}: {hook}"
        for c in spec.get("containers") or []
        for hook in ("startupProbe", "lifecycle")
        if c.get(hook)
    ]
    if unsupported:
        raise InvalidInput(f"pod {key}: ACI has no {', '.join(unsupported)}")
    secure = inputs.secure_env
    containers: list[m.Container] = []
    group_ports: list[m.Port] = []
    for container in spec.get("containers") or []:
        where = f"container {container['name']}"
        ports = _ports(container)
        group_ports += [
            m.Port(port=p.port, protocol=p.protocol)
            for p in ports
            if (p.port, p.protocol) not in {(g.port, g.protocol) for g in group_ports}
        ]
        containers.append(
            m.Container(
                name=str(container["name"]),
                image=str(container["image"]),
                command=_command(container, where),
                ports=ports or None,
                environment_variables=_env(
                    container,
                    None if secure is None else secure.get(container["name"], frozenset()),
                ),
                resources=_resources(pod, container, where),
                volume_mounts=_mounts(container),
                liveness_probe=_probe(container.get("livenessProbe"), where),
                readiness_probe=_probe(container.get("readinessProbe"), where),
            )
        )
    init_containers = [
        m.InitContainerDefinition(
            name=str(c["name"]),
            image=str(c["image"]),
            command=_command(c, f"init container {c['name']}"),
            environment_variables=_env(
                c, None if secure is None else secure.get(c["name"], frozenset())
            ),
            volume_mounts=_mounts(c),
        )
        for c in spec.get("initContainers") or []
    ]
    images = {
        registry_of(str(c["image"]))
        for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    }
    credentials = [
        m.ImageRegistryCredential(server=host, username=user, password=password)
        for host, (user, password) in sorted(inputs.registry_auth.items())
        if host in images
    ]
    group = m.ContainerGroup(
        location=config.region,
        tags=naming.tags(pod, node_name, config.cluster_name),
        containers=containers,
        init_containers=init_containers or None,
        os_type="Linux",
        restart_policy=str(spec.get("restartPolicy", "Always")),
        image_registry_credentials=credentials or None,
        volumes=_volumes(pod, inputs) or None,
    )
    identity = _annotation(pod, (IDENTITY_ANNOTATION,))
    if identity:
        if not identity.startswith("/subscriptions/"):
            raise InvalidInput(
                f"{IDENTITY_ANNOTATION}: {identity!r} is not a managed identity's ARM id"
            )
        group.identity = m.ContainerGroupIdentity(
            type="UserAssigned", user_assigned_identities={identity: m.UserAssignedIdentities()}
        )
    dns_label = _annotation(pod, DNS_LABEL_ANNOTATIONS)
    if group_ports or dns_label:
        group.ip_address = m.IpAddress(
            ports=group_ports or [m.Port(port=80, protocol="TCP")],
            type="Private" if config.subnet_id else "Public",
            dns_name_label=dns_label if not config.subnet_id else None,
        )
    if config.subnet_id:
        group.subnet_ids = [m.ContainerGroupSubnetId(id=config.subnet_id)]
    return group
