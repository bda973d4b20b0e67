"""Who may drive the server, and from where: framing, Host, Origin / CORS, content type.

Theory of operation
-------------------
A server on loopback is reachable by every web page its user opens. Without these checks
a page can POST a "simple" request (``text/plain`` or a form: no CORS preflight) and run
a turn on the user's subscription, and after DNS rebinding (``attacker.example``
re-resolved to 127.0.0.1, so the browser thinks the server is the page's own origin) it
can read the answers too. The app runs these checks before authentication and before it
reads a body, in this order:

1. **Framing** (:func:`check_framing`): ``Content-Length`` together with
   ``Transfer-Encoding`` is refused with 400 and the connection closed (RFC 9112 §6.1;
   h11 frames such a request by ``Transfer-Encoding`` and would keep the connection, so a
   front proxy that framed it by ``Content-Length`` would see a different next request).
2. **Host** (:meth:`Guard.check_host`): the ``Host`` header must name this server: the
   bind address, ``localhost`` or a loopback address, any IP address when bound to all
   interfaces, or a name in ``server.allowed_hosts``. Otherwise 421: a rebound name
   fails here, because the browser sends the attacker's name.
3. **Origin** (:meth:`Guard.check_origin`): browsers send ``Origin`` on every
   cross-origin request (and on same-origin POSTs); a request that carries one must come
   from ``server.cors_origins``, else 403. Allowed origins get real CORS: preflights are
   answered (:meth:`Guard.preflight_headers`) and every response, SSE streams and errors
   included, carries ``Access-Control-Allow-Origin`` (:meth:`Guard.cors_headers`).
   Requests without ``Origin`` (SDKs, curl, agents) are not affected.
4. **Content type** (:func:`check_json_content_type`): the JSON endpoints take only
   ``application/json`` or ``application/*+json`` (415 otherwise), which a page can only
   send after a preflight that step 3 refuses.

``/healthz`` and ``/readyz`` skip 2 and 3: probes send odd Host headers, and the
answers have no side effects and hold nothing secret (a foreign page still cannot read
them: no CORS headers).

WebSocket upgrades are refused with a 400 in the dialect's error shape
(:func:`refuse_websocket`): clibridge speaks HTTP and SSE only.
"""

from __future__ import annotations

import ipaddress
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import attrs
from werkzeug.datastructures import Headers

from .._config import ServerConfig
from .._errors import (
    Forbidden,
    MisdirectedRequest,
    RequestError,
    UnsupportedFeature,
    UnsupportedMediaType,
)
from .._wire.errors import Dialect, dialect_for_path, error_body

#: paths that need neither the auth token nor a known Host / Origin: the probes, and the
#: dashboard's page (static, no data: its script asks /dashboard/state with the key)
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/dashboard"})
#: response headers a browser client may read besides the CORS-safelisted ones
EXPOSED_HEADERS = "X-Request-Id, Retry-After, X-Clibridge-Token-Count"
#: how long a browser may cache a preflight answer (seconds)
PREFLIGHT_MAX_AGE = "600"

_LOOPBACK_NAMES = frozenset({"localhost"})
_WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::"})
_DEFAULT_PORTS = {"http": ":80", "https": ":443", "ws": ":80", "wss": ":443"}
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

#: request headers: werkzeug's (case-insensitive), or a plain mapping in canonical case
HeaderMap = Headers | Mapping[str, str]


def dialect_of(path: str, headers: HeaderMap) -> Dialect:
    """The API family whose envelope a response to ``path`` uses.

    Shared paths (``/v1/models``, unknown ones) answer Anthropic clients, recognised by
    the ``anthropic-version`` header every Anthropic SDK sends, in Anthropic's shape.
    """
    dialect = dialect_for_path(path)
    shared = dialect == "openai_chat" and not path.startswith(("/v1/chat/", "/chat/"))
    if shared and headers.get("anthropic-version"):
        return "anthropic_messages"
    return dialect


def host_name(value: str) -> str:
    """The host part of a ``Host`` header, lower case, without port, brackets, final dot."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    name, sep, port = value.rpartition(":")
    if sep and port.isdigit() and ":" not in name:
        value = name
    return value.rstrip(".")


def normalize_origin(origin: str) -> str:
    """An origin as browsers serialise it: lower case, no default port, no final slash."""
    origin = origin.strip().rstrip("/")
    scheme, sep, rest = origin.partition("://")
    if not sep:
        return origin.lower()  # "null", or something no browser sends
    scheme, rest = scheme.lower(), rest.lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default and rest.endswith(default):
        rest = rest[: -len(default)]
    return f"{scheme}://{rest}"


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


@attrs.frozen
class Guard:
    """The Host and Origin policy of one server (see the module docstring)."""

    #: host names (lower case) the Host header may carry
    names: frozenset[str]
    #: the bind address when it is an IP address
    bind_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    #: bound to all interfaces: any IP address names this server
    any_ip: bool
    #: ``*`` in ``server.allowed_hosts``: no Host check
    any_host: bool
    #: normalised allowed origins
    origins: frozenset[str]

    @classmethod
    def from_config(cls, config: ServerConfig) -> Guard:
        bind = config.host.strip().strip("[]").lower()
        allowed = {host_name(h) for h in config.allowed_hosts}
        return cls(
            names=frozenset({*_LOOPBACK_NAMES, bind, *allowed} - {"*"}),
            bind_ip=_ip(bind),
            any_ip=bind in _WILDCARD_BINDS,
            any_host="*" in allowed,
            origins=frozenset(normalize_origin(o) for o in config.cors_origins),
        )

    def host_allowed(self, host: str | None) -> bool:
        """Whether a ``Host`` header value names this server (absent: HTTP/1.0, allowed)."""
        if not host or self.any_host:
            return True
        name = host_name(host)
        if name in self.names:
            return True
        ip = _ip(name)
        if ip is None:
            return False
        return ip.is_loopback or self.any_ip or ip == self.bind_ip

    def check_host(self, host: str | None) -> None:
        """Raise :class:`MisdirectedRequest` unless ``host`` names this server."""
        if not self.host_allowed(host):
            shown = json.dumps(host)  # quoted and escaped: it goes into logs and bodies
            raise MisdirectedRequest(
                f"the Host header {shown} does not name this clibridge server, so the request "
                "is refused (a web page may be using DNS rebinding). Use localhost, the bind "
                "address, or add the name to server.allowed_hosts (--allowed-host NAME)"
            )

    def origin_allowed(self, origin: str) -> bool:
        return normalize_origin(origin) in self.origins

    def check_origin(self, origin: str | None) -> None:
        """Raise :class:`Forbidden` for an ``Origin`` header that is not allowed."""
        if origin is not None and not self.origin_allowed(origin):
            shown = json.dumps(origin)
            raise Forbidden(
                f"requests from the web origin {shown} are not allowed: a web page may not use "
                "this clibridge server. To let a browser or Electron client you trust call it, "
                "add its origin to server.cors_origins (--cors-origin ORIGIN)"
            )

    def cors_headers(self, origin: str | None) -> dict[str, str]:
        """Headers for a response to an allowed ``origin`` (nothing without one)."""
        if origin is None or not self.origin_allowed(origin):
            return {}
        return {
            "Access-Control-Allow-Origin": origin.strip(),
            "Access-Control-Expose-Headers": EXPOSED_HEADERS,
        }

    def preflight_headers(self, origin: str, headers: HeaderMap) -> dict[str, str]:
        """The answer to an allowed origin's preflight (``OPTIONS`` with
        ``Access-Control-Request-Method``): the methods and the headers it asked for."""
        requested = headers.get("Access-Control-Request-Headers", "")
        allow_headers = ", ".join(
            h for h in (p.strip() for p in requested.split(",")) if _TOKEN.fullmatch(h)
        )
        out = {
            "Access-Control-Allow-Origin": origin.strip(),
            "Access-Control-Allow-Methods": "GET, POST",
            "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
            "Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        }
        if allow_headers:
            out["Access-Control-Allow-Headers"] = allow_headers
        if headers.get("Access-Control-Request-Private-Network", "").lower() == "true":
            # Chrome's Private Network Access: a public page calling a loopback server
            out["Access-Control-Allow-Private-Network"] = "true"
        return out


def is_preflight(method: str, headers: HeaderMap) -> bool:
    return (
        method == "OPTIONS" and "Origin" in headers and "Access-Control-Request-Method" in headers
    )


def check_framing(headers: HeaderMap) -> None:
    """Refuse a request framed by both Content-Length and Transfer-Encoding (RFC 9112 §6.1).

    The caller must close the connection after answering.
    """
    if "Content-Length" in headers and "Transfer-Encoding" in headers:
        raise RequestError(
            "the request has both Content-Length and Transfer-Encoding headers; send one "
            "(RFC 9112 section 6.1). The connection is closed.",
            param="$",
        )


def is_json_content_type(content_type: str | None) -> bool:
    """``application/json`` or ``application/<anything>+json``, parameters ignored."""
    if not content_type:
        return False
    mimetype = content_type.split(";", 1)[0].strip().lower()
    kind, _, subtype = mimetype.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def check_json_content_type(content_type: str | None) -> None:
    """Raise :class:`UnsupportedMediaType` unless the body is declared JSON."""
    if not is_json_content_type(content_type):
        shown = json.dumps(content_type) if content_type else "none"
        raise UnsupportedMediaType(
            f"this endpoint takes a JSON body: send 'Content-Type: application/json' (got {shown})"
        )


# --------------------------------------------------------------------------- WebSocket

ASGISend = Callable[[dict[str, Any]], Awaitable[None]]
ASGIReceive = Callable[[], Awaitable[dict[str, Any]]]


def _scope_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}


async def refuse_websocket(scope: Mapping[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
    """Answer a WebSocket upgrade with a 400 in the dialect's error shape, then close.

    Uses the ASGI WebSocket denial response (Hypercorn supports it); a server without it
    gets a plain close, which it answers with 403.
    """
    message = await receive()
    if message.get("type") != "websocket.connect":
        return
    headers = _scope_headers(scope.get("headers", ()))
    error = UnsupportedFeature(
        "clibridge does not accept WebSocket connections: use HTTP POST (with "
        '"stream": true for server-sent events)'
    )
    dialect = dialect_of(str(scope.get("path", "/")), headers)
    body = json.dumps(error_body(dialect, error), separators=(",", ":")).encode()
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    await send(
        {
            "type": "websocket.http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", f"req_{uuid.uuid4().hex}".encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
