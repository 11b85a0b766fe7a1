"""Small OCI images built locally with the standard library, for a runtime that cannot reach any
public registry: `localhost/busybox:1.35` (busybox-static with every applet linked, `sh` as its
command) and `localhost/pause:latest` (the same layer, `sleep` forever: a sandbox's command must
never exit). Written as one OCI image-layout tar that `ctr images import` reads.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

#: Not `latest`: pods naming it get imagePullPolicy IfNotPresent by default (no registry here).
BUSYBOX = "localhost/busybox:1.35"
PAUSE = "localhost/pause:latest"
BUSYBOX_BINARY = Path("/bin/busybox")

_PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
_GROUP = b"root:x:0:\nnogroup:x:65534:\n"


@dataclass(frozen=True)
class ImageSpec:
    """One image of the layout: its reference and the config's command."""

    reference: str
    command: tuple[str, ...]


IMAGES = (
    ImageSpec(BUSYBOX, ("/bin/sh",)),
    ImageSpec(PAUSE, ("/bin/sleep", "2147483647")),
)


def _applets(busybox: Path) -> list[str]:
    listed = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True)
    return sorted({name for name in listed.stdout.split() if name and "/" not in name})


def _layer(busybox: Path) -> bytes:
    """A reproducible rootfs tar: /bin/busybox, a link per applet, /etc/passwd and group, and the
    empty directories programs expect."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime, info.linkname = kind, mode, 0, link
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)

        for directory in ("bin", "etc", "tmp", "proc", "sys", "dev", "root", "var", "var/www"):
            add(directory, tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755)
        add("bin/busybox", tarfile.REGTYPE, 0o755, busybox.read_bytes())
        for applet in _applets(busybox):
            if applet != "busybox":
                add(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox")
        add("etc/passwd", tarfile.REGTYPE, 0o644, _PASSWD)
        add("etc/group", tarfile.REGTYPE, 0o644, _GROUP)
    return buffer.getvalue()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_layout(target: Path, busybox: Path = BUSYBOX_BINARY) -> Path:
    """Write the images' OCI layout as the tar `target` (for `ctr -n k8s.io images import`)."""
    if not busybox.exists():
        raise FileNotFoundError(f"{busybox} is missing (apt-get install busybox-static)")
    layer = _layer(busybox)
    blobs: dict[str, bytes] = {_digest(layer): layer}
    manifests = []
    for image in IMAGES:
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Cmd": list(image.command), "Env": ["PATH=/bin:/usr/bin:/sbin"]},
                "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
            },
            sort_keys=True,
        ).encode()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": _digest(config),
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": _digest(layer),
                        "size": len(layer),
                    }
                ],
            },
            sort_keys=True,
        ).encode()
        blobs[_digest(config)] = config
        blobs[_digest(manifest)] = manifest
        manifests.append(
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": _digest(manifest),
                "size": len(manifest),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": image.reference,
                    "org.opencontainers.image.ref.name": image.reference.rsplit(":", 1)[1],
                },
            }
        )
    index = json.dumps({"schemaVersion": 2, "manifests": manifests}, sort_keys=True).encode()
    files = {
        "oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
        "index.json": index,
        **{f"blobs/sha256/{d.split(':', 1)[1]}": data for d, data in blobs.items()},
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(target, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))
    return target
