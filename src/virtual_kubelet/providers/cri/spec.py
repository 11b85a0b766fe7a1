"""A pod as CRI messages, the way a kubelet writes them: the sandbox config (hostname, DNS, ports,
hostNetwork, security context, cgroup parent, labels carrying the pod's identity) and one
container config per container (command and args, env, volume mounts, resources, security
context, log path). Pure functions of the pod and the provider's settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...sdk import Pod, QuantityError, expand_command, parse_quantity
from . import termination
from .client import cri

#: Labels a kubelet puts on sandboxes and containers; they find a pod's again after a restart.
POD_UID = "io.kubernetes.pod.uid"
POD_NAME = "io.kubernetes.pod.name"
POD_NAMESPACE = "io.kubernetes.pod.namespace"
CONTAINER_NAME = "io.kubernetes.container.name"
#: Ours: which node's agent owns the sandbox, and the pod (env values blanked) for adoption.
NODE_LABEL = "virtual-kubelet.io/node"
POD_ANNOTATION = "virtual-kubelet.io/pod"
INIT_ANNOTATION = "virtual-kubelet.io/init-container"

CPU_PERIOD = 100_000
MIN_SHARES = 2


def pod_meta(pod: Pod) -> tuple[str, str, str]:
    meta = pod["metadata"]
    return str(meta["namespace"]), str(meta["name"]), str(meta["uid"])


def redacted(pod: Pod) -> Pod:
    """The pod without env values (they may hold Secrets): what is kept in the sandbox's
    annotations so a restarted agent knows its pods."""
    spec = pod.get("spec") or {}
    kept = {
        "metadata": {
            key: pod["metadata"].get(key)
            for key in ("name", "namespace", "uid", "annotations", "labels", "deletionTimestamp")
            if pod["metadata"].get(key) is not None
        },
        "spec": {
            **spec,
            **{
                kind: [
                    {**c, "env": [{"name": e.get("name")} for e in c.get("env") or []]}
                    for c in spec.get(kind) or []
                ]
                for kind in ("initContainers", "containers")
            },
        },
    }
    return kept


def dns_config(pod: Pod, cluster_dns: list[str], cluster_domain: str) -> Any:
    """The kubelet's DNS for the pod's dnsPolicy: ClusterFirst (the default; for hostNetwork
    pods only ClusterFirstWithHostNet) uses the cluster's DNS servers and search path when the
    config names them and falls back to the host's resolv.conf (Default) otherwise; None uses
    only dnsConfig. dnsConfig's servers, searches and options are added."""
    spec = pod.get("spec") or {}
    policy = str(spec.get("dnsPolicy") or "ClusterFirst")
    cluster = policy == "ClusterFirstWithHostNet" or (
        policy == "ClusterFirst" and not spec.get("hostNetwork")
    )
    servers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    if cluster and cluster_dns:
        namespace = str(pod["metadata"]["namespace"])
        servers = list(cluster_dns)
        searches = [f"{namespace}.svc.{cluster_domain}", f"svc.{cluster_domain}", cluster_domain]
        options = ["ndots:5"]
    extra = spec.get("dnsConfig") or {}
    servers += [str(s) for s in extra.get("nameservers") or []]
    searches += [str(s) for s in extra.get("searches") or []]
    options += [
        f"{o['name']}:{o['value']}" if o.get("value") else str(o["name"])
        for o in extra.get("options") or []
        if isinstance(o, dict) and o.get("name")
    ]
    return cri.DNSConfig(servers=servers, searches=searches, options=options)


def sandbox_config(
    pod: Pod,
    *,
    node: str,
    log_directory: Path,
    cgroup_parent: str,
    cluster_dns: list[str] | None = None,
    cluster_domain: str = "cluster.local",
    attempt: int = 0,
) -> Any:
    namespace, name, uid = pod_meta(pod)
    spec = pod.get("spec") or {}
    host_network = bool(spec.get("hostNetwork"))
    security = spec.get("securityContext") or {}
    ports = [
        cri.PortMapping(
            protocol=_protocol(port.get("protocol")),
            container_port=int(port["containerPort"]),
            host_port=int(port.get("hostPort") or 0),
            host_ip=str(port.get("hostIP") or ""),
        )
        for container in spec.get("containers") or []
        for port in container.get("ports") or []
        if port.get("hostPort")
    ]
    sandbox_security = cri.LinuxSandboxSecurityContext(
        namespace_options=cri.NamespaceOption(
            network=cri.NODE if host_network else cri.POD,
            pid=cri.NODE if spec.get("hostPID") else cri.CONTAINER,
            ipc=cri.NODE if spec.get("hostIPC") else cri.POD,
        ),
    )
    if security.get("runAsUser") is not None:
        sandbox_security.run_as_user.value = int(security["runAsUser"])
    if security.get("runAsGroup") is not None:
        sandbox_security.run_as_group.value = int(security["runAsGroup"])
    sandbox_security.supplemental_groups.extend(
        int(g) for g in security.get("supplementalGroups") or []
    )
    annotations = dict(pod["metadata"].get("annotations") or {})
    annotations[POD_ANNOTATION] = json.dumps(redacted(pod), separators=(",", ":"))
    hostname = "" if host_network else str(spec.get("hostname") or name)[:63]
    return cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=name, uid=uid, namespace=namespace, attempt=attempt),
        # A hostNetwork sandbox shares the host's UTS namespace: runc refuses a hostname there.
        hostname=hostname,
        log_directory=str(log_directory),
        dns_config=dns_config(pod, cluster_dns or [], cluster_domain),
        port_mappings=ports,
        labels={
            POD_UID: uid,
            POD_NAME: name,
            POD_NAMESPACE: namespace,
            NODE_LABEL: node,
        },
        annotations={k: str(v) for k, v in annotations.items()},
        linux=cri.LinuxPodSandboxConfig(
            cgroup_parent=cgroup_parent, security_context=sandbox_security
        ),
    )


def _protocol(name: object) -> Any:
    return {"UDP": cri.UDP, "SCTP": cri.SCTP}.get(str(name or "TCP"), cri.TCP)


def resources(container: dict[str, Any]) -> Any:
    """requests.cpu -> shares, limits.cpu -> quota, limits.memory -> the memory limit."""
    spec = container.get("resources") or {}
    limits, requests = spec.get("limits") or {}, spec.get("requests") or {}
    result = cri.LinuxContainerResources()
    try:
        cpu_request = requests.get("cpu") or limits.get("cpu")
        if cpu_request is not None:
            shares = int(parse_quantity(str(cpu_request)) * 1024)
            result.cpu_shares = max(shares, MIN_SHARES)
        if limits.get("cpu") is not None:
            result.cpu_period = CPU_PERIOD
            result.cpu_quota = max(int(parse_quantity(str(limits["cpu"])) * CPU_PERIOD), 1000)
        if limits.get("memory") is not None:
            result.memory_limit_in_bytes = int(parse_quantity(str(limits["memory"])))
    except QuantityError as exc:
        raise ValueError(f"container {container.get('name')!r}: {exc}") from None
    return result


def container_security(pod: Pod, container: dict[str, Any]) -> Any:
    pod_security = (pod.get("spec") or {}).get("securityContext") or {}
    security = container.get("securityContext") or {}
    result = cri.LinuxContainerSecurityContext(
        privileged=bool(security.get("privileged")),
        readonly_rootfs=bool(security.get("readOnlyRootFilesystem")),
        no_new_privs=security.get("allowPrivilegeEscalation") is False,
    )
    capabilities = security.get("capabilities") or {}
    result.capabilities.add_capabilities.extend(str(c) for c in capabilities.get("add") or [])
    result.capabilities.drop_capabilities.extend(str(c) for c in capabilities.get("drop") or [])
    user = security.get("runAsUser", pod_security.get("runAsUser"))
    if user is not None:
        result.run_as_user.value = int(user)
    group = security.get("runAsGroup", pod_security.get("runAsGroup"))
    if group is not None:
        result.run_as_group.value = int(group)
    result.supplemental_groups.extend(int(g) for g in pod_security.get("supplementalGroups") or [])
    host = (pod.get("spec") or {}).get("hostNetwork")
    result.namespace_options.network = cri.NODE if host else cri.POD
    result.namespace_options.pid = (
        cri.NODE if (pod.get("spec") or {}).get("hostPID") else cri.CONTAINER
    )
    result.namespace_options.ipc = cri.POD
    return result


def mounts(pod: Pod, container: dict[str, Any], volume_dir: Any) -> list[Any]:
    """The container's volumeMounts, each a bind of the directory the core wrote for that volume
    (subPath inside it), or of a hostPath volume's path. `volume_dir(name)` is
    `context.volume_path(pod, name)`."""
    host_paths = {
        str(v["name"]): Path(str(v["hostPath"]["path"]))
        for v in (pod.get("spec") or {}).get("volumes") or []
        if isinstance(v, dict) and isinstance(v.get("hostPath"), dict) and v.get("name")
    }
    found = []
    for mount in container.get("volumeMounts") or []:
        name = str(mount["name"])
        # hostPath volumes are the host's own directories; the core writes every other kind.
        source: Path = host_paths.get(name) or volume_dir(name)
        if mount.get("subPath"):
            source = source / str(mount["subPath"])
        found.append(
            cri.Mount(
                container_path=str(mount["mountPath"]),
                host_path=str(source),
                readonly=bool(mount.get("readOnly")),
            )
        )
    return found


def container_config(
    pod: Pod,
    container: dict[str, Any],
    *,
    attempt: int,
    init: bool,
    volume_dir: Any,
    termination_file: Path | None = None,
) -> Any:
    """The CreateContainer config of one run; `termination_file`: the host file bind-mounted at
    the container's terminationMessagePath (termination.py), None for none."""
    namespace, name, uid = pod_meta(pod)
    binds = mounts(pod, container, volume_dir)
    if termination_file is not None and (extra := termination.mount(container, termination_file)):
        binds.append(extra)
    env = [e for e in container.get("env") or [] if isinstance(e, dict) and "name" in e]
    env_map = {str(e["name"]): str(e.get("value") or "") for e in env}
    command, args = expand_command(container, [{"name": k, "value": v} for k, v in env_map.items()])
    config = cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name=str(container["name"]), attempt=attempt),
        image=cri.ImageSpec(image=str(container["image"])),
        command=command,
        args=args,
        working_dir=str(container.get("workingDir") or ""),
        envs=[cri.KeyValue(key=k, value=v) for k, v in env_map.items()],
        mounts=binds,
        labels={
            POD_UID: uid,
            POD_NAME: name,
            POD_NAMESPACE: namespace,
            CONTAINER_NAME: str(container["name"]),
        },
        annotations={INIT_ANNOTATION: "true" if init else "false"},
        log_path=f"{container['name']}/{attempt}.log",
        stdin=bool(container.get("stdin")),
        stdin_once=bool(container.get("stdinOnce")),
        tty=bool(container.get("tty")),
        linux=cri.LinuxContainerConfig(
            resources=resources(container), security_context=container_security(pod, container)
        ),
    )
    return config
