"""Malformed request bodies, generated deterministically from valid ones.

Each endpoint has a valid *base* body that exercises most of its fields (system prompt,
tool definitions with a JSON schema, a tool call and its result, content parts). Cases
are derived from the bases, every one of them systematically first:

``wrong_type``   every value in the body (every path, containers included) replaced by
                 each of :data:`WRONG_VALUES` (null, booleans, numbers out of range,
                 strings, arrays, objects)
``missing``      every object member and array element removed
``unicode``      every string value *and every object key* replaced by each of
                 :data:`UNICODE` (lone and reversed surrogates, NUL and other control
                 characters, noncharacters, BOM, bidi overrides, combining floods, line
                 separators, header-injection text)
``bad_utf8``     invalid UTF-8 bytes spliced into string values (overlong forms, encoded
                 surrogates, code points past U+10FFFF, truncated sequences)
``huge``         100 KB strings everywhere; 1.5 M, 2.1 M character and 17 MiB bodies in
                 the first text; 2,001 messages; an object of 10,000 keys; a 100 KB key
``deep``         arrays and objects nested 64, 1,000 and 100,000 deep in place of every
                 container
``raw``          not a JSON object at all: empty, scalars, truncated, trailing garbage,
                 duplicate keys, NaN / Infinity / 1e999, a BOM, UTF-16 / UTF-32, gzip
``content_type`` the valid body under other content types (``text/plain``, forms,
                 multipart, charsets, near misses of ``application/json``)

then random compositions of those and byte-level mutations (flips, cuts, insertions,
repeats) of valid bodies until the requested count is reached. The model alternates
between the fake claude and the fake codex, so both backends see the bodies that are
valid. No generated text contains ``@fake``: a directive would script the fake on
purpose, and worker restarts must come from input alone for the test to mean anything.
"""

from __future__ import annotations

import copy
import gzip
import json
import random
from collections.abc import Iterator
from typing import Any

import attrs

Path_ = tuple[str | int, ...]

ENDPOINTS: dict[str, str] = {
    "/v1/chat/completions": "chat",
    "/v1/responses": "responses",
    "/v1/messages": "messages",
    "/v1/messages/count_tokens": "messages",
}
MODELS = ("claude-sonnet-4-5", "gpt-5")
MAX_BODY = 16 * 1024 * 1024  # the server's default max_body_bytes

_SCHEMA = {
    "type": "object",
    "properties": {"expr": {"type": "string", "description": "an expression"}},
    "required": ["expr"],
}


def base_body(path: str, model: str) -> dict[str, Any]:
    """A valid body for ``path`` that uses most of its fields."""
    if path == "/v1/chat/completions":
        return {
            "model": model,
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "What is 2+2?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "calc", "arguments": '{"expr": "2+2"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "4"},
                {"role": "user", "content": [{"type": "text", "text": "Thanks. And 3+3?"}]},
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "calc", "description": "Evaluate", "parameters": _SCHEMA},
                }
            ],
            "tool_choice": "auto",
            "temperature": 0.2,
            "max_tokens": 64,
            "stop": ["\n\n"],
            "user": "fuzz",
            "stream": False,
        }
    if path == "/v1/responses":
        return {
            "model": model,
            "instructions": "Be terse.",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "What is 2+2?"}]},
                {
                    "type": "function_call",
                    "call_id": "call_1",
                    "name": "calc",
                    "arguments": '{"expr": "2+2"}',
                },
                {"type": "function_call_output", "call_id": "call_1", "output": "4"},
                {"role": "user", "content": "And 3+3?"},
            ],
            "tools": [
                {
                    "type": "function",
                    "name": "calc",
                    "description": "Evaluate",
                    "parameters": _SCHEMA,
                }
            ],
            "tool_choice": "auto",
            "temperature": 0.2,
            "max_output_tokens": 64,
            "store": False,
            "stream": False,
        }
    body: dict[str, Any] = {
        "model": model,
        "system": [{"type": "text", "text": "Be terse."}],
        "messages": [
            {"role": "user", "content": "What is 2+2?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me compute."},
                    {"type": "tool_use", "id": "toolu_1", "name": "calc", "input": {"expr": "2+2"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "4"},
                    {"type": "text", "text": "And 3+3?"},
                ],
            },
        ],
        "tools": [{"name": "calc", "description": "Evaluate", "input_schema": _SCHEMA}],
        "tool_choice": {"type": "auto"},
        "temperature": 0.2,
        "stop_sequences": ["\n\n"],
        "metadata": {"user_id": "fuzz"},
    }
    if path == "/v1/messages":
        body |= {"max_tokens": 64, "stream": False}
    return body


WRONG_VALUES: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    -1,
    1.5,
    2**63,
    -(2**70),
    1e308,
    "",
    "x",
    [],
    [None, 1],
    {},
    {"": {}},
)
UNICODE: tuple[str, ...] = (
    "\ud800",
    "\udfff",
    "a\ud800b",
    "\udc00\ud800",
    "\ud83d\ude00",  # a valid pair: U+1F600
    "\u0000",
    "a\u0000b",
    "\x01\x1b[31m\x7f\x9b",
    "\ufffe\uffff",
    "\ufeffbom",
    "\u202eevil\u202c",
    "e" + "\u0301" * 2000,
    "\u200d" * 1000,
    "\u2028\u2029",
    "\r\nX-Injected: 1\r\n\r\n",
    "%0A%0D%00",
    "\U0010ffff\U000e0001",
    "😀" * 1000,
    "İıßﬁ",
    "\\ud800",  # the escape as text
    "</tool_result><conversation_history>",
    "${jndi:ldap://127.0.0.1/x}{{7*7}}",
)
BAD_UTF8: tuple[bytes, ...] = (
    b"\xff",
    b"\xc0\xaf",  # overlong '/'
    b"\xed\xa0\x80",  # an encoded surrogate
    b"\xf4\x90\x80\x80",  # past U+10FFFF
    b"\xe2\x82",  # truncated
)
CONTENT_TYPES: tuple[str | None, ...] = (
    None,
    "",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/jsonx",
    "application/json-seq",
    "application/json; charset=utf-16",
    "application/json; charset=latin-1",
    "APPLICATION/JSON",
    "application/json;",
    "application/vnd.api+json",
    "text/json",
    "*/*",
    "application/json, text/plain",
    "application/json; " + "x=y; " * 2000,
)
#: content types that must be refused (415): what an HTML form or a no-cors fetch sends
MUST_REFUSE = frozenset(
    {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"}
)

_PLACEHOLDER = "\ue000placeholder\ue000"


@attrs.frozen
class Case:
    family: str
    path: str
    body: bytes
    content_type: str | None = "application/json"
    note: str = ""


# --------------------------------------------------------------------------- JSON paths


def _nodes(value: Any, at: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    yield at, value
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _nodes(child, (*at, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from _nodes(child, (*at, i))


def _set(body: Any, at: Path_, value: Any) -> Any:
    if not at:
        return value
    out = copy.deepcopy(body)
    parent = out
    for step in at[:-1]:
        parent = parent[step]
    parent[at[-1]] = value
    return out


def _delete(body: Any, at: Path_) -> Any:
    out = copy.deepcopy(body)
    parent = out
    for step in at[:-1]:
        parent = parent[step]
    del parent[at[-1]]
    return out


def _rename_key(body: Any, at: Path_, new: str) -> Any:
    out = copy.deepcopy(body)
    parent = out
    for step in at[:-1]:
        parent = parent[step]
    parent[new] = parent.pop(at[-1])
    return out


def _dumps(body: Any) -> bytes:
    # ensure_ascii: lone surrogates travel as JSON escapes, which is what a client sends
    return json.dumps(body).encode()


def _splice(body: Any, at: Path_, raw: bytes) -> bytes:
    """``body`` serialized with the value at ``at`` replaced by the raw bytes ``raw``."""
    return _dumps(_set(body, at, _PLACEHOLDER)).replace(_dumps(_PLACEHOLDER), raw, 1)


def _nested(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"1" + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


# --------------------------------------------------------------------------- the cases


def systematic(path: str, model_for: Iterator[str]) -> Iterator[Case]:
    """Every systematic case for ``path``; ``model_for`` yields the model per case."""

    def base() -> dict[str, Any]:
        return base_body(path, next(model_for))

    shape = base()
    nodes = list(_nodes(shape))
    strings = [(at, v) for at, v in nodes if isinstance(v, str) and at and at[-1] != "model"]
    keys = [at for at, _ in nodes if at and isinstance(at[-1], str)]
    containers = [at for at, v in nodes if isinstance(v, (dict, list))]

    for at, _ in nodes:
        for value in WRONG_VALUES:
            yield Case("wrong_type", path, _dumps(_set(base(), at, value)), note=_show(at))
        if at:
            yield Case("missing", path, _dumps(_delete(base(), at)), note=_show(at))
    for at, _ in strings:
        for text in UNICODE:
            yield Case("unicode", path, _dumps(_set(base(), at, text)), note=_show(at))
        for raw in BAD_UTF8:
            yield Case("bad_utf8", path, _splice(base(), at, b'"a' + raw + b'b"'), note=_show(at))
        yield Case("huge", path, _dumps(_set(base(), at, "A" * 100_000)), note=_show(at))
    for at in keys:
        for text in UNICODE[:8]:
            yield Case(
                "unicode", path, _dumps(_rename_key(base(), at, text)), note="key " + _show(at)
            )
    for at in containers:
        for depth, kind in (
            (64, "array"),
            (1000, "array"),
            (100_000, "array"),
            (1000, "object"),
            (100_000, "object"),
        ):
            yield Case(
                "deep",
                path,
                _splice(base(), at, _nested(depth, kind)),
                note=f"{kind} x{depth} at {_show(at)}",
            )
    yield from _huge(path, base, strings[0][0] if strings else ())
    yield from _raw(path, base)
    for content_type in CONTENT_TYPES:
        yield Case(
            "content_type",
            path,
            _dumps(base()),
            content_type=content_type,
            note=str(content_type)[:40],
        )


def _huge(path: str, base: Any, text_at: Path_) -> Iterator[Case]:
    for size in (1_500_000, 2_100_000):
        yield Case("huge", path, _dumps(_set(base(), text_at, "B" * size)), note=f"{size} chars")
    yield Case("huge", path, _dumps(_set(base(), text_at, "C" * (MAX_BODY + 1024))), note="17 MiB")
    many = base()
    key = "input" if "input" in many else "messages"
    many[key] = [{"role": "user", "content": "hi"}] * 2001
    yield Case("huge", path, _dumps(many), note="2001 messages")
    wide = base()
    wide["metadata"] = {f"k{i}": i for i in range(10_000)}
    yield Case("huge", path, _dumps(wide), note="10,000 keys")
    long_key = base()
    long_key["k" * 100_000] = 1
    yield Case("huge", path, _dumps(long_key), note="100 KB key")


def _raw(path: str, base: Any) -> Iterator[Case]:
    valid = _dumps(base())
    raws = [
        b"",
        b" ",
        b"null",
        b"[]",
        b'"a string"',
        b"1",
        b"{",
        b"}",
        b"{}",
        b"[" + valid + b"]",
        valid + b"garbage",
        valid + valid,
        b'{"model": "x", ' + valid[1:],
        b"\xef\xbb\xbf" + valid,
        valid.decode().encode("utf-16"),
        valid.decode().encode("utf-16-le"),
        valid.decode().encode("utf-32"),
        gzip.compress(valid),
        valid.replace(b'"temperature": 0.2', b'"temperature": NaN'),
        valid.replace(b'"temperature": 0.2', b'"temperature": Infinity'),
        valid.replace(b'"temperature": 0.2', b'"temperature": -Infinity'),
        valid.replace(b'"temperature": 0.2', b'"temperature": 1e999'),
        valid.replace(b'"temperature": 0.2', b'"temperature": 01'),
        valid.replace(b"64", b"1" + b"0" * 5000),
        valid[:-1] + b", }",
        valid.replace(b'"', b"'"),
        b"/* comment */" + valid,
        valid.replace(b" ", b"\x00", 1),
        valid.replace(b'"model"', b'"\\u006dodel"', 1),
    ]
    for cut in (1, 2, len(valid) // 3, len(valid) // 2, len(valid) - 1):
        raws.append(valid[:cut])
    for raw in raws:
        yield Case("raw", path, raw, note=repr(raw[:30]))


def randomized(count: int, rng: random.Random) -> Iterator[Case]:
    """``count`` random cases: compositions of the families and byte-level mutations."""
    paths = list(ENDPOINTS)
    for _ in range(count):
        path = rng.choice(paths)
        body: Any = base_body(path, rng.choice(MODELS))
        for _ in range(rng.randint(1, 3)):
            nodes = list(_nodes(body))
            at, _ = rng.choice(nodes)
            pick = rng.random()
            if pick < 0.4:
                body = _set(body, at, rng.choice(WRONG_VALUES + UNICODE))
            elif pick < 0.6 and at:
                body = _delete(body, at)
            elif pick < 0.8:
                body = _set(body, at, copy.deepcopy(rng.choice(nodes)[1]))
        raw = _dumps(body)
        if rng.random() < 0.5:
            raw = _mutate_bytes(raw, rng)
        yield Case("random", path, raw)


def _mutate_bytes(raw: bytes, rng: random.Random) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        if not data:
            break
        i = rng.randrange(len(data))
        op = rng.random()
        if op < 0.3:
            data[i] = rng.randrange(256)
        elif op < 0.5:
            del data[i : i + rng.randint(1, 16)]
        elif op < 0.7:
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op < 0.85:
            data[i:i] = data[i : i + rng.randint(1, 64)] * rng.randint(2, 20)
        else:
            data[i:i] = rng.choice([b"{", b"[", b'"', b"\\", b"\\u", b"\\ud800", b",", b":"])
    return bytes(data)


def all_cases(count: int, seed: int) -> list[Case]:
    """The systematic cases of every endpoint, then random ones up to ``count``."""

    def alternate() -> Iterator[str]:
        while True:
            yield from MODELS

    models = alternate()
    cases = [case for path in ENDPOINTS for case in systematic(path, models)]
    assert not any(b"@fake" in c.body for c in cases)
    if len(cases) < count:
        cases += randomized(count - len(cases), random.Random(seed))
    return cases


def _show(at: Path_) -> str:
    return "$" + "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in at)
