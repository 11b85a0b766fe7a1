"""Builds etcd and the Kubernetes control-plane binaries from published Go modules, once, into a cache.

Kubernetes' own go.mod redirects its staging modules to local directories, so `go install` of its
commands fails; we become the main module instead (a throw-away wrapper go.mod) and pin every staging
module to the matching published `v0.Y.Z` tag. etcd's server module has replace directives too and is
built through a wrapper the same way. Builds are idempotent, serialised by a file lock, and atomic
(a half-finished build is never mistaken for a finished one). Nothing here starts a process that
outlives the build.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .errors import BuildError
from .gotoolchain import find_go
from .versions import Versions, cache_root

Progress = Callable[[str], None]

KUBERNETES_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
ETCD_COMMANDS = ("etcd",)
_PROGRESS_EVERY_S = 15.0


@dataclass(frozen=True)
class Binaries:
    """Paths of the control-plane executables."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path

    @classmethod
    def in_dirs(cls, kubernetes_bin: Path, etcd_bin: Path) -> Binaries:
        return cls(
            etcd=etcd_bin / "etcd",
            kube_apiserver=kubernetes_bin / "kube-apiserver",
            kube_controller_manager=kubernetes_bin / "kube-controller-manager",
            kube_scheduler=kubernetes_bin / "kube-scheduler",
        )

    def missing(self) -> list[Path]:
        return [p for p in self.__dict__.values() if not os.access(p, os.X_OK)]


def _silent(_: str) -> None:
    pass


def ensure_binaries(
    versions: Versions | None = None,
    *,
    root: Path | None = None,
    progress: Progress = _silent,
) -> Binaries:
    """Return the control-plane binaries for `versions`, building whatever is missing.

    `$VK_CONTROLPLANE_BIN` names a directory of ready-made binaries and skips building entirely.
    """
    versions = versions or Versions.from_env()
    prebuilt = os.environ.get("VK_CONTROLPLANE_BIN")
    if prebuilt:
        binaries = Binaries.in_dirs(Path(prebuilt), Path(prebuilt))
        if binaries.missing():
            names = ", ".join(p.name for p in binaries.missing())
            raise BuildError("control plane", f"VK_CONTROLPLANE_BIN={prebuilt} lacks {names}")
        return binaries
    root = root or cache_root()
    k8s_bin = _ensure(
        root / f"kubernetes-{versions.kubernetes}",
        KUBERNETES_COMMANDS,
        lambda workdir, out, log: _build_kubernetes(versions, workdir, out, log, progress),
        "kubernetes",
        progress,
    )
    etcd_bin = _ensure(
        root / f"etcd-{versions.etcd}",
        ETCD_COMMANDS,
        lambda workdir, out, log: _build_etcd(versions, workdir, out, log, progress),
        "etcd",
        progress,
    )
    return Binaries.in_dirs(k8s_bin, etcd_bin)


def _complete(home: Path, commands: Sequence[str]) -> bool:
    bin_dir = home / "bin"
    return (home / "build-info.json").is_file() and all(
        os.access(bin_dir / c, os.X_OK) for c in commands
    )


@contextlib.contextmanager
def _locked(path: Path, what: str, progress: Progress) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"{what}: another process is building it; waiting for its lock ({path})")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _ensure(
    home: Path,
    commands: Sequence[str],
    build: Callable[[Path, Path, Path], None],
    what: str,
    progress: Progress,
) -> Path:
    if _complete(home, commands):
        return home / "bin"
    with _locked(home.with_name(home.name + ".lock"), what, progress):
        if _complete(home, commands):  # built by whoever held the lock before us
            return home / "bin"
        home.mkdir(parents=True, exist_ok=True)
        workdir = home / "src"
        staging = home / "bin.partial"
        for d in (workdir, staging):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
        log = home / "build.log"
        log.write_text("")
        started = time.monotonic()
        build(workdir, staging, log)
        missing = [c for c in commands if not os.access(staging / c, os.X_OK)]
        if missing:
            raise BuildError(what, f"build finished but produced no {', '.join(missing)}", log)
        shutil.rmtree(home / "bin", ignore_errors=True)
        staging.rename(home / "bin")
        info = {
            "component": what,
            "commands": list(commands),
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(time.monotonic() - started, 1),
            "go": _go_version(),
        }
        (home / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")
        progress(f"{what}: built in {info['seconds']:.0f} s -> {home / 'bin'}")
        return home / "bin"


# --- running go ----------------------------------------------------------------------------------


def _go() -> str:
    return find_go()


def _go_version() -> str:
    out = subprocess.run([_go(), "env", "GOVERSION"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    # Never download a different toolchain behind the user's back; static binaries like upstream's.
    env.update(GOTOOLCHAIN="local", GOFLAGS="-mod=mod -buildvcs=false", CGO_ENABLED="0")
    return env


def _exec_go(
    args: Sequence[str],
    cwd: Path,
    log: Path,
    on_line: Callable[[str], None] | None = None,
) -> tuple[int, str]:
    """Run `go args...` in `cwd`, appending its output to `log`; return (exit code, stdout)."""
    with log.open("a") as sink:
        sink.write(f"$ go {' '.join(args)}\n")
        sink.flush()
        proc = subprocess.Popen(
            [_go(), *args],
            cwd=cwd,
            env=_go_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        captured = []
        for line in proc.stdout:
            sink.write(line)
            captured.append(line)
            if on_line is not None:
                on_line(line.rstrip("\n"))
        return proc.wait(), "".join(captured)


def _run_go(
    component: str,
    args: Sequence[str],
    cwd: Path,
    log: Path,
    on_line: Callable[[str], None] | None = None,
) -> str:
    """Like `_exec_go`, but a failure raises BuildError naming the go command."""
    code, output = _exec_go(args, cwd, log, on_line)
    if code != 0:
        command = " ".join(a for a in args[:2] if not a.startswith("-"))
        raise BuildError(component, f"`go {command}` failed with exit code {code}", log)
    return output


def _download(component: str, module: str, cwd: Path, log: Path) -> dict[str, str]:
    """`go mod download -json module@version`, quoting the proxy's refusal when it fails."""
    code, output = _exec_go(["mod", "download", "-json", module], cwd, log)
    try:
        info: dict[str, str] = json.loads(output)
    except ValueError:
        info = {"Error": output.strip()}
    if code != 0 or "Error" in info:
        raise BuildError(
            component,
            f"cannot download {module} (is it a published release?): {info.get('Error')}",
            log,
        )
    return info


class _Ticker:
    """Turns `go build -v` package lines into occasional progress messages."""

    def __init__(self, what: str, total: int, progress: Progress) -> None:
        self.what, self.total, self.progress = what, total, progress
        self.count = 0
        self.started = self.last = time.monotonic()

    def __call__(self, line: str) -> None:
        if line and not line.startswith(("#", "go: ")):
            self.count += 1
        now = time.monotonic()
        if now - self.last >= _PROGRESS_EVERY_S:
            self.last = now
            self.progress(
                f"{self.what}: compiled {self.count} of up to {self.total} packages "
                f"({now - self.started:.0f} s)"
            )


def _build_kubernetes(
    versions: Versions, workdir: Path, out: Path, log: Path, progress: Progress
) -> None:
    what = f"kubernetes {versions.kubernetes}"
    progress(
        f"{what}: resolving modules (the first build downloads ~600 MB of modules and compiles for ~5 minutes on 2 cores)"
    )
    _run_go(what, ["mod", "init", "local.invalid/vk-devcluster-kubernetes"], workdir, log)
    info = _download(what, f"k8s.io/kubernetes@{versions.kubernetes}", workdir, log)
    # k8s.io/kubernetes requires each staging module at v0.0.0 and replaces it with a local path;
    # as a dependency those replaces are ignored, so pin each to its published tag ourselves.
    staging = sorted(
        set(
            re.findall(
                r"^\s*(k8s\.io/[\w.\-/]+)\s+v0\.0\.0(?=\s|$)", Path(info["GoMod"]).read_text(), re.M
            )
        )
    )
    if not staging:
        raise BuildError(what, "found no staging modules in k8s.io/kubernetes' go.mod", log)
    _run_go(
        what,
        ["mod", "edit", *(f"-replace={m}={m}@{versions.staging}" for m in staging)],
        workdir,
        log,
    )
    packages = [f"k8s.io/kubernetes/cmd/{c}" for c in KUBERNETES_COMMANDS]
    _run_go(what, ["get", *(f"{p}@{versions.kubernetes}" for p in packages)], workdir, log)
    total = len(_run_go(what, ["list", "-deps", *packages], workdir, log).split())
    ldflags = ["-s", "-w"]
    stamp = {
        "gitVersion": versions.kubernetes,
        "gitMajor": "1",
        "gitMinor": str(versions.kubernetes_minor),
        "gitTreeState": "archive",
        "buildDate": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    for key, value in stamp.items():
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
            ldflags += ["-X", f"{pkg}.{key}={value}"]
    progress(f"{what}: compiling {', '.join(KUBERNETES_COMMANDS)} ({total} packages)")
    _run_go(
        what,
        ["build", "-v", "-trimpath", "-ldflags", " ".join(ldflags), "-o", f"{out}/", *packages],
        workdir,
        log,
        on_line=_Ticker(what, total, progress),
    )


def _build_etcd(
    versions: Versions, workdir: Path, out: Path, log: Path, progress: Progress
) -> None:
    what = f"etcd {versions.etcd}"
    progress(f"{what}: resolving modules")
    _run_go(what, ["mod", "init", "local.invalid/vk-devcluster-etcd"], workdir, log)
    package = "go.etcd.io/etcd/server/v3"
    _run_go(what, ["get", f"{package}@{versions.etcd}"], workdir, log)
    total = len(_run_go(what, ["list", "-deps", package], workdir, log).split())
    progress(f"{what}: compiling ({total} packages)")
    _run_go(
        what,
        ["build", "-v", "-trimpath", "-ldflags", "-s -w", "-o", str(out / "etcd"), package],
        workdir,
        log,
        on_line=_Ticker(what, total, progress),
    )


@dataclass(frozen=True)
class GoTool:
    """A command built from a published Go module (e.g. a benchmark contender)."""

    name: str
    module: str
    version: str
    package: str
    binary: str
    ldflags: str = "-s -w"

    @property
    def home_name(self) -> str:
        return f"{self.name}-{self.version}"


def ensure_tool(tool: GoTool, *, root: Path | None = None, progress: Progress = _silent) -> Path:
    """The path of `tool`'s binary, building it into the cache once (a wrapper module, so
    modules with replace directives or an unlistable proxy entry build too)."""
    home = (root or cache_root()) / "tools" / tool.home_name

    def build(workdir: Path, out: Path, log: Path) -> None:
        what = f"{tool.name} {tool.version}"
        progress(f"{what}: resolving modules")
        _run_go(what, ["mod", "init", f"local.invalid/vk-tool-{tool.name}"], workdir, log)
        _run_go(what, ["get", f"{tool.module}@{tool.version}"], workdir, log)
        total = len(_run_go(what, ["list", "-deps", tool.package], workdir, log).split())
        progress(f"{what}: compiling ({total} packages)")
        _run_go(
            what,
            [
                "build",
                "-v",
                "-trimpath",
                "-ldflags",
                tool.ldflags,
                "-o",
                str(out / tool.binary),
                tool.package,
            ],
            workdir,
            log,
            on_line=_Ticker(what, total, progress),
        )

    return _ensure(home, [tool.binary], build, tool.name, progress) / tool.binary
