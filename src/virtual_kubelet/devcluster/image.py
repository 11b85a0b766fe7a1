"""The agent's container image built without Docker: what deploy/Dockerfile describes, made on a
machine that has apt and PyPI but no Docker engine and no public registry.

    python -m virtual_kubelet.devcluster.image build            # prints the image reference
    python -m virtual_kubelet.devcluster.image import --containerd tests

Two layers, each cached under `<cache>/image/`:

1. **base**: a Debian bookworm root filesystem from `mmdebstrap --variant=essential` (Debian's
   Essential packages, python3 and ca-certificates from deb.debian.org with bookworm-updates and
   -security; no apt, no compiler, no docs), plus the non-root user 65532 `virtual-kubelet`.
   Keyed by the sources and the package list, so it is built once (about a minute) and reused.
2. **app**: `/opt/virtual-kubelet`, a virtual environment made by the base's own python3 (in a
   chroot), holding this checkout's wheel and its dependencies, installed from wheels that the
   host's pip built or downloaded (the "build stage": only the wheels cross over, pip itself is
   run from its wheel and not installed). Keyed by the base and the wheel's inputs
   (pyproject.toml, README.md, src/), so a rerun with unchanged sources costs nothing.

The layers, an image config (entrypoint `virtual-kubelet`, user 65532, the Dockerfile's
environment and ports) and a manifest are written as one OCI image-layout tar, which
`ctr images import` loads into a containerd's `k8s.io` namespace, where the CRI plugin looks.
Building needs root (mmdebstrap's root mode and chroot).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .containerd import BackendUnavailable, Containerd, install
from .versions import cache_root

REPOSITORY = "localhost/virtual-kubelet-python"
SUITE = "bookworm"
#: Beyond Debian's Essential set: the interpreter (Debian's 3.11, as the package requires) with
#: its full standard library, and the CA bundle for TLS to cloud APIs.
BASE_PACKAGES = ("python3-minimal", "libpython3.11-stdlib", "ca-certificates")
#: Named explicitly: without them mmdebstrap reads sources from a non-terminal stdin or takes
#: the host's, which need not be Debian's. Security and point-release updates included.
SOURCES = (
    f"deb http://deb.debian.org/debian {SUITE} main",
    f"deb http://deb.debian.org/debian {SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {SUITE}-security main",
)
#: Left out of the base, as the slim Python images do.
EXCLUDED_PATHS = (
    "/usr/share/doc/*",
    "/usr/share/man/*",
    "/usr/share/info/*",
    "/usr/share/locale/*",
)
UID = GID = 65532
USER = "virtual-kubelet"
VENV = "/opt/virtual-kubelet"
PYTHON = "/usr/bin/python3"
BASE_PYTHON = (3, 11)  # bookworm's python3
ENV = (
    f"PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "PYTHONDONTWRITEBYTECODE=1",
    "PYTHONUNBUFFERED=1",
)
PORTS = (10250, 10255)
TOOLS = {
    "mmdebstrap": "/usr/bin/mmdebstrap",
    "debian-archive-keyring": "/usr/share/keyrings/debian-archive-keyring.gpg",
}
#: The inputs of the wheel, relative to the checkout.
SOURCE_INPUTS = ("pyproject.toml", "README.md", "src")


class ImageBuildError(RuntimeError):
    """The image could not be built; the message says which step failed and why."""


@dataclass(frozen=True)
class BuiltImage:
    reference: str
    archive: Path
    seconds: float  # what this call spent building (0 when it came from the cache)


def checkout() -> Path:
    """The source checkout this module runs from (the wheel is built from it)."""
    root = Path(__file__).resolve().parents[3]
    if not (root / "pyproject.toml").is_file():
        raise ImageBuildError(f"no checkout at {root}: the image is built from the sources")
    return root


def _run(step: str, command: list[str], env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False, env=env
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-15:]
        raise ImageBuildError(f"{step} failed ({result.returncode}):\n" + "\n".join(tail))
    return str(result.stdout)


def _hash_inputs(*parts: str, files: Sequence[Path] = (), root: Path = Path("/")) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() + b"\0")
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def source_files(root: Path) -> list[Path]:
    """The files the wheel is built from, in a stable order (caches and bytecode left out)."""
    found: list[Path] = []
    for name in SOURCE_INPUTS:
        path = root / name
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found += [
                p
                for p in path.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
            ]
    return sorted(found)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _tar_tree(source: Path, target: Path, members: list[str]) -> None:
    """A layer tar of `members` (paths relative to `source`) with numeric owners."""
    _run(
        f"packing {target.name}",
        ["tar", "--numeric-owner", "--sort=name", "--mtime=@0", "-C", str(source), "-cf",
         str(target), *members],
    )  # fmt: skip


class ImageBuilder:
    """Builds (or finds in its cache) the image of `source`."""

    def __init__(self, cache: Path | None = None, source: Path | None = None) -> None:
        self.cache = cache or cache_root() / "image"
        self.source = source or checkout()

    @property
    def base_key(self) -> str:
        return _hash_inputs(*SOURCES, *BASE_PACKAGES, *EXCLUDED_PATHS, f"{USER}:{UID}:{GID}")

    def base(self) -> Path:
        """The base's directory: `rootfs/` (kept for the app stage's chroot) and `layer.tar`."""
        home = self.cache / f"base-{self.base_key}"
        if (home / "layer.tar").is_file():
            return home
        if os.geteuid() != 0:
            raise ImageBuildError("building the base needs root (mmdebstrap, chroot)")
        try:
            install(TOOLS)
        except BackendUnavailable as exc:
            raise ImageBuildError(str(exc)) from None
        self.cache.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix="partial-base-", dir=self.cache))
        try:
            rootfs = partial / "rootfs"
            _run(
                "mmdebstrap",
                [
                    "mmdebstrap",
                    "--variant=essential",
                    "--include=" + ",".join(BASE_PACKAGES),
                    *(f"--dpkgopt=path-exclude={p}" for p in EXCLUDED_PATHS),
                    SUITE,
                    str(rootfs),
                    *SOURCES,
                ],
            )
            self._add_user(rootfs)
            # The runtime mounts /dev; device nodes in a layer are refused by rootless tools.
            for node in (rootfs / "dev").iterdir():
                if not node.is_dir() or node.is_symlink():
                    node.unlink()
            _tar_tree(rootfs, partial / "layer.tar", ["."])
            partial.rename(home)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return home

    @staticmethod
    def _add_user(rootfs: Path) -> None:
        """The Dockerfile's `useradd`, written directly (the Essential set has no useradd)."""
        with (rootfs / "etc/passwd").open("a") as passwd:
            passwd.write(f"{USER}:x:{UID}:{GID}::/nonexistent:/usr/sbin/nologin\n")
        with (rootfs / "etc/group").open("a") as group:
            group.write(f"{USER}:x:{GID}:\n")
        shadow = rootfs / "etc/shadow"
        if shadow.exists():
            with shadow.open("a") as stream:
                stream.write(f"{USER}:!:19000::::::\n")

    def app_key(self) -> str:
        return _hash_inputs(self.base_key, files=source_files(self.source), root=self.source)

    def _wheels(self, target: Path) -> None:
        """The build stage: this checkout's wheel and its dependencies' wheels (the host's pip,
        the same Python minor version and glibc as the base), and pip's own wheel to run."""
        if sys.version_info[:2] != BASE_PYTHON:
            # Compiled dependencies (grpcio, orjson, cryptography...) come as wheels for the
            # interpreter that fetches them: they must fit the base's Python.
            raise ImageBuildError(
                f"the wheels must be built by Python {BASE_PYTHON[0]}.{BASE_PYTHON[1]} (the "
                f"image's), not {sys.version_info[0]}.{sys.version_info[1]}"
            )
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
        _run("building the wheels", [*pip, "wheel", "--wheel-dir", str(target), str(self.source)])
        _run("fetching pip", [*pip, "download", "--no-deps", "--dest", str(target), "pip"])

    def app(self, base: Path, key: str) -> Path:
        """The app layer's tar: the virtual environment, made inside a copy of the base."""
        layer = self.cache / f"app-{key}.tar"
        if layer.is_file():
            return layer
        with tempfile.TemporaryDirectory(prefix="partial-app-", dir=self.cache) as work:
            rootfs = Path(work) / "rootfs"
            _run("copying the base", ["cp", "-a", str(base / "rootfs"), str(rootfs)])
            wheels = rootfs / "tmp/wheels"
            wheels.mkdir(parents=True)
            self._wheels(wheels)
            pip_wheel = next(wheels.glob("pip-*.whl"))
            chroot = [shutil.which("chroot") or "/usr/sbin/chroot", str(rootfs)]
            _run("creating the venv", [*chroot, PYTHON, "-m", "venv", "--without-pip", VENV])
            _run(
                "installing into the venv",
                [
                    *chroot,
                    f"{VENV}/bin/python",
                    f"/tmp/wheels/{pip_wheel.name}/pip",
                    "install",
                    "--no-index",
                    "--no-cache-dir",
                    "--disable-pip-version-check",
                    "--find-links=/tmp/wheels",
                    "virtual-kubelet",
                ],
                env={"PATH": "/usr/bin:/bin", "HOME": "/root"},
            )
            _run("checking the entrypoint", [*chroot, f"{VENV}/bin/virtual-kubelet", "--help"])
            partial = layer.with_suffix(".partial")
            _tar_tree(rootfs, partial, [VENV.lstrip("/")])
            partial.rename(layer)
        return layer

    def build(self) -> BuiltImage:
        started = time.monotonic()
        key = self.app_key()  # once: the sources may change while it builds
        reference = f"{REPOSITORY}:{key}"
        archive = self.cache / f"image-{key}.tar"
        if archive.is_file():
            return BuiltImage(reference, archive, 0.0)
        base = self.base()
        app = self.app(base, key)
        write_archive(archive, reference, [base / "layer.tar", app])
        self._prune(keep={base.name, app.name, archive.name})
        return BuiltImage(reference, archive, time.monotonic() - started)

    def _prune(self, keep: set[str]) -> None:
        """Older bases, app layers and archives go (each is a few hundred MB)."""
        for path in self.cache.iterdir():
            if path.name.startswith(("base-", "app-", "image-")) and path.name not in keep:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)


def _config(layers: list[Path], digests: list[str]) -> bytes:
    return json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "User": f"{UID}:{GID}",
                "Env": list(ENV),
                "Entrypoint": ["virtual-kubelet"],
                "ExposedPorts": {f"{port}/tcp": {} for port in PORTS},
                "Labels": {"org.opencontainers.image.source": "deploy/Dockerfile"},
            },
            "rootfs": {"type": "layers", "diff_ids": digests},
            "history": [
                {"created_by": f"virtual_kubelet.devcluster.image: {p.name}"} for p in layers
            ],
        },
        sort_keys=True,
    ).encode()


def write_archive(target: Path, reference: str, layers: list[Path]) -> Path:
    """One OCI image-layout tar of the image `reference` made of the uncompressed `layers`."""
    digests = [_file_digest(layer) for layer in layers]
    config = _config(layers, digests)
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest,
                    "size": layer.stat().st_size,
                }
                for layer, digest in zip(layers, digests, strict=True)
            ],
        },
        sort_keys=True,
    ).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": len(manifest),
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": reference,
                        "org.opencontainers.image.ref.name": reference.rsplit(":", 1)[1],
                    },
                }
            ],
        },
        sort_keys=True,
    ).encode()
    partial = target.with_suffix(".partial")
    with tarfile.open(partial, "w") as tar:

        def add_bytes(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, _BytesReader(data))

        add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add_bytes("index.json", index)
        add_bytes(f"blobs/sha256/{config_digest[7:]}", config)
        add_bytes(f"blobs/sha256/{manifest_digest[7:]}", manifest)
        for layer, digest in zip(layers, digests, strict=True):
            tar.add(layer, arcname=f"blobs/sha256/{digest[7:]}")
    partial.rename(target)
    return target


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._data, self._offset = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._offset + size
        chunk = self._data[self._offset : end]
        self._offset += len(chunk)
        return chunk


def import_into(backend: Containerd, image: BuiltImage) -> None:
    """Load the image into `backend`'s `k8s.io` namespace unless it has it already; builds of
    older sources are removed from it (containerd then garbage-collects their layers)."""
    present = backend.images()
    stale = sorted(
        name for name in present if name.startswith(f"{REPOSITORY}:") and name != image.reference
    )
    if stale:
        backend.ctr("images", "rm", *stale, check=False)
    if image.reference in present:
        return
    imported = backend.ctr("images", "import", str(image.archive), check=False)
    if imported.returncode != 0 or image.reference not in backend.images():
        raise ImageBuildError(f"importing {image.archive} failed: {imported.stderr.strip()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m virtual_kubelet.devcluster.image")
    parser.add_argument("action", choices=["build", "import"])
    parser.add_argument(
        "--containerd", default="default", help="the private containerd to import into (import)"
    )
    args = parser.parse_args(argv)
    try:
        image = ImageBuilder().build()
        if args.action == "import":
            import_into(Containerd.named(args.containerd).up(), image)
    except (ImageBuildError, BackendUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if image.seconds:
        print(f"built {image.archive} in {image.seconds:.0f} s", file=sys.stderr)
    print(image.reference)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
