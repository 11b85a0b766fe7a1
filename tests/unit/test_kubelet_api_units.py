"""Pure parts of the kubelet API: option parsing, auth mapping, channel framing, resize decoding,
status payloads and resource metrics."""

from __future__ import annotations

import datetime
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from virtual_kubelet.kubelet_api.auth import subresource_for, user_from_certificate, verb_for
from virtual_kubelet.kubelet_api.logs import (
    InvalidLogOptions,
    LogOptions,
    format_line,
    parse_log_options,
    select_history,
)
from virtual_kubelet.kubelet_api.stats import resource_metrics
from virtual_kubelet.kubelet_api.streaming.channels import ChannelError, Framing, choose
from virtual_kubelet.kubelet_api.streaming.remotecommand import (
    ResizeDecoder,
    error_stream_payload,
    status,
)
from virtual_kubelet.streams import TermSize


@pytest.mark.parametrize(
    ("path", "subresource"),
    [
        ("/stats/summary", "stats"),
        ("/metrics/resource", "metrics"),
        ("/logs/kubelet.log", "log"),
        ("/pods", "pods"),
        ("/runningpods/", "pods"),
        ("/healthz", "healthz"),
        ("/containerLogs/ns/p/c", "proxy"),  # not nodes/log: as the kubelet does
        ("/exec/ns/p/c", "proxy"),
        ("/portForward/ns/p", "proxy"),
    ],
)
def test_kubelet_path_to_subresource(path: str, subresource: str) -> None:
    assert subresource_for(path) == subresource


def test_verbs_and_certificate_identity() -> None:
    assert [verb_for(m) for m in ("GET", "POST", "PUT", "PATCH", "DELETE")] == [
        "get",
        "create",
        "update",
        "patch",
        "delete",
    ]
    peer = {
        "subject": (
            (("organizationName", "system:masters"),),
            (("commonName", "kube-apiserver-kubelet-client"),),
        )
    }
    user = user_from_certificate(peer)
    assert user is not None
    assert user.name == "kube-apiserver-kubelet-client"
    assert "system:masters" in user.groups
    assert user_from_certificate(None) is None


def test_log_options_validation() -> None:
    options = parse_log_options(
        {"follow": ["true"], "tailLines": ["5"], "timestamps": ["1"], "limitBytes": ["100"]}
    )
    assert options == LogOptions(follow=True, timestamps=True, tail_lines=5, limit_bytes=100)
    assert parse_log_options({"tail": ["all"]}).tail_lines is None
    assert parse_log_options({"tail": ["3"]}).tail_lines == 3
    for bad, message in (
        ({"tailLines": ["-1"]}, "tailLines must be at least 0"),
        ({"limitBytes": ["0"]}, "limitBytes must be at least 1"),
        ({"sinceSeconds": ["abc"]}, "not an integer"),
        ({"sinceSeconds": ["5"], "sinceTime": ["2026-01-01T00:00:00Z"]}, "cannot both be set"),
        ({"sinceTime": ["yesterday"]}, "not an RFC 3339 time"),
        ({"follow": ["maybe"]}, "not a boolean"),
        ({"stream": ["Both"]}, "stream="),
    ):
        with pytest.raises(InvalidLogOptions, match=message):
            parse_log_options(bad)


def test_history_selection_and_timestamps() -> None:
    base = datetime.datetime(2026, 11, 22, 8, 0, 0, tzinfo=datetime.UTC)
    lines = [(base + datetime.timedelta(seconds=i), f"line {i}\n".encode()) for i in range(10)]
    assert [d for _, d in select_history(lines, LogOptions(tail_lines=2))] == [
        b"line 8\n",
        b"line 9\n",
    ]
    assert select_history(lines, LogOptions(tail_lines=0)) == []
    since = LogOptions(since_time=base + datetime.timedelta(seconds=7))
    assert [d for _, d in select_history(lines, since)] == [b"line 7\n", b"line 8\n", b"line 9\n"]
    stamped = format_line(base, b"x\n", LogOptions(timestamps=True))
    assert stamped == b"2026-11-22T08:00:00.000000000Z x\n"


def test_channel_framing_binary_and_base64() -> None:
    binary = Framing("v4.channel.k8s.io")
    assert binary.encode(1, b"out") == b"\x01out"
    assert binary.decode(b"\x00in") == (0, b"in")
    b64 = Framing("base64.channel.k8s.io")
    assert b64.encode(2, b"err") == "2ZXJy"
    assert b64.decode("0aGk=") == (0, b"hi")
    with pytest.raises(ChannelError):
        binary.decode(b"")
    with pytest.raises(ChannelError):
        b64.decode("0***")
    assert (
        choose(["v5.channel.k8s.io", "v4.channel.k8s.io"], ("v4.channel.k8s.io",))
        == "v4.channel.k8s.io"
    )
    assert choose([], ("v4.channel.k8s.io",)) == ""
    assert choose(["v5.channel.k8s.io"], ("v4.channel.k8s.io",)) is None


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.binary(max_size=64), st.text(max_size=64)),
    st.sampled_from(["v4.channel.k8s.io", "base64.channel.k8s.io", ""]),
)
def test_channel_decoding_never_fails_unexpectedly(message: bytes | str, protocol: str) -> None:
    try:
        channel, payload = Framing(protocol).decode(message)
    except ChannelError:
        return
    assert isinstance(channel, int)
    assert isinstance(payload, bytes)


def test_resize_stream_is_split_into_sizes() -> None:
    decoder = ResizeDecoder()
    assert decoder.feed(b'{"Width":80,"Height":24}{"Width":1') == [TermSize(80, 24)]
    assert decoder.feed(b'20,"Height":40}') == [TermSize(120, 40)]
    assert decoder.feed(b"not json at all" * 400) == []  # garbage is dropped, not accumulated


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=10))
def test_resize_decoder_survives_anything(chunks: list[bytes]) -> None:
    decoder = ResizeDecoder()
    for chunk in chunks:
        for size in decoder.feed(chunk):
            assert isinstance(size, TermSize)


def test_v4_status_payloads() -> None:
    ok = json.loads(error_stream_payload(True, status(0, None, ["true"])))
    assert ok == {"metadata": {}, "status": "Success"}
    failed = json.loads(error_stream_payload(True, status(3, None, ["sh", "-c", "exit 3"])))
    assert failed["reason"] == "NonZeroExitCode"
    assert failed["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert error_stream_payload(False, status(0, None, None)) == b""  # v1-v3: silence on success
    assert b"boom" in error_stream_payload(False, status(None, RuntimeError("boom"), None))


def test_resource_metrics_never_report_zero_for_live_containers() -> None:
    stamp = "2026-11-22T08:00:00Z"
    summary = {
        "node": {
            "cpu": {"time": stamp, "usageCoreNanoSeconds": 0},
            "memory": {"time": stamp, "workingSetBytes": 0},
        },
        "pods": [
            {
                "podRef": {"name": "p", "namespace": "n"},
                "containers": [
                    {
                        "name": "c",
                        "startTime": stamp,
                        "cpu": {"time": stamp, "usageCoreNanoSeconds": 0},
                        "memory": {"time": stamp, "workingSetBytes": 0},
                    }
                ],
            }
        ],
    }
    text = resource_metrics(summary).decode()
    assert (
        'container_cpu_usage_seconds_total{container="c",namespace="n",pod="p"} 1e-09 1795334400000'
        in text
    )
    assert (
        'container_memory_working_set_bytes{container="c",namespace="n",pod="p"} 1.0 1795334400000'
        in text
    )
    assert "container_start_time_seconds" in text
    assert "_created" not in text
