"""The reference backend of virtual-kubelet's extended web-bridge protocol.

Pods run as local processes of the backend (the image is ignored; `command` and `args` run with
the pod's env), so `kubectl logs -f`, `kubectl exec -it`, `kubectl port-forward` and
`/stats/summary` all do something real. It speaks the original web-bridge calls and every
extension (docs/providers/web-extended.openapi.yaml). Standard library and aiohttp only: it does
not import virtual_kubelet, as a backend in another language could not.

Run: `python -m web_bridge_backend --listen 127.0.0.1:3000 [--token-file F]` (see README.md).
"""

PROTOCOL = "virtual-kubelet.io/web-bridge"
PROTOCOL_VERSION = 1
#: The WebSocket subprotocol of exec, attach and port-forward.
SUBPROTOCOL = "v1.web-bridge.virtual-kubelet.io"
