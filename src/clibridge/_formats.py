"""JSON response formats: instruct the model, check its reply, phrase the retry (pure).

Theory of operation
-------------------
Neither CLI can constrain its model's decoding to JSON, so ``response_format``
(``json_object`` / ``json_schema``, Chat Completions) and ``text.format`` (Responses) are
honoured in three steps, the last two in the supervisor:

1. :func:`instruction` is appended to the system prompt: reply with JSON only (and the
   schema, when there is one).
2. When the turn ends normally with text, :func:`check` parses it (a reply wrapped in
   one Markdown code fence is unwrapped: models do that despite the instruction) and
   validates it: a JSON object for ``json_object``, the schema with ``jsonschema`` for
   ``json_schema``. The client gets the parsed JSON text, as the model wrote it.
3. On a mismatch the supervisor runs one more turn of the same conversation: the invalid
   reply, then :func:`retry_prompt` naming what was wrong. A second mismatch is an
   :class:`~clibridge._errors.OutputInvalid` error.

:func:`check_schema` refuses an invalid schema at decode time (a 400 naming the field).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

import jsonschema
import jsonschema.exceptions
import jsonschema.protocols
import jsonschema.validators
import referencing.exceptions

from ._errors import RequestError
from ._events import OutputFormat

#: one fenced block and nothing else around it (```json ... ``` or ``` ... ```)
_FENCE = re.compile(r"\A\s*```[A-Za-z0-9_-]*[ \t]*\n(?P<body>.*?)\n?```\s*\Z", re.DOTALL)


class FormatMismatch(Exception):
    """The reply does not match the format; the message says how (for the retry)."""


def check_schema(schema: object, param: str) -> dict[str, Any]:
    """``schema`` if it is a usable JSON Schema object, else a RequestError naming ``param``.

    Usable: valid under its draft's metaschema (``$schema``, 2020-12 when absent), and
    every ``$ref`` local (``#...``; nothing is fetched) and, when a JSON pointer, pointing
    at something in the schema.
    """
    if not isinstance(schema, dict):
        raise RequestError(f"{param}: a JSON Schema object is required", param=param)
    validator = _validator_class(schema, param)
    try:
        validator.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise RequestError(
            f"{param}: not a valid JSON Schema ({exc.message}"
            + (f" at {where}" if where else "")
            + ")",
            param=param,
        ) from None
    for ref in _refs(schema):
        problem = _ref_problem(schema, ref)
        if problem is not None:
            raise RequestError(f"{param}: $ref {ref!r} {problem}", param=param)
    # a trial run finds what only validation meets: a $ref loop, an anchor to nowhere
    try:
        for _ in validator(schema).iter_errors(None):
            pass
    except RecursionError:
        raise RequestError(f"{param}: its $ref references loop", param=param) from None
    except referencing.exceptions.Unresolvable as exc:
        raise RequestError(f"{param}: a $ref cannot be resolved ({exc})", param=param) from None
    return schema


def _validator_class(schema: dict[str, Any], param: str) -> type[jsonschema.protocols.Validator]:
    draft = schema.get("$schema")
    if draft is None:
        return jsonschema.validators.validator_for(schema)
    found = (
        jsonschema.validators.validator_for(schema, default=None)  # type: ignore[arg-type]
        if isinstance(draft, str)
        else None
    )
    if found is None:
        raise RequestError(
            f"{param}.$schema: not a JSON Schema draft this server knows ({draft!r}); "
            "leave it out for 2020-12",
            param=f"{param}.$schema",
        )
    return found


def _refs(node: object) -> list[str]:
    """Every ``$ref`` string in ``node`` (keys named ``$ref`` at any depth)."""
    out: list[str] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str):
                out.append(ref)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return out


def _ref_problem(root: dict[str, Any], ref: str) -> str | None:
    if not ref.startswith("#"):
        return "is not local: only references within the schema (#...) are supported"
    if not ref.startswith("#/") and ref != "#":
        return None  # an anchor: jsonschema resolves it when validating
    node: object = root
    for token in ref[2:].split("/") if ref != "#" else []:
        key = unquote(token).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return "points at nothing in the schema"
    return None


def instruction(fmt: OutputFormat) -> str:
    """What the system prompt gains so that the model answers in ``fmt``."""
    if fmt.kind == "json_object" or fmt.schema is None:
        what = "a single JSON object" if fmt.kind == "json_object" else "a single JSON value"
        return (
            f"Respond with {what} and nothing else: no prose before or after it, "
            "no Markdown code fences."
        )
    schema = json.dumps(fmt.schema, ensure_ascii=False, separators=(",", ":"))
    named = f' named "{fmt.name}"' if fmt.name else ""
    return (
        "Respond with a single JSON value and nothing else (no prose before or after it, "
        f"no Markdown code fences). It must be valid under this JSON Schema{named}:\n" + schema
    )


def with_instruction(system: str, fmt: OutputFormat) -> str:
    """``system`` with the format's instruction appended."""
    return f"{system}\n\n{instruction(fmt)}" if system else instruction(fmt)


def check(text: str, fmt: OutputFormat) -> str:
    """The reply's JSON text (unwrapped from a code fence) if it matches ``fmt``.

    Raises :class:`FormatMismatch` saying what is wrong.
    """
    fenced = _FENCE.match(text)
    body = (fenced.group("body") if fenced else text).strip()
    if not body:
        raise FormatMismatch("the reply was empty, not JSON")
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise FormatMismatch(f"the reply is not valid JSON ({exc})") from None
    except RecursionError:
        raise FormatMismatch("the reply is nested too deeply to read") from None
    if fmt.kind == "json_object" and not isinstance(value, dict):
        raise FormatMismatch(f"the reply is JSON, but a {type(value).__name__}, not an object")
    if fmt.kind == "json_schema" and fmt.schema is not None:
        validator_cls = jsonschema.validators.validator_for(fmt.schema)
        try:
            error = jsonschema.exceptions.best_match(validator_cls(fmt.schema).iter_errors(value))
        except RecursionError:
            raise FormatMismatch("the reply is nested too deeply to check") from None
        except referencing.exceptions.Unresolvable as exc:
            # an anchor that check_schema let through and that resolves to nothing
            raise RequestError(
                f"the response format's JSON Schema has a $ref that cannot be resolved: {exc}"
            ) from None
        if error is not None:
            where = "".join(f"[{p!r}]" for p in error.absolute_path)
            raise FormatMismatch(
                f"the reply does not match the JSON Schema: {error.message}"
                + (f" (at ${where})" if where else "")
            )
    return body


def retry_prompt(problem: str, fmt: OutputFormat) -> str:
    """The user message that asks for the reply once more after ``problem``."""
    return (
        f"Your previous reply cannot be used: {problem}. Reply again with the complete "
        f"answer. {instruction(fmt)}"
    )
