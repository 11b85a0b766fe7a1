"""Streaming protocols of the kubelet API: SPDY/3.1 and WebSocket channels."""
