"""The `web` provider: any HTTP service becomes a node. One provider, three protocol modes:

- `mode: web` (default): the original virtual-kubelet web provider's protocol (`/createPod`,
  `/getPodStatus`, `/capacity`, ...), compatible with the backends written for it (`original.py`);
- `mode: interlink`: an interLink plugin ("sidecar") spoken to directly (`interlink.py`);
- `mode: extended`: the extended protocol advertised by `GET /capabilities` (`extended.py`).

`web_provider` (registered as `web`) reads and validates `--provider-config` (and
`WEB_ENDPOINT_URL` in web mode) and builds the provider of the configured mode. The pieces the
modes share have a module each: `endpoint` (base URL, unix sockets), `transport` (HTTP with
back-off, bounded JSON, 404 by status code), `token` (bearer token file re-read on change),
`errors` (messages safe to show, redaction), `backoff`, `node_status` (last good node values,
Ready False after repeated failures) and `config`. Docs: docs/providers/web.md.
"""

from __future__ import annotations

import importlib
from typing import ClassVar

from ...sdk import Provider, ProviderConfigError, ProviderContext
from .config import WebConfig, load_config

__all__ = ["WebConfig", "load_config", "web_provider"]

#: mode -> (module, class) building it; imported only when that mode is used.
MODES: dict[str, tuple[str, str]] = {
    "web": ("original", "WebProvider"),
    "interlink": ("interlink", "InterlinkProvider"),
    "extended": ("extended", "ExtendedWebProvider"),
}


class _WebProviderFactory:
    """Builds the `web` provider for `context` from its configuration."""

    description: ClassVar[str] = (
        "Pods run by an HTTP backend: the original web-bridge protocol, the extended protocol, "
        "or an interLink plugin (mode in --provider-config)."
    )

    def __call__(self, context: ProviderContext) -> Provider:
        config = load_config(context.config_path)
        module_name, class_name = MODES[config.mode]
        qualified = f"{__name__}.{module_name}"
        try:
            module = importlib.import_module(qualified)
        except ModuleNotFoundError as exc:
            if exc.name != qualified:
                raise
            raise ProviderConfigError(
                f"mode {config.mode!r} of the web provider is not available yet in this version"
            ) from None
        provider_class = getattr(module, class_name)
        provider: Provider = provider_class(context, config)
        return provider


#: The factory registered as the built-in provider `web`.
web_provider = _WebProviderFactory()
