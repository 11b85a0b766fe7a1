"""The CRI v1 client: the runtime and image services over grpcio's asyncio API, every call with a
deadline, every failure one `CriError` that says which call failed and why (never the request,
which may carry registry credentials or env values)."""

from __future__ import annotations

from typing import Any

import grpc
from cri_api.v1 import api_pb2 as cri
from cri_api.v1 import api_pb2_grpc as cri_grpc
from google.protobuf.message import Message

from .config import CriConfig, grpc_target

__all__ = ["CriClient", "CriError", "cri"]


class CriError(Exception):
    """A CRI call failed: `code` is the grpc status, `details` the runtime's own words."""

    def __init__(self, call: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{call}: {details or code.name}")
        self.call, self.code, self.details = call, code, details

    @property
    def unreachable(self) -> bool:
        """The runtime did not answer at all (down, wrong socket, deadline)."""
        return self.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

    @property
    def not_found(self) -> bool:
        return self.code == grpc.StatusCode.NOT_FOUND


class CriClient:
    """One channel per endpoint (the image service may live elsewhere)."""

    def __init__(self, config: CriConfig) -> None:
        self.timeout = config.call_timeout_seconds
        options = [("grpc.max_receive_message_length", 16 * 1024 * 1024)]
        self._runtime_channel = grpc.aio.insecure_channel(
            grpc_target(config.runtime_endpoint), options=options
        )
        self._image_channel = (
            self._runtime_channel
            if config.images_at == config.runtime_endpoint
            else grpc.aio.insecure_channel(grpc_target(config.images_at), options=options)
        )
        self._runtime = cri_grpc.RuntimeServiceStub(self._runtime_channel)
        self._images = cri_grpc.ImageServiceStub(self._image_channel)

    async def close(self) -> None:
        await self._runtime_channel.close()
        if self._image_channel is not self._runtime_channel:
            await self._image_channel.close()

    async def runtime(self, call: str, request: Message, timeout: float | None = None) -> Any:
        """`RuntimeService.<call>(request)`."""
        return await self._call(self._runtime, call, request, timeout)

    async def image(self, call: str, request: Message, timeout: float | None = None) -> Any:
        """`ImageService.<call>(request)`."""
        return await self._call(self._images, call, request, timeout)

    async def _call(self, stub: Any, call: str, request: Message, timeout: float | None) -> Any:
        try:
            return await getattr(stub, call)(request, timeout=timeout or self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise CriError(call, exc.code(), exc.details() or "") from None
