import asyncio
import base64
import datetime
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from virtual_kubelet.pods.volumes import (
    MaterialiseResult,
    PodVolumes,
    ServiceAccountToken,
    VolumeError,
)

NOW = 1_700_000_000.0
UID = "6f1c2a9e-0000-4000-8000-000000000001"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class FakeSources:
    """ConfigMaps, Secrets and TokenRequest as a test wants them; records token requests."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.config_maps: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.token_calls: list[dict[str, Any]] = []
        #: Lifetime of issued tokens; None: as requested (expiration_seconds).
        self.lifetime: float | None = None
        self.fail: Exception | None = None

    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.config_maps.get((namespace, name))

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.secrets.get((namespace, name))

    async def service_account_token(
        self,
        namespace: str,
        service_account: str,
        *,
        audience: str | None,
        expiration_seconds: int,
        pod_name: str,
        pod_uid: str,
    ) -> ServiceAccountToken:
        self.token_calls.append(
            {
                "namespace": namespace,
                "service_account": service_account,
                "audience": audience,
                "expiration_seconds": expiration_seconds,
                "pod_name": pod_name,
                "pod_uid": pod_uid,
            }
        )
        if self.fail is not None:
            raise self.fail
        lifetime = expiration_seconds if self.lifetime is None else self.lifetime
        expires = datetime.datetime.fromtimestamp(self.clock.now + lifetime, datetime.UTC)
        return ServiceAccountToken(f"jwt-{len(self.token_calls)}", expires)


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def make_pod(*volumes: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "shop", "uid": UID, **metadata},
        "spec": {
            "serviceAccountName": "builder",
            "containers": [
                {
                    "name": "app",
                    "image": "nginx",
                    "resources": {
                        "limits": {"cpu": "500m", "ephemeral-storage": "1Gi"},
                        "requests": {"memory": "64Mi", "ephemeral-storage": "1Gi"},
                    },
                }
            ],
            "volumes": list(volumes),
        },
    }


def kube_api_access(name: str = "kube-api-access-x7k2p") -> dict[str, Any]:
    """The projected volume the ServiceAccount admission plugin adds to every pod."""
    return {
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {
                                "path": "namespace",
                                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                            }
                        ]
                    }
                },
            ],
        },
    }


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sources(clock: Clock) -> FakeSources:
    return FakeSources(clock)


@pytest.fixture
def volumes(tmp_path: Path, sources: FakeSources, clock: Clock) -> PodVolumes:
    return PodVolumes(
        tmp_path / "state" / "pods",
        sources,
        node_allocatable={"cpu": "4", "memory": "8Gi", "ephemeral-storage": "100Gi"},
        clock=clock,
    )


def materialise(volumes: PodVolumes, pod: dict[str, Any]) -> MaterialiseResult:
    return asyncio.run(volumes.materialise(pod))


def vol(volumes: PodVolumes, name: str) -> Path:
    return volumes.pod_dir(UID) / "volumes" / name


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def hidden_dirs(directory: Path) -> list[str]:
    return sorted(
        p.name for p in directory.iterdir() if p.name.startswith("..") and not p.is_symlink()
    )


# --- configMap ------------------------------------------------------------------------------------


def test_config_map_volume_has_the_kubelet_layout(
    volumes: PodVolumes, sources: FakeSources
) -> None:
    sources.config_maps["shop", "web-config"] = {
        "data": {"nginx.conf": "worker_processes 2;\n", "motd": "héllo"},
        "binaryData": {"logo.bin": b64(b"\x00\xff\x10")},
    }
    pod = make_pod({"name": "config", "configMap": {"name": "web-config"}})

    result = materialise(volumes, pod)

    assert result.changed
    assert result.events == []
    assert result.refresh_at is None
    target = vol(volumes, "config")
    assert target == volumes.pods_dir / UID / "volumes" / "config"
    assert (target / "nginx.conf").read_text() == "worker_processes 2;\n"
    assert (target / "motd").read_text(encoding="utf-8") == "héllo"
    assert (target / "logo.bin").read_bytes() == b"\x00\xff\x10"
    [data_dir] = hidden_dirs(target)
    assert data_dir.startswith("..20")
    assert os.readlink(target / "..data") == data_dir
    for key in ("nginx.conf", "motd", "logo.bin"):
        assert os.readlink(target / key) == f"..data/{key}"
        assert (target / data_dir / key).is_file()
        assert mode(target / key) == 0o644
    assert sorted(p.name for p in target.iterdir()) == sorted(
        ["..data", data_dir, "nginx.conf", "motd", "logo.bin"]
    )
    # The tree holds secrets: only the agent may enter it.
    assert mode(volumes.pods_dir) == 0o700


def test_items_choose_keys_paths_and_modes(volumes: PodVolumes, sources: FakeSources) -> None:
    sources.config_maps["shop", "cfg"] = {"data": {"app": "a: 1", "unused": "x", "log": "debug"}}
    pod = make_pod(
        {
            "name": "cfg",
            "configMap": {
                "name": "cfg",
                "defaultMode": 0o440,
                "items": [
                    {"key": "app", "path": "conf/app.yaml", "mode": 0o600},
                    {"key": "log", "path": "conf/log/level"},
                ],
            },
        }
    )

    materialise(volumes, pod)

    target = vol(volumes, "cfg")
    assert (target / "conf" / "app.yaml").read_text() == "a: 1"
    assert (target / "conf" / "log" / "level").read_text() == "debug"
    assert mode(target / "conf" / "app.yaml") == 0o600
    assert mode(target / "conf" / "log" / "level") == 0o440
    assert os.readlink(target / "conf") == "..data/conf"
    assert not (target / "unused").exists()
    assert not (target / "app").exists()


def test_update_swaps_the_volume_atomically(volumes: PodVolumes, sources: FakeSources) -> None:
    sources.config_maps["shop", "cfg"] = {"data": {"a": "old a", "b": "old b"}}
    pod = make_pod({"name": "cfg", "configMap": {"name": "cfg"}})
    materialise(volumes, pod)
    target = vol(volumes, "cfg")
    [old_dir] = hidden_dirs(target)

    with (target / "a").open() as before:
        sources.config_maps["shop", "cfg"] = {"data": {"a": "new a", "c": "new c"}}
        result = materialise(volumes, pod)
        # Opened before the update: still the old version, never a mix.
        assert before.read() == "old a"

    assert result.changed
    assert (target / "a").read_text() == "new a"
    assert (target / "c").read_text() == "new c"
    assert not (target / "b").exists()
    assert not (target / "b").is_symlink()
    [new_dir] = hidden_dirs(target)
    assert new_dir != old_dir
    assert os.readlink(target / "..data") == new_dir
    assert sorted(p.name for p in target.iterdir()) == sorted(["..data", new_dir, "a", "c"])


def test_unchanged_volume_is_not_rewritten(volumes: PodVolumes, sources: FakeSources) -> None:
    sources.config_maps["shop", "cfg"] = {"data": {"a": "1"}}
    pod = make_pod({"name": "cfg", "configMap": {"name": "cfg"}})
    materialise(volumes, pod)
    target = vol(volumes, "cfg")
    inode = (target / "a").stat().st_ino

    result = materialise(volumes, pod)

    assert not result.changed
    assert (target / "a").stat().st_ino == inode


def test_mode_change_alone_rewrites(volumes: PodVolumes, sources: FakeSources) -> None:
    sources.config_maps["shop", "cfg"] = {"data": {"run.sh": "echo hi"}}
    materialise(volumes, make_pod({"name": "cfg", "configMap": {"name": "cfg"}}))
    pod = make_pod({"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 0o755}})

    assert materialise(volumes, pod).changed
    assert mode(vol(volumes, "cfg") / "run.sh") == 0o755


def test_missing_mandatory_config_map_blocks_the_pod(
    volumes: PodVolumes, sources: FakeSources
) -> None:
    pod = make_pod({"name": "cfg", "configMap": {"name": "absent"}})

    with pytest.raises(VolumeError) as caught:
        materialise(volumes, pod)

    assert caught.value.reason == "FailedMount"
    assert 'configmap "absent" not found' in caught.value.message
    assert '"cfg"' in caught.value.message
    assert not vol(volumes, "cfg").exists()


def test_missing_optional_config_map_gives_an_empty_volume(volumes: PodVolumes) -> None:
    pod = make_pod({"name": "cfg", "configMap": {"name": "absent", "optional": True}})

    materialise(volumes, pod)

    target = vol(volumes, "cfg")
    assert [p for p in target.iterdir() if not p.name.startswith("..")] == []
    assert (target / "..data").is_dir()


def test_missing_key_mandatory_fails_optional_skips(
    volumes: PodVolumes, sources: FakeSources
) -> None:
    sources.config_maps["shop", "cfg"] = {"data": {"present": "yes"}}
    items = [{"key": "present", "path": "p"}, {"key": "gone", "path": "g"}]
    mandatory = make_pod({"name": "cfg", "configMap": {"name": "cfg", "items": items}})
    with pytest.raises(VolumeError, match="non-existent config key: gone") as caught:
        materialise(volumes, mandatory)
    assert caught.value.reason == "FailedMount"

    optional = make_pod(
        {"name": "cfg", "configMap": {"name": "cfg", "items": items, "optional": True}}
    )
    materialise(volumes, optional)
    assert (vol(volumes, "cfg") / "p").read_text() == "yes"
    assert not (vol(volumes, "cfg") / "g").exists()


def test_failed_update_leaves_the_previous_content(
    volumes: PodVolumes, sources: FakeSources
) -> None:
    sources.config_maps["shop", "cfg"] = {"data": {"a": "1"}}
    pod = make_pod({"name": "cfg", "configMap": {"name": "cfg"}})
    materialise(volumes, pod)
    del sources.config_maps["shop", "cfg"]

    with pytest.raises(VolumeError):
        materialise(volumes, pod)

    assert (vol(volumes, "cfg") / "a").read_text() == "1"


# --- secret ---------------------------------------------------------------------------------------


def test_secret_values_are_decoded(volumes: PodVolumes, sources: FakeSources) -> None:
    sources.secrets["shop", "db"] = {"data": {"password": b64("hunter2"), "cert": b64(b"\x01\x02")}}
    pod = make_pod({"name": "creds", "secret": {"secretName": "db", "defaultMode": 0o400}})

    materialise(volumes, pod)

    target = vol(volumes, "creds")
    assert (target / "password").read_text() == "hunter2"
    assert (target / "cert").read_bytes() == b"\x01\x02"
    assert mode(target / "password") == 0o400


def test_missing_secret_mandatory_and_optional(volumes: PodVolumes) -> None:
    with pytest.raises(VolumeError, match='secret "db" not found'):
        materialise(volumes, make_pod({"name": "creds", "secret": {"secretName": "db"}}))

    materialise(
        volumes, make_pod({"name": "creds", "secret": {"secretName": "db", "optional": True}})
    )
    assert vol(volumes, "creds").is_dir()


def test_secret_values_never_appear_in_errors(volumes: PodVolumes, sources: FakeSources) -> None:
    sources.secrets["shop", "db"] = {"data": {"password": b64("s3cr3t-value")}}
    pod = make_pod(
        {
            "name": "creds",
            "secret": {"secretName": "db", "items": [{"key": "user", "path": "user"}]},
        }
    )
    with pytest.raises(VolumeError) as caught:
        materialise(volumes, pod)
    assert "non-existent secret key: user" in caught.value.message

    sources.secrets["shop", "db"] = {"data": {"password": "s3cr3t-not-base64!"}}
    with pytest.raises(VolumeError) as bad:
        materialise(volumes, make_pod({"name": "creds", "secret": {"secretName": "db"}}))
    assert '"password"' in bad.value.message

    for error in (caught.value, bad.value):
        text = f"{error} {error!r} {error.message}"
        assert "s3cr3t" not in text
        assert b64("s3cr3t-value") not in text


# --- downwardAPI ----------------------------------------------------------------------------------


def downward(*items: dict[str, Any]) -> dict[str, Any]:
    return {"name": "info", "downwardAPI": {"items": list(items)}}


def field(path: str, field_path: str) -> dict[str, Any]:
    return {"path": path, "fieldRef": {"apiVersion": "v1", "fieldPath": field_path}}


def test_downward_api_metadata_fields(volumes: PodVolumes) -> None:
    pod = make_pod(
        downward(
            field("name", "metadata.name"),
            field("namespace", "metadata.namespace"),
            field("uid", "metadata.uid"),
            field("labels", "metadata.labels"),
            field("annotations", "metadata.annotations"),
            field("tier", "metadata.labels['tier']"),
            field("note", "metadata.annotations['example.com/note']"),
            field("nothing", "metadata.labels['absent']"),
        ),
        labels={"tier": "web", "app": "shop"},
        annotations={"example.com/note": 'say "hi"\nbye', "b": "ünï"},
    )

    materialise(volumes, pod)

    target = vol(volumes, "info")
    assert (target / "name").read_text() == "web"
    assert (target / "namespace").read_text() == "shop"
    assert (target / "uid").read_text() == UID
    assert (target / "labels").read_text() == 'app="shop"\ntier="web"'
    assert (target / "annotations").read_text(encoding="utf-8") == (
        'b="ünï"\nexample.com/note="say \\"hi\\"\\nbye"'
    )
    assert (target / "tier").read_text() == "web"
    assert (target / "note").read_text() == 'say "hi"\nbye'
    assert (target / "nothing").read_text() == ""


def test_downward_api_follows_label_changes(volumes: PodVolumes) -> None:
    pod = make_pod(downward(field("labels", "metadata.labels")), labels={"v": "1"})
    materialise(volumes, pod)

    pod["metadata"]["labels"] = {"v": "2", "canary": "true"}
    result = materialise(volumes, pod)

    assert result.changed
    assert (vol(volumes, "info") / "labels").read_text() == 'canary="true"\nv="2"'


def resource(path: str, name: str, divisor: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"containerName": "app", "resource": name}
    if divisor is not None:
        ref["divisor"] = divisor
    return {"path": path, "resourceFieldRef": ref}


def test_downward_api_resources(volumes: PodVolumes) -> None:
    pod = make_pod(
        downward(
            resource("cpu_limit", "limits.cpu"),  # 500m rounds up to 1
            resource("cpu_limit_m", "limits.cpu", "1m"),
            resource("mem_limit", "limits.memory", "1Mi"),  # unset: node allocatable
            resource("mem_request", "requests.memory", "1Mi"),
            resource("cpu_request", "requests.cpu", "1m"),  # unset: the limit
            resource("storage_request", "requests.ephemeral-storage", "1Gi"),
        )
    )
    pod["spec"]["containers"].append({"name": "bare", "image": "busybox"})
    pod["spec"]["volumes"][0]["downwardAPI"]["items"].append(
        {
            "path": "bare_cpu",
            "resourceFieldRef": {"containerName": "bare", "resource": "requests.cpu"},
        }
    )

    materialise(volumes, pod)

    target = vol(volumes, "info")
    assert (target / "cpu_limit").read_text() == "1"
    assert (target / "cpu_limit_m").read_text() == "500"
    assert (target / "mem_limit").read_text() == str(8 * 1024)
    assert (target / "mem_request").read_text() == "64"
    assert (target / "cpu_request").read_text() == "500"
    assert (target / "storage_request").read_text() == "1"
    assert (target / "bare_cpu").read_text() == "0"


def test_downward_api_unknown_container_fails(volumes: PodVolumes) -> None:
    pod = make_pod(
        downward(
            {"path": "x", "resourceFieldRef": {"containerName": "nope", "resource": "limits.cpu"}}
        )
    )
    with pytest.raises(VolumeError, match='container "nope"'):
        materialise(volumes, pod)


# --- projected and service-account tokens ------------------------------------------------------


def test_kube_api_access_volume(volumes: PodVolumes, sources: FakeSources, clock: Clock) -> None:
    sources.config_maps["shop", "kube-root-ca.crt"] = {"data": {"ca.crt": "-----BEGIN CERT-----"}}
    pod = make_pod(kube_api_access())

    result = materialise(volumes, pod)

    target = vol(volumes, "kube-api-access-x7k2p")
    assert (target / "token").read_text() == "jwt-1"
    assert (target / "ca.crt").read_text() == "-----BEGIN CERT-----"
    assert (target / "namespace").read_text() == "shop"
    assert {mode(target / f) for f in ("token", "ca.crt", "namespace")} == {0o644}
    assert sources.token_calls == [
        {
            "namespace": "shop",
            "service_account": "builder",
            "audience": None,
            "expiration_seconds": 3607,
            "pod_name": "web",
            "pod_uid": UID,
        }
    ]
    assert result.refresh_at == pytest.approx(NOW + 0.8 * 3607)
    assert result.events == []


def test_kube_api_access_waits_for_root_ca(volumes: PodVolumes) -> None:
    with pytest.raises(VolumeError, match=re.escape('configmap "kube-root-ca.crt" not found')):
        materialise(volumes, make_pod(kube_api_access()))


def token_volume(name: str, **token: Any) -> dict[str, Any]:
    return {
        "name": name,
        "projected": {"sources": [{"serviceAccountToken": {"path": "token", **token}}]},
    }


def test_token_is_cached_until_80_percent_of_its_lifetime(
    volumes: PodVolumes, sources: FakeSources, clock: Clock
) -> None:
    pod = make_pod(token_volume("tok", expirationSeconds=3600, audience="vault"))
    first = materialise(volumes, pod)
    assert first.refresh_at == pytest.approx(NOW + 2880)
    assert sources.token_calls[0]["audience"] == "vault"

    clock.now = NOW + 2879
    early = materialise(volumes, pod)
    assert len(sources.token_calls) == 1
    assert not early.changed
    assert early.refresh_at == first.refresh_at

    clock.now = NOW + 2880
    due = materialise(volumes, pod)
    assert len(sources.token_calls) == 2
    assert due.changed
    assert (vol(volumes, "tok") / "token").read_text() == "jwt-2"
    assert due.refresh_at == pytest.approx(NOW + 2880 + 2880)


def test_long_lived_tokens_are_refreshed_after_24_hours(
    volumes: PodVolumes, sources: FakeSources
) -> None:
    sources.lifetime = 365 * 24 * 3600
    result = materialise(volumes, make_pod(token_volume("tok", expirationSeconds=7 * 24 * 3600)))
    assert result.refresh_at == pytest.approx(NOW + 24 * 3600)


def test_refresh_at_is_the_earliest_token(volumes: PodVolumes, sources: FakeSources) -> None:
    pod = make_pod(
        token_volume("long", expirationSeconds=7200),
        token_volume("short", expirationSeconds=1000),
    )
    result = materialise(volumes, pod)
    assert result.refresh_at == pytest.approx(NOW + 800)


def test_token_expiration_default_and_minimum(volumes: PodVolumes, sources: FakeSources) -> None:
    pod = make_pod(token_volume("default"), token_volume("tiny", expirationSeconds=60))
    pod["spec"]["serviceAccountName"] = None
    materialise(volumes, pod)
    assert [c["expiration_seconds"] for c in sources.token_calls] == [3600, 600]
    assert {c["service_account"] for c in sources.token_calls} == {"default"}


def test_token_request_failure_blocks_the_pod(volumes: PodVolumes, sources: FakeSources) -> None:
    sources.fail = PermissionError('serviceaccounts "builder" is forbidden')
    with pytest.raises(VolumeError) as caught:
        materialise(volumes, make_pod(token_volume("tok")))
    assert caught.value.reason == "FailedMount"
    assert "forbidden" in caught.value.message
    assert not vol(volumes, "tok").exists()


def test_failed_refresh_keeps_the_valid_token(
    volumes: PodVolumes, sources: FakeSources, clock: Clock
) -> None:
    pod = make_pod(token_volume("tok", expirationSeconds=3600))
    materialise(volumes, pod)

    clock.now = NOW + 3000
    sources.fail = RuntimeError("apiserver unavailable (last token jwt-1)")
    result = materialise(volumes, pod)

    assert (vol(volumes, "tok") / "token").read_text() == "jwt-1"
    assert not result.changed
    [event] = result.events
    assert (event.type, event.reason) == ("Warning", "FailedMount")
    assert "apiserver unavailable" in event.message
    assert "jwt-1" not in event.message
    assert result.refresh_at == pytest.approx(NOW + 3030)

    clock.now = NOW + 3600
    with pytest.raises(VolumeError) as caught:
        materialise(volumes, pod)
    assert "jwt-1" not in caught.value.message


def test_projected_merges_sources_with_its_default_mode(
    volumes: PodVolumes, sources: FakeSources
) -> None:
    sources.config_maps["shop", "cfg"] = {"data": {"settings": "s"}}
    sources.secrets["shop", "db"] = {"data": {"password": b64("pw")}}
    pod = make_pod(
        {
            "name": "all",
            "projected": {
                "defaultMode": 0o440,
                "sources": [
                    {"configMap": {"name": "cfg"}},
                    {
                        "secret": {
                            "name": "db",
                            "items": [{"key": "password", "path": "db/pw", "mode": 0o400}],
                        }
                    },
                    {"secret": {"name": "absent", "optional": True}},
                    {"downwardAPI": {"items": [field("pod", "metadata.name")]}},
                    {"serviceAccountToken": {"path": "sa/token"}},
                ],
            },
        }
    )

    materialise(volumes, pod)

    target = vol(volumes, "all")
    assert (target / "settings").read_text() == "s"
    assert (target / "db" / "pw").read_text() == "pw"
    assert (target / "pod").read_text() == "web"
    assert (target / "sa" / "token").read_text() == "jwt-1"
    assert mode(target / "db" / "pw") == 0o400
    assert {mode(target / f) for f in ("settings", "pod", "sa/token")} == {0o440}
    assert sorted(p.name for p in target.iterdir() if not p.name.startswith("..")) == [
        "db",
        "pod",
        "sa",
        "settings",
    ]


def test_cluster_trust_bundle_is_skipped_with_a_warning(
    volumes: PodVolumes, sources: FakeSources
) -> None:
    sources.config_maps["shop", "cfg"] = {"data": {"a": "1"}}
    pod = make_pod(
        {
            "name": "bundle",
            "projected": {
                "sources": [
                    {"clusterTrustBundle": {"signerName": "example.com/ca", "path": "ca.pem"}},
                    {"configMap": {"name": "cfg"}},
                ]
            },
        }
    )

    result = materialise(volumes, pod)

    [event] = result.events
    assert (event.type, event.reason) == ("Warning", "FailedMount")
    assert "clusterTrustBundle" in event.message
    assert "not supported" in event.message
    assert (vol(volumes, "bundle") / "a").read_text() == "1"
    assert not (vol(volumes, "bundle") / "ca.pem").exists()
    assert materialise(volumes, pod).events == []


# --- emptyDir, other types, paths -----------------------------------------------------------------


def test_empty_dir_is_created_once_and_survives(volumes: PodVolumes) -> None:
    pod = make_pod(
        {"name": "scratch", "emptyDir": {}}, {"name": "mem", "emptyDir": {"medium": "Memory"}}
    )
    materialise(volumes, pod)
    scratch = vol(volumes, "scratch")
    assert mode(scratch) == 0o777
    assert vol(volumes, "mem").is_dir()
    (scratch / "work.txt").write_text("keep me")

    materialise(volumes, pod)

    assert (scratch / "work.txt").read_text() == "keep me"


def test_other_volume_types_are_left_to_the_provider(volumes: PodVolumes) -> None:
    pod = make_pod(
        {"name": "host", "hostPath": {"path": "/etc"}},
        {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
        {"name": "driver", "csi": {"driver": "example.csi"}},
        {"name": "img", "image": {"reference": "busybox"}},
    )
    result = materialise(volumes, pod)
    assert result == MaterialiseResult(events=[], refresh_at=None, changed=False)
    assert not volumes.pod_dir(UID).exists()
    assert volumes.references(pod) == set()


@pytest.mark.parametrize(
    "path", ["../escape", "a/../../escape", "/etc/passwd", "..data", "..hidden/x", "", "a/.."]
)
def test_path_traversal_is_rejected(
    volumes: PodVolumes, sources: FakeSources, tmp_path: Path, path: str
) -> None:
    sources.config_maps["shop", "cfg"] = {"data": {"k": "v"}}
    pod = make_pod(
        {"name": "cfg", "configMap": {"name": "cfg", "items": [{"key": "k", "path": path}]}}
    )

    with pytest.raises(VolumeError) as caught:
        materialise(volumes, pod)

    assert caught.value.reason == "InvalidPath"
    assert not (tmp_path / "escape").exists()
    assert not vol(volumes, "cfg").exists()


def test_redundant_path_elements_are_cleaned(volumes: PodVolumes, sources: FakeSources) -> None:
    sources.config_maps["shop", "cfg"] = {"data": {"k": "v"}}
    items = [{"key": "k", "path": "./dir//file"}]
    materialise(volumes, make_pod({"name": "cfg", "configMap": {"name": "cfg", "items": items}}))
    assert (vol(volumes, "cfg") / "dir" / "file").read_text() == "v"


# --- references, remove ---------------------------------------------------------------------------


def test_references(volumes: PodVolumes) -> None:
    pod = make_pod(
        kube_api_access(),
        {"name": "cfg", "configMap": {"name": "web-config", "optional": True}},
        {"name": "creds", "secret": {"secretName": "db"}},
        {
            "name": "p",
            "projected": {"sources": [{"secret": {"name": "tls"}}, {"configMap": {"name": "x"}}]},
        },
        {"name": "scratch", "emptyDir": {}},
    )
    assert volumes.references(pod) == {
        ("ConfigMap", "shop", "kube-root-ca.crt"),
        ("ConfigMap", "shop", "web-config"),
        ("ConfigMap", "shop", "x"),
        ("Secret", "shop", "db"),
        ("Secret", "shop", "tls"),
    }


def test_remove_deletes_everything_and_forgets_tokens(
    volumes: PodVolumes, sources: FakeSources
) -> None:
    pod = make_pod(token_volume("tok"), {"name": "scratch", "emptyDir": {}})
    materialise(volumes, pod)
    read_only = vol(volumes, "scratch") / "ro"
    read_only.mkdir()
    (read_only / "f").write_text("x")
    read_only.chmod(0o500)

    asyncio.run(volumes.remove(UID))
    asyncio.run(volumes.remove(UID))

    assert not volumes.pod_dir(UID).exists()
    materialise(volumes, pod)
    assert len(sources.token_calls) == 2


def test_pod_dir_refuses_uids_that_escape(volumes: PodVolumes) -> None:
    for uid in ("..", "a/b", ""):
        with pytest.raises(ValueError, match="invalid pod uid"):
            asyncio.run(volumes.remove(uid))
