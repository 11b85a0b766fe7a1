"""The image builder's pure parts: the OCI layout it writes and the cache key of the sources.
(Building the image itself needs root and apt: tests/integration/test_chart_in_cluster_cri.py.)"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from virtual_kubelet.devcluster.image import ImageBuilder, source_files, write_archive


def _layer(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_the_archive_is_an_oci_layout_whose_digests_match(tmp_path: Path) -> None:
    layers = [
        _layer(tmp_path / "base.tar", {"etc/passwd": b"root:x:0:0::/root:/bin/sh\n"}),
        _layer(tmp_path / "app.tar", {"opt/virtual-kubelet/bin/virtual-kubelet": b"#!/bin/sh\n"}),
    ]
    archive = write_archive(tmp_path / "image.tar", "localhost/vk:abc", layers)
    blobs = {}
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            stream = tar.extractfile(member)
            assert stream is not None, member.name
            blobs[member.name] = stream.read()
    assert json.loads(blobs["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    (entry,) = json.loads(blobs["index.json"])["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == "localhost/vk:abc"

    def blob(descriptor: dict[str, object]) -> bytes:
        digest = str(descriptor["digest"])
        data = blobs[f"blobs/sha256/{digest.removeprefix('sha256:')}"]
        assert hashlib.sha256(data).hexdigest() == digest.removeprefix("sha256:")
        assert len(data) == descriptor["size"]
        return data

    manifest = json.loads(blob(entry))
    config = json.loads(blob(manifest["config"]))
    contents = [blob(layer) for layer in manifest["layers"]]
    assert contents == [layer.read_bytes() for layer in layers]
    assert config["rootfs"]["diff_ids"] == [d["digest"] for d in manifest["layers"]]
    assert config["config"]["Entrypoint"] == ["virtual-kubelet"]
    assert config["config"]["User"] == "65532:65532"
    assert config["config"]["Env"][0].startswith("PATH=/opt/virtual-kubelet/bin:")


def test_the_cache_key_follows_the_wheel_inputs_only(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    package = tmp_path / "src" / "pkg"
    package.mkdir(parents=True)
    (package / "a.py").write_text("A = 1\n")
    builder = ImageBuilder(cache=tmp_path / "cache", source=tmp_path)
    key = builder.app_key()

    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "docs.md").write_text("not an input\n")
    assert builder.app_key() == key
    assert [p.name for p in source_files(tmp_path)] == ["pyproject.toml", "a.py"]

    (package / "a.py").write_text("A = 2\n")
    assert builder.app_key() != key
