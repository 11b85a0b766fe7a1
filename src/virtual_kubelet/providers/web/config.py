"""`--provider-config` of the `web` provider: which protocol (`mode`), where the backend is, and
how to talk to it. A JSON or YAML mapping validated with pydantic; unknown keys are refused so a
typo never falls back to a default silently.

For `mode: web` (the default) the backend's URL may instead come from the `WEB_ENDPOINT_URL`
environment variable, as the original provider read it; the config file wins when both are set.
The `extended` mapping is passed through untouched to the extended mode, which validates it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ...sdk import ProviderConfigError, QuantityError, parse_quantity, read_mapping, validate
from .endpoint import Endpoint, EndpointError

__all__ = [
    "ENDPOINT_ENV",
    "InterlinkConfig",
    "TaintConfig",
    "TlsConfig",
    "WebConfig",
    "load_config",
]

#: The environment variable the original web provider read its backend URL from.
ENDPOINT_ENV = "WEB_ENDPOINT_URL"

Mode = Literal["web", "interlink", "extended"]


class TlsConfig(BaseModel):
    """TLS towards an `https://` backend: a private CA and, for mutual TLS, a client certificate."""

    model_config = ConfigDict(extra="forbid")

    #: PEM bundle of the CA(s) the backend's certificate must chain to (default: the system's).
    ca_file: Path | None = None
    #: Client certificate and key (PEM) presented to the backend, for mutual TLS.
    cert_file: Path | None = None
    key_file: Path | None = None
    #: Skip verifying the backend's certificate. For experiments only: anyone on the path can
    #: then read the pods (and their Secrets) sent to the backend.
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _pairs(self) -> TlsConfig:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("tls.key_file is set but tls.cert_file is not")
        return self


class TaintConfig(BaseModel):
    """A taint put on the node (interLink's `NodeTaints`)."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1)
    value: str = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"

    def as_taint(self) -> dict[str, str]:
        taint = {"key": self.key, "effect": self.effect}
        if self.value:
            taint["value"] = self.value
        return taint


class InterlinkConfig(BaseModel):
    """Settings that only `mode: interlink` uses."""

    model_config = ConfigDict(extra="forbid")

    #: How `POST /create` carries the pod: one RetrievedPodData object (interLink >= 0.5.0 and
    #: its plugins) or a one-element array of it (plugins written for interLink <= 0.4).
    create_body: Literal["object", "array"] = "object"
    #: Seconds between batched `GET /status` calls for the pods the plugin runs.
    status_interval: float = Field(5.0, gt=0)
    #: At most this many pods in one `GET /status` call.
    status_batch_size: int = Field(200, ge=1)
    #: The node's capacity until the plugin's ping reports its resources (the defaults are
    #: interLink's).
    capacity: dict[str, str] = Field(
        default_factory=lambda: {"cpu": "100", "memory": "128Gi", "pods": "100"}
    )
    #: Taints put on the node besides the agent's own, e.g. to admit only pods meant for the
    #: plugin's site. A ping's taints are added to these, never replace them.
    taints: list[TaintConfig] = Field(default_factory=list)

    @field_validator("capacity")
    @classmethod
    def _quantities(cls, value: dict[str, str]) -> dict[str, str]:
        for name, quantity in value.items():
            try:
                parse_quantity(quantity)
            except QuantityError:
                raise ValueError(f"{name}: {quantity!r} is not a quantity") from None
        return value


class WebConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Which protocol the backend speaks: the original web provider's (`web`), the extended
    #: protocol advertised by `GET /capabilities` (`extended`), or an interLink plugin's.
    mode: Mode = "web"
    #: The backend: `http://host:port`, `https://...`, or a unix socket: `unix:///path/to.sock`
    #: or `http+unix://%2Fpath%2Fto.sock/prefix`. In `web` mode a path is dropped (as the
    #: original did); the other modes keep it as a prefix.
    url: str | None = None
    #: A file holding a bearer token sent as `Authorization: Bearer ...`; re-read when it changes.
    token_file: Path | None = None
    tls: TlsConfig = Field(default_factory=TlsConfig)
    #: Seconds one HTTP request may take (connect, send, and read the whole answer; streamed
    #: logs are bounded by their first byte only).
    request_timeout: float = Field(30.0, gt=0)
    #: Transport errors (refused, reset, DNS, timeout) are retried with exponential back-off
    #: for up to this many seconds; HTTP errors are never retried here.
    retry_max_elapsed: float = Field(60.0, ge=0)
    #: Largest JSON answer accepted (the original truncated at 1 MB and then failed to parse).
    max_json_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    #: Seconds between reads of the node endpoints (`/capacity`, `/nodeConditions`,
    #: `/nodeAddresses` in web mode; the ping in interlink mode).
    node_refresh_interval: float = Field(10.0, gt=0)
    #: Consecutive failures of a node endpoint before the node's Ready condition turns False.
    node_failure_threshold: int = Field(3, ge=1)
    interlink: InterlinkConfig = Field(default_factory=InterlinkConfig)
    #: Settings of `mode: extended`, validated by that mode.
    extended: dict[str, Any] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                Endpoint.parse(value, keep_path=True)
            except EndpointError as exc:
                raise ValueError(str(exc)) from None
        return value

    def endpoint(self) -> Endpoint:
        """Where the backend is, with the path rule of this mode applied."""
        if self.url is None:  # load_config guarantees a URL; a model built by hand may lack it
            raise ProviderConfigError("the web provider needs `url`")
        return Endpoint.parse(self.url, keep_path=self.mode != "web")


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> WebConfig:
    """The validated configuration from `path` (optional in web mode) and the environment."""
    environ = os.environ if environ is None else environ
    doc = read_mapping(path) if path is not None else {}
    where = path if path is not None else Path("(no --provider-config)")
    config = validate(WebConfig, doc, where)
    if config.url is None and config.mode == "web" and environ.get(ENDPOINT_ENV):
        config = validate(WebConfig, {**doc, "url": environ[ENDPOINT_ENV]}, Path(ENDPOINT_ENV))
    if config.url is None:
        hint = f" (or set {ENDPOINT_ENV})" if config.mode == "web" else ""
        raise ProviderConfigError(
            f"the web provider needs the backend's URL: `url` in --provider-config{hint}"
        )
    return config
