"""Where a backend listens: a parsed base URL, over TCP or a unix socket.

Accepted forms: `http://host:port[/prefix]`, `https://host:port[/prefix]`, `unix:///path/to.sock`
(interLink's form: the whole path is the socket) and `http+unix://%2Fpath%2Fto.sock[/prefix]`
(the socket path percent-encoded as the host, as requests-unixsocket writes it). Request paths are
absolute; with `keep_path=False` the base URL's own path is dropped, exactly as the original web
provider's `url.ResolveReference("/createPod")` did (`http://h:3000/api/` -> `http://h:3000/createPod`).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

__all__ = ["Endpoint", "EndpointError"]


class EndpointError(ValueError):
    """The backend URL cannot be used."""


@dataclass(frozen=True)
class Endpoint:
    #: The URL requests are made to, without the path (`http://localhost` for a unix socket).
    origin: str
    #: Prepended to every request path ("" or "/prefix", never ending in "/").
    prefix: str = ""
    #: The unix socket to connect to, if any.
    socket_path: str | None = None
    #: A path the base URL had but that is not used (web mode drops it, as the original did).
    dropped_path: str = ""

    @property
    def tls(self) -> bool:
        return self.origin.startswith("https://")

    def url(self, path: str) -> str:
        """The URL of `path` (absolute, e.g. "/createPod") on this backend."""
        return f"{self.origin}{self.prefix}{path}"

    def describe(self) -> str:
        """For logs and messages: where requests go (never includes credentials)."""
        if self.socket_path is not None:
            return f"unix:{self.socket_path}{self.prefix}"
        return f"{self.origin}{self.prefix}"

    @classmethod
    def parse(cls, url: str, *, keep_path: bool) -> Endpoint:
        text = url.strip()
        try:
            parts = urlsplit(text)
            port = parts.port  # raises on a bad port
        except ValueError as exc:
            raise EndpointError(f"backend URL {text!r} is not a URL: {exc}") from None
        scheme = parts.scheme.lower()
        if parts.username or parts.password:
            # Credentials in a URL end up in logs; the token file is the way to authenticate.
            raise EndpointError("backend URL must not contain credentials; use token_file")
        if scheme == "unix":
            socket_path = unquote(parts.netloc + parts.path) if parts.netloc else parts.path
            if not socket_path.startswith("/"):
                raise EndpointError(f"unix socket URL {text!r} needs an absolute socket path")
            return cls(origin="http://localhost", socket_path=socket_path)
        if scheme == "http+unix":
            socket_path = unquote(parts.netloc)
            if not socket_path.startswith("/"):
                raise EndpointError(
                    f"http+unix URL {text!r} needs the socket path percent-encoded as its host, "
                    "e.g. http+unix://%2Frun%2Fbackend.sock/"
                )
            prefix, dropped = _path(parts.path, keep_path)
            return cls(
                origin="http://localhost",
                prefix=prefix,
                socket_path=socket_path,
                dropped_path=dropped,
            )
        if scheme not in ("http", "https"):
            raise EndpointError(
                f"backend URL {text!r} must start with http://, https://, unix:// or http+unix://"
            )
        if not parts.hostname:
            raise EndpointError(f"backend URL {text!r} has no host")
        host = parts.hostname
        if ":" in host:  # an IPv6 literal
            host = f"[{host}]"
        origin = f"{scheme}://{host}" + (f":{port}" if port is not None else "")
        prefix, dropped = _path(parts.path, keep_path)
        return cls(origin=origin, prefix=prefix, dropped_path=dropped)


def _path(path: str, keep: bool) -> tuple[str, str]:
    """(prefix, dropped): the base URL's path as a prefix, or as what was dropped."""
    trimmed = path.rstrip("/")
    if keep:
        return trimmed, ""
    return "", trimmed
