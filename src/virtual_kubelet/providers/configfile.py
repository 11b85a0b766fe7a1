"""The provider-config loader's old home, kept so existing providers keep working.

It lives in `virtual_kubelet.sdk` now (`read_mapping`, `validate`, `ProviderConfigError`).
"""

from __future__ import annotations

from ..sdk.config import Model, ProviderConfigError, read_mapping, validate

__all__ = ["Model", "ProviderConfigError", "read_mapping", "validate"]
