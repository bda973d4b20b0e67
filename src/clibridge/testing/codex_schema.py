"""Validate codex app-server JSON-RPC messages against the protocol's own JSON schema.

Theory of operation
-------------------
``codex app-server generate-json-schema --experimental --out DIR`` writes one bundle,
``codex_app_server_protocol.schemas.json``, whose ``definitions`` hold the four message
unions (``ClientRequest``, ``ClientNotification``, ``ServerRequest``, ``ServerNotification``),
every ``*Params`` / ``*Response`` type (v2 types under ``definitions/v2``) and the JSON-RPC
envelopes. clibridge keeps the 0.169.0 bundle gzipped next to its recorded samples
(``tests/testing/samples/codex_app_server_schema-0.169.0.json.gz``).

A union is a ``oneOf`` over branches, one per method (``properties.method.enum``). Checking
a message against the whole ``oneOf`` is slow and its errors are unreadable, so we pick the
branch by method and validate against that branch alone; an unknown method is a violation.
A response carries no method: :class:`WireChecker` remembers the method of every request
it saw in each direction and validates the response against ``<Name>Response``, the type
named like the request's ``<Name>Params``. Error responses are checked against
``JSONRPCError``.

``jsonschema`` is a test extra, so it is imported only when a validator is first built.
"""

from __future__ import annotations

import functools
import gzip
import importlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

SCHEMA_ENV = "CLIBRIDGE_CODEX_SCHEMA"
SCHEMA_VERSION = "0.169.0"
_BUNDLE_NAME = f"codex_app_server_schema-{SCHEMA_VERSION}.json.gz"

Side = Literal["client", "server"]
Kind = Literal["request", "notification", "response", "error"]

_UNIONS: Mapping[tuple[Side, str], str] = {
    ("client", "request"): "ClientRequest",
    ("client", "notification"): "ClientNotification",
    ("server", "request"): "ServerRequest",
    ("server", "notification"): "ServerNotification",
}


class SchemaViolation(ValueError):
    """A message does not match the app-server protocol schema."""


def default_schema_path() -> Path:
    """Where the bundle is: ``$CLIBRIDGE_CODEX_SCHEMA``, else the copy in the repo's samples.

    The file may be the plain bundle or gzipped (``.gz``).
    """
    env = os.environ.get(SCHEMA_ENV)
    if env:
        return Path(env)
    # src/clibridge/testing/codex_schema.py -> repo root is parents[3]
    return Path(__file__).resolve().parents[3] / "tests" / "testing" / "samples" / _BUNDLE_NAME


def load_bundle(path: Path | None = None) -> dict[str, Any]:
    """Read the schema bundle (gzipped or plain JSON)."""
    path = path or default_schema_path()
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    bundle: dict[str, Any] = json.loads(raw)
    return bundle


def _method_of(branch: Mapping[str, Any]) -> str | None:
    method = branch.get("properties", {}).get("method", {})
    enum = method.get("enum")
    return str(enum[0]) if enum else None


class CodexSchema:
    """The protocol schema, with validators built on demand and cached per method."""

    def __init__(self, bundle: Mapping[str, Any]) -> None:
        self._defs: Mapping[str, Any] = bundle["definitions"]
        self._branches: dict[tuple[Side, str], dict[str, Mapping[str, Any]]] = {}
        for key, union in _UNIONS.items():
            self._branches[key] = {
                m: b for b in self._defs[union]["oneOf"] if (m := _method_of(b)) is not None
            }
        self._validators: dict[str, Any] = {}

    # -- lookups

    def methods(self, side: Side, kind: Literal["request", "notification"]) -> frozenset[str]:
        """The methods ``side`` may send as ``kind``."""
        return frozenset(self._branches[(side, kind)])

    def response_ref(self, side: Side, method: str) -> str | None:
        """JSON pointer of the result type for a request ``side`` sent, if the schema has one."""
        branch = self._branches[(side, "request")].get(method)
        if branch is None:
            return None
        params_ref = str(branch["properties"].get("params", {}).get("$ref", ""))
        if not params_ref.endswith("Params"):
            return None
        ref = params_ref[: -len("Params")] + "Response"
        node: Any = {"definitions": self._defs}
        for part in ref.removeprefix("#/").split("/"):
            node = node.get(part) if isinstance(node, Mapping) else None
            if node is None:
                return None
        return ref

    # -- validation

    def _validator(self, key: str, schema: Mapping[str, Any]) -> Any:
        validator = self._validators.get(key)
        if validator is None:
            # jsonschema is a test extra (and untyped): import it only when first needed.
            jsonschema = importlib.import_module("jsonschema")

            validator = jsonschema.Draft7Validator({**schema, "definitions": self._defs})
            self._validators[key] = validator
        return validator

    def _check(self, key: str, schema: Mapping[str, Any], instance: Any, what: str) -> None:
        errors = sorted(
            self._validator(key, schema).iter_errors(instance), key=lambda e: list(e.path)
        )
        if errors:
            err = errors[0]
            where = "$" + "".join(f"[{p!r}]" for p in err.absolute_path)
            raise SchemaViolation(f"{what}: {where}: {err.message}"[:2000])

    def validate_message(self, side: Side, msg: Mapping[str, Any]) -> Kind:
        """Validate a request or notification sent by ``side``; return its kind.

        Responses need the request's method: use :meth:`validate_response` or
        :class:`WireChecker`.
        """
        if not isinstance(msg, Mapping) or "method" not in msg:
            raise SchemaViolation(f"{side} message has no method: {msg!r}"[:500])
        kind: Kind = "request" if "id" in msg else "notification"
        method = msg["method"]
        branch = self._branches[(side, kind)].get(method)
        if branch is None:
            raise SchemaViolation(f"{side} {kind} with a method the schema lacks: {method!r}")
        self._check(f"{side}:{kind}:{method}", branch, msg, f"{side} {kind} {method}")
        return kind

    def validate_response(self, side: Side, method: str, msg: Mapping[str, Any]) -> Kind:
        """Validate ``side``'s reply to a request (of ``method``) the other side sent."""
        if "error" in msg:
            self._check("JSONRPCError", {"$ref": "#/definitions/JSONRPCError"}, msg, "error")
            return "error"
        self._check("JSONRPCResponse", {"$ref": "#/definitions/JSONRPCResponse"}, msg, "response")
        peer: Side = "server" if side == "client" else "client"
        ref = self.response_ref(peer, method)
        if ref is not None:
            self._check(ref, {"allOf": [{"$ref": ref}]}, msg["result"], f"result of {method}")
        return "response"


@functools.cache
def load_schema(path: Path | None = None) -> CodexSchema:
    """The (cached) :class:`CodexSchema` from ``path`` or :func:`default_schema_path`."""
    return CodexSchema(load_bundle(path))


@attrs.define
class WireChecker:
    """Validates a whole conversation, both directions, tracking request ids.

    Feed every message the client writes to :meth:`client_sent` and every message the
    server writes to :meth:`server_sent`. A response to an unknown id is a violation.
    """

    schema: CodexSchema = attrs.field(factory=load_schema)
    _pending: dict[tuple[Side, Any], str] = attrs.field(factory=dict)
    #: (side, kind, method-or-None) per message seen, in order
    seen: list[tuple[Side, Kind, str | None]] = attrs.field(factory=list)

    def client_sent(self, msg: Mapping[str, Any]) -> Kind:
        """Validate a message the client sent."""
        return self._check("client", msg)

    def server_sent(self, msg: Mapping[str, Any]) -> Kind:
        """Validate a message the server sent."""
        return self._check("server", msg)

    def _check(self, side: Side, msg: Mapping[str, Any]) -> Kind:
        if not isinstance(msg, Mapping):
            raise SchemaViolation(f"{side} sent a non-object: {msg!r}"[:500])
        if "method" in msg:
            kind = self.schema.validate_message(side, msg)
            if kind == "request":
                self._pending[(side, msg["id"])] = msg["method"]
            self.seen.append((side, kind, msg["method"]))
            return kind
        peer: Side = "server" if side == "client" else "client"
        method = self._pending.pop((peer, msg.get("id")), None)
        if method is None:
            if "error" in msg:
                # The server answers unparsable requests with an error (id may be unknown).
                kind = self.schema.validate_response(side, "", msg)
                self.seen.append((side, kind, None))
                return kind
            raise SchemaViolation(f"{side} answered an id nobody asked: {msg!r}"[:500])
        kind = self.schema.validate_response(side, method, msg)
        self.seen.append((side, kind, method))
        return kind

    def outstanding(self, side: Side) -> list[str]:
        """Methods of requests ``side`` sent that are not answered yet."""
        return [m for (s, _), m in self._pending.items() if s == side]
