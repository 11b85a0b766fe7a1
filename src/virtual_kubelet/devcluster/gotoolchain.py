"""Finding a Go toolchain new enough to build the control plane, or fetching one.

A fresh machine may lack Go (or have Debian's old one). The Go module proxy, which the build needs
anyway, also serves every Go release as the module `golang.org/toolchain`; that is what
`GOTOOLCHAIN=goX.Y.Z` downloads. We fetch the same zip, check its `h1:` hash against the checksum
database (through the proxy, over TLS), and unpack it into the cache. Nothing is installed system-wide.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import platform
import re
import shutil
import subprocess
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from .errors import BuildError
from .versions import cache_root

#: Go release fetched by `--install-go` (Kubernetes 1.36 needs >= 1.26).
GO_VERSION = "1.26.8"
MIN_GO = (1, 26)
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def _version_of(go: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    match = re.match(r"go(\d+)\.(\d+)", out.stdout.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def installed_go() -> Path:
    """Where `install_go` puts the `go` binary."""
    return cache_root() / f"go{GO_VERSION}" / "bin" / "go"


def find_go() -> str:
    """A `go` of at least MIN_GO: the one on PATH, else the one `install_go` fetched."""
    on_path = shutil.which("go")
    found = _version_of(on_path) if on_path else None
    if on_path and found and found >= MIN_GO:
        return on_path
    if os.access(installed_go(), os.X_OK):
        return str(installed_go())
    have = (
        f"found Go {found[0]}.{found[1]} at {on_path}"
        if on_path and found
        else "`go` is not on PATH"
    )
    raise BuildError(
        "go toolchain",
        f"{have}; the dev cluster is built from Go modules and needs Go >= {MIN_GO[0]}.{MIN_GO[1]}. "
        f"Run `virtual-kubelet devcluster build --install-go` to fetch Go {GO_VERSION} into "
        f"{cache_root()}, or set VK_CONTROLPLANE_BIN to ready-made binaries",
    )


def _proxy() -> str:
    for entry in re.split(r"[,|]", os.environ.get("GOPROXY", "")):
        if entry.startswith(("https://", "http://")):
            return entry.rstrip("/")
    return "https://proxy.golang.org"


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=300) as response:
        data: bytes = response.read()
        return data


def module_zip_hash(archive: zipfile.ZipFile) -> str:
    """The `h1:` hash Go's checksum database records for a module zip (golang.org/x/mod dirhash)."""
    summary = io.StringIO()
    for name in sorted(archive.namelist()):
        if name.endswith("/"):
            continue
        summary.write(f"{hashlib.sha256(archive.read(name)).hexdigest()}  {name}\n")
    return "h1:" + base64.b64encode(hashlib.sha256(summary.getvalue().encode()).digest()).decode()


def install_go(progress: Callable[[str], None]) -> str:
    """Fetch, verify and unpack Go GO_VERSION into the cache (once); return its `go` binary."""
    if os.access(installed_go(), os.X_OK):
        return str(installed_go())
    arch = _ARCH.get(platform.machine())
    if arch is None or platform.system() != "Linux":
        raise BuildError(
            "go toolchain", f"no Go download for {platform.system()}/{platform.machine()}"
        )
    module = f"golang.org/toolchain@v0.0.1-go{GO_VERSION}.linux-{arch}"
    path, _, version = module.partition("@")
    proxy = _proxy()
    progress(f"go toolchain: downloading {module} from {proxy}")
    try:
        archive_bytes = _fetch(f"{proxy}/{path}/@v/{version}.zip")
        lookup = _fetch(f"{proxy}/sumdb/sum.golang.org/lookup/{module}").decode()
    except OSError as exc:
        raise BuildError("go toolchain", f"cannot download {module} from {proxy}: {exc}") from exc
    expected = re.search(rf"^{re.escape(path)} {re.escape(version)} (h1:\S+)$", lookup, re.M)
    archive = zipfile.ZipFile(io.BytesIO(archive_bytes))
    actual = module_zip_hash(archive)
    if expected is None or expected.group(1) != actual:
        raise BuildError(
            "go toolchain",
            f"{module}: checksum mismatch (checksum database says "
            f"{expected.group(1) if expected else 'nothing'}, download hashes to {actual})",
        )
    home = installed_go().parent.parent
    staging = home.with_name(home.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    prefix = f"{module}/"
    for name in archive.namelist():
        if not name.startswith(prefix) or name.endswith("/"):
            continue
        target = staging / name[len(prefix) :]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(archive.read(name))
        # Module zips carry no file modes; Go itself marks these executable the same way.
        if target.parent.name == "bin" or "/pkg/tool/" in name:
            target.chmod(0o755)
    shutil.rmtree(home, ignore_errors=True)
    staging.rename(home)
    progress(f"go toolchain: Go {GO_VERSION} ready at {installed_go()}")
    return str(installed_go())
