"""What exec and attach have in common whatever the transport: the stream options a request asks
for, and the Status written on the error stream at the end (kubectl's exit code comes from it)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

import orjson

from ...streams import TermSize
from ..http import HttpError, Request


@dataclass(frozen=True)
class StreamOptions:
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


def stream_options(request: Request) -> StreamOptions:
    """input/output/error/tty from the query, with the kubelet's rules: tty drops stderr, and at
    least one stream is required."""
    tty = request.flag("tty")
    options = StreamOptions(
        stdin=request.flag("input"),
        stdout=request.flag("output"),
        stderr=request.flag("error") and not tty,
        tty=tty,
    )
    if not (options.stdin or options.stdout or options.stderr):
        raise HttpError(400, "you must specify at least 1 of stdin, stdout, stderr")
    return options


def status(
    exit_code: int | None, error: BaseException | None, command: list[str] | None
) -> dict[str, Any]:
    """The metav1.Status a v4 client reads from the error stream."""
    if error is not None:
        return {
            "metadata": {},
            "status": "Failure",
            "message": f"Internal error occurred: {error}",
            "reason": "InternalError",
            "code": 500,
        }
    if not exit_code:
        return {"metadata": {}, "status": "Success"}
    code = max(0, min(255, int(exit_code)))
    what = f"error executing command {json.dumps(command)}" if command else "container exited"
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: {what}, exit code {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def error_stream_payload(v4: bool, result: dict[str, Any]) -> bytes:
    """v4: the JSON Status, always. Older protocols: the message text, only on failure."""
    if v4:
        return orjson.dumps(result)
    return b"" if result["status"] == "Success" else result["message"].encode()


class ResizeDecoder:
    """The resize stream is a sequence of JSON objects `{"Width":..,"Height":..}` with nothing
    between them; split them as they arrive."""

    def __init__(self) -> None:
        self._buffer = ""
        self._decoder = json.JSONDecoder()

    def feed(self, data: bytes) -> list[TermSize]:
        self._buffer += data.decode("utf-8", errors="replace")
        sizes: list[TermSize] = []
        while True:
            text = self._buffer.lstrip()
            if not text:
                self._buffer = ""
                return sizes
            try:
                obj, end = self._decoder.raw_decode(text)
            except json.JSONDecodeError:
                if len(text) > 4096:
                    self._buffer = ""  # garbage: drop it rather than grow
                else:
                    self._buffer = text
                return sizes
            self._buffer = text[end:]
            if isinstance(obj, dict):
                with contextlib.suppress(TypeError, ValueError):
                    sizes.append(TermSize(int(obj.get("Width", 0)), int(obj.get("Height", 0))))
