"""What one run of a container executes: argv, env, working directory, mounts and the
termination-message file, computed from the pod spec and the provider config (pure functions
plus a few directory creations).

Rules (also in the package docstring):
- argv: `command` + `args` with `$(VAR)` expanded. Without `command`: the image entry of the
  config (`images`) gives the command (ENTRYPOINT) and default args (CMD); container `args`
  replace the image's args. Nothing to run is a `LaunchError` (RunContainerError).
- env: the container's resolved env; PATH from the agent's environment (behind the image root's
  `bin` and `usr/bin`) and HOME if the pod sets neither; HOSTNAME = the pod's hostname (or name)
  unless set; TERM=xterm for `tty: true`; always VK_TERMINATION_MESSAGE_PATH and one
  VK_VOLUME_<NAME> per volumeMount (see `volume_env_name`).
- user: the effective runAsUser / runAsGroup / runAsNonRoot (the container's securityContext over
  the pod's) and the pod's supplementalGroups + fsGroup (see `identity`); the shim switches to it
  right before exec. runAsNonRoot with uid 0 is a `ConfigError` (CreateContainerConfigError).
- volumeMounts: bind mode mounts each volume (or its subPath) at mountPath in the container's
  private mount namespace; env mode only sets VK_VOLUME_* to the host path.

It must never log or put env values into error messages: they may be secrets. Error messages show
`command`, `args` and `subPathExpr` as written, never as expanded (`shown_argv0`, `shown` in
mounts), unlike the kubelet's.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...sdk import expand, expand_command
from .config import ProcessConfig
from .shim_protocol import BindMount
from .state import Layout

DEFAULT_TERMINATION_PATH = "/dev/termination-log"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class LaunchError(Exception):
    """The container cannot be started as specified (shown as RunContainerError)."""


class ConfigError(LaunchError):
    """The container's configuration forbids starting it (shown as CreateContainerConfigError)."""


@dataclass(frozen=True)
class Security:
    """The effective user settings of a container, as the kubelet determines them."""

    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool | None = None
    supplemental_groups: tuple[int, ...] = ()
    fs_group: int | None = None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def effective_security(pod: dict[str, Any], container: dict[str, Any]) -> Security:
    """runAsUser, runAsGroup and runAsNonRoot of the container's securityContext override the
    pod's; supplementalGroups and fsGroup exist at pod level only."""
    pod_sc = (pod.get("spec") or {}).get("securityContext") or {}
    own = container.get("securityContext") or {}

    def pick(key: str) -> Any:
        return own[key] if own.get(key) is not None else pod_sc.get(key)

    non_root = pick("runAsNonRoot")
    return Security(
        run_as_user=_int(pick("runAsUser")),
        run_as_group=_int(pick("runAsGroup")),
        run_as_non_root=non_root if isinstance(non_root, bool) else None,
        supplemental_groups=tuple(
            g for g in (_int(v) for v in pod_sc.get("supplementalGroups") or []) if g is not None
        ),
        fs_group=_int(pod_sc.get("fsGroup")),
    )


def _primary_gid(uid: int) -> int:
    """As runc with the image's /etc/passwd (ours: the host's): the user's group, else 0."""
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return 0


def _member_gids(uid: int) -> list[int]:
    """The groups /etc/group lists the user of `uid` in (runc adds them too)."""
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return []
    return [g.gr_gid for g in grp.getgrall() if name in g.gr_mem]


def identity(
    pod: dict[str, Any], container: dict[str, Any], agent_uid: int | None = None
) -> dict[str, Any] | None:
    """Who the container's processes run as: {"uid", "gid", "groups"} for the shim, or None to run
    as the agent (no user settings). Raises ConfigError for a runAsNonRoot violation (the
    kubelet's messages) and LaunchError when the agent cannot switch users (not root)."""
    sc = effective_security(pod, container)
    agent = os.geteuid() if agent_uid is None else agent_uid
    meta = pod.get("metadata") or {}
    where = (
        f'(pod: "{meta.get("name")}_{meta.get("namespace")}({meta.get("uid")})", '
        f"container: {container.get('name')})"
    )
    if sc.run_as_non_root:
        if sc.run_as_user == 0:
            raise ConfigError(f"container's runAsUser breaks non-root policy {where}")
        if sc.run_as_user is None and agent == 0:
            raise ConfigError(f"container has runAsNonRoot and image will run as root {where}")
    extra = [*([sc.fs_group] if sc.fs_group is not None else []), *sc.supplemental_groups]
    if sc.run_as_user is None and sc.run_as_group is None and not extra:
        return None
    uid = agent if sc.run_as_user is None else sc.run_as_user
    gid = sc.run_as_group if sc.run_as_group is not None else _primary_gid(uid)
    groups = list(dict.fromkeys([*_member_gids(uid), *extra]))
    if agent != 0:
        if uid != agent:
            raise LaunchError(f"cannot switch to user {uid}: the agent does not run as root")
        if gid != os.getegid() or not set(groups) <= {*os.getgroups(), gid}:
            raise LaunchError(
                f"cannot switch to group {gid} (groups {groups}): the agent does not run as root"
            )
        return None  # already who it should be
    return {"uid": uid, "gid": gid, "groups": groups}


def _give(path: Path, user: dict[str, Any]) -> None:
    """Let the container's user own a directory or file the provider made for it."""
    if path.exists():
        os.chown(path, user["uid"], user["gid"])


def _fs_group(path: Path, gid: int) -> None:
    """As the kubelet's volume ownership management: group `gid`, group rwx, setgid directory."""
    os.chown(path, -1, gid)
    os.chmod(path, (path.stat().st_mode & 0o7777) | 0o2070)


@dataclass
class Launch:
    argv: list[str]
    env: dict[str, str]
    cwd: str
    #: Bind mounts for the shim (None: no mount namespace, env mode).
    mounts: list[BindMount] | None
    #: Host path of the termination-message file the agent reads after the run.
    termination_path: Path
    #: Directories the volumes of this container live in (for probes and messages).
    volume_paths: dict[str, str] = field(default_factory=dict)
    #: {"uid", "gid", "groups"} the shim switches to before exec (None: the agent's user).
    user: dict[str, Any] | None = None
    #: argv[0] before `$(VAR)` expansion, for error messages (the expanded one may be a secret).
    shown_argv0: str = ""


def volume_env_name(mount_path: str) -> str:
    """`VK_VOLUME_` + mountPath in UPPER_SNAKE: leading and trailing slashes dropped, every run of
    characters other than letters and digits becomes one `_`, upper-cased (`/etc/my-config` ->
    `VK_VOLUME_ETC_MY_CONFIG`; `/` -> `VK_VOLUME_ROOT`)."""
    name = re.sub(r"[^A-Za-z0-9]+", "_", mount_path.strip("/")).strip("_").upper()
    return f"VK_VOLUME_{name or 'ROOT'}"


def container_env(container: dict[str, Any]) -> list[dict[str, str]]:
    return [
        {"name": str(e["name"]), "value": str(e.get("value") or "")}
        for e in container.get("env") or []
        if isinstance(e, dict) and "name" in e
    ]


def argv_of(
    container: dict[str, Any], config: ProcessConfig, *, expanded: bool = True
) -> list[str]:
    """What the container runs; with `expanded=False`, its `command` and `args` as written."""
    if expanded:
        command, args = expand_command(container, container_env(container))
    else:
        command = [str(part) for part in container.get("command") or []]
        args = [str(part) for part in container.get("args") or []]
    if command:
        return command + args
    image_name = str(container.get("image") or "")
    image = config.image(image_name)
    if image is not None and (image.command or args or image.args):
        return list(image.command) + (args or list(image.args))
    if args:
        return args  # an image without ENTRYPOINT: the args are the command
    raise LaunchError(
        f"container {container.get('name')!r} has no command, and image {image_name!r} has no "
        "command in the process provider's config (images)"
    )


def _inside(base: Path, relative: str, shown: str) -> Path:
    """`base/relative`, refusing escapes; errors show `shown` (never an expanded env value)."""
    parts = Path(relative).parts
    if Path(relative).is_absolute() or ".." in parts:
        raise LaunchError(f"subPath {shown!r} must be a relative path without '..'")
    return base.joinpath(*parts) if parts else base


def _host_path_source(volume: dict[str, Any]) -> Path:
    source = volume["hostPath"]
    path = Path(str(source.get("path") or ""))
    if not path.is_absolute():
        raise LaunchError(f"hostPath of volume {volume.get('name')!r} must be absolute")
    kind = source.get("type") or ""
    if kind == "DirectoryOrCreate":
        path.mkdir(parents=True, exist_ok=True)
    elif kind == "FileOrCreate" and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o644)
    elif kind in ("Directory", "File", "Socket", "CharDevice", "BlockDevice") and not path.exists():
        raise LaunchError(f"hostPath type check failed: {path} does not exist")
    return path


def build(
    pod: dict[str, Any],
    container: dict[str, Any],
    *,
    config: ProcessConfig,
    layout: Layout,
    volume_dir: Any,
    bind: bool,
) -> Launch:
    """The run of `container`; `volume_dir(name)` is where the core wrote volume `name`."""
    name = str(container["name"])
    user = identity(pod, container)
    fs_group = effective_security(pod, container).fs_group
    argv = argv_of(container, config)
    env_list = container_env(container)
    given = {e["name"]: e["value"] for e in env_list}
    image = config.image(str(container.get("image") or ""))
    env: dict[str, str] = {}
    if "PATH" not in given:
        path = os.environ.get("PATH") or DEFAULT_PATH
        if image is not None and image.root:
            path = f"{image.root}/bin:{image.root}/usr/bin:{path}"
        env["PATH"] = path
    if "HOME" not in given and os.environ.get("HOME"):
        env["HOME"] = os.environ["HOME"]
    spec = pod.get("spec") or {}
    env["HOSTNAME"] = str(spec.get("hostname") or pod["metadata"]["name"])
    if container.get("tty"):
        env["TERM"] = "xterm"
    env.update(given)

    volumes = {str(v.get("name")): v for v in spec.get("volumes") or [] if isinstance(v, dict)}
    mounts: list[BindMount] = []
    sources: list[tuple[str, Path]] = []
    volume_paths: dict[str, str] = {}
    for mount in container.get("volumeMounts") or []:
        target = str(mount.get("mountPath") or "")
        if not target.startswith("/"):
            raise LaunchError(f"mountPath {target!r} must be absolute")
        volume_name = str(mount.get("name") or "")
        volume = volumes.get(volume_name)
        if volume is None:
            raise LaunchError(f"volumeMount {target!r} names an unknown volume {volume_name!r}")
        empty_dir = isinstance(volume.get("emptyDir"), dict)
        if isinstance(volume.get("hostPath"), dict):
            base = _host_path_source(volume)
        else:
            base = Path(volume_dir(volume_name))
            if not base.exists():
                # A volume type the core does not write (PVC, CSI, ...): an empty directory.
                base = layout.volume(volume_name)
                base.mkdir(parents=True, exist_ok=True)
                if user is not None:
                    os.chmod(base, 0o777)  # as an emptyDir: writable by the container's user
            if empty_dir and user is not None and fs_group is not None:
                _fs_group(base, fs_group)
        sub = shown = str(mount.get("subPath") or "")
        if mount.get("subPathExpr"):
            shown = str(mount["subPathExpr"])
            sub = expand(shown, given.get)
        source = _inside(base, sub, shown)
        if sub and not source.exists() and not source.is_symlink():
            source.mkdir(parents=True, exist_ok=True)
        if sub:
            # As the kubelet: a subPath is bound as it resolves now (atomic-writer symlinks).
            resolved = Path(os.path.realpath(source))
            if not (resolved == base or resolved.is_relative_to(os.path.realpath(base))):
                raise LaunchError(f"subPath {shown!r} points outside volume {volume_name!r}")
            source = resolved
        is_file = source.exists() and not stat.S_ISDIR(source.stat().st_mode)
        mounts.append(
            BindMount(
                source=str(source),
                target=target,
                read_only=bool(mount.get("readOnly")),
                file=is_file,
                # For messages: the source as written (the expanded one may be a secret).
                shown=str(base / shown) if mount.get("subPathExpr") else None,
            )
        )
        sources.append((target, source))
        volume_paths[volume_name] = str(base)
        env[volume_env_name(target)] = target if bind else str(source)

    wanted = str(container.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH)
    termination = layout.termination(name)
    under = [(t, s) for t, s in sources if wanted == t or wanted.startswith(t.rstrip("/") + "/")]
    if under:
        target, source = max(under, key=lambda pair: len(pair[0]))
        termination = source / os.path.relpath(wanted, target) if wanted != target else source
    elif bind:
        mounts.append(BindMount(source=str(termination), target=wanted, file=True, optional=True))
    env["VK_TERMINATION_MESSAGE_PATH"] = str(termination)

    working_dir = str(container.get("workingDir") or "")
    if not working_dir:
        working_dir = image.root if image is not None and image.root else ""
    if not working_dir:
        working_dir = str(layout.workdir(name))
        if user is not None:
            layout.workdir(name).mkdir(parents=True, exist_ok=True)
            _give(layout.workdir(name), user)
    if user is not None and termination == layout.termination(name):
        if not termination.exists():
            termination.touch(mode=0o644)
        _give(termination, user)
    return Launch(
        argv=argv,
        env=env,
        cwd=working_dir,
        mounts=mounts if bind else None,
        termination_path=termination,
        volume_paths=volume_paths,
        user=user,
        shown_argv0=(argv_of(container, config, expanded=False) or [""])[0],
    )


def container_id(uid: str, name: str, run: int, started: float) -> str:
    return hashlib.sha256(f"{uid}/{name}/{run}/{started}".encode()).hexdigest()
