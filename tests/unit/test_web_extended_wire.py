"""The extended web-bridge protocol's codecs: capabilities, server-sent events, watch events,
channel frames, stream statuses and the logs query (providers/web/extended_wire.py)."""

from __future__ import annotations

import datetime
from pathlib import Path

import orjson
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from virtual_kubelet.providers.web.extended_wire import (
    PROTOCOL,
    SUBPROTOCOL,
    BackendCapabilities,
    Channel,
    EventStreamDecoder,
    Feature,
    NodeChanged,
    PodChanged,
    PodGone,
    ServerEvent,
    StreamStatus,
    Synced,
    WireError,
    decode_closed,
    decode_frame,
    decode_status,
    encode_close,
    encode_frame,
    encode_resize,
    log_query,
    parse_watch_event,
)
from virtual_kubelet.sdk import LogOptions, TermSize

# --- capabilities ------------------------------------------------------------------------------------


def caps(**doc: object) -> bytes:
    return orjson.dumps({"protocol": PROTOCOL, "version": 1, **doc})


def test_capabilities_name_the_features_and_ignore_unknown_ones() -> None:
    parsed = BackendCapabilities.parse(
        caps(features=["watch", "exec", "teleport"], heartbeatSeconds=5)
    )
    assert parsed.features == {Feature.WATCH, Feature.EXEC}
    assert Feature.EXEC in parsed
    assert Feature.PORT_FORWARD not in parsed
    assert parsed.unknown == ("teleport",)
    assert parsed.heartbeat_seconds == 5.0
    assert BackendCapabilities.parse(caps()).features == frozenset()  # features are optional
    assert BackendCapabilities.parse(caps(version=7)).version == 7  # later versions only add


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>", "not JSON"),
        (b"[]", "not a JSON object"),
        (orjson.dumps({"protocol": "other", "version": 1}), "not 'virtual-kubelet.io/web-bridge'"),
        (caps(version="1"), "not a positive integer"),
        (caps(version=0), "not a positive integer"),
        (caps(features="watch"), "not a list of names"),
        (caps(heartbeatSeconds=0), "heartbeatSeconds"),
        (caps(heartbeatSeconds=True), "heartbeatSeconds"),
    ],
)
def test_bad_capabilities_say_what_is_wrong(body: bytes, message: str) -> None:
    with pytest.raises(WireError, match=message):
        BackendCapabilities.parse(body)


# --- server-sent events ----------------------------------------------------------------------------


def decode_all(*chunks: bytes) -> list[ServerEvent]:
    decoder = EventStreamDecoder()
    return [event for chunk in chunks for event in decoder.feed(chunk)]


def test_events_comments_and_multiline_data() -> None:
    stream = (
        b": heartbeat\n\n"
        b'event: pod\ndata: {"a":1}\n\n'
        b"data: first\ndata:second\n\n"  # one space after the colon is dropped, no space is fine
        b"event: empty\n\n"  # no data: not dispatched
        b"id: 7\nevent: node\ndata: x\nretry: 1500\nunknown: field\n\n"
    )
    assert decode_all(stream) == [
        ServerEvent("pod", '{"a":1}'),
        ServerEvent("message", "first\nsecond"),
        ServerEvent("node", "x", "7"),
    ]
    decoder = EventStreamDecoder()
    decoder.feed(b"retry: 1500\n\n")
    assert decoder.retry_ms == 1500


def test_every_line_ending_and_a_byte_order_mark() -> None:
    expected = [ServerEvent("pod", "1"), ServerEvent("pod", "2")]
    for newline in (b"\n", b"\r\n", b"\r"):
        stream = newline.join([b"event: pod", b"data: 1", b"", b"event: pod", b"data: 2", b"", b""])
        assert decode_all(b"\xef\xbb\xbf" + stream) == expected, newline


def test_a_crlf_split_between_chunks_is_one_line_ending() -> None:
    assert decode_all(b"data: a\r", b"\n\r", b"\n") == [ServerEvent("message", "a")]


def test_an_event_is_not_dispatched_before_its_blank_line() -> None:
    decoder = EventStreamDecoder()
    assert decoder.feed(b"event: pod\ndata: {}\n") == []
    assert decoder.feed(b"\n") == [ServerEvent("pod", "{}")]


def test_an_endless_event_or_line_is_refused() -> None:
    decoder = EventStreamDecoder(max_event_bytes=1024)
    for _ in range(9):
        decoder.feed(b"data: " + b"x" * 100 + b"\n")  # 954 bytes of one event so far
    with pytest.raises(WireError, match="longer than 1024 bytes"):
        decoder.feed(b"data: " + b"x" * 100 + b"\n")
    with pytest.raises(WireError, match="longer than 1024 bytes"):
        EventStreamDecoder(max_event_bytes=1024).feed(b"data: " + b"y" * 2000)


def test_invalid_utf8_is_a_wire_error() -> None:
    with pytest.raises(WireError, match="UTF-8"):
        EventStreamDecoder().feed(b"data: \xff\n\n")


_events = st.lists(
    st.tuples(
        st.sampled_from(["pod", "node", "synced", ""]),
        st.lists(
            st.text(
                alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\r\n"),
                max_size=20,
            ),
            min_size=1,
            max_size=3,
        ),
    ),
    max_size=8,
)


@given(_events, st.data(), st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_any_chunking_gives_the_same_events(
    events: list[tuple[str, list[str]]], data: st.DataObject, newline: bytes
) -> None:
    lines: list[bytes] = []
    for name, parts in events:
        lines.append(b": comment")
        if name:
            lines.append(f"event: {name}".encode())
        lines += [f"data: {part}".encode() for part in parts]
        lines.append(b"")
    stream = b"".join(line + newline for line in lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    expected = [ServerEvent(name or "message", "\n".join(parts)) for name, parts in events]
    assert decode_all(*chunks) == expected


# --- watch events ----------------------------------------------------------------------------------


def test_watch_events_mean_what_the_protocol_says() -> None:
    pod = {"metadata": {"namespace": "ns", "name": "p", "uid": "u"}, "status": {"phase": "Running"}}
    assert parse_watch_event(ServerEvent("pod", orjson.dumps(pod).decode())) == PodChanged(pod)
    gone = {"metadata": {"namespace": "ns", "name": "p", "uid": "u"}}
    assert parse_watch_event(ServerEvent("podDeleted", orjson.dumps(gone).decode())) == PodGone(
        gone
    )
    node = {"capacity": {"cpu": "4"}, "conditions": []}
    assert parse_watch_event(ServerEvent("node", orjson.dumps(node).decode())) == NodeChanged(node)
    assert parse_watch_event(ServerEvent("synced", "{}")) == Synced()
    assert parse_watch_event(ServerEvent("somethingNew", "{}")) is None  # a newer backend's


@pytest.mark.parametrize(
    ("event", "data", "message"),
    [
        ("pod", "{", "not JSON"),
        ("pod", "[]", "not a JSON object"),
        ("pod", '{"status": {}}', "no metadata.namespace and metadata.name"),
        ("pod", '{"metadata": {"namespace": "ns", "name": "p"}}', "ns/p has no status"),
        ("podDeleted", '{"metadata": {"name": "p"}}', "no metadata.namespace"),
        ("node", '{"capacity": {}, "labels": {}}', "unknown fields"),
    ],
)
def test_malformed_watch_events_are_wire_errors(event: str, data: str, message: str) -> None:
    with pytest.raises(WireError, match=message):
        parse_watch_event(ServerEvent(event, data))


# --- channel frames --------------------------------------------------------------------------------


def test_frames_start_with_their_channel() -> None:
    assert encode_frame(Channel.STDIN, b"abc") == b"\x00abc"
    assert decode_frame(b"\x02oops") == (Channel.STDERR, b"oops")
    assert decode_frame(b"\x01") == (Channel.STDOUT, b"")
    assert encode_close(Channel.STDIN) == b"\x05\x00"
    assert decode_closed(b"\x01") == Channel.STDOUT
    channel, payload = decode_frame(encode_resize(TermSize(120, 40)))
    assert channel == Channel.RESIZE
    assert orjson.loads(payload) == {"width": 120, "height": 40}


@given(st.sampled_from(list(Channel)), st.binary(max_size=200))
def test_frames_round_trip(channel: Channel, payload: bytes) -> None:
    assert decode_frame(encode_frame(channel, payload)) == (channel, payload)


@pytest.mark.parametrize(
    ("message", "error"),
    [(b"", "empty stream message"), (b"\x09data", "unknown channel 9")],
)
def test_bad_frames_are_wire_errors(message: bytes, error: str) -> None:
    with pytest.raises(WireError, match=error):
        decode_frame(message)


def test_bad_close_frames_are_wire_errors() -> None:
    with pytest.raises(WireError, match="exactly one channel"):
        decode_closed(b"")
    with pytest.raises(WireError, match="unknown channel 7"):
        decode_closed(b"\x07")


def test_stream_statuses() -> None:
    assert decode_status(b'{"exitCode": 3}') == StreamStatus(exit_code=3)
    assert decode_status(b'{"exitCode": 256}') == StreamStatus(exit_code=0)  # as a shell says
    assert decode_status(b'{"exitCode": null}') == StreamStatus()  # an attach that was left
    assert decode_status(b'{"error": "no such container", "reason": "NotFound"}') == StreamStatus(
        error="no such container", reason="NotFound"
    )
    for bad, message in (
        (b"nope", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"exitCode": "3"}', "not an integer"),
        (b'{"exitCode": true}', "not an integer"),
        (b'{"error": 5}', "error is not a string"),
    ):
        with pytest.raises(WireError, match=message):
            decode_status(bad)


# --- logs ------------------------------------------------------------------------------------------


def test_logs_query_keeps_the_original_tail_and_adds_every_option() -> None:
    since = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    options = LogOptions(
        follow=True, previous=True, timestamps=True, tail_lines=0, limit_bytes=10, since_time=since
    )
    assert log_query("ns", "p", "c", options, extended=True) == {
        "namespace": "ns",
        "podName": "p",
        "containerName": "c",
        "tail": "0",
        "tailLines": "0",  # exact: no lines (tail=0 would mean all of them)
        "follow": "true",
        "previous": "true",
        "timestamps": "true",
        "sinceTime": "2026-01-02T03:04:05Z",
        "limitBytes": "10",
    }
    assert log_query("ns", "p", "c", LogOptions(since_seconds=30), extended=True) == {
        "namespace": "ns",
        "podName": "p",
        "containerName": "c",
        "tail": "0",
        "sinceSeconds": "30",
    }
    # A backend without the `logs` feature gets the original query only.
    assert log_query("ns", "p", "c", options, extended=False) == {
        "namespace": "ns",
        "podName": "p",
        "containerName": "c",
        "tail": "0",
    }


# --- the OpenAPI description ---------------------------------------------------------------------------


def test_the_openapi_file_describes_what_the_code_speaks() -> None:
    """docs/providers/web-extended.openapi.yaml stays in step with this module."""
    path = Path(__file__).resolve().parents[2] / "docs/providers/web-extended.openapi.yaml"
    text = path.read_text()
    doc = yaml.safe_load(text)
    original = {"/createPod", "/updatePod", "/deletePod", "/getPod", "/getPodStatus", "/getPods"}
    original |= {"/getContainerLogs", "/capacity", "/nodeConditions", "/nodeAddresses"}
    extended = {"/capabilities", "/watch", "/exec", "/attach", "/portForward", "/stats/summary"}
    assert set(doc["paths"]) == original | extended
    capabilities = doc["paths"]["/capabilities"]["get"]["responses"]["200"]["content"]
    example = capabilities["application/json"]["example"]
    assert example["protocol"] == PROTOCOL
    assert set(example["features"]) == {f.value for f in Feature}
    assert SUBPROTOCOL in text
    for channel in Channel:
        assert f"| {channel.value}    |" in text, channel  # the channel table
    logs = doc["paths"]["/getContainerLogs"]["get"]["parameters"]
    sent = log_query(
        "ns",
        "p",
        "c",
        LogOptions(True, True, True, 1, 2, since_time=datetime.datetime.now(datetime.UTC)),
        extended=True,
    )
    assert set(sent) | {"sinceSeconds"} == {p["name"] for p in logs}


def test_an_empty_chunk_between_cr_and_lf_does_not_split_the_line_ending() -> None:
    """Found by hypothesis: `...\\r`, then an empty chunk, then `\\n...` is one CRLF."""
    chunks = [b"event: synced\r", b"", b"\ndata: \r\n\r\n"]
    assert decode_all(*chunks) == [ServerEvent("synced", "")]
