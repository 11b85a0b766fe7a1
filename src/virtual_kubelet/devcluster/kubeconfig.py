"""Writes self-contained kubeconfig files (certificates embedded) for dev-cluster users.

JSON is valid YAML, and every Kubernetes client reads it; writing it needs no YAML library.
"""

from __future__ import annotations

import base64
from pathlib import Path

import orjson

from .pki import KeyPair


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(
    path: Path, *, server: str, ca: Path, client: KeyPair, cluster: str, user: str
) -> Path:
    """Write a kubeconfig for `user` (client certificate) talking to `server`; mode 0600."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": cluster, "cluster": {"server": server, "certificate-authority-data": _b64(ca)}}
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(client.cert),
                    "client-key-data": _b64(client.key),
                },
            }
        ],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
        "preferences": {},
    }
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    path.chmod(0o600)
    return path
