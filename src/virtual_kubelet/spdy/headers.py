"""SPDY/3 header blocks, uncompressed: name/value lists packed to bytes and back. Names are
lower-cased, multiple values are NUL-joined. Compression is the codec's job."""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

from .frames import HeaderDict, HeaderInput, ProtocolError

_U32 = struct.Struct(">I")


def normalize_headers(headers: HeaderInput | None) -> HeaderDict:
    """Copy `headers` into frame form: lowercase name -> list of values.

    A plain string value is one value; names differing only in case are merged, because the wire
    form is lowercase and a block must not name a header twice.
    """
    result: HeaderDict = {}
    if headers is None:
        return result
    for name, value in headers.items():
        values = [value] if isinstance(value, str) else list(value)
        result.setdefault(name.lower(), []).extend(values)
    return result


def _text(raw: bytes) -> str:
    # surrogateescape keeps arbitrary peer bytes round-trippable instead of failing on non-UTF-8.
    return raw.decode("utf-8", "surrogateescape")


def _wire(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def pack_header_block(headers: Mapping[str, Sequence[str]]) -> bytes:
    """The uncompressed header block: u32 count, then length-prefixed name and value per pair.

    Names are lowercased; several values of one name are joined with NUL. A name with no values
    is left out (spdystream would send it with one empty value, which does not round-trip).
    Raises ValueError for an empty name, a NUL inside a name or value, or a repeated name.
    """
    pairs: list[tuple[bytes, bytes]] = []
    seen: set[str] = set()
    for name, values in headers.items():
        # A bare str is also a Sequence[str]; joining its characters with NUL would be nonsense.
        given: object = values
        value_list = [given] if isinstance(given, str) else list(values)
        if not value_list:
            continue
        lowered = name.lower()
        if not lowered or "\0" in lowered:
            raise ValueError(f"invalid header name {name!r}")
        if lowered in seen:
            raise ValueError(f"header {lowered!r} given twice (names are case-insensitive)")
        if any("\0" in value for value in value_list):
            raise ValueError(f"header {lowered!r} has a value containing NUL")
        seen.add(lowered)
        pairs.append((_wire(lowered), _wire("\0".join(value_list))))
    out = bytearray(_U32.pack(len(pairs)))
    for raw_name, raw_value in pairs:
        out += _U32.pack(len(raw_name))
        out += raw_name
        out += _U32.pack(len(raw_value))
        out += raw_value
    return bytes(out)


def _read_string(raw: bytes, pos: int) -> tuple[bytes, int]:
    if len(raw) - pos < 4:
        raise ProtocolError("header block truncated")
    (length,) = _U32.unpack_from(raw, pos)
    pos += 4
    if length > len(raw) - pos:
        raise ProtocolError("header block truncated")
    return raw[pos : pos + length], pos + length


def unpack_header_block(raw: bytes) -> HeaderDict:
    """Parse an inflated header block; raises ProtocolError if it is malformed.

    Like spdystream, an upper-case or repeated name is an error, and every byte must be used:
    spdystream's inflater would read leftovers as the start of the next block.
    """
    if len(raw) < 4:
        raise ProtocolError("header block truncated")
    (count,) = _U32.unpack_from(raw, 0)
    # Each pair needs at least its two length fields; checking first avoids trusting `count`.
    if count > (len(raw) - 4) // 8:
        raise ProtocolError(f"header block claims {count} pairs in {len(raw)} bytes")
    headers: HeaderDict = {}
    pos = 4
    for _ in range(count):
        raw_name, pos = _read_string(raw, pos)
        raw_value, pos = _read_string(raw, pos)
        if not raw_name:
            raise ProtocolError("empty header name")
        if raw_name.lower() != raw_name:
            raise ProtocolError(f"header name {_text(raw_name)!r} is not lowercase")
        name = _text(raw_name)
        if name in headers:
            raise ProtocolError(f"header {name!r} appears twice in one block")
        headers[name] = _text(raw_value).split("\0")
    if pos != len(raw):
        raise ProtocolError("trailing bytes after the header block")
    return headers
